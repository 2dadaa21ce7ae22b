"""Orbax checkpoints of a run: the latest state (for resuming) and the best one.

Layout under the workdir:
  checkpoints/latest/<step>/{state,meta}   written every `checkpoint_every_steps` and each epoch end
  checkpoints/best/<step>/{state,meta}     the best validation score so far (runs with a validation side)
`meta` is JSON: where in the data the run stood (epoch, step within the epoch)
and the metrics recorded with the checkpoint, so a restore can be checked.

Integrity: orbax verifies no file contents (a flipped byte restores silently), so each step
directory also holds `checksums.json`, the SHA-256 of every file orbax wrote, checked before any
restore. A resuming run that finds its newest checkpoint damaged moves it to
checkpoints/damaged/ (never deletes it) and falls back to the next latest, then to best.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from emojax import files

CHECKSUMS_FILE = 'checksums.json'
DAMAGED_DIR = 'damaged'


class DamagedCheckpoint(RuntimeError):
  """A checkpoint whose files do not match the checksums written with it, or that cannot be read."""


class RunCheckpoints:
  """The latest and best checkpoints of one workdir."""

  def __init__(self, workdir: str, *, best_metric: str = 'accuracy', keep_latest: int = 2):
    self.root = root = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
        os.path.join(root, 'latest'), options=ocp.CheckpointManagerOptions(max_to_keep=keep_latest, create=True))
    self.best = ocp.CheckpointManager(
        os.path.join(root, 'best'),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, best_fn=lambda m: m[best_metric], best_mode='max'))

  def save_latest(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    _save(self.latest, step, state, meta)

  def save_best(self, step: int, state: Any, meta: dict[str, Any], metrics: dict[str, float]) -> bool:
    """Saves when `metrics` beat the best so far; returns whether it did."""
    best = self.best.best_step()
    if best is not None and metrics[self.best_metric] <= self.best_meta()['metrics'][self.best_metric]:
      return False
    _save(self.best, step, state, {**meta, 'metrics': metrics}, metrics=metrics)
    return True

  def restore_newest(self, target: Any) -> tuple[Any, dict[str, Any], str] | None:
    """(state, meta, step dir) of the newest usable checkpoint: the latest ones newest first, then best.

    A damaged checkpoint is moved to checkpoints/damaged/ with a line saying so, and the next one is
    tried; None when there is none (with a line when some were damaged: the run starts afresh).
    """
    # Process 0 alone moves damaged checkpoints; the others wait for it, then see what is left.
    damaged = self._set_aside_damaged() if jax.process_index() == 0 else False
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('emojax: checkpoints checked')
      self.latest.reload()
      self.best.reload()
    candidates = [(self.latest, step) for step in sorted(self.latest.all_steps(), reverse=True)]
    candidates += [(self.best, step) for step in self.best.all_steps()]
    for manager, step in candidates:
      step_dir = os.path.join(manager.directory, str(step))
      try:
        state, meta = restore(step_dir, target)
      except Exception as error:  # pylint: disable=broad-except  (any failure to read it is damage)
        if jax.process_index() == 0:
          self._move_aside(manager, step, f'it cannot be restored ({type(error).__name__}: {str(error)[:300]})')
        damaged = True
        continue
      return state, meta, step_dir
    if damaged:
      print('No usable checkpoint is left: the run starts afresh.')
    return None

  def _set_aside_damaged(self) -> bool:
    """Checks every checkpoint's checksums (best too: its meta is read by later epochs)."""
    found = False
    for manager in (self.latest, self.best):
      for step in manager.all_steps():
        problems = check_files(os.path.join(manager.directory, str(step)))
        if problems:
          self._move_aside(manager, step, '; '.join(problems[:5]) + (' ...' if len(problems) > 5 else ''))
          found = True
    return found

  def _move_aside(self, manager: ocp.CheckpointManager, step: int, why: str) -> None:
    source = os.path.join(manager.directory, str(step))
    kind = os.path.basename(manager.directory)
    target = os.path.join(self.root, DAMAGED_DIR, f'{kind}-{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    manager.reload()
    print(f'Checkpoint {source} is damaged ({why}); moved it to {target} (delete it once you no longer need it).')

  def describe(self) -> str:
    """Where the latest and best checkpoints are (for messages)."""
    parts = [f'{name} {os.path.join(manager.directory, str(step))}' for name, manager, step in (
        ('latest', self.latest, self.latest.latest_step()), ('best', self.best, self.best.best_step()))
             if step is not None]
    return ', '.join(parts) if parts else 'none (the run saved no checkpoint yet: a rerun starts afresh)'

  def has_best(self) -> bool:
    return self.best.best_step() is not None

  def best_meta(self) -> dict[str, Any]:
    return self.best.restore(self.best.best_step(), args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def close(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()
    self.latest.close()
    self.best.close()


def _save(manager: ocp.CheckpointManager, step: int, state: Any, meta: dict[str, Any], metrics=None) -> None:
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
               metrics=metrics, force=True)
  # Synchronous: a run killed right after this line must find a complete checkpoint.
  manager.wait_until_finished()
  if jax.process_index() == 0:
    write_checksums(os.path.join(manager.directory, str(step)))


def _file_digests(step_dir: str) -> dict[str, str]:
  digests = {}
  for folder, _, names in os.walk(step_dir):
    for name in names:
      path = os.path.join(folder, name)
      relative = os.path.relpath(path, step_dir)
      if relative in (CHECKSUMS_FILE, CHECKSUMS_FILE + '.tmp'):  # files.write_json's temporary too
        continue
      digest = hashlib.sha256()
      with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
          digest.update(chunk)
      digests[relative] = digest.hexdigest()
  return digests


def write_checksums(step_dir: str) -> None:
  """Records the SHA-256 of every file of a finished checkpoint (written atomically)."""
  files.write_json(os.path.join(step_dir, CHECKSUMS_FILE), _file_digests(step_dir))


def check_files(step_dir: str) -> list[str]:
  """What is wrong with a checkpoint's files against its checksums ([] when they match).

  A checkpoint without checksums (a run killed between orbax's save and the checksums, or one written
  before emojax recorded them) is not judged here; restoring it is its test.
  """
  path = os.path.join(step_dir, CHECKSUMS_FILE)
  if not os.path.exists(path):
    return []
  try:
    with open(path) as f:
      expected = json.load(f)
  except (OSError, ValueError) as error:
    return [f'{CHECKSUMS_FILE} unreadable ({error})']
  found = _file_digests(step_dir)
  return ([f'{name} missing' for name in sorted(set(expected) - set(found))] +
          [f'{name} changed' for name in sorted(expected) if name in found and found[name] != expected[name]])


def verify(step_dir: str) -> None:
  """Raises DamagedCheckpoint when a checkpoint's files do not match its checksums."""
  problems = check_files(step_dir)
  if problems:
    raise DamagedCheckpoint(f'Checkpoint {step_dir} is damaged: {"; ".join(problems)}. Use another checkpoint '
                            '(checkpoints/latest keeps the newest few) or retrain.')


def find_step_dir(path: str) -> str:
  """Resolves a checkpoint path to one step directory.

  Accepts a step directory (holding `state/`), a manager directory (its newest
  step), or a workdir (its best checkpoint, else its latest).
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'state')):
    return path
  for candidate in (path, os.path.join(path, 'checkpoints', 'best'), os.path.join(path, 'checkpoints', 'latest')):
    steps = [d for d in os.listdir(candidate) if d.isdigit()] if os.path.isdir(candidate) else []
    if steps:
      return os.path.join(candidate, max(steps, key=int))
  raise FileNotFoundError(
      f'No checkpoint at {path!r}: expected a step directory holding state/, a checkpoint manager '
      'directory, or a workdir with checkpoints/best or checkpoints/latest.')


def restore(step_dir: str, target: Any) -> tuple[Any, dict[str, Any]]:
  """Restores (state, meta) from a step directory into the structure of `target`."""
  verify(step_dir)
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  restored = checkpointer.restore(
      step_dir, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def restore_subtree(step_dir: str, keys: tuple[str, ...]) -> Any:
  """Restores only the arrays under state[keys[0]][keys[1]]... (e.g. encoders for fine-tuning)."""
  verify(step_dir)
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  restored = checkpointer.restore(step_dir, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  for key in keys:
    if key not in restored:
      raise KeyError(f'Checkpoint {step_dir} has no {"/".join(keys)} (found: {sorted(restored)})')
    restored = restored[key]
  return restored
