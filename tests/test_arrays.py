"""Builds of a generated miniature IEMOCAP checked against the generator's ground truth.

The miniature's utterances last 1.5-1.94 s or 3.25-3.69 s, so every one is
shorter than two 3-s clips; most clip tests use 1-s clips so long utterances
give several clips, and one build uses the paper's 3 s.
"""
import collections
import json
import os
import sys

import numpy as np
import pytest

from emojax import arrays, audio, features, loader, splits
from emojax.corpora import labels as label_sets
from emojax.corpora.emodb import EmodbCorpus
from emojax.corpora.iemocap import IemocapCorpus
from experiments.configs import common

sys.path.insert(0, os.path.dirname(__file__))
import miniature_iemocap  # noqa: E402  (a helper next to this file)

SMALL = dict(audio_size=(32, 48), video_frames=4, video_size=(12, 20))
FOUR_CLASS = label_sets.CLASS_SETS['4class']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('iemocap'))
  truth = miniature_iemocap.make_miniature_iemocap(root, defects=True)
  return root, truth


@pytest.fixture(scope='module')
def builds(corpus, tmp_path_factory):
  """The four variants with 1-s clips and video, and ds2 with the paper's 3-s clips (audio only)."""
  root, _ = corpus
  data_dir = str(tmp_path_factory.mktemp('data'))
  built = {variant: arrays.build(IemocapCorpus(root), features.FeatureSpec(variant=variant, clip_seconds=1.0, **SMALL),
                                 data_dir, utterances_per_shard=8)
           for variant in features.VARIANTS}
  built['ds2_3s'] = arrays.build(IemocapCorpus(root), features.FeatureSpec(variant='ds2', with_video=False, **SMALL),
                                 data_dir)
  return built


def expected_clips(seconds: float, clip: float) -> int:
  """clip_waveform's rule: whole clips, plus the remainder when it lasts half a clip; at least one."""
  whole = int(seconds // clip)
  return whole + (1 if whole == 0 or seconds - whole * clip >= clip / 2 else 0)


def kept_ids(truth, class_names=FOUR_CLASS):
  return [u for u, t in truth['utterances'].items() if t['label'] in class_names]


def clips_per_utterance(built):
  return collections.Counter(e['utterance'] for e in built.examples if e['copy'] == 0)


@pytest.mark.parametrize('variant', sorted(features.VARIANTS))
def test_variants_give_the_clips_labels_and_speakers_of_the_ground_truth(builds, corpus, variant):
  _, truth = corpus
  built = builds[variant]
  clipped, _ = features.VARIANTS[variant]
  assert built.class_names == FOUR_CLASS
  expected = {u: expected_clips(truth['utterances'][u]['end'] - truth['utterances'][u]['start'], 1.0)
              if clipped else 1 for u in kept_ids(truth)}
  assert dict(clips_per_utterance(built)) == expected
  assert clipped == any(n > 2 for n in expected.values())  # long utterances give several clips
  for example in built.examples:
    facts = truth['utterances'][example['utterance']]
    assert built.class_names[example['label']] == facts['label']
    assert (example['speaker'], example['group']) == (facts['speaker'], facts['group'])
  assert built.manifest['examples'] == len(built.examples) == sum(expected.values())
  assert built.manifest['examples_per_class'] == {
      name: sum(n for u, n in expected.items() if truth['utterances'][u]['label'] == name) for name in FOUR_CLASS}


@pytest.mark.parametrize('variant', ['ds1', 'ds4'])
def test_records_follow_examples_jsonl_and_the_reader_order(builds, corpus, variant):
  root, _ = corpus
  built = builds[variant]
  assert len(built.source) == len(built.examples)
  for i, example in enumerate(built.examples):
    record = built.source[i]
    assert record['utterance'].decode() == example['utterance']
    assert (int(record['clip']), int(record['label']), int(record['copy'])) == (
        example['clip'], example['label'], example['copy'])
  listed = [u.id for u in IemocapCorpus(root).utterances() if getattr(u, 'label', None) in FOUR_CLASS]
  assert list(dict.fromkeys(e['utterance'] for e in built.examples)) == listed  # not sorted by id


def test_manifest_accounts_for_every_utterance(builds, corpus):
  _, truth = corpus
  manifest = builds['ds2'].manifest
  rows = {row['id']: row for row in manifest['rows']}
  malformed_id, malformed_at = truth['defects']['malformed_line']
  orphan_id, orphan_at = truth['defects']['missing_audio']
  assert len(manifest['rows']) == len(rows) == len(truth['utterances']) + 2
  assert set(rows) == set(truth['utterances']) | {malformed_id, orphan_id}
  for utt_id, facts in truth['utterances'].items():
    if facts['label'] in FOUR_CLASS:
      assert rows[utt_id]['kept'] and rows[utt_id]['clips'] >= 1
    else:
      assert rows[utt_id] == {'id': utt_id, 'speaker': facts['speaker'], 'group': facts['group'],
                              'label': facts['label'], 'kept': False, 'reason': 'label not in class map'}
  assert not rows[malformed_id]['kept'] and rows[malformed_id]['source'] == malformed_at
  assert rows[malformed_id]['reason'].startswith('malformed label line')
  assert not rows[orphan_id]['kept'] and rows[orphan_id]['source'] == orphan_at
  assert rows[orphan_id]['reason'].startswith('missing audio')
  assert rows[truth['defects']['missing_sentence_wav']]['kept']  # cut from the dialog wav instead
  assert manifest['kept'] + manifest['skipped'] == manifest['utterances']
  assert manifest['skipped_by_reason'] == {
      'label not in class map': len(truth['utterances']) - len(kept_ids(truth)),
      'missing audio': 1, 'malformed label line': 1}
  on_disk = json.load(open(os.path.join(builds['ds2'].directory, 'manifest.json')))
  assert on_disk == manifest


def test_full_utterances_carry_their_own_tone(builds, corpus):
  _, truth = corpus
  raw, cleaned = builds['ds1'], builds['ds3']
  assert raw.examples == cleaned.examples
  for i, example in enumerate(raw.examples):
    image = raw.source[i]['audio'][..., 0]
    row = audio.logmel_row_of_frequency(truth['utterances'][example['utterance']]['frequency'], height=32)
    assert abs(int(np.argmax(image.mean(axis=1))) - row) <= 1
    # Spectral gating takes its noise statistics from the quietest frames; a steady tone is all
    # "noise" to it, so the cleaned variant is much quieter.
    assert cleaned.source[i]['audio'][row, :, 0].mean() < image[row].mean() - 0.5


def test_short_utterances_are_padded_with_noise_not_zeros(builds, corpus):
  _, truth = corpus
  built = builds['ds2_3s']
  assert set(clips_per_utterance(built).values()) == {1}  # every utterance is shorter than two clips
  short = long = 0
  for i, example in enumerate(built.examples):
    seconds = truth['utterances'][example['utterance']]['end'] - truth['utterances'][example['utterance']]['start']
    last_column = built.source[i]['audio'][:, -1, 0]
    # Zero padding would leave the padded columns at the floor (-80 dBFS -> -1) in every row.
    assert last_column.max() > -0.5
    short += seconds < 2.0
    long += seconds > 3.0
  assert short and long


def test_video_shows_the_speakers_half_of_the_utterance(builds, corpus):
  _, truth = corpus
  sides = collections.Counter()
  for variant in ('ds1', 'ds2'):
    built = builds[variant]
    for i, example in enumerate(built.examples):
      facts = truth['utterances'][example['utterance']]
      frames = built.source[i]['video'].astype(float)
      assert frames.shape == (4, 12, 20, 3)
      centre = np.median(frames[:, :, 4:-4].reshape(-1, 3), axis=0)
      expected = np.array(miniature_iemocap.GENDER_COLOUR[facts['gender']], float)
      expected[1] = facts['green']  # the generator's code of the utterance being spoken
      np.testing.assert_allclose(centre, expected, atol=20)
      sides[facts['side']] += 1
  assert sides['left'] and sides['right']


def test_face_crop_falls_back_to_the_fixed_crop_and_counts_it(builds, corpus, tmp_path):
  root, _ = corpus
  face = arrays.build(IemocapCorpus(root), features.FeatureSpec(variant='ds1', video_crop='face', **SMALL),
                      str(tmp_path))
  assert face.manifest['video'] == {'face_fallback_fixed_crop': len(face.examples)}  # painted halves, no faces
  assert builds['ds1'].manifest['video'] == {}
  fixed = builds['ds1']
  for i in range(len(face.examples)):
    np.testing.assert_array_equal(face.source[i]['video'], fixed.source[i]['video'])


def test_faithful_front_end(builds, corpus, tmp_path):
  root, truth = corpus
  built = arrays.build(IemocapCorpus(root), features.FeatureSpec(variant='ds1', frontend='faithful',
                                                                 with_video=False, **SMALL), str(tmp_path))
  assert built.examples == builds['ds1'].examples
  for i, example in enumerate(built.examples):
    image = built.source[i]['audio']
    assert image.shape == (32, 48, 3)
    # Loud bins are red in the seismic colormap: the tone's row has the most red.
    row = audio.faithful_row_of_frequency(truth['utterances'][example['utterance']]['frequency'], height=32)
    assert abs(int(np.argmax(image[..., 0].mean(axis=1))) - row) <= 1


@pytest.mark.parametrize('class_set,merge_exc,names', [
    ('3class', False, ('sad', 'ang', 'neu')),
    ('4class', True, ('hap', 'sad', 'ang', 'neu')),
])
def test_class_maps(corpus, tmp_path, class_set, merge_exc, names):
  root, truth = corpus
  spec = features.FeatureSpec(variant='ds1', class_set=class_set, merge_exc=merge_exc, with_video=False, **SMALL)
  built = arrays.build(IemocapCorpus(root), spec, str(tmp_path))
  assert built.class_names == names
  merged = {'exc': 'hap'} if merge_exc else {}
  expected = {u: names.index(merged.get(t['label'], t['label'])) for u, t in truth['utterances'].items()
              if merged.get(t['label'], t['label']) in names}
  assert {e['utterance']: e['label'] for e in built.examples} == expected
  assert built.manifest['skipped_by_reason']['label not in class map'] == len(truth['utterances']) - len(expected)


class _Wrapped:
  """The miniature corpus with its audio changed by `change(utt, wave, sr)` (to inject defects)."""

  def __init__(self, corpus, change):
    self.corpus, self.change = corpus, change
    self.name, self.labels, self.canonical = corpus.name, corpus.labels, corpus.canonical
    self.audio_loads = 0

  def utterances(self):
    return self.corpus.utterances()

  def load_audio(self, utt):
    self.audio_loads += 1
    return self.change(utt, *self.corpus.load_audio(utt))

  def load_video(self, utt):
    return self.corpus.load_video(utt)


def test_an_interrupted_build_resumes_without_duplicates(corpus, tmp_path, capsys):
  root, truth = corpus
  spec = features.FeatureSpec(variant='ds2', clip_seconds=1.0, with_video=False, **SMALL)

  def interrupt_after_7(utt, wave, sr):
    if interrupted.audio_loads > 7:
      raise KeyboardInterrupt
    return wave, sr

  interrupted = _Wrapped(IemocapCorpus(root), interrupt_after_7)
  with pytest.raises(KeyboardInterrupt):
    arrays.build(interrupted, spec, str(tmp_path / 'resumed'), utterances_per_shard=4)
  unfinished = os.path.join(str(tmp_path / 'resumed'), 'iemocap', arrays.build_key(spec), 'unfinished')
  finished = sorted(f for f in os.listdir(unfinished) if f.startswith('part-') and f.endswith('.json'))
  assert finished  # the shards completed before the interrupt stay on disk
  done_ids = {row['id'] for f in finished for row in json.load(open(os.path.join(unfinished, f)))['rows']
              if row['kept']}
  assert 0 < len(done_ids) <= 7

  resuming = _Wrapped(IemocapCorpus(root), lambda utt, wave, sr: (wave, sr))
  # Asked for another shard size, the build resumes at the one it began with, and says so.
  resumed = arrays.build(resuming, spec, str(tmp_path / 'resumed'), utterances_per_shard=5)
  assert 'at the 4 utterances per shard it began with (not 5)' in capsys.readouterr().out
  assert resuming.audio_loads == len(kept_ids(truth)) - len(done_ids)  # finished shards were not redone
  assert not os.path.exists(unfinished)
  whole = arrays.build(IemocapCorpus(root), spec, str(tmp_path / 'whole'), utterances_per_shard=4)
  assert resumed.examples == whole.examples
  assert len({(e['utterance'], e['clip']) for e in resumed.examples}) == len(resumed.examples)
  assert resumed.manifest == whole.manifest
  for i in range(len(whole.examples)):
    np.testing.assert_array_equal(resumed.source[i]['audio'], whole.source[i]['audio'])
  # A finished build is reused as it is.
  reused = _Wrapped(IemocapCorpus(root), lambda utt, wave, sr: (wave, sr))
  assert arrays.build(reused, spec, str(tmp_path / 'whole')).examples == whole.examples
  assert reused.audio_loads == 0


def test_bad_input_lands_in_the_manifest_and_the_build_goes_on(tmp_path):
  root = str(tmp_path / 'iemocap')
  truth = miniature_iemocap.make_miniature_iemocap(root, sessions=(1, 2))
  ids = kept_ids(truth)
  corrupt, empty, truncated, nan, silent, short, long = ids[:7]
  with open(truth['utterances'][corrupt]['sentence_wav'], 'wb') as f:
    f.write(b'this is not a RIFF file' * 10)
  open(truth['utterances'][empty]['sentence_wav'], 'wb').close()
  path = truth['utterances'][truncated]['sentence_wav']
  whole = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(whole[:len(whole) // 2])

  def defects(utt, wave, sr):
    if utt.id == nan:
      wave = wave.copy()
      wave[100:200] = np.nan
    if utt.id == silent:
      wave = np.zeros_like(wave)
    if utt.id == short:
      wave = wave[:int(0.05 * sr)]
    if utt.id == long:
      wave = np.tile(wave, int(np.ceil(31 * sr / len(wave))))[:31 * sr]
    return wave, sr

  built = arrays.build(_Wrapped(IemocapCorpus(root), defects), features.FeatureSpec(variant='ds1', **SMALL),
                       str(tmp_path / 'data'))
  rows = {row['id']: row for row in built.manifest['rows']}
  assert rows[corrupt]['reason'].startswith('OSError') and 'cannot read audio' in rows[corrupt]['reason']
  assert rows[empty]['reason'] == f'ValueError: {truth["utterances"][empty]["sentence_wav"]}: empty file (0 bytes).'
  assert rows[truncated]['reason'].startswith('ValueError') and 'truncated' in rows[truncated]['reason']
  assert rows[nan]['reason'] == 'ValueError: non-finite samples (NaN or inf) in the waveform'
  assert rows[silent]['reason'] == 'ValueError: silent audio (every sample is 0)'
  assert rows[short]['reason'] == 'ValueError: too short: 0.050 s of audio, the minimum is 0.2 s'
  for bad in (corrupt, empty, truncated):
    assert rows[bad]['source'] == truth['utterances'][bad]['sentence_wav'] and not rows[bad]['kept']
  assert [e['utterance'] for e in built.examples] == ids[6:]
  # Long utterances are kept, with their duration in the manifest (every kept row has one).
  assert rows[long]['kept'] and rows[long]['seconds'] == 31.0 and built.manifest['long_utterances'] == {long: 31.0}
  assert all(0 < rows[i]['seconds'] < 30 for i in ids[7:])
  assert {k: v for k, v in built.manifest['skipped_by_reason'].items() if k != 'label not in class map'} == {
      'OSError': 1, 'ValueError': 2, 'ValueError: non-finite samples': 1, 'ValueError: silent audio': 1,
      'ValueError: too short': 1}


def test_a_build_with_video_refuses_a_corpus_without_video_and_says_so(corpus, tmp_path):
  spec = features.FeatureSpec(variant='ds1', **SMALL)  # with video
  os.makedirs(tmp_path / 'emodb' / 'wav')  # an empty Emo-DB: the refusal reads no file
  emodb = EmodbCorpus(str(tmp_path / 'emodb'))
  with pytest.raises(arrays.UnusableCorpus, match='emodb has no video.*use an audio model'):
    arrays.build(emodb, spec, str(tmp_path / 'a'))
  assert not os.path.exists(tmp_path / 'a')  # refused before any work
  root, _ = corpus
  no_video = _Wrapped(IemocapCorpus(root), lambda utt, wave, sr: (wave, sr))
  no_video.load_video = lambda utt: None  # as an audio-only download of a corpus with video
  with pytest.raises(arrays.UnusableCorpus, match="No usable utterance in corpus 'iemocap'.* 16 had no video, and "
                     'these features include face video: use an audio model'):
    arrays.build(no_video, spec, str(tmp_path / 'b'))


def test_a_corpus_with_nothing_usable_is_a_clear_error(corpus, tmp_path):
  root, truth = corpus
  silent = _Wrapped(IemocapCorpus(root), lambda utt, wave, sr: (np.zeros_like(wave), sr))
  spec = features.FeatureSpec(variant='ds1', with_video=False, **SMALL)
  with pytest.raises(ValueError, match=r"No usable utterance in corpus 'iemocap'.*manifest\.json"):
    arrays.build(silent, spec, str(tmp_path))
  manifest = json.load(open(os.path.join(str(tmp_path), 'iemocap', arrays.build_key(spec), 'manifest.json')))
  assert manifest['kept'] == 0
  assert manifest['skipped_by_reason']['ValueError: silent audio'] == len(kept_ids(truth))


@pytest.mark.parametrize('variant', ['ds2', 'ds4'])
def test_splits_keep_sibling_clips_together(builds, variant):
  examples = builds[variant].examples
  groups = sorted({e['group'] for e in examples})
  assert groups == [f'Session{s}' for s in range(1, 6)]
  for fold, group in enumerate(groups):  # leave-one-session-out: 5 folds
    split = splits.split_examples(examples, 'group', fold=fold)
    assert {examples[i]['group'] for i in split['test']} == {group}
    assert sorted(split['train'] + split['test']) == list(range(len(examples)))
  with pytest.raises(ValueError, match='Fold 5 out of range'):
    splits.split_examples(examples, 'group', fold=5)
  side = lambda split, name: {examples[i]['utterance'] for i in split[name]}
  for split in (splits.split_examples(examples, 'group', fold=2), splits.split_examples(examples, 'speaker', seed=1)):
    assert not side(split, 'train') & side(split, 'test')
  # The paper's random split over clips puts sibling clips on both sides.
  random_split = splits.split_examples(examples, 'random', seed=0)
  assert side(random_split, 'train') & side(random_split, 'test')


def test_augmented_copies_are_training_only(builds, corpus, tmp_path):
  root, truth = corpus
  plain = builds['ds2_3s']
  spec = features.FeatureSpec(variant='ds2', with_video=False, augment_copies=2, **SMALL)
  built = arrays.build(IemocapCorpus(root), spec, str(tmp_path))
  assert [e['copy'] for e in built.examples] == [0, 1, 2] * len(plain.examples)
  assert [e for e in built.examples if e['copy'] == 0] == plain.examples
  for i, example in enumerate(built.examples):
    original = plain.source[i // 3]['audio']
    image = built.source[i]['audio']
    if example['copy'] == 0:
      np.testing.assert_array_equal(image, original)
    else:  # a faint sweep: changed, still dominated by the utterance's tone
      assert 0 < np.abs(image - original).mean() < 0.2
      row = audio.logmel_row_of_frequency(truth['utterances'][example['utterance']]['frequency'], height=32)
      assert abs(int(np.argmax(image[..., 0].mean(axis=1))) - row) <= 1
  assert not np.array_equal(built.source[1]['audio'], built.source[2]['audio'])  # copies differ
  for scheme, options in (('group', {'fold': 0}), ('random', {'seed': 0})):
    split = splits.split_examples(built.examples, scheme, **options)
    assert all(built.examples[i]['copy'] == 0 for i in split['test'])
    train_originals = {(built.examples[i]['utterance'], built.examples[i]['clip'])
                       for i in split['train'] if built.examples[i]['copy'] == 0}
    assert len(split['train']) == 3 * len(train_originals)
    assert {(built.examples[i]['utterance'], built.examples[i]['clip']) for i in split['train']} == train_originals


def test_load_data_keeps_copies_on_the_training_side(corpus, tmp_path):
  root, _ = corpus
  config = common.base_config('cnn', 'smoke')
  config.corpus.name, config.corpus.root = 'iemocap', root
  config.data.update(data_dir=str(tmp_path), variant='ds2', augment_copies=1, split='group', fold=4,
                     audio_size=(16, 24))
  data = loader.load_data(config, str(tmp_path))
  with open(_examples_path(str(tmp_path))) as f:
    examples = [json.loads(line) for line in f]
  assert all(examples[i]['copy'] == 0 and examples[i]['group'] == 'Session5' for i in data.test.indices)
  assert collections.Counter(examples[i]['copy'] for i in data.train.indices) == {0: len(data.train) // 2,
                                                                                  1: len(data.train) // 2}
  assert {examples[i]['group'] for i in data.train.indices} == {f'Session{s}' for s in range(1, 5)}
  written = json.load(open(os.path.join(str(tmp_path), 'split.json')))
  assert not set(written['train_utterances']) & set(written['test_utterances'])


def _examples_path(data_dir: str) -> str:
  (corpus_dir,) = [d for d in os.listdir(data_dir) if d.startswith('iemocap')]
  (build_dir,) = os.listdir(os.path.join(data_dir, corpus_dir))
  return os.path.join(data_dir, corpus_dir, build_dir, 'examples.jsonl')
