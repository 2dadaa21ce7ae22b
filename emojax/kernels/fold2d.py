"""A 3D convolution as one 2D `lax.conv` (time offsets into channels, time into the batch):
XLA's CPU 2D convolution is much faster than its 3D one."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from emojax.kernels.layout import check_unstrided_channels_last


def conv_fold2d(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int] | None,
                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, dimension_numbers: lax.ConvDimensionNumbers | None = None,
                feature_group_count: int = 1, precision: Any = None) -> jax.Array:
  """A channels-last 3D convolution as one 2D `lax.conv`: time offsets into channels, time into batch.

  y[:, t] = sum_dt conv2d(x[:, t + dt], w[dt]) = conv2d(concat_dt x[:, t + dt], w stacked on
  input channels). The 2D convolution runs 'SAME'-padded and is cropped to the
  VALID outputs: XLA's CPU convolution is faster padded than unpadded on these
  shapes. Takes the arguments `nn.Conv` passes; no strides,
  dilation or feature groups.
  """
  rank = lhs.ndim - 2
  if rank != 3:
    raise ValueError(f'conv_fold2d folds a 3D convolution; got a {rank}D one.')
  check_unstrided_channels_last('conv_fold2d', lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
                                 dimension_numbers, feature_group_count)
  window = rhs.shape[:3]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:-1], window, (1, 1, 1), padding)
  x = jnp.pad(lhs, [(0, 0), *padding, (0, 0)])
  batch, frames, height, width, channels = x.shape
  out = [n - k + 1 for n, k in zip(x.shape[1:-1], window)]
  if any(n <= 0 for n in out):
    raise ValueError(f'Kernel {tuple(window)} does not fit the padded input {x.shape[1:-1]}.')
  stacked = jnp.concatenate([x[:, dt:dt + out[0]] for dt in range(window[0])], axis=-1)
  stacked = stacked.reshape(batch * out[0], height, width, window[0] * channels)
  kernel = jnp.moveaxis(rhs, 0, 2).reshape(*window[1:], window[0] * channels, rhs.shape[-1])
  same = [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in window[1:]]
  y = lax.conv_general_dilated(stacked, kernel, (1, 1), same, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                               precision=precision)
  y = y[:, same[0][0]:same[0][0] + out[1], same[1][0]:same[1][0] + out[2]]
  return y.reshape(batch, out[0], *y.shape[1:])
