"""Progress bars that redraw on a terminal and stay short in a log.

tqdm redraws a bar on every update when it writes to a file as well as to a terminal, so a run captured to a file
(a cluster job, CI) held every redraw: about 1,700 for one RAVDESS run. Writing elsewhere than a terminal, a bar
here draws when it opens and when it closes only: one epoch, one line.
"""
from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm.auto import tqdm


def bar(iterable: Iterable[Any] | None = None, **kwargs) -> tqdm:
  """tqdm(iterable, **kwargs), redrawn at most at its start and end when stderr is not a terminal."""
  if not sys.stderr.isatty():
    kwargs['mininterval'] = float('inf')
  return tqdm(iterable, dynamic_ncols=True, **kwargs)
