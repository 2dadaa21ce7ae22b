"""What every part shares, without JAX or torch (the torch children import it): the sizes timed,
random batches, and the timing and memory measures."""
from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import resource
import statistics
import time
from typing import Any

import numpy as np

NUM_CLASSES = 4
PAPER_SHAPES = {'audio': (200, 300, 3), 'video': (20, 60, 100, 3)}
QUICK_SHAPES = {'audio': (24, 32, 3), 'video': (10, 46, 50, 3)}
QUICK_RNN_HIDDEN = 8
# The paper's convolutions at their real input sizes: (input without batch, kernel, C_out, padding).
PAPER_LAYERS = {
    'audio1': ((200, 300, 3), (12, 16), 16, ((6, 6), (8, 8))),
    'audio2': ((100, 150, 16), (8, 12), 24, ((4, 4), (6, 6))),
    'audio3': ((50, 75, 24), (5, 7), 32, ((2, 2), (3, 3))),
    'video1': ((20, 60, 100, 3), (3, 3, 3), 16, ((0, 0),) * 3),
    'video2': ((18, 28, 48, 16), (3, 3, 3), 32, ((0, 0),) * 3),
    'video3': ((16, 12, 22, 32), (3, 3, 3), 64, ((0, 0),) * 3),
    'video4': ((14, 4, 9, 64), (3, 3, 3), 128, ((0, 0),) * 3),
}


def setting_name(conv_impl: str, pool_impl: str, dtype: str) -> str:
  """'conv_impl/pool_impl:dtype', the name of an emojax setting."""
  return f'{conv_impl}/{pool_impl}:{dtype}'


def quick_kwargs(fields: Sequence[str]) -> dict[str, Any]:
  """--quick's model options, for a model (emojax or its torch twin) with these fields: a small RNN."""
  return {'rnn_hidden': QUICK_RNN_HIDDEN} if 'rnn_hidden' in fields else {}


def usable_cores() -> int:
  """The cores this process may run on (a `taskset` narrows them; os.cpu_count() counts the machine's)."""
  return len(os.sched_getaffinity(0))


def median_time(fn: Callable[[], Any], steps: int) -> tuple[float, list[float]]:
  """The median wall time of `steps` calls of `fn`, and every time."""
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def median_of(rows: list[dict[str, Any]], key: str) -> float | None:
  values = [r[key] for r in rows if r.get(key) is not None]
  return statistics.median(values) if values else None


def peak_rss_mb() -> float:
  """This process's resident-memory high-water mark."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def numpy_batch(shapes: dict[str, tuple[int, ...]], inputs: Sequence[str], batch_size: int) -> dict[str, Any]:
  """A random batch of the `inputs` a model reads, as the arrays build stores them."""
  rng = np.random.default_rng(0)
  batch = {'label': rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}
  if 'audio' in inputs:
    batch['audio'] = rng.standard_normal((batch_size, *shapes['audio'])).astype(np.float32)
  if 'video' in inputs:
    batch['video'] = rng.integers(0, 256, (batch_size, *shapes['video'])).astype(np.uint8)
  return batch
