"""One utterance -> its examples' arrays, and the one mapping from a run config to a FeatureSpec."""
import collections
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from emojax import arrays, audio, features, models
from emojax.corpora import synthetic
from experiments.configs import common, emodb


@pytest.mark.parametrize('model', sorted(models.MODELS))
def test_spec_from_config_takes_the_data_fields_and_video_only_for_models_that_read_it(model):
  config = common.base_config(model, 'smoke')
  config.data.update(variant='ds4', clip_seconds=2.0, video_crop='face', augment_copies=1, augment_level_db=-30.0)
  spec = features.spec_from_config(config)
  dc = config.data
  assert spec == features.FeatureSpec(
      variant='ds4', frontend=dc.frontend, audio_size=tuple(dc.audio_size), clip_seconds=2.0,
      class_set=dc.class_set, merge_exc=dc.merge_exc, with_video=models.reads_video(config.model),
      video_frames=dc.video_frames, video_size=tuple(dc.video_size), video_crop='face',
      augment_copies=1, augment_level_db=-30.0)
  assert spec.with_video == (model in ('video3d', 'fusion'))


def test_spec_of_a_real_corpus_config():
  spec = features.spec_from_config(emodb.get_config('cnn'))
  assert (spec.variant, spec.frontend, spec.audio_size, spec.with_video) == ('ds1', 'logmel', (128, 96), False)
  assert spec.audio_channels == 1
  assert features.spec_from_config(emodb.get_config('cnn,spectrogram')).audio_size == (64, 96)
  paper = features.spec_from_config(common.base_config('fusion', 'paper'))
  assert (paper.frontend, paper.audio_size, paper.audio_channels) == ('faithful', (200, 300), 3)
  assert (paper.video_frames, paper.video_size) == (20, (60, 100))


@pytest.mark.parametrize('field,value,message', [
    ('variant', 'ds5', 'Unknown variant'),
    ('frontend', 'native', 'Unknown front end'),
    ('video_crop', 'mouth', 'Unknown video crop'),
    ('augment_copies', -1, 'augment_copies'),
    ('mel_bands', 300, 'mel_bands'),
])
def test_spec_rejects_unknown_values(field, value, message):
  with pytest.raises(ValueError, match=message):
    features.FeatureSpec(**{field: value})


def test_clip_frames_hold_the_last_frame_over_the_padded_audio():
  frames = np.arange(25)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
  # 5 fps, 3-s clips of 15 frames: the second clip has 10 frames of video, then holds frame 24.
  assert features.clip_frames(frames, 5.0, 0, 3.0)[:, 0, 0, 0].tolist() == list(range(15))
  assert features.clip_frames(frames, 5.0, 1, 3.0)[:, 0, 0, 0].tolist() == list(range(15, 25)) + [24] * 5
  assert features.clip_frames(frames, 5.0, 2, 3.0)[:, 0, 0, 0].tolist() == [24] * 15


def test_tone_sweep_is_faint_repeatable_and_keeps_the_length():
  sr = 16000
  wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)).astype(np.float32)
  mixed = features.mix_tone_sweep(wave, sr, level_db=-20.0, rng=np.random.default_rng(1))
  again = features.mix_tone_sweep(wave, sr, level_db=-20.0, rng=np.random.default_rng(1))
  np.testing.assert_array_equal(mixed, again)
  assert mixed.dtype == np.float32 and mixed.shape == wave.shape
  rms = lambda x: np.sqrt(np.mean(np.square(x, dtype=np.float64)))
  assert rms(mixed - wave) / rms(wave) == pytest.approx(10 ** (-20 / 20), rel=0.05)


def test_utterance_examples_give_each_clip_and_its_copies_in_the_spec_shapes():
  config = common.base_config('fusion', 'smoke')
  corpus = synthetic.SyntheticCorpus(**config.corpus.synthetic.to_dict())
  utt = next(iter(corpus.utterances()))
  spec = features.FeatureSpec(variant='ds2', clip_seconds=0.5, audio_size=(16, 24), video_frames=3,
                              video_size=(12, 16), augment_copies=2)
  examples = list(features.utterance_examples(corpus, utt, spec, collections.Counter()))
  wave, sr = corpus.load_audio(utt)
  clips = len(audio.clip_waveform(wave, sr, seconds=0.5, rng=np.random.default_rng(0)))
  assert clips > 1
  assert [(e['clip'], e['copy']) for e in examples] == [(c, k) for c in range(clips) for k in range(3)]
  for example in examples:
    assert example['audio'].shape == (16, 24, 1) and example['audio'].dtype == np.float32
    assert example['video'].shape == (3, 12, 16, 3) and example['video'].dtype == np.uint8
  np.testing.assert_array_equal(examples[0]['video'], examples[1]['video'])  # copies change the audio only
  assert not np.array_equal(examples[0]['audio'], examples[1]['audio'])
  assert not np.array_equal(examples[1]['audio'], examples[2]['audio'])
  again = list(features.utterance_examples(corpus, utt, spec, collections.Counter()))
  for a, b in zip(examples, again):  # the padding noise and the sweeps repeat
    np.testing.assert_array_equal(a['audio'], b['audio'])


def test_more_mel_bands_resolve_two_tones_that_64_bands_blur_together():
  """data.mel_bands sets the bands the log-mel front end computes before resizing to audio_size's rows:
  at 128 rows, two tones a 64-band filter bank puts in one band stay apart; at the default, the key of
  a build made before the field existed does not change."""
  sr = 16000
  t = np.arange(sr) / sr
  wave = 0.3 * (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 1100 * t))
  dips = {}
  rows = sorted(audio.logmel_row_of_frequency(f, height=128, n_mels=128) for f in (1000, 1100))
  assert rows[1] - rows[0] >= 3
  for bands in (64, 128):
    spec = features.FeatureSpec(variant='ds1', audio_size=(128, 96), mel_bands=bands, with_video=False)
    image = features.audio_features(wave, sr, spec)
    assert image.shape == (128, 96, 1)
    profile = image[rows[0]:rows[1] + 1, :, 0].mean(axis=1)  # the rows from one tone to the other
    dips[bands] = min(profile[0], profile[-1]) - profile[1:-1].min()
  assert dips[128] > 0.1 and dips[64] < 0.02  # 128 bands: a trough between the tones; 64 bands resized: none
  default = features.FeatureSpec()
  fields = {k: v for k, v in dataclasses.asdict(default).items() if k != 'mel_bands'}
  old_key = hashlib.sha1(json.dumps({**fields, 'build_version': arrays.BUILD_VERSION}, sort_keys=True).encode())
  assert arrays.build_key(default).endswith(old_key.hexdigest()[:10])
  assert arrays.build_key(features.FeatureSpec(mel_bands=128)) != arrays.build_key(default)
