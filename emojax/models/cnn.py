"""The paper's spectrogram CNN: three wide-kernel convolutions, then two fully connected layers."""
from __future__ import annotations

import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emojax import kernels

# Running statistics' decay (PyTorch's default, momentum=0.1): a run here is a few hundred steps, over
# which flax's default 0.99 leaves the running averages far behind the weights (eval near chance).
BATCHNORM_MOMENTUM = 0.9
# (channels, kernel (freq, time), padding) of each conv, from the authors' code.
AUDIO_CONVS = ((16, (12, 16), (6, 8)), (24, (8, 12), (4, 6)), (32, (5, 7), (2, 3)))


def audio_feature_shape(height: int, width: int) -> tuple[int, int]:
  """(rows, columns) of the conv stack's output for an input of height x width."""
  for _, kernel, pad in AUDIO_CONVS:
    height = (height + 2 * pad[0] - kernel[0] + 1) // 2
    width = (width + 2 * pad[1] - kernel[1] + 1) // 2
  return height, width


def minimum_audio_shape() -> tuple[int, int]:
  """The smallest (height, width) for which the conv stack leaves at least one position."""
  height = next(n for n in itertools.count(1) if audio_feature_shape(n, 1)[0] >= 1)
  width = next(n for n in itertools.count(1) if audio_feature_shape(1, n)[1] >= 1)
  return height, width


def scaled(features: int, width: float) -> int:
  return max(1, int(round(features * width)))


def with_functionals(features: jax.Array, inputs: dict[str, jax.Array]) -> jax.Array:
  """The pooled spectrogram features, and the utterance's functionals after them when the inputs hold some."""
  if 'functionals' not in inputs:
    return features
  return jnp.concatenate([features, inputs['functionals'].astype(features.dtype)], axis=-1)


class AudioConvStack(nn.Module):
  """Conv(k 12x16, pad 6x8) ReLU MaxPool2, Conv(8x12, 4x6) ReLU MaxPool2, Conv(5x7, 2x3) ReLU MaxPool2."""

  width: float = 1.0
  batchnorm: bool = False
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()  # how each conv and pool is computed (speed only)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    rows, cols = audio_feature_shape(*x.shape[1:3])
    if rows < 1 or cols < 1:
      raise ValueError(f'Audio input (height, width) {x.shape[1:3]} is too small for the conv stack (it leaves '
                       f'{rows}x{cols}); the minimum is {minimum_audio_shape()}.')
    if len(self.plan.audio) != len(AUDIO_CONVS):
      raise ValueError(f'The kernel plan names {len(self.plan.audio)} audio convs; the network has {len(AUDIO_CONVS)}.')
    for (channels, kernel, pad), impl in zip(AUDIO_CONVS, self.plan.audio):
      x = nn.Conv(scaled(channels, self.width), kernel, padding=((pad[0], pad[0]), (pad[1], pad[1])),
                  dtype=self.dtype, conv_general_dilated=kernels.conv_function(impl))(x)
      if self.batchnorm:
        x = nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM, dtype=self.dtype)(x)
      # floor mode, as PyTorch's MaxPool2d; pool then ReLU: the values of ReLU then pool, on a quarter of the elements
      x = nn.relu(kernels.max_pool(x, (2, 2), (2, 2), self.plan.pool))
    return x


class AudioCNN(nn.Module):
  """`cnn`: conv stack, flatten, FC -> 64 (the embedding), ReLU Dropout, FC -> classes.

  Every encoder's embedding is its FC 64 output before the ReLU (as the paper's
  video network ends): a post-ReLU embedding is half zeros and nearly constant
  across clips at initialisation, which collapsed contrastive pre-training.
  """

  num_classes: int
  width: float = 1.0
  batchnorm: bool = False
  dropout: float = 0.2
  embed_dim: int = 64
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()

  def setup(self):
    self.convs = AudioConvStack(width=self.width, batchnorm=self.batchnorm, dtype=self.dtype, plan=self.plan)
    self.fc = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def embed(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.convs(inputs['audio'].astype(self.dtype), train=train)
    return self.fc(with_functionals(x.reshape(x.shape[0], -1), inputs))

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.drop(nn.relu(self.embed(inputs, train=train)), deterministic=not train)
    return self.head(x).astype(jnp.float32)
