"""Each paper convolution alone (common.PAPER_LAYERS), forward + backward, in the `emojax.kernels`
impls asked for."""
from __future__ import annotations

from collections.abc import Sequence
import os
import time
from typing import Any

import jax
from jax import lax
import jax.numpy as jnp

from emojax import kernels
from experiments.benchmark import cases, common


def layer_cases(names: Sequence[str], impls: Sequence[str], batch_size: int, steps: int,
                dtype: str) -> list[dict[str, Any]]:
  """Compile time, ms per step and XLA FLOPs of each layer in each impl ('fold2d' only for the 3D layers)."""
  results = []
  for layer in names:
    shape, kernel, features, pads = common.PAPER_LAYERS[layer]
    x = jax.random.normal(jax.random.key(0), (batch_size, *shape), dtype)
    w = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], features), dtype) * 0.05
    spatial = 'DHW'[3 - len(kernel):]
    dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
    first = shape[-1] == 3  # the first layer needs no input gradient
    for impl in impls:
      if 'fold2d' in impl and len(kernel) != 3:
        continue
      conv = kernels.conv_function(impl)

      def loss(x, w, conv=conv):
        y = conv(x, w, (1,) * len(kernel), pads, dimension_numbers=dn)
        return jnp.sum(jnp.square(jax.nn.relu(y.astype(jnp.float32))))

      grad = jax.jit(jax.grad(loss, argnums=1 if first else (0, 1)))
      start = time.perf_counter()
      compiled = grad.lower(x, w).compile()
      compile_s = time.perf_counter() - start
      flops = cases.xla_flops(compiled)
      jax.block_until_ready(compiled(x, w))
      step_s, _ = common.median_time(lambda: jax.block_until_ready(compiled(x, w)), steps)
      results.append({'layer': layer, 'impl': impl, 'dtype': dtype, 'batch': batch_size, 'ms': step_s * 1e3,
                      'samples_per_s': batch_size / step_s, 'compile_s': compile_s, 'flops': flops,
                      'gflops_per_s': flops / step_s / 1e9, 'xla_flags': os.environ.get('XLA_FLAGS', '')})
  return results
