"""Convolution by the convolution theorem: its cost does not grow with the kernel (the large audio kernels)."""
from __future__ import annotations

from collections.abc import Sequence
import itertools
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from emojax.kernels.layout import check_unstrided_channels_last

FFT_CHUNK = 16  # examples transformed together where the input has few channels


def _fft_size(n: int) -> int:
  """The smallest 5-smooth size >= n (the FFT is slow for sizes with large prime factors, e.g. 316 = 4 * 79)."""
  def smooth(m: int) -> bool:
    for p in (2, 3, 5):
      while m % p == 0:
        m //= p
    return m == 1
  return next(m for m in itertools.count(n) if smooth(m))


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
  check_unstrided_channels_last('conv_fft', lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
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
  w_f = jnp.conj(jnp.fft.rfftn(rhs.astype(compute), s=size, axes=tuple(range(rank))))

  def transform(x):  # a batch
    x_f = jnp.fft.rfftn(x, s=size, axes=axes)
    if x.shape[-1] <= 4:  # few input channels (the first layers): a broadcast sum beats a skinny dot
      y_f = sum(x_f[..., i, None] * w_f[..., i, :] for i in range(x.shape[-1]))
    else:
      y_f = jnp.einsum('n...i,...io->n...o', x_f, w_f)
    return jnp.fft.irfftn(y_f, s=size, axes=axes)[(slice(None), *(slice(0, n) for n in out))]

  # With few input channels (the first layers) the products and their inverse transforms are several times
  # the size of the input's transform, which the backward pass keeps: transformed a chunk of the batch at a
  # time they stay small (the paper's first audio layer: XLA's step buffers 1138 -> 536 MB at batch 64).
  # XLA's CPU FFT runs on one thread, so chunks cost no parallelism; with more channels they saved nothing.
  whole = x.shape[0] - x.shape[0] % FFT_CHUNK
  if x.shape[-1] > 4 or whole <= FFT_CHUNK:
    y = transform(x)
  else:
    chunks = x[:whole].reshape(whole // FFT_CHUNK, FFT_CHUNK, *x.shape[1:])
    y = lax.map(transform, chunks).reshape(whole, *out, rhs.shape[-1])
    if whole < x.shape[0]:
      y = jnp.concatenate([y, transform(x[whole:])])
  return y.astype(dtype)
