"""`cnn_rnn` and `cnn_lstm`: the conv stack, then a 2-layer bidirectional RNN/LSTM over TIME.

The sequence is the time axis (columns) of the conv feature map: step t is the
column of all frequency rows and channels. The authors flattened the whole map
into one vector and fed it as a sequence of length ONE, so their recurrent layers
never saw time; `time_scan=False` reproduces that for faithful comparison.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emojax import kernels
from emojax.models.cnn import AudioConvStack, scaled, with_functionals

CELLS = {'rnn': nn.SimpleCell, 'lstm': nn.OptimizedLSTMCell}
# How the recurrent outputs over time become one vector:
#   last       the last state of each direction (the paper's h_n)
#   mean       the mean over time of every output
#   stats      mean and standard deviation over time (statistics pooling, as x-vectors), twice as wide
#   attention  a learned softmax weighting of the time steps (one score per step from a Dense layer)
POOLINGS = ('last', 'mean', 'stats', 'attention')


class AudioRecurrent(nn.Module):
  """Conv stack -> bidirectional RNN/LSTM layers -> FC 2H->64 (embedding) -> ReLU Dropout -> FC classes.

  The recurrent summary is the last state of each direction (forward after the
  final column, backward after the first), concatenated: 2 x 128 = 256 features,
  the FC 256->64 of the paper. Each of these states has read the whole clip (a
  mean over steps would mix in early forward states that have seen little); it is
  the last layer's h_n in PyTorch, as the torch reference takes it; and for the length-one sequence
  of `time_scan=False` it is exactly the authors' single output step. `nn.RNN`
  scans the cell with `nn.scan`.
  """

  num_classes: int
  cell: str = 'rnn'
  width: float = 1.0
  batchnorm: bool = False
  dropout: float = 0.2
  rnn_dropout: float = 0.1
  rnn_hidden: int = 128
  rnn_layers: int = 2
  embed_dim: int = 64
  time_scan: bool = True
  rnn_unroll: int = 1  # time steps per scan iteration (a speed switch: same values)
  pooling: str = 'last'  # one of POOLINGS
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()

  def setup(self):
    if self.cell not in CELLS:
      raise ValueError(f'Unknown recurrent cell {self.cell!r}; expected one of {sorted(CELLS)}.')
    if self.pooling not in POOLINGS:
      raise ValueError(f'Unknown pooling {self.pooling!r}; expected one of {list(POOLINGS)}.')
    hidden = scaled(self.rnn_hidden, self.width)
    cell = CELLS[self.cell]
    self.convs = AudioConvStack(width=self.width, batchnorm=self.batchnorm, dtype=self.dtype, plan=self.plan)
    self.layers = [nn.Bidirectional(nn.RNN(cell(hidden, dtype=self.dtype), unroll=self.rnn_unroll),
                                    nn.RNN(cell(hidden, dtype=self.dtype), unroll=self.rnn_unroll))
                   for _ in range(self.rnn_layers)]
    self.between = nn.Dropout(self.rnn_dropout)
    if self.pooling == 'attention':
      self.score = nn.Dense(1, dtype=self.dtype)
    self.fc = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def sequence(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    """The recurrent layers' input: (B, W', H' x C) over time, or (B, 1, H' x W' x C) when not scanning."""
    x = self.convs(inputs['audio'].astype(self.dtype), train=train)
    batch, rows, cols, channels = x.shape
    if self.time_scan:
      return x.transpose(0, 2, 1, 3).reshape(batch, cols, rows * channels)
    return x.reshape(batch, 1, rows * cols * channels)

  def embed(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.sequence(inputs, train=train)
    for i, layer in enumerate(self.layers):
      if i:  # dropout between recurrent layers, as PyTorch's nn.RNN(dropout=...)
        x = self.between(x, deterministic=not train)
      x = layer(x)
    return self.fc(with_functionals(self.pool(x), inputs))

  def pool(self, x: jax.Array) -> jax.Array:
    """(B, T, 2H) recurrent outputs -> (B, F) as `pooling` says."""
    if self.pooling == 'last':
      hidden = x.shape[-1] // 2
      return jnp.concatenate([x[:, -1, :hidden], x[:, 0, hidden:]], axis=-1)
    if self.pooling == 'attention':
      weights = jax.nn.softmax(self.score(x).astype(jnp.float32), axis=1).astype(x.dtype)
      return jnp.sum(weights * x, axis=1)
    mean = jnp.mean(x, axis=1)
    if self.pooling == 'mean':
      return mean
    variance = jnp.mean(jnp.square(x.astype(jnp.float32) - mean[:, None].astype(jnp.float32)), axis=1)
    return jnp.concatenate([mean, jnp.sqrt(variance + 1e-6).astype(x.dtype)], axis=-1)

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.drop(nn.relu(self.embed(inputs, train=train)), deterministic=not train)
    return self.head(x).astype(jnp.float32)
