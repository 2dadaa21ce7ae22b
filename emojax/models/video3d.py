"""`video3d`: the paper's 3D CNN over face frames (T, H, W, 3)."""
from __future__ import annotations

import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emojax import kernels
from emojax.models.cnn import BATCHNORM_MOMENTUM, scaled

VIDEO_CHANNELS = (16, 32, 64, 128)
POOL_WINDOW, POOL_STRIDES = (1, 3, 3), (1, 2, 2)


def video_feature_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
  """(T, H, W) after the four VALID 3x3x3 convs and the three (1,3,3)/(1,2,2) pools."""
  shape = [frames, height, width]
  for i in range(len(VIDEO_CHANNELS)):
    shape = [s - 2 for s in shape]
    if i < 3:
      shape = [(s - w) // st + 1 if s >= w else 0 for s, w, st in zip(shape, POOL_WINDOW, POOL_STRIDES)]
  return tuple(shape)


def minimum_video_shape() -> tuple[int, int, int]:
  """The smallest (frames, height, width) for which the 3D CNN leaves at least one position."""
  def fits(axis: int, size: int) -> bool:  # the other axes are large enough not to matter
    shape = [size if a == axis else 64 for a in range(3)]
    return video_feature_shape(*shape)[axis] >= 1
  return tuple(next(n for n in itertools.count(1) if fits(axis, n)) for axis in range(3))


class Video3D(nn.Module):
  """Conv3d 3->16->32->64->128 (k 3, VALID) ReLU, MaxPool3d (1,3,3)/(1,2,2) after the first three;
  flatten -> FC 256 ReLU Dropout -> FC 64 (the embedding); the classifier adds ReLU Dropout FC classes."""

  num_classes: int
  width: float = 1.0
  batchnorm: bool = False
  dropout: float = 0.2
  embed_dim: int = 64
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()  # how each conv and pool is computed (speed only)

  def setup(self):
    if len(self.plan.video) != len(VIDEO_CHANNELS):
      raise ValueError(f'The kernel plan names {len(self.plan.video)} video convs; the network has '
                       f'{len(VIDEO_CHANNELS)}.')
    self.convs = [nn.Conv(scaled(c, self.width), (3, 3, 3), padding='VALID', dtype=self.dtype,
                          conv_general_dilated=kernels.conv_function(impl))
                  for c, impl in zip(VIDEO_CHANNELS, self.plan.video)]
    self.norms = [nn.BatchNorm(momentum=BATCHNORM_MOMENTUM, dtype=self.dtype) for _ in VIDEO_CHANNELS] if self.batchnorm else None
    self.fc = nn.Dense(scaled(256, self.width), dtype=self.dtype)
    self.fc_embed = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def embed(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = inputs['video'].astype(self.dtype)
    out = video_feature_shape(*x.shape[1:4])
    if min(out) < 1:
      raise ValueError(f'Video input (frames, height, width) {x.shape[1:4]} is too small for the 3D CNN '
                       f'(it leaves {out}); the minimum is {minimum_video_shape()}.')
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if self.norms:
        x = self.norms[i](x, use_running_average=not train)
      if i < 3:  # max-pool then ReLU: the same values as ReLU then pool, on a quarter of the elements
        x = kernels.max_pool(x, POOL_WINDOW, POOL_STRIDES, self.plan.pool)
      x = nn.relu(x)
    x = nn.relu(self.fc(x.reshape(x.shape[0], -1)))
    return self.fc_embed(self.drop(x, deterministic=not train))

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.drop(nn.relu(self.embed(inputs, train=train)), deterministic=not train)
    return self.head(x).astype(jnp.float32)
