"""Grain batches: deterministic order per (seed, epoch), resumable, padded eval, process shards, augmentation."""
import numpy as np
import pytest

from emojax import audio, loader


def _source(n=20):
  rng = np.random.default_rng(0)
  return [{'audio': rng.normal(size=(40, 30, 1)).astype(np.float32), 'label': np.int64(i % 4),
           'utterance': f'u{i}'.encode()} for i in range(n)]


def _labels(batches):
  return [b['label'].tolist() for b in batches]


def test_train_batches_follow_seed_and_epoch_and_resume_mid_epoch():
  split = loader.Split(_source(), list(range(20)))
  epoch0 = list(split.train_batches(4, seed=0, epoch=0))
  assert len(epoch0) == 5 and all(b['audio'].shape == (4, 40, 30, 1) for b in epoch0)
  assert _labels(epoch0) == _labels(split.train_batches(4, seed=0, epoch=0))
  assert _labels(epoch0) != _labels(split.train_batches(4, seed=0, epoch=1))
  assert _labels(split.train_batches(4, seed=0, epoch=0, start=3)) == _labels(epoch0[3:])
  assert set(b.dtype.kind for b in epoch0[0].values()) <= {'f', 'i'}  # text fields stay out


def test_eval_batches_cover_every_example_once_with_a_mask():
  split = loader.Split(_source(), [3, 5, 7, 9, 11])
  seen = []
  for batch, valid in split.eval_batches(4):
    assert batch['audio'].shape[0] == 4
    seen.extend(np.asarray(batch['label'])[valid].tolist())
  assert seen == [3 % 4, 5 % 4, 7 % 4, 9 % 4, 11 % 4]


def test_processes_read_blocks_that_assemble_the_one_process_batches_exactly():
  source = [{'audio': np.random.default_rng(i).normal(size=(8, 6, 1)).astype(np.float32), 'label': np.int64(i)}
            for i in range(20)]
  augment = loader.Augment(top_crop_px=2, freq_masks=1, time_masks=1, mask_width=2)
  for count in (2, 4):
    whole = loader.Split(source, list(range(20)), augment=augment, crop_frames=4)
    parts = [loader.Split(source, list(range(20)), augment=augment, crop_frames=4, shard_index=p, shard_count=count)
             for p in range(count)]
    one = list(whole.train_batches(8, seed=1, epoch=3, start=1))
    many = [list(part.train_batches(8, seed=1, epoch=3, start=1)) for part in parts]
    assert len(one) == 1 and all(len(m) == 1 for m in many)  # 20 examples: 2 whole batches, from batch 1 on
    for key in ('label', 'audio'):  # the same rows, in the same order, augmented the same
      np.testing.assert_array_equal(np.concatenate([m[0][key] for m in many]), one[0][key])
    evaluated = [list(part.eval_batches(8)) for part in parts]
    for b, (batch, valid) in enumerate(whole.eval_batches(8)):
      np.testing.assert_array_equal(np.concatenate([e[b][0]['label'] for e in evaluated]), batch['label'])
      np.testing.assert_array_equal(np.concatenate([e[b][1] for e in evaluated]), valid)
  with pytest.raises(ValueError, match='does not split'):
    list(loader.Split(source, list(range(16)), shard_count=3).train_batches(8, seed=0, epoch=0))


def test_augmentation_changes_training_images_only_and_is_repeatable():
  augment = loader.Augment(top_crop_px=10, rotate_degrees=10.0, freq_masks=1, time_masks=1, mask_width=5)
  split = loader.Split(_source(), list(range(20)), augment=augment)
  plain = loader.Split(_source(), list(range(20)))
  a = list(split.train_batches(4, seed=0, epoch=0))
  b = list(plain.train_batches(4, seed=0, epoch=0))
  assert _labels(a) == _labels(b)
  assert not np.allclose(a[0]['audio'], b[0]['audio'])
  assert a[0]['audio'].shape == b[0]['audio'].shape and a[0]['audio'].dtype == np.float32
  again = list(split.train_batches(4, seed=0, epoch=0, start=2))
  np.testing.assert_array_equal(again[0]['audio'], a[2]['audio'])  # resume sees the same augmentation
  evaluated = next(split.eval_batches(4))[0]
  np.testing.assert_array_equal(evaluated['audio'], np.stack([_source()[i]['audio'] for i in range(4)]))


def test_top_crop_moves_content_down_never_flips_time():
  image = np.zeros((50, 30, 1), np.float32)
  image[20] = 1.0  # one frequency row
  image[:, 0] = 2.0  # the first time column
  out = loader.Augment(top_crop_px=10)({'audio': image}, np.random.default_rng(3))['audio']
  crop = int(np.random.default_rng(3).integers(0, 11))  # the draw the augmentation makes
  assert crop > 0
  # Rows below the crop are stretched over the full height: row r moves to (r - crop) * H / (H - crop).
  assert abs(int(np.argmax(out[:, 15, 0])) - (20 - crop) * 50 / (50 - crop)) <= 1
  assert np.argmax(out[25, :, 0]) == 0  # time stays left to right


@pytest.mark.parametrize('mel_bands,height', [(64, 128), (128, 128), (64, 48)])
def test_frequency_warp_scales_a_tone_s_frequency_by_the_drawn_factor(mel_bands, height):
  """VTLP: a 1 kHz tone's row moves to the row of alpha kHz, alpha the factor the augmentation draws; time is
  untouched, and a factor of 1 changes nothing."""
  sr = 16000
  wave = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(sr) / sr)
  image = audio.logmel_spectrogram(wave, sr, size=(height, 40), n_mels=mel_bands)
  image[:, 0] = 1.0  # the first time column marked
  augment = loader.Augment(freq_warp=0.2, mel_bands=mel_bands)
  for seed in range(3):
    alpha = np.random.default_rng(seed).uniform(0.8, 1.2)  # the draw the augmentation makes
    out = augment({'audio': image}, np.random.default_rng(seed))['audio']
    expected = audio.logmel_row_of_frequency(1000 * alpha, height=height, n_mels=mel_bands)
    assert abs(int(np.argmax(out[:, 20, 0])) - expected) <= 1
    assert np.all(out[:, 0] == 1.0)
  np.testing.assert_allclose(loader.Augment(freq_warp=1e-9, mel_bands=mel_bands)(
      {'audio': image}, np.random.default_rng(0))['audio'], image, atol=1e-6)


def test_speaker_numbers_join_the_batches_when_asked():
  source = [{**r, 'speaker': f'spk{i % 3}'.encode()} for i, r in enumerate(_source(12))]
  split = loader.Split(source, list(range(12)), speakers={'spk0': 0, 'spk1': 1, 'spk2': 2})
  assert all(b['speaker'].dtype == np.int32 for b in split.train_batches(4, seed=0, epoch=0))
  batches = list(split.eval_batches(4))
  speakers = np.concatenate([b['speaker'] for b, _ in batches])
  np.testing.assert_array_equal(speakers, np.arange(12) % 3)
  assert 'speaker' not in next(iter(loader.Split(source, list(range(12))).train_batches(4, seed=0, epoch=0)))


def test_normalisation_per_utterance_and_per_speaker():
  source = [{**r, 'speaker': f'spk{i % 2}'.encode()} for i, r in enumerate(_source(8))]
  examples = [{'speaker': f'spk{i % 2}', 'copy': 0} for i in range(8)]
  utterance = next(iter(loader.Split(source, list(range(8)), normalize='utterance').eval_batches(8)))[0]['audio']
  np.testing.assert_allclose(utterance.mean(axis=2), 0.0, atol=1e-5)  # every row of every clip
  np.testing.assert_allclose(utterance.std(axis=2), 1.0, atol=1e-4)
  stats = loader.speaker_statistics(source, examples)
  assert sorted(stats) == ['spk0', 'spk1'] and stats['spk0'].shape == (2, 40, 1, 1)
  split = loader.Split(source, list(range(8)), normalize='speaker', speaker_stats=stats)
  speaker = next(iter(split.eval_batches(8)))[0]['audio']
  for s in (0, 1):  # over all of a speaker's clips and columns, each row has mean 0 and std 1
    rows = speaker[s::2].transpose(1, 0, 2, 3).reshape(40, -1)
    np.testing.assert_allclose(rows.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(rows.std(axis=1), 1.0, atol=1e-4)
  raw = np.stack([source[i]['audio'] for i in range(8)])
  assert not np.allclose(speaker, utterance) and not np.allclose(speaker, raw)
  with pytest.raises(ValueError, match="Unknown normalisation 'global'"):
    loader.Split(source, [0], normalize='global').example_batch(1)
  with pytest.raises(ValueError, match='needs the speakers'):
    loader.Split(source, [0], normalize='speaker').example_batch(1)


def test_time_crops_random_in_training_evenly_spaced_at_evaluation():
  # Example i's column c holds 100 * i + c: a window's first value names its example and its start.
  source = [{'audio': np.broadcast_to(100.0 * i + np.arange(30, dtype=np.float32)[None, :, None], (40, 30, 1)).copy(),
             'label': np.int64(i % 4)} for i in range(8)]
  split = loader.Split(source, list(range(8)), crop_frames=12, test_crops=3)
  batches = list(split.train_batches(4, seed=0, epoch=0))
  assert all(b['audio'].shape == (4, 40, 12, 1) for b in batches)
  starts = [int(image[0, 0, 0]) % 100 for b in batches for image in b['audio']]
  for batch in batches:  # each crop is 12 consecutive columns of its own image
    for image in batch['audio']:
      np.testing.assert_array_equal(image[0, :, 0], image[0, 0, 0] + np.arange(12))
  assert len(set(starts)) > 1 and max(starts) <= 18  # random positions, inside the image
  assert np.array_equal(batches[0]['audio'], next(iter(split.train_batches(4, seed=0, epoch=0)))['audio'])
  batch, _ = next(iter(split.eval_batches(4)))
  windows = list(split.windows(batch))
  assert [w['audio'].shape for w in windows] == [(4, 40, 12, 1)] * 3
  for window, start in zip(windows, (0, 9, 18)):  # first to last column
    np.testing.assert_array_equal(window['audio'], batch['audio'][:, :, start:start + 12])
  assert split.example_batch(2)['audio'].shape == (2, 40, 12, 1)
  assert [w['audio'].shape for w in loader.Split(source, [0]).windows(batch)] == [(4, 40, 30, 1)]  # no crop
  with pytest.raises(ValueError, match='crop_frames=31 is wider than the spectrograms'):
    next(loader.Split(source, [0], crop_frames=31).windows(batch))
