"""The host: its CPU as /proc/cpuinfo names it, and glibc's malloc asked to back large arrays with
transparent huge pages.

XLA's CPU runtime allocates every intermediate array of a step anew, and on a
Linux host whose transparent huge pages are 'madvise' (the common default) each
new array is faulted in 4 KiB page by page on first touch: on a small machine
that can cost more than the arithmetic (docs/performance.md).

glibc (2.35+) does this when its tunable `glibc.malloc.hugetlb=1` is set, and
reads tunables only when a process starts, so the entry points re-execute
themselves once with it (`reexec_with_hugepages`). It changes how memory is
obtained, never a value.
"""
from __future__ import annotations

import os
from pathlib import Path
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb'
OPT_OUT = 'EMOJAX_HUGEPAGES'  # =0 keeps the process as it is
_THP_SETTING = '/sys/kernel/mm/transparent_hugepage/enabled'


def cpu_fields() -> dict[str, str]:
  """The first processor's fields of /proc/cpuinfo ('model name', 'flags', 'cpu MHz', ...), with 'model name'
  falling back to what `platform` knows where there is no /proc/cpuinfo. Kernel builds, autotuned plans
  and benchmark reports all key on these."""
  fields = {}
  try:
    for line in Path('/proc/cpuinfo').read_text().splitlines():
      if not line.strip() and fields:  # the first processor's block ends
        break
      name, _, value = line.partition(':')
      fields.setdefault(name.strip(), value.strip())
  except OSError:
    pass
  fields.setdefault('model name', platform.processor() or platform.machine())
  return fields


def hugepages_supported() -> bool:
  """Linux with glibc >= 2.35 and transparent huge pages not disabled by the kernel."""
  if sys.platform != 'linux':
    return False
  libc, version = platform.libc_ver()
  if libc != 'glibc' or tuple(int(p) for p in version.split('.')[:2]) < (2, 35):
    return False
  try:
    with open(_THP_SETTING) as f:
      return '[never]' not in f.read()
  except OSError:
    return False


def reexec_with_hugepages() -> None:
  """Replaces this process with the same command plus GLIBC_TUNABLES=glibc.malloc.hugetlb=1, once.

  Call it from an entry point, under `if __name__ == '__main__':` and before
  its heavy imports, which would otherwise run in both processes (never from a
  library or a notebook). Does nothing where unsupported, when the tunable is
  already set (the user's setting wins, e.g. glibc.malloc.hugetlb=0), or when
  EMOJAX_HUGEPAGES=0.
  """
  current = os.environ.get('GLIBC_TUNABLES', '')
  if os.environ.get(OPT_OUT) == '0' or TUNABLE in current or not hugepages_supported():
    return
  os.environ['GLIBC_TUNABLES'] = ':'.join(filter(None, (current, f'{TUNABLE}=1')))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
