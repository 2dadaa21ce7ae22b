"""`host`: the CPU fields every machine key uses, and `host.reexec_with_hugepages`: the entry points' one
re-execution with glibc's huge-page tunable."""
import os
import subprocess
import sys

import pytest

from emojax import host

# Re-executes, then reports the tunables, the arguments and the huge pages of a touched 64 MB array.
SCRIPT = """
import os, sys
import numpy as np
from emojax import host
host.reexec_with_hugepages()
a = np.ones(16 * 2**20, np.float32)
with open('/proc/self/smaps_rollup') as f:
  huge_kb = next(int(line.split()[1]) for line in f if line.startswith('AnonHugePages'))
print(os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], huge_kb, sep='|')
"""


def _run(**env):
  clean = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', host.OPT_OUT)}
  out = subprocess.run([sys.executable, '-c', SCRIPT, 'a', '--b=1'], env={**clean, **env}, capture_output=True,
                       text=True, check=True).stdout.strip().splitlines()
  assert len(out) == 1, out  # the re-executed process prints once: the first never reached the print
  tunables, argv, huge_kb = out[0].split('|')
  assert argv == "['a', '--b=1']"
  return tunables, int(huge_kb)


@pytest.mark.skipif(not host.hugepages_supported(), reason='needs Linux, glibc >= 2.35 and transparent huge pages')
def test_reexecutes_once_with_the_tunable_and_the_arrays_land_on_huge_pages():
  tunables, huge_kb = _run()
  assert tunables == 'glibc.malloc.hugetlb=1'
  assert huge_kb >= 32 * 1024  # most of the 64 MB array
  _, plain_kb = _run(**{host.OPT_OUT: '0'})
  assert plain_kb < huge_kb


def test_the_users_setting_and_the_opt_out_are_kept():
  assert _run(**{host.OPT_OUT: '0'})[0] == 'None'
  assert _run(GLIBC_TUNABLES='glibc.malloc.hugetlb=0')[0] == 'glibc.malloc.hugetlb=0'
  other = _run(GLIBC_TUNABLES='glibc.malloc.trim_threshold=1000')[0]
  expected = 'glibc.malloc.trim_threshold=1000' + (':glibc.malloc.hugetlb=1' if host.hugepages_supported() else '')
  assert other == expected


def test_cpu_fields_are_the_first_processor_s_and_every_cpu_key_uses_them(monkeypatch, tmp_path):
  """One reader of /proc/cpuinfo: the native build key, the autotuner's machine and the benchmark all see
  the same model name and flags (a second processor's block, or a missing file, changes nothing)."""
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nmodel name\t: Test CPU A\nflags\t\t: fpu avx512f fma\ncpu MHz\t\t: 2000.0\n\n'
                     'processor\t: 1\nmodel name\t: Test CPU B\nflags\t\t: fpu\n\n')
  real_path = host.Path
  monkeypatch.setattr(host, 'Path', lambda p: real_path(cpuinfo) if p == '/proc/cpuinfo' else real_path(p))
  fields = host.cpu_fields()
  assert (fields['model name'], fields['flags'], fields['cpu MHz']) == ('Test CPU A', 'fpu avx512f fma', '2000.0')
  from emojax.kernels import autotune, native  # pylint: disable=import-outside-toplevel
  from experiments.benchmark import machine  # pylint: disable=import-outside-toplevel
  assert native._cpu_id() == 'Test CPU A\nfpu avx512f fma'  # pylint: disable=protected-access
  assert autotune.machine()['cpu'] == 'Test CPU A'
  described = machine.describe()
  assert (described['cpu'], described['avx512'], described['nominal_ghz']) == ('Test CPU A', True, 2.0)
  assert described['cpu_vector_flags'] == ['avx512f', 'fma']
  cpuinfo.unlink()
  assert host.cpu_fields()['model name']  # no /proc/cpuinfo: the platform's name
