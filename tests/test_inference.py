"""Inference: a trained workdir on real recordings (API and CLI agree with training's own evaluation),
windows of long recordings, per-file errors, speaker statistics, and the video path on a real CREMA-D clip."""
import glob
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import soundfile as sf

from emojax import audio, baselines, corpora, inference, models, train
from experiments.configs import common, emodb, fusion
from tests import test_checkpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.abspath(os.path.join(ROOT, '..', 'shared', 'data'))


def _real(pattern):
  files = sorted(glob.glob(os.path.join(DATA, pattern)))
  if not files:
    pytest.skip(f'no real recordings at {os.path.join(DATA, pattern)} (shared/data absent)')
  return files


@pytest.fixture(scope='module')
def emodb_run(tmp_path_factory):
  """A smoke cnn_rnn trained by the main command on 4 real Emo-DB speakers (leave-one-speaker-out fold 0): the
  default real-speech network, a hybrid that also reads eGeMAPS functionals, speaker-blind."""
  files = _real('emodb/wav/*.wav')
  root = tmp_path_factory.mktemp('emodb')
  os.makedirs(root / 'wav')
  for path in files:
    if os.path.basename(path)[:2] in ('03', '08', '09', '10'):
      os.symlink(path, root / 'wav' / os.path.basename(path))
  workdir = str(tmp_path_factory.mktemp('run') / 'w')
  _run_fold0(workdir, root, tmp_path_factory.mktemp('arrays'), *TINY)
  return workdir, str(root)


TINY = ('--config.data.audio_size=(32, 48)', '--config.train.num_epochs=1')


def _run_fold0(workdir, root, data_dir, *flags):
  """The main command (configs/emodb.py:smoke) on leave-one-speaker-out fold 0, all classes; it must succeed."""
  done = subprocess.run(
      [sys.executable, '-m', 'experiments.run', '--config=configs/emodb.py:smoke', f'--workdir={workdir}',
       f'--config.corpus.root={root}', f'--config.data.data_dir={data_dir}', '--config.data.split=folds',
       '--config.data.fold=0', '--config.data.class_set=all', *flags],
      cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]


def _predict_cli(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.predict', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=600)


def test_api_and_cli_reproduce_the_run_s_own_test_predictions(emodb_run, tmp_path):
  workdir, root = emodb_run
  recorded = json.load(open(os.path.join(workdir, 'predictions.json')))
  files = [os.path.join(root, 'wav', u + '.wav') for u in recorded['utterances']]
  predictor = inference.Predictor.from_workdir(workdir)
  results = predictor.predict_files(files, progress=False)
  assert [r.source for r in results] == files and all(r.error is None for r in results)
  api = np.stack([r.probabilities for r in results])
  np.testing.assert_allclose(api.sum(axis=1), 1.0, rtol=1e-5)
  # The same files through the training run's evaluation (its best checkpoint, test side).
  np.testing.assert_allclose(api, np.asarray(recorded['best']), atol=1e-5)
  assert [r.emotion for r in results] == [recorded['class_names'][i] for i in api.argmax(axis=1)]

  broken = tmp_path / 'broken.wav'
  broken.write_text('not audio')
  short = tmp_path / 'short.wav'
  sf.write(short, np.full(800, 0.1), 16000)  # 0.05 s
  out = tmp_path / 'out' / 'predictions.json'
  done = _predict_cli(f'--workdir={workdir}', *files[:3], str(broken), str(short), f'--output={out}',
                      f'--plot={tmp_path / "plots"}')
  assert done.returncode == 0, done.stderr[-3000:]
  written = json.load(open(out))['files']
  assert [f['source'] for f in written] == files[:3] + [str(broken), str(short)]
  for row, result in zip(written[:3], results[:3]):  # CLI and API agree exactly
    assert row['emotion'] == result.emotion
    assert [row['probabilities'][c] for c in recorded['class_names']] == [float(p) for p in result.probabilities]
  assert 'cannot read audio' in written[3]['error'] and written[3]['emotion'] is None
  assert 'too short' in written[4]['error']
  assert 'ERROR' in done.stdout and '2 of 5 file(s) could not be used' in done.stderr
  assert sorted(os.listdir(tmp_path / 'plots')) == sorted(os.path.basename(f)[:-4] + '.png' for f in files[:3])

  csv_out = tmp_path / 'p.csv'
  assert _predict_cli(f'--workdir={workdir}', files[0], f'--output={csv_out}').returncode == 0
  header, row = open(csv_out).read().splitlines()
  assert header.split(',')[:2 + len(recorded['class_names'])] == ['source', 'emotion', *recorded['class_names']]
  assert row.split(',')[1] == results[0].emotion
  bad = _predict_cli(f'--workdir={workdir}', files[0], '--output=p.txt')
  assert bad.returncode == 2 and 'must end in .csv or .json' in bad.stderr


def test_long_recordings_are_scored_whole_by_default_or_in_half_overlapping_windows(emodb_run):
  workdir, root = emodb_run
  whole = inference.Predictor.from_workdir(workdir, 'latest')
  assert whole.config.data.variant == 'ds1'  # a full-utterance model: trained on each utterance whole
  wave, sr = sf.read(sorted(glob.glob(os.path.join(root, 'wav', '*.wav')))[0], dtype='float32')
  seconds = whole.config.data.clip_seconds
  long = np.tile(wave, int(np.ceil(2.3 * seconds * sr / len(wave))))[:int(2.3 * seconds * sr)]
  by_default = whole.predict((long, sr))
  assert list(by_default.window_starts) == [0.0] and by_default.window_seconds == pytest.approx(2.3 * seconds, 1e-4)
  predictor = inference.Predictor.from_workdir(workdir, 'latest', window_seconds=seconds)
  result = predictor.predict((long, sr))
  np.testing.assert_allclose(result.window_starts, [0, seconds / 2, seconds, 1.3 * seconds], atol=1e-3)
  np.testing.assert_allclose(result.probabilities, result.window_probabilities.mean(axis=0), rtol=1e-6)
  one = predictor.predict((long[:int(seconds * sr * 0.6)], sr))  # shorter than a window: one window
  assert len(one.window_starts) == 1
  two_second = inference.Predictor.from_workdir(workdir, window_seconds=2.0).predict((long, sr))
  assert two_second.window_seconds == 2.0 and two_second.window_starts[1] == 1.0


def test_speaker_normalised_models_need_statistics_and_say_where_they_came_from():
  files = _real('emodb/wav/03*.wav')[:3] + _real('emodb/wav/08*.wav')[:1]
  config = emodb.get_config('smoke,spectrogram')
  config.data.class_set = 'all'
  config.data.normalize = 'speaker'
  model = models.get_model('cnn_rnn', num_classes=7, **models.options(config.model))
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                         {'audio': np.zeros((1, *config.data.audio_size, 1), np.float32)}, train=False)
  predictor = inference.Predictor(config, variables, ('ang', 'bor', 'dis', 'fea', 'hap', 'sad', 'neu'))
  with pytest.raises(ValueError, match='speaker normalisation'):
    predictor.predict(files[0])
  speakers = {f: os.path.basename(f)[:2] for f in files}
  results = predictor.predict_files(files, speakers=speakers, progress=False)
  assert all(r.error is None for r in results)
  assert results[0].notes == ('speaker statistics from 3 recording(s) of speaker 03',)
  assert 'one recording only' in results[3].notes[0]
  stats = predictor.speaker_statistics(files[:3])
  assert list(stats) == ['audio'] and stats['audio'].shape == (2, config.data.audio_size[0], 1, 1)
  np.testing.assert_allclose(predictor.predict(files[0], speaker_stats=stats).probabilities,
                             results[0].probabilities, rtol=1e-5)


def test_a_hybrid_run_needs_its_saved_functionals_scale(emodb_run, tmp_path):
  """Speaker-blind, the functionals are standardised by the training side's saved mean/std, never refitted."""
  workdir = shutil.copytree(emodb_run[0], tmp_path / 'w')
  assert json.load(open(workdir / 'config.json'))['data']['functionals'] == 'egemaps'
  os.remove(workdir / 'functionals.json')
  with pytest.raises(ValueError, match='functionals.json'):
    inference.Predictor.from_workdir(str(workdir))


def test_a_speaker_normalised_hybrid_run_s_test_probabilities_are_reproduced_from_the_files(emodb_run, tmp_path):
  """Speaker-normalised, prediction standardises the functionals on each speaker's own recordings, as training did."""
  _, root = emodb_run
  workdir = tmp_path / 'hybrid'
  _run_fold0(workdir, root, tmp_path / 'arrays', *TINY, '--config.data.normalize=speaker')
  recorded = json.load(open(workdir / 'predictions.json'))
  files = [os.path.join(root, 'wav', u + '.wav') for u in recorded['utterances']]
  predictor = inference.Predictor.from_workdir(str(workdir))
  results = predictor.predict_files(files, speakers={f: os.path.basename(f)[:2] for f in files}, progress=False)
  np.testing.assert_allclose(np.stack([r.probabilities for r in results]), recorded['best'], atol=1e-5)
  assert predictor.speaker_statistics(files[:2])['functionals'].shape == (2, 88)


def test_a_model_is_scored_on_another_corpus_among_the_classes_that_corpus_has(emodb_run, tmp_path):
  """Cross-corpus testing: the Emo-DB model on RAVDESS clips; calm and surprised are left out, and the answer
  is the most probable of the classes RAVDESS has, so Emo-DB's boredom is never one."""
  workdir, _ = emodb_run
  root = tmp_path / 'ravdess'
  for path in _real('ravdess/Actor_0[12]/*'):
    name = os.path.basename(path)
    if name.split('-')[2] in ('01', '02', '05', '06', '08') and name.split('-')[4] == '01':  # neu cal ang fea sur
      os.makedirs(root / os.path.basename(os.path.dirname(path)), exist_ok=True)
      os.symlink(path, root / os.path.basename(os.path.dirname(path)) / name)
  predictor = inference.Predictor.from_workdir(workdir)
  config = predictor.config.corpus.copy_and_resolve_references()
  config.name, config.root = 'ravdess', str(root)
  corpus = corpora.get_corpus(config)
  result = inference.score_corpus(predictor, corpus, progress=False)

  names = predictor.class_names
  assert result['scored_classes'] == [n for n in names if n in ('neu', 'ang', 'fea')]
  assert result['left_out'] == {'cal': 8, 'sur': 8}
  kept = [u for u in corpus.utterances() if corpus.canonical[u.label] in names]
  probabilities = np.stack([r.probabilities for r in predictor.predict_files([u.audio_path for u in kept],
                                                                             progress=False)])
  scored = [names.index(n) for n in result['scored_classes']]
  answers = np.asarray(scored)[probabilities[:, scored].argmax(axis=1)]
  truth = np.asarray([names.index(corpus.canonical[u.label]) for u in kept])
  assert result['count'] == len(kept) == 20  # 4 neutral, 8 angry, 8 fearful clips of two actors
  assert result['accuracy'] == pytest.approx(np.mean(answers == truth))
  confusion = np.asarray(result['confusion'])
  assert confusion[:, [names.index(n) for n in names if n not in result['scored_classes']]].sum() == 0

  out = tmp_path / 'cross'
  cli = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}', f'--workdir={workdir}',
                        '--corpus=ravdess', f'--root={root}', f'--out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert cli.returncode == 0, cli.stderr[-3000:]
  written = json.load(open(out / 'report.json'))
  assert written['runs'][0]['accuracy'] == result['accuracy'] and written['scored_on'] == 'ravdess'
  assert written['summary']['accuracy'] == {'mean': result['accuracy'], 'std': 0.0}
  assert f"| {result['accuracy']:.3f} ± 0.000 |" in open(out / 'report.md').read()  # the two runs' mean ± std
  assert all(os.path.getsize(out / f'confusion_{i}.png') > 0 for i in (0, 1))

  for path in root.glob('*/*'):  # no clip of any of the model's classes left
    if path.name.split('-')[2] not in ('02', '08'):
      path.unlink()
  with pytest.raises(ValueError, match="labels none of the model's classes"):
    inference.score_corpus(predictor, corpora.get_corpus(config), progress=False)
  refused = subprocess.run([sys.executable, '-m', 'experiments.evaluate', f'--workdir={workdir}', '--corpus=ravdess',
                            f'--root={root}', f'--out={tmp_path / "none"}'], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
  assert refused.returncode == 2 and "Error: The corpus labels none of the model's classes" in refused.stderr
  assert 'Traceback' not in refused.stderr and not (tmp_path / 'none').exists()


def test_fusion_scores_a_real_crema_d_video_and_refuses_audio_only_input():
  video_file = _real('crema-d-sample/VideoFlash/*.flv')[0]
  config = fusion.get_config('smoke')
  model = models.get_model('fusion', num_classes=4, **models.options(config.model))
  inputs = {'audio': np.zeros((1, *config.data.audio_size, 1), np.float32),
            'video': np.zeros((1, config.data.video_frames, *config.data.video_size, 3), np.uint8)}
  variables = model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)}, inputs, train=False)
  predictor = inference.Predictor(config, variables, ('hap', 'sad', 'ang', 'neu'))
  result = predictor.predict(video_file)
  assert result.emotion in predictor.class_names and result.duration > 1.0
  np.testing.assert_allclose(result.probabilities.sum(), 1.0, rtol=1e-5)
  # The frames reach the network scaled as in training (uint8 -> [-1, 1]), not as raw bytes.
  first = {k: v[None] for k, v in predictor.windows(video_file)[0][0].items()}
  scaled = jax.nn.softmax(model.apply(variables, train.model_inputs(first), train=False))[0]
  raw = jax.nn.softmax(model.apply(variables, {k: v.astype(np.float32) for k, v in first.items()}, train=False))[0]
  np.testing.assert_allclose(result.window_probabilities[0], scaled, rtol=1e-4, atol=1e-6)
  assert np.abs(np.asarray(raw) - np.asarray(scaled)).max() > 1e-3
  with pytest.raises(ValueError, match='reads face video'):
    predictor.predict((np.ones(16000, np.float32) * 0.1, 16000))
  wav = _real('emodb/wav/*.wav')[0]
  [refused] = predictor.predict_files([wav], progress=False)
  assert 'audio only' in refused.error


def test_a_pretraining_run_or_a_missing_workdir_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='no config.json or summary.json'):
    inference.Predictor.from_workdir(str(tmp_path))
  config = common.base_config('fusion', 'smoke')
  config.objective = 'contrastive'
  with pytest.raises(ValueError, match='no classifier'):
    inference.Predictor(config, {}, ('a', 'b'))


def test_folders_are_walked_and_no_file_is_dropped(tmp_path):
  (tmp_path / 'a' / 'b').mkdir(parents=True)
  (tmp_path / '.cache').mkdir()
  for name in ('a/2.wav', 'a/1.mp4', 'a/b/3.flac', 'a/notes.txt', 'a/.DS_Store', '.cache/x.wav'):
    (tmp_path / name).write_text('')
  found = inference.find_recordings([str(tmp_path), '/elsewhere/named.wav'])
  assert found == [str(tmp_path / n) for n in ('a/1.mp4', 'a/2.wav', 'a/notes.txt', 'a/b/3.flac')] + [
      '/elsewhere/named.wav']


def test_a_damaged_checkpoint_is_refused_with_a_clear_error(emodb_run, tmp_path):
  workdir, root = emodb_run
  copy = shutil.copytree(workdir, tmp_path / 'w')
  for kind in ('best', 'latest'):
    for step in os.listdir(copy / 'checkpoints' / kind):
      test_checkpoints._flip_bytes(test_checkpoints._largest_file(str(copy / 'checkpoints' / kind / step)))
  done = _predict_cli(f'--workdir={copy}', sorted(glob.glob(os.path.join(root, 'wav', '*.wav')))[0])
  assert done.returncode == 2 and 'Error: Checkpoint' in done.stderr and 'is damaged' in done.stderr
  assert 'Traceback' not in done.stderr


def test_a_baseline_run_saves_a_model_that_reproduces_its_test_probabilities_and_fuses(emodb_run, tmp_path):
  """The eGeMAPS logistic regression on the network's fold: reloaded (skops, no pickle) it gives the run's
  own test probabilities from the files, and the fused prediction is the mean of both members."""
  workdir, root = emodb_run
  baseline_dir = tmp_path / 'baseline'
  _run_fold0(baseline_dir, root, tmp_path / 'arrays', '--config.model.name=egemaps_logreg')
  recorded = json.load(open(baseline_dir / 'predictions.json'))
  files = [os.path.join(root, 'wav', u + '.wav') for u in recorded['utterances']]
  baseline = baselines.Baseline(str(baseline_dir))
  rows = np.stack([baseline.features_of(*audio.load_waveform(f)) for f in files])
  np.testing.assert_allclose(baseline.probabilities(rows), recorded['final'], atol=2e-6)

  predictor = inference.Predictor.from_workdir(workdir)
  network = predictor.predict_files(files[:4], progress=False)
  fused = inference.FusedPredictor(predictor, baseline).predict_files(files[:4], progress=False)
  for alone, both, expected in zip(network, fused, recorded['final'][:4]):
    np.testing.assert_allclose(both.parts['network'], alone.probabilities, rtol=1e-6)
    np.testing.assert_allclose(both.parts['egemaps_logreg'], expected, atol=2e-6)
    np.testing.assert_allclose(both.probabilities, (alone.probabilities + np.asarray(expected)) / 2, atol=2e-6)
  out = tmp_path / 'fused.json'
  cli = _predict_cli(f'--workdir={workdir}', f'--fuse_with={baseline_dir}', *files[:2], f'--output={out}')
  assert cli.returncode == 0, cli.stderr[-3000:]
  assert 'averaged with the baseline egemaps_logreg' in cli.stdout
  written = json.load(open(out))['files']
  np.testing.assert_allclose(list(written[0]['probabilities'].values()), fused[0].probabilities, atol=1e-5)
  assert set(written[0]['parts']) == {'network', 'egemaps_logreg'}

  # A member of the other mode, a workdir that is not a baseline run, a file a member cannot use: clear errors.
  config = json.load(open(baseline_dir / 'config.json'))
  config['data']['normalize'] = 'speaker'
  (baseline_dir / 'config.json').write_text(json.dumps(config))
  with pytest.raises(ValueError, match='one mode'):
    inference.FusedPredictor(predictor, baselines.Baseline(str(baseline_dir)))
  with pytest.raises(FileNotFoundError, match='baseline run'):
    baselines.Baseline(workdir)
  short = tmp_path / 'short.wav'
  sf.write(short, np.full(800, 0.1), 16000)
  [refused] = inference.FusedPredictor(predictor, baseline).predict_files([str(short)], progress=False)
  assert refused.error and refused.probabilities is None


def _build_arrays(corpus, utt, spec):
  """The arrays the build stores for one utterance (what the training run reads)."""
  import collections  # pylint: disable=import-outside-toplevel
  from emojax import features  # pylint: disable=import-outside-toplevel
  return [{k: x[k] for k in ('audio', 'video') if k in x}
          for x in features.utterance_examples(corpus, utt, spec, collections.Counter())]


def test_prediction_treats_a_recording_exactly_as_the_build_treats_an_utterance():
  """One feature path: the build's arrays of an utterance and the predictor's inputs of the same recording are
  equal, array for array, for short and long recordings, whole-utterance (ds1) and clip (ds2) variants, audio
  and face video (a real CREMA-D clip: frames held, not stretched, past the video's end)."""
  import types  # pylint: disable=import-outside-toplevel
  from emojax.corpora.base import Utterance  # pylint: disable=import-outside-toplevel
  from emojax.corpora.cremad import CremadCorpus  # pylint: disable=import-outside-toplevel
  wave, sr = audio.load_waveform(_real('ravdess/Actor_01/*.flac')[0])
  assert len(wave) / sr > 3.0  # longer than a clip: the RAVDESS case the default used to cut into windows
  for variant, recording in (('ds1', wave), ('ds1', wave[:sr // 2]), ('ds2', np.tile(wave, 3)[:6 * sr]),
                             ('ds2', wave[:3 * sr])):
    config = emodb.get_config('smoke,spectrogram')
    config.data.variant = variant
    predictor = inference.Predictor(config, {}, ('hap', 'sad', 'ang', 'neu'))
    corpus = types.SimpleNamespace(load_audio=lambda utt, w=recording: (w, sr))
    built = _build_arrays(corpus, Utterance(id='u', speaker='s', group='s', label='hap'), predictor.spec)
    inputs, starts, _ = predictor.windows((recording, sr))
    assert len(inputs) == len(built) == (2 if variant == 'ds2' and len(recording) == 6 * sr else 1)
    for mine, theirs in zip(inputs, built):
      np.testing.assert_array_equal(mine['audio'], theirs['audio'])
    assert list(starts) == [3.0 * i for i in range(len(inputs))] if variant == 'ds2' else [0.0]

  flv = _real('crema-d-sample/VideoFlash/*.flv')[0]
  corpus = CremadCorpus(os.path.dirname(os.path.dirname(flv)))
  [utt] = [u for u in corpus.utterances() if isinstance(u, Utterance) and u.video_path == flv]
  for variant in ('ds1', 'ds2'):  # ds2: the 2-s clip is shorter than the 3-s clip, so its last frame is held
    config = fusion.get_config('smoke')
    config.data.variant = variant
    predictor = inference.Predictor(config, {}, ('hap', 'sad', 'ang', 'neu'))
    built = _build_arrays(corpus, utt, predictor.spec)
    inputs, _, _ = predictor.windows(flv)
    assert len(inputs) == len(built) == 1
    np.testing.assert_array_equal(inputs[0]['video'], built[0]['video'])
    if variant == 'ds1':  # ds2 pads the short audio with noise seeded by the utterance id, or by the samples
      np.testing.assert_array_equal(inputs[0]['audio'], built[0]['audio'])
