"""Which implementation computes each convolution and max-pool: the plan of a network, resolved once
for the backend at hand (`resolve`; `autotune.tune` then times the 'fast' plan's convolutions at a run's
shapes), and the impl names (`conv_function`).

Convolution impls, all with `lax.conv_general_dilated`'s signature (what `nn.Conv` calls):
  'xla'      lax.conv_general_dilated
  'fft'      the convolution theorem (`fft.conv_fft`): cost independent of the kernel size
  'patches'  im2col + matmuls (`patches.conv_patches`); 'patches:<fold>' fixes how many kernel axes fold
  'fold2d'   a 3D convolution as one 2D lax.conv (`fold2d.conv_fold2d`)
  'native'   the C++ kernels (`native.conv_native`; CPU only, built on first use)
  'A+B'      output and input gradient by A, kernel gradient by B (`split.conv_split`)
Every impl computes the same function; only the speed differs (tests/test_kernels.py).
"""
from __future__ import annotations

from collections.abc import Callable
import dataclasses
import functools

import jax
from jax import lax

from emojax.kernels import fft, fold2d, native, patches, pools, split

CONV_IMPLS = ('xla', 'patches', 'fft', 'fold2d', 'native')
# conv_impl='fast' on a CPU before autotuning (where the shapes are not known, and for convolutions too
# small to time), per network: (with the native kernels, without them: no C++ compiler). Measured on an
# AMD EPYC (benchmarks/README.md); `autotune` replaces them by what is fastest on the machine at hand.
CPU_PLANS = {
    'audio': (('fft', 'fft', 'xla'), ('fft', 'fft', 'xla')),
    'video': (('native',) * 4, ('fold2d+patches:2', 'fold2d+patches', 'patches:2', 'patches:2')),
}


@dataclasses.dataclass(frozen=True)
class Plan:
  """The convolution impl of each audio and video layer and the max-pool impl of every pool.

  The default is lax.conv and nn.max_pool throughout: the plain Flax network.
  """

  audio: tuple[str, ...] = ('xla',) * len(CPU_PLANS['audio'][0])
  video: tuple[str, ...] = ('xla',) * len(CPU_PLANS['video'][0])
  pool: str = 'xla'
  origin: str = ''  # how it was chosen, when not by the config alone (autotune.tune says)

  def describe(self) -> str:
    streams = [f"{name} convs {','.join(impls)}" for name, impls in (('audio', self.audio), ('video', self.video))
               if impls]
    text = '; '.join([*streams, f'pools {self.pool}'])
    return f'{text} ({self.origin})' if self.origin else text


def native_runs_here(backend: str) -> bool:
  """Whether the native kernels may run: a CPU backend and a C++ compiler to build them. On a mesh of
  several devices they run per device (`native._per_device`) inside `jax.set_mesh`, as training sets it."""
  return backend == 'cpu' and native.available()


def check(conv_impl: str, pool_impl: str) -> None:
  """Raises ValueError naming `conv_impl` or `pool_impl` if it is neither 'fast' nor an impl (no backend
  is asked: a parent process may check a setting that a child runs)."""
  if conv_impl != 'fast':
    try:
      conv_function(conv_impl)
    except ValueError as error:
      raise ValueError(f"conv_impl must be 'fast' or a convolution impl. {error}") from None
  if pool_impl != 'fast' and pool_impl not in pools.POOL_IMPLS:
    raise ValueError(f"Unknown max-pool impl {pool_impl!r}; expected 'fast' or one of {pools.POOL_IMPLS}.")


def resolve(conv_impl: str = 'fast', pool_impl: str = 'fast', *, backend: str | None = None) -> Plan:
  """The plan that `conv_impl` and `pool_impl` mean on `backend` (default: here).

  'fast' convolutions: `CPU_PLANS` on a CPU (until `autotune.tune` times them), lax.conv on a GPU or
  TPU (the vendor's convolutions). 'fast' pools: 'native' where the native kernels run, else 'slices'.
  Any other value applies to every layer.
  """
  check(conv_impl, pool_impl)  # a clear error for an unknown impl, before any layer is built
  backend = backend or jax.default_backend()
  native_here = native_runs_here(backend)
  if conv_impl == 'fast':
    if backend == 'cpu':
      audio, video = (plans[0] if native_here else plans[1] for plans in CPU_PLANS.values())
    else:
      audio, video = (('xla',) * len(plans[0]) for plans in CPU_PLANS.values())
  else:
    audio, video = ((conv_impl,) * len(plans[0]) for plans in CPU_PLANS.values())
  if pool_impl == 'fast':
    pool_impl = 'native' if native_here else 'slices'
  return Plan(audio=audio, video=video, pool=pool_impl)


def _parse_impl(impl: str) -> tuple[str, int | None]:
  name, _, fold = impl.partition(':')
  if name not in CONV_IMPLS or (fold and (name != 'patches' or not fold.isdigit())):
    raise ValueError(f"Unknown convolution impl {impl!r}; expected one of {CONV_IMPLS}, 'patches:<fold>' "
                     "or '<impl>+<impl>' (output and input gradient + kernel gradient).")
  return name, int(fold) if fold else None


def _single_conv_function(impl: str) -> Callable[..., jax.Array]:
  name, fold = _parse_impl(impl)
  return {'xla': lax.conv_general_dilated, 'patches': functools.partial(patches.conv_patches, fold=fold),
          'fft': fft.conv_fft, 'fold2d': fold2d.conv_fold2d, 'native': native.conv_native}[name]


def _kernel_gradient_function(impl: str) -> Callable[..., jax.Array]:
  name, fold = _parse_impl(impl)
  if name == 'patches':
    return functools.partial(patches.patches_kernel_gradient, fold=fold)
  return split.autodiff_kernel_gradient(_single_conv_function(impl))


def conv_function(impl: str) -> Callable[..., jax.Array]:
  """The convolution of `impl` (see the module docstring), with `lax.conv_general_dilated`'s signature:
  pass it to `nn.Conv(..., conv_general_dilated=...)`; parameters and checkpoints are those of nn.Conv."""
  parts = impl.split('+')
  if len(parts) > 2:
    raise ValueError(f'A convolution impl names at most two parts (output + kernel gradient); got {impl!r}.')
  if len(parts) == 1:
    return _single_conv_function(impl)
  return split.conv_split(_single_conv_function(parts[0]), _kernel_gradient_function(parts[1]))
