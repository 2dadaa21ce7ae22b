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
from emojax.models.cnn import AudioConvStack, scaled

CELLS = {'rnn': nn.SimpleCell, 'lstm': nn.OptimizedLSTMCell}


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
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()

  def setup(self):
    if self.cell not in CELLS:
      raise ValueError(f'Unknown recurrent cell {self.cell!r}; expected one of {sorted(CELLS)}.')
    hidden = scaled(self.rnn_hidden, self.width)
    cell = CELLS[self.cell]
    self.convs = AudioConvStack(width=self.width, batchnorm=self.batchnorm, dtype=self.dtype, plan=self.plan)
    self.layers = [nn.Bidirectional(nn.RNN(cell(hidden, dtype=self.dtype), unroll=self.rnn_unroll),
                                    nn.RNN(cell(hidden, dtype=self.dtype), unroll=self.rnn_unroll))
                   for _ in range(self.rnn_layers)]
    self.between = nn.Dropout(self.rnn_dropout)
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
    hidden = x.shape[-1] // 2
    summary = jnp.concatenate([x[:, -1, :hidden], x[:, 0, hidden:]], axis=-1)
    return self.fc(summary)

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.drop(nn.relu(self.embed(inputs, train=train)), deterministic=not train)
    return self.head(x).astype(jnp.float32)
