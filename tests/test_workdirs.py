"""One process per workdir (a lock), the config as a resumed run's identity, and divergence stopping a run."""
import json
import os
import re
import subprocess
import sys

import pytest

from emojax import workdirs
from experiments.configs import fusion

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600)


def test_a_second_process_on_a_live_workdir_refuses_and_a_stale_lock_is_taken_over(tmp_path, capsys):
  workdir = str(tmp_path / 'w')
  with workdirs.Lock(workdir):
    holder = open(os.path.join(workdir, workdirs.LOCK_FILE)).read()
    assert holder.startswith(f'PID {os.getpid()} on ')
    with pytest.raises(workdirs.WorkdirBusy, match=f'is in use by PID {os.getpid()}'):
      with workdirs.Lock(workdir):
        pass
    done = _run('--config=configs/fusion.py:smoke', f'--workdir={workdir}')
    assert done.returncode == 2 and f'is in use by PID {os.getpid()}' in done.stderr
    assert not os.path.exists(os.path.join(workdir, 'config.json'))  # refused before any work
  assert open(os.path.join(workdir, workdirs.LOCK_FILE)).read() == ''  # released
  # A killed holder leaves its text but no flock: the next run takes over and says so.
  with open(os.path.join(workdir, workdirs.LOCK_FILE), 'w') as f:
    f.write('PID 99999999 on elsewhere, started yesterday')
  with workdirs.Lock(workdir):
    pass
  assert 'Taking over the workdir lock' in capsys.readouterr().out


def test_resuming_with_a_changed_field_stops_unless_allowed_and_more_epochs_extend(tmp_path):
  workdir = str(tmp_path)
  config = fusion.get_config('smoke')
  assert workdirs.check_config(workdir, config) == []  # a new workdir: nothing to compare
  workdirs.write_config(workdir, config)
  assert workdirs.check_config(workdir, config) == []
  changed = fusion.get_config('smoke')
  changed.optim.learning_rate = 0.5
  changed.model.dropout = 0.3
  changed.train.checkpoint_every_steps = 7  # cadence only: always allowed
  with pytest.raises(workdirs.ConfigChanged) as error:
    workdirs.check_config(workdir, changed)
  assert 'model.dropout: 0.2' in str(error.value) and 'optim.learning_rate: 0.0001' in str(error.value)
  assert 'checkpoint_every_steps' not in str(error.value)
  assert not os.path.exists(os.path.join(workdir, workdirs.CHANGES_FILE))
  changed.allow_changes = ('optim.learning_rate', 'model.dropout')
  assert workdirs.check_config(workdir, changed) == [
      'allow_changes: [] -> [\'optim.learning_rate\', \'model.dropout\']', 'model.dropout: 0.2 -> 0.3',
      'optim.learning_rate: 0.0001 -> 0.5', f'train.checkpoint_every_steps: {config.train.checkpoint_every_steps} -> 7']
  longer = fusion.get_config('smoke')
  longer.train.num_epochs += 3
  assert workdirs.check_config(workdir, longer) == [f'train.num_epochs: {config.train.num_epochs} -> '
                                                    f'{config.train.num_epochs + 3}']
  shorter = fusion.get_config('smoke')
  shorter.train.num_epochs -= 1
  with pytest.raises(workdirs.ConfigChanged, match='train.num_epochs'):
    workdirs.check_config(workdir, shorter)
  recorded = [json.loads(line) for line in open(os.path.join(workdir, workdirs.CHANGES_FILE))]
  assert [len(r['changes']) for r in recorded] == [4, 1]


@pytest.mark.e2e
def test_divergence_stops_the_run_with_consistent_steps_and_nothing_saved(tmp_path):
  workdir = tmp_path / 'w'
  done = _run('--config=configs/fusion.py:smoke', f'--workdir={workdir}', f'--config.data.data_dir={tmp_path / "a"}',
              '--config.optim.learning_rate=1e6', '--config.train.max_bad_steps=2',
              '--config.train.checkpoint_every_steps=1')
  assert done.returncode == 2, done.stderr[-2000:]
  assert 'Training diverged: steps 2-3 were all non-finite' in done.stderr
  assert 'Last good checkpoint: latest' in done.stderr and 'learning_rate' in done.stderr
  steps = [json.loads(line)['step'] for line in open(workdir / 'metrics.jsonl')]
  assert steps == [1, 2, 3]  # one line per step number
  assert sorted(os.listdir(workdir / 'checkpoints' / 'latest')) == ['1']  # never a state after a skipped step
  assert not os.listdir(workdir / 'checkpoints' / 'best')


def test_a_config_that_cannot_work_stops_before_any_data_is_built(tmp_path):
  from emojax import schema
  from experiments.configs import cnn
  for field, value, message in (('model.name', 'foo', "model.name must be one of"),
                                ('train.num_epochs', 0, 'train.num_epochs must be >= 1, got 0'),
                                ('data.audio_size', (64,), 'data.audio_size must be (height, width)'),
                                ('optim.learning_rate', -0.1, 'optim.learning_rate must be > 0'),
                                ('data.mel_bands', 512, 'data.mel_bands must be an integer in 8..256'),
                                ('data.augment.freq_warp', 0.7, 'data.augment.freq_warp must be in [0, 0.5)')):
    config = cnn.get_config('smoke')
    *sections, name = field.split('.')
    section = config
    for part in sections:
      section = section[part]
    section[name] = value
    with pytest.raises(schema.InvalidConfig, match=re.escape(message)):
      schema.validate(config)
  done = _run('--config=configs/cnn.py:smoke', f'--workdir={tmp_path / "w"}', f'--config.data.data_dir={tmp_path / "a"}',
              '--config.train.num_epochs=0')
  assert done.returncode == 2 and 'Error: Invalid config: train.num_epochs must be >= 1' in done.stderr
  assert not os.path.exists(tmp_path / 'a') and 'Traceback' not in done.stderr
