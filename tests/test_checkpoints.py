"""Checkpoint integrity: checksums written with every save, damaged checkpoints set aside, and the
fallback order (newest latest, older latest, best, afresh), down to a real run that resumes exactly."""
import json
import os

import jax
import numpy as np
import pytest

from emojax import checkpoints, train
from tests.test_train import _batch, _state


def _saved(tmp_path, steps=(1, 2, 3), best_step=2):
  """A workdir with latest checkpoints at `steps` (keeping 2) and a best one; returns the states by step."""
  step_fn = train.make_train_step()
  state, states = _state(), {}
  ckpts = checkpoints.RunCheckpoints(str(tmp_path), keep_latest=2)
  for step in steps:
    state, _ = step_fn(state, _batch(step), jax.random.key(step))
    states[step] = jax.device_get(state)
    ckpts.save_latest(step, state, {'epoch': step, 'position': 0})
    if step == best_step:
      ckpts.save_best(step, state, {'epoch': step, 'position': 0}, {'accuracy': 0.5})
  ckpts.close()
  return states


def _largest_file(step_dir):
  files = [os.path.join(d, n) for d, _, names in os.walk(step_dir) for n in names if n != checkpoints.CHECKSUMS_FILE]
  return max(files, key=os.path.getsize)


def _flip_bytes(path, count=400):
  with open(path, 'r+b') as f:
    data = bytearray(f.read())
    start = len(data) // 3
    for i in range(start, min(start + count, len(data))):
      data[i] ^= 0xFF
    f.seek(0)
    f.write(data)


def _assert_same(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _restore(tmp_path):
  ckpts = checkpoints.RunCheckpoints(str(tmp_path), keep_latest=2)
  try:
    return ckpts.restore_newest(_state()), sorted(ckpts.latest.all_steps()), sorted(ckpts.best.all_steps())
  finally:
    ckpts.close()


def test_every_checkpoint_records_the_checksums_of_its_files(tmp_path):
  _saved(tmp_path)
  latest = tmp_path / 'checkpoints' / 'latest'
  assert sorted(os.listdir(latest)) == ['2', '3']  # keep_latest=2
  recorded = json.loads((latest / '3' / checkpoints.CHECKSUMS_FILE).read_text())
  on_disk = {os.path.relpath(os.path.join(d, n), latest / '3') for d, _, names in os.walk(latest / '3') for n in names}
  assert set(recorded) == on_disk - {checkpoints.CHECKSUMS_FILE} and any('manifest.ocdbt' in n for n in recorded)
  assert checkpoints.check_files(str(latest / '3')) == []


def test_flipped_bytes_are_found_and_the_run_falls_back_to_the_previous_latest(tmp_path, capsys):
  states = _saved(tmp_path)
  damaged = _largest_file(str(tmp_path / 'checkpoints' / 'latest' / '3'))
  _flip_bytes(damaged)
  with pytest.raises(checkpoints.DamagedCheckpoint, match=os.path.basename(damaged) + ' changed'):
    checkpoints.restore(str(tmp_path / 'checkpoints' / 'latest' / '3'), _state())
  (state, meta, step_dir), latest, best = _restore(tmp_path)
  assert step_dir.endswith(os.path.join('latest', '2')) and meta['epoch'] == 2 and latest == [2] and best == [2]
  _assert_same(state, states[2])
  out = capsys.readouterr().out
  assert 'latest/3 is damaged' in out and 'changed' in out and 'moved it to' in out
  aside = os.listdir(tmp_path / 'checkpoints' / checkpoints.DAMAGED_DIR)
  assert len(aside) == 1 and aside[0].startswith('latest-3-')  # kept, not deleted


def test_truncated_files_and_a_missing_manifest_fall_back_to_best_then_afresh(tmp_path, capsys):
  states = _saved(tmp_path)
  latest = tmp_path / 'checkpoints' / 'latest'
  with open(_largest_file(str(latest / '3')), 'r+b') as f:
    f.truncate(10)
  manifest = [os.path.join(d, n) for d, _, names in os.walk(latest / '2') for n in names if n == 'manifest.ocdbt']
  os.remove(manifest[0])
  (state, meta, step_dir), latest_steps, _ = _restore(tmp_path)
  assert step_dir.endswith(os.path.join('best', '2')) and latest_steps == []
  _assert_same(state, states[2])
  assert 'manifest.ocdbt missing' in capsys.readouterr().out
  _flip_bytes(_largest_file(str(tmp_path / 'checkpoints' / 'best' / '2')))
  assert _restore(tmp_path) == (None, [], [])
  assert 'No usable checkpoint is left: the run starts afresh.' in capsys.readouterr().out
  assert len(os.listdir(tmp_path / 'checkpoints' / checkpoints.DAMAGED_DIR)) == 3


def test_a_checkpoint_without_checksums_is_judged_by_restoring_it(tmp_path, capsys):
  states = _saved(tmp_path)
  newest = tmp_path / 'checkpoints' / 'latest' / '3'
  os.remove(newest / checkpoints.CHECKSUMS_FILE)  # as if killed between orbax's save and the checksums
  (state, _, step_dir), _, _ = _restore(tmp_path)
  assert step_dir.endswith(os.path.join('latest', '3'))
  _assert_same(state, states[3])
  with open(_largest_file(str(newest)), 'r+b') as f:
    f.truncate(10)
  (state, _, step_dir), _, _ = _restore(tmp_path)
  assert step_dir.endswith(os.path.join('latest', '2')) and 'cannot be restored' in capsys.readouterr().out
  _assert_same(state, states[2])
