"""Direct C++ kernels on CPU (`native_conv.cc`) for 2D/3D convolutions and max-pools, through the XLA FFI:
the 'native' convolution and max-pool impls.

XLA's CPU backend has no fast 3D convolution, and the pip jaxlib does not
rewrite convolutions to oneDNN. The kernels read the input in place with
register-tiled loops. The input gradient is the forward kernel over the output
gradient with the flipped kernel, skipping the zero padding. The max-pool gives
its gradient to each window's first maximum.

The library is compiled on first use with the system's C++ compiler for this
machine (`-march=native`) and cached under $EMOJAX_CACHE (default
~/.cache/emojax), keyed by the source, the flags, the compiler, jaxlib and the
CPU: a few seconds once per machine. Where there is no compiler, `available()`
is False and the models' 'fast' plans use their XLA-only formulations.
"""
from __future__ import annotations

from collections.abc import Sequence
import ctypes
import functools
import hashlib
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from emojax import host
from emojax.kernels.layout import check_unstrided_channels_last

SOURCE = Path(__file__).with_name('native_conv.cc')
FLAGS = ('-O3', '-march=native', '-std=c++17', '-shared', '-fPIC', '-w')
TARGETS = {'conv3d_forward': 'EmojaxConv3dForward', 'conv3d_kernel_grad': 'EmojaxConv3dKernelGrad',
           'max_pool_forward': 'EmojaxMaxPoolForward', 'max_pool_backward': 'EmojaxMaxPoolBackward'}
LANES = 16  # channel counts are zero-padded to a multiple of it (one AVX-512 vector, two AVX2 ones)


class NativeUnavailable(RuntimeError):
  """The native kernels cannot be built or loaded here (no C++ compiler, or it failed)."""


def _compiler() -> str:
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++') or shutil.which('clang++')
  if not compiler:
    raise NativeUnavailable('No C++ compiler found (set CXX, or install g++) to build the native convolutions.')
  return compiler


def _cpu_id() -> str:
  """The CPU model and instruction-set flags: a library built with -march=native only runs on CPUs like it."""
  cpu = host.cpu_fields()
  return f"{cpu['model name']}\n{cpu.get('flags', '')}"


def cache_dir() -> Path:
  return Path(os.environ.get('EMOJAX_CACHE') or Path.home() / '.cache' / 'emojax') / 'native'


def build() -> Path:
  """The compiled library for this machine, built now if not already in `cache_dir()`."""
  compiler = _compiler()
  try:
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError) as error:
    raise NativeUnavailable(f'The C++ compiler {compiler!r} does not run: {error}') from None
  key = hashlib.sha256('\0'.join([SOURCE.read_text(), ' '.join(FLAGS), version, jax.ffi.include_dir(),
                                  jax.__version__, _cpu_id()]).encode()).hexdigest()[:16]
  library = cache_dir() / f'native_conv-{key}.so'
  if library.exists():
    return library
  library.parent.mkdir(parents=True, exist_ok=True)
  print(f'Building the native convolution kernels for this machine (once, a few seconds): {library}',
        file=sys.stderr)
  with tempfile.TemporaryDirectory(dir=library.parent) as tmp:  # then an atomic rename: concurrent builds are safe
    built = Path(tmp) / library.name
    result = subprocess.run([compiler, *FLAGS, f'-I{jax.ffi.include_dir()}', str(SOURCE), '-o', str(built)],
                            capture_output=True, text=True)
    if result.returncode != 0:
      raise NativeUnavailable(f'Building {SOURCE.name} with {compiler} failed:\n{result.stderr[-4000:]}')
    os.replace(built, library)
  return library


@functools.cache
def _register() -> None:
  library = ctypes.cdll.LoadLibrary(str(build()))
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(f'emojax_{name}', jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')


def require() -> None:
  """Builds and registers the kernels, or raises NativeUnavailable saying why they cannot be."""
  if not available():
    _register()  # available() swallowed the error; this raises it


@functools.cache
def available() -> bool:
  """Whether the native kernels are built and registered (they run on the CPU backend only)."""
  try:
    _register()
  except (NativeUnavailable, OSError) as error:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f'Native convolution kernels unavailable ({reason}); the XLA convolutions run instead, slower on a CPU '
          '(emojax.kernels.native.require() raises the full reason).', file=sys.stderr)
    return False
  return True


def _pad_channels(x: jax.Array, axis: int) -> jax.Array:
  extra = -x.shape[axis] % LANES
  return x if extra == 0 else jnp.pad(x, [(0, extra if a == axis % x.ndim else 0) for a in range(x.ndim)])


def _forward(x: jax.Array, kernel: jax.Array, pad_t: tuple[int, int] = (0, 0),
             pad_h: tuple[int, int] = (0, 0)) -> jax.Array:
  """VALID stride-1 3D convolution, NDHWC x DHWIO, float32, of x with `pad_t`/`pad_h` zero rows around it in
  time and height (the kernels skip them rather than read them)."""
  out_channels = kernel.shape[-1]
  kernel = _pad_channels(kernel, -1)
  sizes = (x.shape[1] + sum(pad_t), x.shape[2] + sum(pad_h), x.shape[3])
  shape = (x.shape[0], *(n - k + 1 for n, k in zip(sizes, kernel.shape[:3])), kernel.shape[-1])
  y = jax.ffi.ffi_call('emojax_conv3d_forward', jax.ShapeDtypeStruct(shape, jnp.float32))(
      x, kernel, pad_t_low=np.int64(pad_t[0]), pad_t_high=np.int64(pad_t[1]), pad_h_low=np.int64(pad_h[0]),
      pad_h_high=np.int64(pad_h[1]))
  return y[..., :out_channels]


def _kernel_gradient(x: jax.Array, dy: jax.Array, window: Sequence[int]) -> jax.Array:
  out_channels = dy.shape[-1]
  dy = _pad_channels(dy, -1)
  shape = (*window, x.shape[-1], dy.shape[-1])
  return jax.ffi.ffi_call('emojax_conv3d_kernel_grad', jax.ShapeDtypeStruct(shape, jnp.float32))(x, dy)[
      ..., :out_channels]


def _input_gradient(dy: jax.Array, kernel: jax.Array) -> jax.Array:
  # dx[t] = sum_k dy[t - k] w[k]: the forward convolution of dy padded by k - 1 on both sides, with the
  # kernel flipped in space and its channel axes swapped. Only the width padding is written out.
  kt, kh, kw = kernel.shape[:3]
  padded = jnp.pad(dy, [(0, 0), (0, 0), (0, 0), (kw - 1, kw - 1), (0, 0)])
  return _forward(padded, jnp.swapaxes(kernel[::-1, ::-1, ::-1], 3, 4), (kt - 1, kt - 1), (kh - 1, kh - 1))


def _per_device(function, x: jax.Array, *replicated: Any) -> jax.Array:
  """`function(x, *replicated)` on each device's share of x's batch when a mesh of several devices is in
  context (`jax.set_mesh`, as training sets it): XLA cannot partition a custom call, so each device runs
  the kernels on its own examples; the replicated arguments' gradients (the kernel's) are summed over
  the mesh by shard_map's transpose."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return function(x, *replicated)
  batch = jax.sharding.PartitionSpec(mesh.axis_names)
  if x.shape[0] % mesh.size:
    raise ValueError(f'The native kernels split the batch over the {mesh.size} devices of the mesh; a batch of '
                     f'{x.shape[0]} does not split.')
  # check_vma=False: a custom_vjp's backward rule does not carry shard_map's per-device value types.
  return jax.shard_map(function, in_specs=(batch, *(jax.sharding.PartitionSpec(),) * len(replicated)),
                       out_specs=batch, check_vma=False)(x, *replicated)


@jax.custom_vjp
def _conv3d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return _forward(x, kernel)


def _conv3d_fwd(x, kernel):
  return _forward(x, kernel), (x, kernel)


def _conv3d_bwd(residuals, dy):
  x, kernel = residuals
  # A first layer's input gradient (its input is data) is dead code that XLA removes.
  return _input_gradient(dy, kernel), _kernel_gradient(x, dy, kernel.shape[:3])


_conv3d.defvjp(_conv3d_fwd, _conv3d_bwd)


def conv_valid(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """The VALID stride-1 convolution of a channels-last 2D or 3D x (already padded) with kernel
  (*window, C_in, C_out), in float32, gradients included. A 2D one runs as a 3D one of depth 1.
  `conv_native` gives it `lax.conv_general_dilated`'s arguments."""
  require()
  x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
  if x.ndim == 4:
    return _per_device(_conv3d, x[:, None], kernel[None])[:, 0]
  return _per_device(_conv3d, x, kernel)


def conv_native(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int] | None,
                padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
                rhs_dilation: Sequence[int] | None = None, dimension_numbers: lax.ConvDimensionNumbers | None = None,
                feature_group_count: int = 1, precision: Any = None) -> jax.Array:
  """`lax.conv_general_dilated` for a channels-last 2D or 3D convolution, by the native C++ kernels
  (`conv_valid`; CPU only).

  Takes the arguments `nn.Conv` passes; any padding; no strides, dilation or
  feature groups. Computes in float32 (`precision` has no effect) and returns the input's dtype.
  """
  del precision  # float32 throughout
  rank = lhs.ndim - 2
  if rank not in (2, 3):
    raise ValueError(f'conv_native computes 2D and 3D convolutions; got a {rank}D one.')
  check_unstrided_channels_last('conv_native', lhs, rhs, window_strides, lhs_dilation, rhs_dilation,
                                 dimension_numbers, feature_group_count)
  window = rhs.shape[:rank]
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:-1], window, (1,) * rank, padding)
  x = jnp.pad(lhs, [(0, 0), *padding, (0, 0)])
  if any(n < k for n, k in zip(x.shape[1:-1], window)):
    raise ValueError(f'Kernel {tuple(window)} does not fit the padded input {x.shape[1:-1]}.')
  return conv_valid(x, rhs).astype(lhs.dtype)


def _pool_attributes(window: tuple[int, ...], strides: tuple[int, ...]) -> dict[str, np.int64]:
  return {'window_h': np.int64(window[1]), 'window_w': np.int64(window[2]), 'stride_h': np.int64(strides[1]),
          'stride_w': np.int64(strides[2])}


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _max_pool(x: jax.Array, window: tuple[int, ...], strides: tuple[int, ...]) -> jax.Array:
  shape = (*x.shape[:2], *((n - k) // s + 1 for n, k, s in zip(x.shape[2:4], window[1:], strides[1:])), x.shape[-1])
  return jax.ffi.ffi_call('emojax_max_pool_forward', jax.ShapeDtypeStruct(shape, jnp.float32))(
      x, **_pool_attributes(window, strides))


def _max_pool_fwd(x, window, strides):
  y = _max_pool(x, window, strides)
  return y, (x, y)


def _max_pool_bwd(window, strides, residuals, dy):
  x, y = residuals
  return (jax.ffi.ffi_call('emojax_max_pool_backward', jax.ShapeDtypeStruct(x.shape, jnp.float32))(
      x, y, dy, **_pool_attributes(window, strides)),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int]) -> jax.Array:
  """`nn.max_pool(x, window, strides)` (VALID, channels last) by the native kernels, for 2D pools and for 3D
  pools whose window and stride in time are 1 (the video network's). The gradient goes to the first maximum
  of each window, as nn.max_pool's does. Computes in float32 and returns x's dtype."""
  if x.ndim == 4 and len(window) == 2 and len(strides) == 2:
    return max_pool(x[:, None], (1, *window), (1, *strides))[:, 0]
  if x.ndim != 5 or len(window) != 3 or len(strides) != 3 or window[0] != 1 or strides[0] != 1:
    raise ValueError(f'The native max-pool takes NHWC or NDHWC inputs with a time window and stride of 1; got '
                     f'input {x.shape}, window {tuple(window)}, strides {tuple(strides)}.')
  if any(n < k for n, k in zip(x.shape[2:4], window[1:])):
    raise ValueError(f'Pool window {tuple(window)} does not fit the input {x.shape[1:-1]}.')
  require()
  window, strides = tuple(window), tuple(strides)
  y = _per_device(lambda x: _max_pool(x, window, strides), _pad_channels(x.astype(jnp.float32), -1))
  return y[..., :x.shape[-1]].astype(x.dtype)
