"""Test-session settings: one persistent XLA compilation cache for the whole session.

Many tests start `python -m experiments.run` (or a notebook) on the same smoke shapes; each new process
would compile the same programs again. The subprocesses inherit the environment, so they share it.
A cache directory set by the caller is kept.
"""
import atexit
import os
import shutil
import tempfile

if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:  # before any test module imports jax
  _CACHE = tempfile.mkdtemp(prefix='emojax-test-xla-cache-')
  atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
