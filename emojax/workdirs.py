"""A run's workdir: one process at a time (a lock), and its config.json as the run's identity on resume."""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

import ml_collections

from emojax import files, schema

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'
CHANGES_FILE = 'config_changes.jsonl'  # one line per accepted change of a resumed run's config


class WorkdirBusy(RuntimeError):
  """Another live process holds the workdir."""


class ConfigChanged(ValueError):
  """A resumed run was given a config that changes its result."""


class Lock:
  """Holds `<workdir>/.lock` (an flock: the kernel releases it when the holder dies, so a killed run's
  lock is taken over by the next). The file says who holds it, for the message another process gets."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    self._file = None

  def __enter__(self) -> Lock:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    handle = open(self.path, 'a+')  # pylint: disable=consider-using-with
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      handle.seek(0)
      holder = handle.read().strip() or 'another process'
      handle.close()
      raise WorkdirBusy(f'{os.path.dirname(self.path)} is in use by {holder}: wait for it to finish, stop it, or '
                        'choose another --workdir.') from None
    handle.seek(0)
    stale = handle.read().strip()
    if stale:
      print(f'Taking over the workdir lock of a run that ended without releasing it ({stale}).')
    handle.seek(0)
    handle.truncate()
    handle.write(f'PID {os.getpid()} on {socket.gethostname()}, started '
                 f'{datetime.datetime.now().astimezone().isoformat(timespec="seconds")}')
    handle.flush()
    self._file = handle
    return self

  def __exit__(self, *exc) -> None:
    self._file.seek(0)
    self._file.truncate()  # an empty file: released cleanly
    fcntl.flock(self._file, fcntl.LOCK_UN)
    self._file.close()


def check_config(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """Compares `config` with the config.json of a run already in `workdir` (nothing to compare when
  there is none) and returns the accepted changes, each as text; they are appended to
  config_changes.jsonl. Fields that do not change the result (`schema.result_changes`: log and checkpoint
  cadence, speed-only choices, more epochs) or that config.allow_changes names may change; any other
  difference raises ConfigChanged listing them all."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    recorded = schema.flatten(schema.upgrade(json.load(f)))
  current = schema.flatten(json.loads(config.to_json()))
  differ = [k for k in sorted(set(recorded) & set(current)) if recorded[k] != current[k]]
  refused = [k for k in schema.result_changes(recorded, current) if k not in config.allow_changes]
  if refused:
    lines = '\n  '.join(f'{k}: {recorded[k]!r} in {path}, {current[k]!r} now' for k in refused)
    raise ConfigChanged(
        f'{workdir} holds a run of another config; resuming it with these changes would mix two runs:\n  {lines}\n'
        f'Use another --workdir for the new config, or accept the changes with '
        f"--config.allow_changes=\"{tuple(refused)!r}\" (they are recorded in {CHANGES_FILE}).")
  changes = [f'{k}: {recorded[k]!r} -> {current[k]!r}' for k in differ if k not in ('workdir', 'eval_only')]
  if changes:
    with open(os.path.join(workdir, CHANGES_FILE), 'a') as f:
      f.write(json.dumps({'time': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
                          'changes': changes}) + '\n')
  return changes


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  files.write_text(os.path.join(workdir, CONFIG_FILE), config.to_json(indent=1))
