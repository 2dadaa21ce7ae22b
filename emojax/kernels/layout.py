"""The argument checks shared by the convolutions that take `lax.conv_general_dilated`'s arguments."""
from __future__ import annotations

import jax
from jax import lax


def check_unstrided_channels_last(name: str, lhs: jax.Array, rhs: jax.Array, window_strides, lhs_dilation,
                                   rhs_dilation, dimension_numbers, feature_group_count: int) -> None:
  """The checks of the convolutions that take `lax.conv_general_dilated`'s arguments but support only
  channels-last layouts without strides, dilation or feature groups."""
  spatial = 'DHW'[5 - lhs.ndim:]
  channels_last = lax.conv_dimension_numbers(lhs.shape, rhs.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  if dimension_numbers is not None and tuple(dimension_numbers) != tuple(channels_last):
    raise ValueError(f'{name} needs channels-last inputs and kernels; got {dimension_numbers}.')
  if (any(s != 1 for s in (window_strides or ())) or any(d != 1 for d in (lhs_dilation or ()))
      or any(d != 1 for d in (rhs_dilation or ())) or feature_group_count != 1):
    raise ValueError(f'{name} supports neither strides, dilation nor feature groups.')
