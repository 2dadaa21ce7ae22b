"""Max-pools that return exactly what `nn.max_pool` does (VALID, channels last), gradients included."""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from emojax.kernels import native

POOL_IMPLS = ('xla', 'slices', 'native')


def _window_max(x: jax.Array, axis: int, window: int, stride: int) -> jax.Array:
  """Max over `window` consecutive elements every `stride` on one axis (VALID), as strided slices."""
  count = (x.shape[axis] - window) // stride + 1
  y = None
  for offset in range(window):
    view = lax.slice_in_dim(x, offset, offset + (count - 1) * stride + 1, stride, axis)
    y = view if y is None else jnp.maximum(y, view)
  return y


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int], impl: str = 'xla') -> jax.Array:
  """`nn.max_pool(x, window, strides)` (VALID, channels last): 'xla' calls it, 'slices' is separable,
  'native' runs the C++ kernel (CPU only).

  A max over a box is the max over each axis in turn, so 'slices' takes one
  axis at a time; ties (measure zero after a ReLU, except exact zeros whose
  ReLU gradient is zero anyway) share the gradient instead of giving it to one.
  'native' and 'xla' give a tie's gradient to the first maximum.
  """
  if impl not in POOL_IMPLS:
    raise ValueError(f'Unknown max-pool impl {impl!r}; expected one of {POOL_IMPLS}.')
  if impl == 'xla':
    return nn.max_pool(x, tuple(window), strides=tuple(strides))
  if impl == 'native':
    return native.max_pool(x, window, strides)
  for axis, (w, s) in enumerate(zip(window, strides), start=1):
    if (w, s) != (1, 1):
      x = _window_max(x, axis, w, s)
  return x
