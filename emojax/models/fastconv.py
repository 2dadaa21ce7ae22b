"""Faster CPU formulations of the paper's convolutions and max-pools, drop-ins for Flax's.

Ways to compute a convolution, chosen per layer (`conv_impl`):
- 'xla': `lax.conv_general_dilated`. Fast on CPU for the forward and input
  gradient of small kernels, but its kernel gradient is 20-40x slower than the
  forward for the large audio kernels (12x16, 8x12).
- 'fft': the convolution theorem (`conv_fft`): FFT, one complex channel
  contraction per frequency, inverse FFT. Its cost does not grow with the
  kernel, so it is the fastest for the large audio kernels (measured: forward
  and backward of the 12x16 and 8x12 layers 15-20x faster than 'xla').
- 'fold2d': a 3D convolution as ONE 2D `lax.conv` (`conv_fold2d`): the time
  offsets of the kernel are gathered into the channels (3x the input), time
  joins the batch. XLA's CPU 2D convolution (YNNPACK) is much faster than its
  3D one; measured 1.4-2x faster than 'fft' and 'patches' on the first three
  video layers (batch 8, one core; its kernel gradient is split off, below).
- 'patches': im2col + matmuls (`conv_patches`, below); 'patches:<fold>' fixes its fold.
- 'native': direct C++ kernels through the XLA FFI (`native_conv`), CPU only,
  built on first use. On the video layers at batch 64 on two cores they ran the
  forward and kernel gradient at 80-200 GFLOP/s; the video network's training
  step went 1.9x faster than with the best of the formulations above.
- 'A+B' (`conv_split`): output and input gradient by A, kernel gradient by B.
  XLA's CPU kernel gradient of fold2d is its slow part (8-20 GFLOP/s at batch 64),
  im2col + one matmul computes it 2-6x faster: 'fold2d+patches'. A 'patches' B
  is written out (`patches_kernel_gradient`), 1.2-1.6x faster than its autodiff.
'fast' picks, per layer, the one each model measured fastest on CPU (with an
XLA-only plan where 'native' cannot be built), and 'xla' on GPU and TPU, where
XLA calls the vendor's convolutions (`layer_impls`).

Max-pooling (`max_pool`): 'slices' is a max over strided slices, one window
axis at a time: its gradient is element-wise selects and pads, where
`nn.max_pool`'s is XLA's select-and-scatter, measured 2.6-23x slower on CPU.
'native' is a C++ kernel (`native_conv.max_pool`), whose gradient pass over the
first video layer's output measured 1.9x faster than the slices'. 'fast' is
'native' where the native kernels run (a CPU, one device, a C++ compiler), else 'slices'.

im2col ('patches'): a convolution is written as the shifted views of the
padded input for each kernel offset, concatenated on the channel axis - and
matrix products, which XLA's CPU dot runs near the machine's peak. The
backward pass of slices and dots is again slices and dots, so autodiff gives a
fast gradient too (a hand-written VJP - input gradient as a correlation with
the flipped kernel, kernel gradient as a transposed dot - measured 1.1-3x
SLOWER than autodiff on every paper layer, so there is none).

Materialising every offset multiplies the input's size by prod(kernel): 192x
for the 12x16 audio kernel, gigabytes at batch 64, and memory traffic then
dominates. So only the trailing kernel axes are folded into the contraction
(`fold`), and the remaining offsets are one matmul each, summed. Autodiff keeps
each matmul's operand for the backward pass (18 GB for the first audio layer
at batch 64), so a large batch is cut into chunks run one after another under
`jax.checkpoint`: only the input is kept and each chunk's im2col is rebuilt in
the backward pass (1.6 GB).

`Conv(...)` returns an ordinary `nn.Conv` whose convolution primitive is
swapped: parameter names, shapes, initialisation and checkpoints are exactly
those of `nn.Conv`, so `impl` is a pure speed switch; likewise `max_pool`
returns exactly what `nn.max_pool` does (gradients included, tested).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
import itertools
import math
from typing import Any

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

from emojax.models import native_conv

IMPLS = ('xla', 'patches', 'fft', 'fold2d', 'native')
POOL_IMPLS = ('xla', 'slices', 'native', 'fast')
# Fold trailing kernel axes into the contraction while the im2col tensor stays at most
# this many times the input: 3x3x3 folds whole (27), 12x16 folds only the 16 (measured best).
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
  row-major product: XLA's CPU dot contracting both operands over their leading
  (position) axis, which autodiff of the forward pass gives, measured 1.3-1.7x slower.
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


def _fft_size(n: int) -> int:
  """The smallest 5-smooth size >= n (the FFT is slow for sizes with large prime factors, e.g. 316 = 4 * 79)."""
  def smooth(m: int) -> bool:
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    return m == 1
  return next(m for m in itertools.count(n) if smooth(m))


def _check_unstrided_channels_last(name: str, lhs: jax.Array, rhs: jax.Array, window_strides, lhs_dilation,
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


def conv_fft(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int] | None,
             padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
             rhs_dilation: Sequence[int] | None = None, dimension_numbers: lax.ConvDimensionNumbers | None = None,
             feature_group_count: int = 1, precision: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` for channels-last inputs, by the convolution theorem.

  A convolution (a cross-correlation, as in deep learning) is a product per
  frequency: y = irfft(rfft(x) * conj(rfft(w))), cropped to the VALID outputs.
  The transform spans the padded input, so nothing wraps around. Takes the
  arguments `nn.Conv` passes; supports neither strides, dilation nor feature
  groups (the paper's convolutions have none). Computes in float32 at least
  (there is no bfloat16 FFT) and returns the input's dtype.
  """
  del precision  # the FFT has no precision knob; float32 throughout
  rank = lhs.ndim - 2
  _check_unstrided_channels_last('conv_fft', lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
                                 dimension_numbers, feature_group_count)
  window = rhs.shape[:rank]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:-1], window, (1,) * rank, padding)
  dtype = lhs.dtype
  compute = jnp.promote_types(dtype, jnp.float32)
  x = jnp.pad(lhs.astype(compute), [(0, 0), *padding, (0, 0)])
  out = [n - k + 1 for n, k in zip(x.shape[1:-1], window)]
  if any(n <= 0 for n in out):
    raise ValueError(f'Kernel {tuple(window)} does not fit the padded input {x.shape[1:-1]}.')
  size = [_fft_size(n) for n in x.shape[1:-1]]
  axes = tuple(range(1, rank + 1))
  x_f = jnp.fft.rfftn(x, s=size, axes=axes)
  w_f = jnp.conj(jnp.fft.rfftn(rhs.astype(compute), s=size, axes=tuple(range(rank))))
  if x.shape[-1] <= 4:  # few input channels (the first layers): a broadcast sum beats a skinny dot
    y_f = sum(x_f[..., i, None] * w_f[..., i, :] for i in range(x.shape[-1]))
  else:
    y_f = jnp.einsum('n...i,...io->n...o', x_f, w_f)
  y = jnp.fft.irfftn(y_f, s=size, axes=axes)
  return y[(slice(None), *(slice(0, n) for n in out))].astype(dtype)


def conv_fold2d(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int] | None,
                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, dimension_numbers: lax.ConvDimensionNumbers | None = None,
                feature_group_count: int = 1, precision: Any = None) -> jax.Array:
  """A channels-last 3D convolution as one 2D `lax.conv`: time offsets into channels, time into batch.

  y[:, t] = sum_dt conv2d(x[:, t + dt], w[dt]) = conv2d(concat_dt x[:, t + dt], w stacked on
  input channels). The 2D convolution runs 'SAME'-padded and is cropped to the
  VALID outputs: XLA's CPU convolution measured up to 4x faster padded than
  unpadded on these shapes. Takes the arguments `nn.Conv` passes; no strides,
  dilation or feature groups.
  """
  rank = lhs.ndim - 2
  if rank != 3:
    raise ValueError(f'conv_fold2d folds a 3D convolution; got a {rank}D one.')
  _check_unstrided_channels_last('conv_fold2d', lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
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


def conv_native(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int] | None,
                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, dimension_numbers: lax.ConvDimensionNumbers | None = None,
                feature_group_count: int = 1, precision: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` for a channels-last 2D or 3D convolution, by the native C++ kernels
  (`native_conv.conv_valid`; CPU only).

  Takes the arguments `nn.Conv` passes; any padding; no strides, dilation or
  feature groups. Computes in float32 (`precision` has no effect) and returns the input's dtype.
  """
  del precision  # float32 throughout
  rank = lhs.ndim - 2
  if rank not in (2, 3):
    raise ValueError(f'conv_native computes 2D and 3D convolutions; got a {rank}D one.')
  _check_unstrided_channels_last('conv_native', lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
                                 dimension_numbers, feature_group_count)
  window = rhs.shape[:rank]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:-1], window, (1,) * rank, padding)
  x = jnp.pad(lhs, [(0, 0), *padding, (0, 0)])
  if any(n < k for n, k in zip(x.shape[1:-1], window)):
    raise ValueError(f'Kernel {tuple(window)} does not fit the padded input {x.shape[1:-1]}.')
  return native_conv.conv_valid(x, rhs).astype(lhs.dtype)


def _native_runs_here() -> bool:
  """Whether 'fast' may use the native kernels: a CPU backend with one device (XLA cannot partition
  their custom calls over a batch sharded across devices: it would gather their inputs onto every
  device) and a C++ compiler to build them (`native_conv.available()`)."""
  return jax.default_backend() == 'cpu' and jax.device_count() == 1 and native_conv.available()


def layer_impls(conv_impl: str, fast: Sequence[str], without_native: Sequence[str] | None = None) -> tuple[str, ...]:
  """One convolution impl per layer: for 'fast', the model's plan `fast` (measured on CPU) on a CPU and
  'xla' on a GPU or TPU (cuDNN's and the TPU's own convolutions); else `conv_impl` for all.

  A `fast` plan that names 'native' falls back to `without_native` where the
  native kernels do not run (`_native_runs_here`: no C++ compiler, or a mesh of several CPU devices).
  """
  if conv_impl == 'fast':
    if jax.default_backend() != 'cpu':
      return ('xla',) * len(fast)
    if without_native is not None and any('native' in impl for impl in fast) and not _native_runs_here():
      return tuple(without_native)
    return tuple(fast)
  try:
    conv_function(conv_impl)  # a clear error for an unknown impl, before any layer is built
  except ValueError as error:
    raise ValueError(f"conv_impl must be 'fast' or a convolution impl. {error}") from None
  return (conv_impl,) * len(fast)


def _window_max(x: jax.Array, axis: int, window: int, stride: int) -> jax.Array:
  """Max over `window` consecutive elements every `stride` on one axis (VALID), as strided slices."""
  count = (x.shape[axis] - window) // stride + 1
  y = None
  for offset in range(window):
    view = lax.slice_in_dim(x, offset, offset + (count - 1) * stride + 1, stride, axis)
    y = view if y is None else jnp.maximum(y, view)
  return y


def pool_impl_here(impl: str) -> str:
  """The max-pool impl that `impl` means on this backend: 'fast' is 'native' on one CPU device where the
  native kernels can be built, else 'slices'; any other impl is itself."""
  if impl not in POOL_IMPLS:
    raise ValueError(f'Unknown max-pool impl {impl!r}; expected one of {POOL_IMPLS}.')
  if impl != 'fast':
    return impl
  return 'native' if _native_runs_here() else 'slices'


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int], impl: str = 'fast') -> jax.Array:
  """`nn.max_pool(x, window, strides)` (VALID, channels last): 'xla' calls it, 'slices' is separable,
  'native' runs the C++ kernel, 'fast' picks (`pool_impl_here`).

  A max over a box is the max over each axis in turn, so 'slices' takes one
  axis at a time; ties (measure zero after a ReLU, except exact zeros whose
  ReLU gradient is zero anyway) share the gradient instead of giving it to one.
  'native' and 'xla' give a tie's gradient to the first maximum.
  """
  impl = pool_impl_here(impl)
  if impl == 'xla':
    return nn.max_pool(x, tuple(window), strides=tuple(strides))
  if impl == 'native':
    return native_conv.max_pool(x, window, strides)
  for axis, (w, s) in enumerate(zip(window, strides), start=1):
    if (w, s) != (1, 1):
      x = _window_max(x, axis, w, s)
  return x


def autodiff_kernel_gradient(conv: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """The kernel gradient of the convolution `conv` by autodiff, as a function (lhs, rhs, dy, *conv args)."""
  def kernel_gradient(lhs: jax.Array, rhs: jax.Array, dy: jax.Array, *args, **kwargs) -> jax.Array:
    # The vjp's unused primal output is dead code that XLA removes.
    return jax.vjp(lambda w: conv(lhs, w, *args, **kwargs), rhs)[1](dy)[0]
  return kernel_gradient


def conv_split(forward: Callable[..., jax.Array], kernel_gradient: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """A convolution whose output and input gradient are `forward`'s and whose kernel gradient is `kernel_gradient`'s.

  `forward` takes `lax.conv_general_dilated`'s arguments; `kernel_gradient` takes
  (lhs, rhs, dy, *the same arguments) and returns the gradient with respect to rhs
  of the same convolution for the output cotangent dy (`patches_kernel_gradient`,
  or `autodiff_kernel_gradient(conv)` for any other). Only the speed differs.
  XLA's CPU kernel gradient of the folded 2D convolution runs at 8-20 GFLOP/s on
  the video layers, where im2col + one matmul reaches 30-60.
  """
  def conv(lhs: jax.Array, rhs: jax.Array, *args, **kwargs) -> jax.Array:
    def output(x, w):
      return forward(x, w, *args, **kwargs)

    @jax.custom_vjp
    def split(x, w):
      return output(x, w)

    def split_fwd(x, w):
      return output(x, w), (x, w)

    def split_bwd(residuals, dy):
      x, w = residuals
      # The input gradient of a first layer (its input is data) is dead code that XLA removes.
      dx = jax.vjp(lambda x: output(x, w), x)[1](dy)[0]
      return dx, kernel_gradient(x, w, dy, *args, **kwargs)

    split.defvjp(split_fwd, split_bwd)
    return split(lhs, rhs)

  return conv


def _parse_impl(impl: str) -> tuple[str, int | None]:
  name, _, fold = impl.partition(':')
  if name not in IMPLS or (fold and (name != 'patches' or not fold.isdigit())):
    raise ValueError(f"Unknown convolution impl {impl!r}; expected one of {IMPLS}, 'patches:<fold>' "
                     "or '<impl>+<impl>' (output and input gradient + kernel gradient).")
  return name, int(fold) if fold else None


def _single_conv_function(impl: str) -> Callable[..., jax.Array]:
  name, fold = _parse_impl(impl)
  return {'xla': lax.conv_general_dilated, 'patches': functools.partial(conv_patches, fold=fold),
          'fft': conv_fft, 'fold2d': conv_fold2d, 'native': conv_native}[name]


def _kernel_gradient_function(impl: str) -> Callable[..., jax.Array]:
  name, fold = _parse_impl(impl)
  if name == 'patches':
    return functools.partial(patches_kernel_gradient, fold=fold)
  return autodiff_kernel_gradient(_single_conv_function(impl))


def conv_function(impl: str) -> Callable[..., jax.Array]:
  """The convolution of `impl`, with `lax.conv_general_dilated`'s signature (what `nn.Conv` calls).

  `impl` is one of IMPLS; 'patches:<fold>' fixes the fold of `conv_patches`; 'A+B'
  computes the output and input gradient by A and the kernel gradient by B
  (`conv_split`; a 'patches' B by `patches_kernel_gradient`, written out, any other by autodiff).
  """
  parts = impl.split('+')
  if len(parts) > 2:
    raise ValueError(f'A convolution impl names at most two parts (output + kernel gradient); got {impl!r}.')
  if len(parts) == 1:
    return _single_conv_function(impl)
  return conv_split(_single_conv_function(parts[0]), _kernel_gradient_function(parts[1]))


def Conv(features: int, kernel_size: int | Sequence[int], padding: Any = 'SAME', *, impl: str = 'xla',
         **kwargs) -> nn.Conv:  # pylint: disable=invalid-name
  """An `nn.Conv` (2D NHWC or 3D NDHWC) computed by `impl`.

  Args:
    features: output channels.
    kernel_size: window shape, e.g. (12, 16) or (3, 3, 3).
    padding: as for `nn.Conv` ('SAME', 'VALID', an int, or (low, high) pairs).
    impl: 'xla' (lax.conv_general_dilated), 'patches' (`conv_patches`; 'patches:<fold>' sets its
      fold), 'fft' (`conv_fft`) or 'fold2d' (`conv_fold2d`, 3D kernels only); or 'A+B': output and
      input gradient by A, kernel gradient by B (`conv_split`).
    **kwargs: any other `nn.Conv` field (use_bias, dtype, kernel_init, name, ...).

  Returns:
    The module; its parameters ('kernel' (*kernel_size, C_in, features), 'bias')
    and auto-generated name ('Conv_<i>') are those of `nn.Conv`.
  """
  return nn.Conv(features, kernel_size, padding=padding, conv_general_dilated=conv_function(impl), **kwargs)
