"""im2col convolutions: shifted views of the padded input for each kernel offset, then matmuls.

XLA's CPU dot runs near the machine's peak, and the backward pass of slices and
dots is again slices and dots, so autodiff gives a fast gradient too. Only the
trailing kernel axes are folded into the contraction (`fold`): materialising
every offset would multiply the input by prod(kernel) (192x for 12x16). A large
batch is cut into chunks run under `jax.checkpoint`, so only the input is kept
for the backward pass and each chunk's im2col is rebuilt there.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools
import itertools
import math
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

# Fold trailing kernel axes into the contraction while the im2col tensor stays at most
# this many times the input: 3x3x3 folds whole (27), 12x16 folds only the 16 (the faster choice on these layers).
MAX_FOLD_GROWTH = 32
# Above this many bytes of im2col the batch is processed in checkpointed chunks.
MAX_IM2COL_BYTES = 256 * 2**20


def default_fold(window: Sequence[int]) -> int:
  """The number of trailing kernel axes to fold, at most MAX_FOLD_GROWTH times the input."""
  fold = 0
  while fold < len(window) and math.prod(window[len(window) - fold - 1:]) <= MAX_FOLD_GROWTH:
    fold += 1
  return max(fold, 1)


def _strided_view(x: jax.Array, axes_start: Sequence[int], offsets: Sequence[int], sizes: Sequence[int],
                  strides: Sequence[int]) -> jax.Array:
  """x sliced on consecutive spatial axes from `axes_start`: offset o, `size` elements every `stride`."""
  start, limit, step = [0] * x.ndim, list(x.shape), [1] * x.ndim
  for axis, o, n, s in zip(range(axes_start, x.ndim), offsets, sizes, strides):
    start[axis], limit[axis], step[axis] = o, o + (n - 1) * s + 1, s
  return lax.slice(x, start, limit, step)


def conv_patches_padded(x: jax.Array, kernel: jax.Array, strides: Sequence[int], dilation: Sequence[int],
                        fold: int, precision: Any = None) -> jax.Array:
  """VALID convolution of an already padded channels-last x with kernel (*window, C_in, C_out).

  The last `fold` kernel axes are gathered into the channel axis (im2col);
  every offset of the leading kernel axes is then one dot_general, summed.
  """
  window = kernel.shape[:-2]
  rank = len(window)
  lead = rank - fold
  dilated = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
  out_spatial = [(n - w) // s + 1 for n, w, s in zip(x.shape[1:-1], dilated, strides)]
  if any(n <= 0 for n in out_spatial):
    raise ValueError(f'Kernel {tuple(window)} (dilation {tuple(dilation)}) does not fit the padded input '
                     f'{x.shape[1:-1]}.')
  views = [_strided_view(x, 1 + lead, [o * d for o, d in zip(offset, dilation[lead:])], out_spatial[lead:],
                         strides[lead:])
           for offset in itertools.product(*(range(k) for k in window[lead:]))]  # row-major, as reshape below
  slab = jnp.concatenate(views, axis=-1) if len(views) > 1 else views[0]
  kernel = kernel.reshape(*window[:lead], -1, kernel.shape[-1])
  y = None
  for offset in itertools.product(*(range(k) for k in window[:lead])):
    view = _strided_view(slab, 1, [o * d for o, d in zip(offset, dilation)], out_spatial[:lead], strides[:lead])
    term = lax.dot_general(view, kernel[offset], (((view.ndim - 1,), (0,)), ((), ())), precision=precision)
    y = term if y is None else y + term
  return y


def _num_chunks(batch: int, im2col_bytes: int) -> int:
  """The fewest batch chunks (a divisor of batch) that keep each chunk's im2col under MAX_IM2COL_BYTES."""
  needed = max(1, -(-im2col_bytes // MAX_IM2COL_BYTES))
  return next(n for n in range(min(needed, batch), batch + 1) if batch % n == 0)


def _patches_geometry(lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation, rhs_dilation,
                      dimension_numbers, feature_group_count: int, fold: int | None):
  """Checks `conv_patches`' arguments; returns (padded input, strides, dilation, fold, batch chunks)."""
  rank = lhs.ndim - 2
  spatial = 'DHW'[3 - rank:]
  channels_last = lax.conv_dimension_numbers(lhs.shape, rhs.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
  if dimension_numbers is not None and tuple(dimension_numbers) != tuple(channels_last):
    raise ValueError(f'conv_patches needs channels-last inputs and kernels; got {dimension_numbers}.')
  if any(d != 1 for d in (lhs_dilation or ())) or feature_group_count != 1:
    raise ValueError('conv_patches supports neither input dilation nor feature groups.')
  window = rhs.shape[:rank]
  fold = default_fold(window) if fold is None else fold
  if not 0 <= fold <= rank:
    raise ValueError(f'fold must be in [0, {rank}] for a {rank}-D kernel; got {fold}.')
  strides = tuple(window_strides or (1,) * rank)
  dilation = tuple(rhs_dilation or (1,) * rank)
  if isinstance(padding, str):
    dilated = [(k - 1) * d + 1 for k, d in zip(window, dilation)]
    padding = lax.padtype_to_pads(lhs.shape[1:-1], dilated, strides, padding)
  x = jnp.pad(lhs, [(0, 0), *padding, (0, 0)])
  lead = rank - fold
  out_trailing = [(n - (k - 1) * d - 1) // s + 1
                  for n, k, d, s in zip(x.shape[1 + lead:-1], window[lead:], dilation[lead:], strides[lead:])]
  im2col_bytes = (x.shape[0] * math.prod(x.shape[1:1 + lead]) * math.prod(out_trailing)
                  * math.prod(window[lead:]) * x.shape[-1] * x.dtype.itemsize)
  return x, strides, dilation, fold, _num_chunks(x.shape[0], im2col_bytes)


def conv_patches(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int] | None,
                 padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                 rhs_dilation: Sequence[int] | None = None,
                 dimension_numbers: lax.ConvDimensionNumbers | None = None,
                 feature_group_count: int = 1, precision: Any = None, *, fold: int | None = None) -> jax.Array:
  """`lax.conv_general_dilated` for channels-last inputs, as im2col + matmuls.

  Takes the arguments `nn.Conv` passes (input (N, *spatial, C_in), kernel
  (*window, C_in, C_out)); supports strides and kernel dilation, not input
  dilation or feature groups.

  Args:
    fold: how many trailing kernel axes to gather into the contraction
      (None: `default_fold`; 0: one matmul per kernel offset, no im2col; len(window): a single matmul).

  Returns:
    (N, *out_spatial, C_out), equal to `lax.conv_general_dilated` up to float rounding.
  """
  x, strides, dilation, fold, chunks = _patches_geometry(lhs, rhs, window_strides, padding, lhs_dilation,
                                                         rhs_dilation, dimension_numbers, feature_group_count, fold)
  conv = functools.partial(conv_patches_padded, strides=strides, dilation=dilation, fold=fold, precision=precision)
  if chunks == 1:
    return conv(x, rhs)
  chunk = jax.checkpoint(lambda xc: conv(xc, rhs))
  y = lax.map(chunk, x.reshape(chunks, -1, *x.shape[1:]))
  return y.reshape(-1, *y.shape[2:])


def patches_kernel_gradient_padded(x: jax.Array, dy: jax.Array, window: Sequence[int], strides: Sequence[int],
                                   dilation: Sequence[int], fold: int, precision: Any = None) -> jax.Array:
  """The kernel gradient (*window, C_in, C_out) of `conv_patches_padded`, given its output cotangent dy.

  The same im2col slab as the forward pass, contracted with dy over every
  position: one (C_out, M) x (M, fold's offsets * C_in) matmul per offset of the
  leading kernel axes. dy is transposed once, so that each matmul is a plain
  row-major product (XLA's CPU dot is slower contracting both operands over their
  leading axis, which autodiff of the forward pass gives).
  """
  rank = len(window)
  lead = rank - fold
  out_spatial = dy.shape[1:-1]
  views = [_strided_view(x, 1 + lead, [o * d for o, d in zip(offset, dilation[lead:])], out_spatial[lead:],
                         strides[lead:])
           for offset in itertools.product(*(range(k) for k in window[lead:]))]
  slab = jnp.concatenate(views, axis=-1) if len(views) > 1 else views[0]
  dy_t = dy.reshape(-1, dy.shape[-1]).T
  grads = []
  for offset in itertools.product(*(range(k) for k in window[:lead])):
    view = _strided_view(slab, 1, [o * d for o, d in zip(offset, dilation)], out_spatial[:lead], strides[:lead])
    grads.append(lax.dot(dy_t, view.reshape(-1, view.shape[-1]), precision=precision))
  grad = jnp.stack(grads).reshape(*window[:lead], dy.shape[-1], *window[lead:], x.shape[-1])
  return jnp.moveaxis(grad, lead, -1)


def patches_kernel_gradient(lhs: jax.Array, rhs: jax.Array, dy: jax.Array, window_strides: Sequence[int] | None,
                            padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                            rhs_dilation: Sequence[int] | None = None,
                            dimension_numbers: lax.ConvDimensionNumbers | None = None, feature_group_count: int = 1,
                            precision: Any = None, *, fold: int | None = None) -> jax.Array:
  """The gradient with respect to rhs of `conv_patches(lhs, rhs, ...)` for the output cotangent dy, written out
  (`patches_kernel_gradient_padded`) rather than by autodiff; a large batch is summed over in chunks."""
  x, strides, dilation, fold, chunks = _patches_geometry(lhs, rhs, window_strides, padding, lhs_dilation,
                                                         rhs_dilation, dimension_numbers, feature_group_count, fold)
  grad = functools.partial(patches_kernel_gradient_padded, window=rhs.shape[:-2], strides=strides,
                           dilation=dilation, fold=fold, precision=precision)
  if chunks == 1:
    return grad(x, dy).astype(rhs.dtype)
  total, _ = lax.scan(lambda total, chunk: (total + grad(*chunk), None), jnp.zeros(rhs.shape, jnp.promote_types(dy.dtype, jnp.float32)),
                      (x.reshape(chunks, -1, *x.shape[1:]), dy.reshape(chunks, -1, *dy.shape[1:])))
  return total.astype(rhs.dtype)
