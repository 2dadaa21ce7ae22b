"""End to end: the main command on the smoke config, resume after a kill, eval-only restore."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from emojax import checkpoints, loader, models, train
from experiments.configs import fusion, pretrain
from tests import test_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=cwd, capture_output=True,
                        text=True, timeout=600)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('arrays'))


def _config(data_dir, workdir, **train_overrides):
  config = fusion.get_config('smoke')
  config.data.data_dir = data_dir
  config.workdir = workdir
  config.train.update(train_overrides)
  return config


def _model(config, data):
  return models.get_model(config.model.name, num_classes=len(data.class_names), **models.options(config.model))


@pytest.mark.e2e
def test_main_command_trains_and_writes_outputs(tmp_path, data_dir):
  workdir = tmp_path / 'run'
  result = _run('--config=configs/fusion.py:smoke', f'--workdir={workdir}', f'--config.data.data_dir={data_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'test accuracy' in result.stdout
  [kernels] = [l for l in result.stdout.splitlines() if l.startswith('Kernels (cpu')]
  assert 'audio convs' in kernels and 'video convs' in kernels and '(autotuned: ' in kernels  # the plan, and whence
  summary = json.loads((workdir / 'summary.json').read_text())
  assert ','.join(summary['kernel_plan']['audio']) in kernels and summary['kernel_plan']['pool'] in kernels
  assert summary['final']['epoch'] == 2 and 0 <= summary['final']['accuracy'] <= 1
  for name in ('loss.png', 'accuracy.png', 'confusion.png'):
    assert (workdir / 'plots' / name).exists()
  records = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if r['split'] == 'train'] == list(range(1, summary['final']['step'] + 1))
  split = json.loads((workdir / 'split.json').read_text())
  sides = ('train_utterances', 'validation_utterances', 'test_utterances')
  assert all(split[side] for side in sides)
  assert not any(set(split[a]) & set(split[b]) for a in sides for b in sides if a < b)
  assert len(split['validation_units']) == 1 and not set(split['validation_units']) & set(split['test_units'])
  # The best checkpoint is the first epoch of highest validation accuracy; its test figures are that epoch's.
  evals = [r for r in records if r['split'] == 'eval']
  best = max(evals, key=lambda r: (r['validation']['accuracy'], -r['epoch']))
  assert summary['best']['epoch'] == best['epoch']
  assert summary['best']['test']['accuracy'] == best['accuracy']
  assert summary['best']['validation']['accuracy'] == best['validation']['accuracy']
  # predictions.json: the test utterances' probabilities, which score as the summary says.
  predictions = json.loads((workdir / 'predictions.json').read_text())
  assert sorted(predictions['utterances']) == sorted(split['test_utterances'])
  for kind, expected in (('final', summary['final']['accuracy']), ('best', summary['best']['test']['accuracy'])):
    probabilities = np.array(predictions[kind])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert np.mean(probabilities.argmax(1) == np.array(predictions['labels'])) == pytest.approx(expected)

  # Eval-only restores the best checkpoint and reproduces the metrics recorded with it exactly.
  evaluated = _run('--config=configs/fusion.py:smoke', f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                   '--config.eval_only=True')
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert 'matches the metrics recorded with the checkpoint' in evaluated.stdout


def test_unknown_config_key_and_preset_are_rejected():
  result = _run('--config=configs/fusion.py:smoke', '--config.train.learning_rat=0.1')
  assert result.returncode != 0 and 'learning_rat' in result.stderr
  result = _run('--config=configs/fusion.py:bogus')
  assert result.returncode != 0 and 'Unknown config preset' in result.stderr


def test_pretrain_presets_pick_the_loss_and_fusion_finds_their_last_checkpoint():
  default, margin = pretrain.get_config(None), pretrain.get_config('margin')
  assert (default.contrastive.loss, default.workdir) == ('infonce', 'workdirs/pretrain')
  assert (margin.contrastive.loss, margin.contrastive.negatives) == ('margin', 'mined')  # the paper's
  assert margin.workdir == 'workdirs/pretrain_margin'
  assert pretrain.get_config('smoke').train.num_epochs == 2
  fine = fusion.get_config('smoke,pretrained')
  assert fine.init_from == pretrain.get_config('smoke').workdir + '/checkpoints/latest'
  assert fusion.get_config('pretrained,paper').init_from == pretrain.get_config('paper').workdir + '/checkpoints/latest'
  assert tuple(fine.init_keys) == ('audio_encoder', 'video_encoder')


class _Killed(Exception):
  pass


@pytest.mark.e2e
def test_early_stopping_ends_when_validation_stops_improving(tmp_path, data_dir):
  workdir, patience, epochs = tmp_path / 'run', 1, 5
  args = ('--config=configs/cnn.py:smoke', f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
          f'--config.train.num_epochs={epochs}', f'--config.train.early_stopping_patience={patience}')
  result = _run(*args)
  assert result.returncode == 0, result.stderr[-3000:]
  evals = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines() if '"eval"' in l]
  accuracy = [r['validation']['accuracy'] for r in evals]
  best = [max(range(e + 1), key=lambda i: (accuracy[i], -i)) + 1 for e in range(len(evals))]  # best epoch so far
  assert all(e + 1 - best[e] < patience for e in range(len(evals) - 1))  # no earlier epoch ran out of patience
  assert len(evals) == epochs or len(evals) - best[-1] >= patience
  assert ('Stopping early' in result.stdout) == (len(evals) < epochs)
  assert json.loads((workdir / 'summary.json').read_text())['stopped_early'] == (len(evals) < epochs)
  rerun = _run(*args)  # a finished run, stopped early or not, trains no further
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert (workdir / 'metrics.jsonl').read_text().count('"eval"') == len(evals)


@pytest.mark.e2e
def test_killed_run_resumes_to_the_same_final_metrics(tmp_path, data_dir, monkeypatch):
  full_config = _config(data_dir, str(tmp_path / 'full'))
  data = loader.load_data(full_config)
  full = train.train_and_evaluate(full_config, full_config.workdir, data=data, model=_model(full_config, data))

  config = _config(data_dir, str(tmp_path / 'killed'))
  steps_per_epoch = len(data.train) // config.train.batch_size
  kill_at = steps_per_epoch + 3  # mid-way through the second epoch, after a mid-epoch checkpoint
  assert kill_at % steps_per_epoch and kill_at < 2 * steps_per_epoch
  original = loader.Split.train_batches
  seen = {'n': 0}

  def dying_batches(self, *args, **kwargs):
    for batch in original(self, *args, **kwargs):
      if seen['n'] == kill_at:
        raise _Killed()
      seen['n'] += 1
      yield batch

  monkeypatch.setattr(loader.Split, 'train_batches', dying_batches)
  with pytest.raises(_Killed):
    train.train_and_evaluate(config, config.workdir, data=data, model=_model(config, data))
  monkeypatch.setattr(loader.Split, 'train_batches', original)
  # The newest checkpoint is damaged as well: the resume falls back to the one before and still matches.
  latest = os.path.join(config.workdir, 'checkpoints', 'latest')
  newest = os.path.join(latest, max(os.listdir(latest), key=int))
  test_checkpoints._flip_bytes(test_checkpoints._largest_file(newest))
  resumed = train.train_and_evaluate(config, config.workdir, data=data, model=_model(config, data))

  for key in ('accuracy', 'unweighted_accuracy', 'confusion', 'step'):
    assert resumed['final'][key] == full['final'][key]
  assert os.listdir(os.path.join(config.workdir, 'checkpoints', checkpoints.DAMAGED_DIR))
  logged = [json.loads(l) for l in open(os.path.join(config.workdir, 'metrics.jsonl'))]
  full_log = [json.loads(l) for l in open(os.path.join(full_config.workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in logged] == [r['step'] for r in full_log]  # no duplicated records after resume
  np.testing.assert_allclose([r['loss'] for r in logged if r['split'] == 'train'],
                             [r['loss'] for r in full_log if r['split'] == 'train'], rtol=0, atol=0)


@pytest.mark.e2e
def test_pretrain_then_finetune_restores_the_encoders(tmp_path, data_dir):
  pre = pretrain.get_config('smoke')
  pre.data.data_dir = data_dir
  pre.workdir = str(tmp_path / 'pretrain')
  data = loader.load_data(pre)
  model = _model(pre, data)
  summary = train.train_and_evaluate(pre, pre.workdir, data=data, model=model)
  assert 'recall_at_1' in summary['final'] and (tmp_path / 'pretrain' / 'plots' / 'retrieval.png').exists()

  fine = fusion.get_config('smoke,pretrained')
  fine.data.data_dir = data_dir
  fine.workdir = str(tmp_path / 'finetune')
  fine.init_from = pre.workdir
  fine.freeze_steps = 1000  # frozen for the whole run: the encoders must come out unchanged
  fine.train.num_epochs = 1
  train.train_and_evaluate(fine, fine.workdir, data=data, model=model)

  state = train.create_state(model, data.train.example_batch(8), train.make_optimizer(fine.optim), jax.random.key(0))
  pre_params = train.init_params_from(pre.workdir, state.params, ('audio_encoder', 'video_encoder'))
  fine_params = train.init_params_from(fine.workdir, state.params)
  batch = data.test.example_batch(4)
  emb_pre = model.apply({'params': pre_params}, train.model_inputs(batch), train=False, method='embed')
  emb_fine = model.apply({'params': fine_params}, train.model_inputs(batch), train=False, method='embed')
  for key in ('audio', 'video'):
    np.testing.assert_array_equal(emb_pre[key], emb_fine[key])
