"""Baselines: features on real files, per-speaker standardisation, and a fit on the networks' own folds."""
import glob
import json
import os

import numpy as np
import pytest

from emojax import baselines, corpora, loader, workdirs
from emojax.corpora.emodb import EmodbCorpus
from experiments.configs import cnn_rnn

DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data'))


def _emodb_files(count):
  files = sorted(glob.glob(os.path.join(DATA, 'emodb', 'wav', '*.wav')))
  if not files:
    pytest.skip(f'no real recordings at {DATA}/emodb/wav (shared/data absent)')
  return files[:count]


def test_mfcc_and_egemaps_features_of_real_recordings():
  corpus = EmodbCorpus(os.path.dirname(os.path.dirname(_emodb_files(1)[0])))
  items, names, labels = baselines.utterances(corpus, 'all')
  assert len(names) == 7 and len(items) == len(labels) >= 400
  wave, sr = corpus.load_audio(items[0])
  mfcc = baselines.mfcc_statistics(wave, sr)
  egemaps = baselines.egemaps_functionals(wave, sr)
  assert mfcc.shape == (160,) and egemaps.shape == (88,)
  assert np.all(np.isfinite(mfcc)) and np.all(np.isfinite(egemaps))
  assert np.all(mfcc[80:] >= 0)  # the second half are standard deviations
  other = baselines.egemaps_functionals(*corpus.load_audio(items[1]))
  assert not np.allclose(egemaps, other)
  np.testing.assert_array_equal(egemaps, baselines.egemaps_functionals(wave, sr))  # deterministic


def test_per_speaker_standardisation():
  rng = np.random.default_rng(0)
  x = np.concatenate([rng.normal(5, 2, (6, 3)), rng.normal(-1, 0.5, (4, 3))])
  x[:, 2] = 7.0  # a constant feature stays finite (0)
  speakers = ['a'] * 6 + ['b'] * 4
  z = baselines.standardise_per_speaker(x, speakers)
  for rows in (slice(0, 6), slice(6, 10)):
    np.testing.assert_allclose(z[rows, :2].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(z[rows, :2].std(axis=0), 1, atol=1e-12)
  np.testing.assert_array_equal(z[:, 2], 0.0)


def _config(tmp_path, **data):
  c = cnn_rnn.get_config('smoke')
  c.data.data_dir = str(tmp_path / 'arrays')
  c.data.variant = 'ds1'
  c.data.split = 'folds'
  c.data.fold = 2
  for key, value in data.items():
    c.data[key] = value
  return c


@pytest.mark.parametrize('name, normalize', [('mfcc_logreg', 'none'), ('egemaps_svm', 'speaker')])
def test_baseline_fits_on_the_networks_split_and_writes_a_summary(tmp_path, name, normalize):
  config = _config(tmp_path, normalize=normalize)
  config.model.name = name
  summary = baselines.train_and_evaluate(config, str(tmp_path / 'baseline'))
  on_disk = json.load(open(tmp_path / 'baseline' / 'summary.json'))
  assert on_disk['final']['accuracy'] == summary['final']['accuracy']
  assert summary['complete'] and summary['mode'] == ('speaker-normalised' if normalize == 'speaker' else 'speaker-blind')
  assert 0.0 <= summary['final']['accuracy'] <= 1.0 and len(summary['final']['per_class_recall']) == 4
  assert summary['best']['C'] in baselines.C_GRID and set(summary['best']['validation_by_C']) == {
      str(c) for c in baselines.C_GRID}
  # Test probabilities for late fusion, over all classes; a logistic regression's argmax is its prediction.
  predictions = json.load(open(tmp_path / 'baseline' / 'predictions.json'))
  probabilities = np.asarray(predictions['final'])
  assert probabilities.shape == (summary['final']['count'], 4) and sorted(predictions['utterances']) == sorted(ours_test(tmp_path))
  np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
  if name.endswith('logreg'):
    assert np.mean(probabilities.argmax(-1) == predictions['labels']) == pytest.approx(summary['final']['accuracy'])
  cached = glob.glob(str(tmp_path / 'arrays' / '*' / f'baseline_{name.split("_")[0]}_ds1.npz'))
  assert len(cached) == 1
  # The same speakers on each side as the network's split of the same config.
  network = _config(tmp_path)
  os.makedirs(tmp_path / 'network')
  loader.load_data(network, str(tmp_path / 'network'))
  ours, theirs = (json.load(open(tmp_path / d / 'split.json')) for d in ('baseline', 'network'))
  for key in ('test_units', 'validation_units', 'test_utterances', 'validation_utterances', 'train_utterances'):
    assert ours[key] == theirs[key], key


def ours_test(tmp_path):
  return json.load(open(tmp_path / 'baseline' / 'split.json'))['test_utterances']


def test_baselines_refuse_clip_variants_before_any_work(tmp_path):
  config = _config(tmp_path, variant='ds2')
  config.model.name = 'mfcc_svm'
  with pytest.raises(ValueError, match='Baselines describe whole utterances'):
    baselines.train_and_evaluate(config, str(tmp_path / 'w'))
  assert not os.path.exists(tmp_path / 'arrays')


@pytest.mark.parametrize('normalize', ['none', 'speaker'])
def test_hybrid_networks_read_each_utterances_functionals_standardised(tmp_path, normalize):
  config = _config(tmp_path, normalize=normalize, functionals='mfcc')
  os.makedirs(tmp_path / 'w')
  data = loader.load_data(config, str(tmp_path / 'w'))
  batch, _ = next(iter(data.test.eval_batches(4)))
  assert batch['functionals'].shape == (4, 160) and batch['functionals'].dtype == np.float32
  # Each record's row is its utterance's MFCC statistics, standardised as the mode says.
  corpus = corpora.get_corpus(config.corpus)
  items = {u.id: u for u in corpus.utterances()}
  raw = {u: baselines.mfcc_statistics(*corpus.load_audio(items[u])) for u in data.test_utterances[:4]}
  scale = json.load(open(tmp_path / 'w' / loader.FUNCTIONALS_FILE))
  assert scale['kind'] == 'mfcc' and scale['normalize'] == normalize
  if normalize == 'none':  # the training side's mean and std, saved for prediction
    expected = (np.stack(list(raw.values())) - np.asarray(scale['mean'])) / np.asarray(scale['std'])
    np.testing.assert_allclose(batch['functionals'], expected, rtol=1e-4, atol=1e-4)
    train = np.stack([data.train.functionals[i] for i in data.train.indices])
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-4)
  else:  # each speaker's own mean and std, test speakers' included (transductive); nothing to save
    assert 'mean' not in scale
    speakers = [items[u].speaker for u in data.test_utterances]
    rows = np.stack([data.test.functionals[i] for i in data.test.indices])
    for speaker in set(speakers):
      mine = rows[np.asarray(speakers) == speaker]
      np.testing.assert_allclose(mine.mean(axis=0), 0.0, atol=1e-4)


def test_functionals_need_an_audio_model_and_whole_utterances(tmp_path):
  from emojax import schema
  for field, value, message in (('data.functionals', 'opensmile', "data.functionals must be one of"),
                                ('data.variant', 'ds2', 'empty for the clip variant'),
                                ('model.name', 'video3d', "empty for model 'video3d'")):
    config = _config(tmp_path, functionals='egemaps')
    section, name = field.split('.')
    config[section][name] = value
    with pytest.raises(schema.InvalidConfig, match=message):
      schema.validate(config)
  assert not os.path.exists(tmp_path / 'arrays')


def _ravdess_subset(tmp_path, actors=('01', '02', '03')):
  root = tmp_path / 'ravdess'
  root.mkdir()
  for actor in actors:
    source = os.path.join(DATA, 'ravdess', f'Actor_{actor}')
    if not os.path.isdir(source) or not os.path.exists(os.path.join(DATA, 'ravdess-au', 'au.csv')):
      pytest.skip(f'RAVDESS speech or its action units absent under {DATA} (shared/data)')
    os.symlink(source, root / f'Actor_{actor}')
  return str(root)


def test_visual_frozen_encoder_and_early_fusion_feature_sets_are_their_parts_side_by_side(tmp_path):
  from emojax import visual_features
  from experiments.configs import ravdess_av
  config = ravdess_av.get_config('audio,smoke')
  config.corpus.root = _ravdess_subset(tmp_path, ('01',))
  config.corpus.visual_features = os.path.join(DATA, 'ravdess-au', 'au.csv')
  config.data.data_dir = str(tmp_path / 'arrays')
  corpus = corpora.get_corpus(config.corpus)
  items = baselines.utterances(corpus, 'all')[0][:6]
  au, ok, _ = baselines.feature_set(config, corpus, items, 'au')
  table = visual_features.load(config.corpus.visual_features)
  np.testing.assert_array_equal(au, np.stack([visual_features.lookup(table, 'ravdess', i) for i in items]))
  assert au.shape == (6, 35) and all(ok)
  egemaps = baselines.feature_set(config, corpus, items, 'egemaps')[0]
  np.testing.assert_array_equal(baselines.feature_set(config, corpus, items, 'egemaps_au')[0],
                                np.concatenate([egemaps, au], axis=1))
  # A clip without a row is left out of every set it is part of, with the reason.
  partial = tmp_path / 'partial.csv'
  lines = open(config.corpus.visual_features).read().splitlines()
  first = visual_features.key_for('ravdess', items[0].id)
  partial.write_text('\n'.join(line for line in lines if not line.startswith(first + ',')) + '\n')
  config.corpus.visual_features = str(partial)
  x, ok, errors = baselines.feature_set(config, corpus, items, 'egemaps_au')
  assert x.shape == (5, 88 + 35) and ok == [False] + [True] * 5 and 'no visual features' in errors[items[0].id]

  weights = os.path.join(DATA, '..', 'weights', 'byol-s', 'byols_d512.npz')
  if os.path.exists(weights):  # the frozen encoder's embedding of each clip, standardised on the clip itself
    from emojax.models import byol_a
    config.model.pretrained = weights
    byols = baselines.feature_set(config, corpus, items[:2], 'byols')[0]
    variables = byol_a.load_variables(weights)
    direct = [baselines.byols_embedding(*corpus.load_audio(i), variables=variables) for i in items[:2]]
    np.testing.assert_allclose(byols, np.stack(direct), rtol=1e-5, atol=1e-5)
    assert byols.shape == (2, 512)


def test_an_action_unit_baseline_fits_on_the_networks_folds(tmp_path):
  from experiments.configs import ravdess_av
  config = ravdess_av.get_config('audio,smoke')
  config.corpus.root = _ravdess_subset(tmp_path)
  config.data.data_dir = str(tmp_path / 'arrays')
  config.data.split, config.data.num_folds, config.data.fold = 'folds', 0, 1
  config.model.name = 'au_svm'
  with pytest.raises(ValueError, match='reads au features: set corpus.visual_features'):
    baselines.train_and_evaluate(config, str(tmp_path / 'w'))
  config.corpus.visual_features = os.path.join(DATA, 'ravdess-au', 'au.csv')
  summary = baselines.train_and_evaluate(config, str(tmp_path / 'w'))
  assert summary['features'] == 'au' and summary['final']['count'] == 60  # actor 02's clips
  assert 0.125 < summary['final']['accuracy'] <= 1.0  # above chance on 8 emotions
  workdirs.write_config(str(tmp_path / 'w'), config)  # as experiments.run writes it
  with pytest.raises(ValueError, match='scoring files is done for the'):
    baselines.Baseline(str(tmp_path / 'w')).features_of(np.ones(16000, np.float32) * 0.1, 16000)
