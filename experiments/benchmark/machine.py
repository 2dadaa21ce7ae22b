"""The machine: CPU model, cores and theoretical float32 peak (`describe`, read in the parent), and the
JAX device with XLA's measured matmul peak (`peak_case`, in a child: the parent never takes an
accelerator, nor its memory, from the cases)."""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from emojax import host
from experiments.benchmark import common

# Zen 4/5 and Intel AVX-512 server cores: two 512-bit FMA pipes, 16 float32 lanes, 2 FLOPs per FMA.
FLOPS_PER_CYCLE_PER_CORE = 2 * 16 * 2


def describe() -> dict[str, Any]:
  """CPU model, cores, nominal clock, and the theoretical float32 peak at that clock."""
  fields = host.cpu_fields()
  cpu_flags = fields.get('flags', '').split()
  info = {'cpu': fields['model name'], 'cores': common.usable_cores(),
          'nominal_ghz': float(fields['cpu MHz']) / 1000 if 'cpu MHz' in fields else None,
          'avx512': 'avx512f' in cpu_flags,
          # the vector and matrix extensions that decide which kernels win (the other flags do not)
          'cpu_vector_flags': sorted(f for f in cpu_flags if f.startswith(('avx', 'fma', 'amx', 'f16c', 'vnni'))),
          # the allocator setting every child (emojax and torch alike) inherits: see emojax/host.py
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')}
  if info['nominal_ghz'] and info.get('avx512'):
    info['theoretical_peak_flops'] = info['cores'] * FLOPS_PER_CYCLE_PER_CORE * info['nominal_ghz'] * 1e9
  return info


def jax_device() -> str:
  device = jax.local_devices()[0]
  return f'{device.platform}: {device.device_kind}'


def device_peak_mb() -> float | None:
  """Peak bytes of JAX's allocator on the first device (GPU/TPU); None where it keeps no statistics (CPU)."""
  stats = jax.local_devices()[0].memory_stats() or {}
  return stats['peak_bytes_in_use'] / 2 ** 20 if 'peak_bytes_in_use' in stats else None


def measured_peak_flops() -> float:
  """FLOP/s of XLA's best case on this machine: a large float32 matmul (best of 5)."""
  n = 2048 if jax.default_backend() == 'cpu' else 8192
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  best = min(common.median_time(lambda: jax.block_until_ready(matmul(a)), 1)[0] for _ in range(5))
  return 2 * n ** 3 / best


def peak_case() -> dict[str, Any]:
  return {'measured_peak_flops': measured_peak_flops(), 'jax_device': jax_device(), 'jax_version': jax.__version__}
