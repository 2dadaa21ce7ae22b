"""Orbax checkpoints of a run: the latest state (for resuming) and the best one.

Layout under the workdir:
  checkpoints/latest/<step>/{state,meta}   written every `checkpoint_every_steps` and each epoch end
  checkpoints/best/<step>/{state,meta}     the best validation score so far (runs with a validation side)
`meta` is JSON: where in the data the run stood (epoch, step within the epoch)
and the metrics recorded with the checkpoint, so a restore can be checked.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class RunCheckpoints:
  """The latest and best checkpoints of one workdir."""

  def __init__(self, workdir: str, *, best_metric: str = 'accuracy'):
    root = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.best_metric = best_metric
    self.latest = ocp.CheckpointManager(
        os.path.join(root, 'latest'), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))
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
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
  restored = checkpointer.restore(
      step_dir, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  return restored['state'], restored['meta']


def restore_subtree(step_dir: str, keys: tuple[str, ...]) -> Any:
  """Restores only the arrays under state[keys[0]][keys[1]]... (e.g. encoders for fine-tuning)."""
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  restored = checkpointer.restore(step_dir, args=ocp.args.Composite(state=ocp.args.StandardRestore()))['state']
  for key in keys:
    if key not in restored:
      raise KeyError(f'Checkpoint {step_dir} has no {"/".join(keys)} (found: {sorted(restored)})')
    restored = restored[key]
  return restored
