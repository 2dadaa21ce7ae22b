"""Visual features as a modality: the loader pairs each record with its clip's visual features, standardised on
the training side or per speaker, refuses utterances without any, and the audio-visual config trains end to end on
real RAVDESS speech with its facial action units."""
import csv
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from emojax import inference, loader, schema
from experiments.configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.abspath(os.path.join(ROOT, '..', 'shared', 'data'))


def _synthetic_config(tmp_path, model='visual_mlp', **data):
  c = common.base_config(model, 'smoke')
  c.data.data_dir = str(tmp_path / 'arrays')
  c.data.variant = 'ds1'
  c.data.update(data)
  return c


def _write_table(path, utterances, width=6, seed=0):
  """A clip table in the au.csv layout: `clip` then the feature columns, one row per utterance id."""
  rng = np.random.default_rng(seed)
  rows = {u: rng.normal(2.0, 3.0, width).round(4) for u in utterances}
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['clip', *[f'AU{i:02d}_r' for i in range(1, width + 1)]])
    for u, row in rows.items():
      writer.writerow([u, *row])
  return rows


@pytest.mark.parametrize('normalize', ['none', 'speaker'])
def test_each_record_reads_its_clips_visual_features_standardised_as_the_mode_says(tmp_path, normalize):
  config = _synthetic_config(tmp_path, normalize=normalize)
  from emojax import arrays, corpora, features  # pylint: disable=import-outside-toplevel
  built = arrays.build(corpora.get_corpus(config.corpus), features.spec_from_config(config), config.data.data_dir,
                       corpus_key=corpora.corpus_key(config.corpus))
  utterances = sorted({e['utterance'] for e in built.examples})
  raw = _write_table(tmp_path / 'visual.csv', utterances)
  config.corpus.visual_features = str(tmp_path / 'visual.csv')
  schema.validate(config)
  workdir = tmp_path / 'w'
  workdir.mkdir()
  data = loader.load_data(config, str(workdir))
  scale = json.load(open(workdir / loader.VISUAL_FILE))
  assert scale['normalize'] == normalize and scale['names'] == [f'AU{i:02d}_r' for i in range(1, 7)]
  side = data.train
  rows = np.stack([side.visual[i] for i in side.indices])
  expected = np.stack([raw[built.examples[i]['utterance']] for i in side.indices])
  if normalize == 'none':  # the training side's mean and std, saved for prediction
    mean, std = np.asarray(scale['mean']), np.asarray(scale['std'])
    np.testing.assert_allclose(rows, (expected - mean) / std, rtol=1e-5, atol=1e-5)
    train_utterances = sorted({built.examples[i]['utterance'] for i in side.indices})
    np.testing.assert_allclose(mean, np.mean([raw[u] for u in train_utterances], axis=0), rtol=1e-5)
  else:  # each speaker's own utterances: mean 0 per speaker, test speakers included
    test_rows = np.stack([data.test.visual[i] for i in data.test.indices])
    speakers = [built.examples[i]['speaker'] for i in data.test.indices]
    for speaker in set(speakers):
      mine = test_rows[np.asarray(speakers) == speaker]
      np.testing.assert_allclose(mine.mean(axis=0), 0.0, atol=1e-4)
  batch = next(data.train.train_batches(config.train.batch_size, seed=0, epoch=0))
  assert batch['visual'].shape == (config.train.batch_size, 6) and batch['visual'].dtype == np.float32

  _write_table(tmp_path / 'partial.csv', utterances[3:])
  config.corpus.visual_features = str(tmp_path / 'partial.csv')
  with pytest.raises(ValueError, match=f'3 of the {len(utterances)} utterances the arrays hold have no visual'):
    loader.load_data(config, None)


def test_a_model_that_reads_visual_features_needs_them_and_others_may_not_name_them(tmp_path):
  config = _synthetic_config(tmp_path)
  with pytest.raises(schema.InvalidConfig, match="corpus.visual_features must name the visual features"):
    schema.validate(config)
  config.corpus.visual_features = str(tmp_path / 'none.csv')
  with pytest.raises(schema.InvalidConfig, match='does not exist'):
    schema.validate(config)
  frames = _synthetic_config(tmp_path, model='fusion')
  frames.corpus.visual_features = __file__
  with pytest.raises(schema.InvalidConfig, match="not read by model 'fusion' with model.visual='frames'"):
    schema.validate(frames)


@pytest.mark.e2e
def test_the_audio_visual_config_trains_on_real_ravdess_speech_and_action_units(tmp_path):
  actors = sorted(glob.glob(os.path.join(DATA, 'ravdess', 'Actor_0[1-4]')))
  table = os.path.join(DATA, 'ravdess-au', 'au.csv')
  if len(actors) < 4 or not os.path.exists(table):
    pytest.skip(f'RAVDESS speech or its action units absent under {DATA} (shared/data)')
  root = tmp_path / 'ravdess'
  root.mkdir()
  for actor in actors:
    os.symlink(actor, root / os.path.basename(actor))
  def run(preset, workdir, *extra):
    done = subprocess.run(
        [sys.executable, '-m', 'experiments.run', f'--config=configs/ravdess_av.py:{preset}', f'--workdir={workdir}',
         f'--config.corpus.root={root}', f'--config.corpus.visual_features={table}',
         f'--config.data.data_dir={tmp_path / "arrays"}', '--config.data.split=folds', '--config.data.fold=0',
         '--config.data.audio_size=(32, 48)', '--config.train.num_epochs=1', '--config.data.normalize=speaker',
         *extra], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return done

  workdir = tmp_path / 'w'
  done = run('smoke', workdir)
  assert 'test accuracy' in done.stdout
  # The paper's two stages on the same clips: contrastive pre-training of the two encoders (held-out retrieval),
  # then the fusion fine-tuned from them.
  pretrain = run('pretrain,smoke', tmp_path / 'pre')
  assert 'audio->video recall@1' in pretrain.stdout
  assert 'chance_at_1' in json.load(open(tmp_path / 'pre' / 'summary.json'))['final']
  tuned = run('pretrained,smoke', tmp_path / 'tuned', f'--config.init_from={tmp_path / "pre"}/checkpoints/latest')
  assert 'Initialised audio_encoder, video_encoder from' in tuned.stdout and 'test accuracy' in tuned.stdout
  summary = json.load(open(workdir / 'summary.json'))
  assert summary['final']['count'] == 60 and len(summary['class_names']) == 8  # one actor's 60 clips, 8 emotions
  assert json.load(open(workdir / loader.VISUAL_FILE))['names'][0] == 'AU01_r'
  # Prediction from the files and the table reproduces the run's own test probabilities (the test actor's
  # statistics from all of its files, as training took them).
  recorded = json.load(open(workdir / 'predictions.json'))
  files = [glob.glob(os.path.join(str(root), '*', f'03-{u}.*'))[0] for u in recorded['utterances']]
  predictor = inference.Predictor.from_workdir(str(workdir), visual=table)
  results = predictor.predict_files(files, speakers={f: 'the test actor' for f in files}, progress=False)
  assert all(r.error is None for r in results)
  np.testing.assert_allclose(np.stack([r.probabilities for r in results]), recorded['best'], atol=1e-5)
  with pytest.raises(ValueError, match='reads visual features: name their table'):
    inference.Predictor.from_workdir(str(workdir)).predict(files[0])
  assert os.path.exists(os.path.join(str(workdir), 'checkpoints'))
