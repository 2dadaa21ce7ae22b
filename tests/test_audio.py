"""Audio: loading, clips and noise padding, denoise, both spectrogram front ends."""
from __future__ import annotations

import glob
import os

import matplotlib
import numpy as np
import pytest
import soundfile as sf

from emojax import audio

DATA = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')


def tone(freq: float, sr: int, seconds: float = 1.0, amplitude: float = 0.5) -> np.ndarray:
  t = np.arange(int(seconds * sr)) / sr
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noisy(seconds: float, sr: int = 8000, level: float = 0.01, seed: int = 0) -> np.ndarray:
  return (level * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def data_files(pattern: str) -> list[str]:
  files = sorted(glob.glob(os.path.join(DATA, pattern)))
  if not files:
    pytest.skip(f'no real recordings at {os.path.join(DATA, pattern)} (shared/data absent)')
  return files


# --- Front ends -----------------------------------------------------------------------------------


def unnormalised(image: np.ndarray) -> np.ndarray:
  return image * audio.IMAGENET_STD + audio.IMAGENET_MEAN


@pytest.mark.parametrize('sr', [16000, 44100])
@pytest.mark.parametrize('freq', [1000.0, 3000.0])
def test_a_tone_lands_in_its_row_in_the_faithful_front_end(freq, sr):
  image = audio.faithful_spectrogram(tone(freq, sr), sr)
  assert image.shape == (200, 300, 3) and image.dtype == np.float32
  rgb = unnormalised(image)
  # Loud bins are red in 'seismic', quiet ones blue: the tone's row is the reddest.
  row = np.argmax((rgb[..., 0] - rgb[..., 2])[:, 20:-20].mean(axis=1))
  assert abs(row - audio.faithful_row_of_frequency(freq)) <= 1
  # Row 0 is the top of the kept band: a higher tone sits higher (smaller row).
  assert audio.faithful_row_of_frequency(3000.0) < audio.faithful_row_of_frequency(1000.0)


@pytest.mark.parametrize('sr', [16000, 44100])
@pytest.mark.parametrize('freq', [1000.0, 3000.0])
@pytest.mark.parametrize('kind, size', [('logmel', (64, 96)), ('db', None), ('db', (100, 50))])
def test_a_tone_lands_in_its_row_in_the_logmel_front_end(freq, sr, kind, size):
  image = audio.logmel_spectrogram(tone(freq, sr), sr, kind=kind, size=size)
  assert image.dtype == np.float32 and image.shape[-1] == 1
  if size is not None:
    assert image.shape == (*size, 1)
  row = np.argmax(image[:, 5:-5, 0].mean(axis=1))
  height = None if size is None else size[0]
  assert abs(row - audio.logmel_row_of_frequency(freq, kind=kind, height=height)) <= 1


def test_logmel_shape_without_resize_is_bins_by_frames():
  image = audio.logmel_spectrogram(tone(440, 16000, seconds=1.0), 16000, size=None)
  assert image.shape == (64, 1 + 16000 // 160, 1)


def test_fixed_db_scale_keeps_loudness_and_silence_is_the_bottom_colour():
  sr = 16000
  loud = tone(1000.0, sr, amplitude=0.5)
  quiet = loud * 0.05  # -26 dB
  row = audio.faithful_row_of_frequency(1000.0)
  loud_image, quiet_image = audio.faithful_spectrogram(loud, sr), audio.faithful_spectrogram(quiet, sr)
  assert not np.allclose(loud_image, quiet_image)
  red_minus_blue = lambda image: float(np.mean(unnormalised(image)[row, 20:-20, 0] - unnormalised(image)[row, 20:-20, 2]))
  assert red_minus_blue(quiet_image) < red_minus_blue(loud_image)
  # Silence is clipped to -60 dB: every pixel is the colormap's first (darkest blue) colour.
  silence = unnormalised(audio.faithful_spectrogram(np.zeros(sr, np.float32), sr))
  bottom = np.array(matplotlib.colormaps['seismic'](0.0)[:3], np.float32)
  np.testing.assert_allclose(silence, np.broadcast_to(bottom, silence.shape), atol=1e-5)
  # The logmel front end keeps loudness too: -26 dB is 26 / 40 lower on its [-1, 1] scale.
  logmel = lambda wave: audio.logmel_spectrogram(wave, sr, kind='db', size=None)[..., 0]
  peak_row = audio.logmel_row_of_frequency(1000.0, kind='db', height=None)
  drop = logmel(loud)[peak_row, 5:-5].mean() - logmel(quiet)[peak_row, 5:-5].mean()
  assert drop == pytest.approx(20 * np.log10(20) / 40, abs=0.02)
  assert np.all(logmel(np.zeros(sr, np.float32)) == -1.0)


def test_logmel_full_scale_sine_is_near_zero_dbfs():
  # A full-scale sine peaks at 0 dBFS, the top of the scale (+1).
  image = audio.logmel_spectrogram(tone(1000.0, 16000, amplitude=1.0), 16000, kind='db', size=None)
  assert image[:, 5:-5].max() == pytest.approx(1.0, abs=0.01)


def test_imagenet_normalisation_inverts_to_colormap_colours():
  image = audio.faithful_spectrogram(tone(1000.0, 22050) + noisy(1.0, 22050), 22050, size=None)
  rgb = unnormalised(image).reshape(-1, 3)
  lut = matplotlib.colormaps['seismic'](np.linspace(0, 1, 256))[:, :3]
  distance = np.min(np.linalg.norm(rgb[:, None, :] - lut[None, :, :], axis=-1), axis=1)
  assert distance.max() < 1e-5  # without a resize every pixel is exactly a colormap entry


def test_faithful_keeps_only_frequencies_below_max_freq():
  image = audio.faithful_spectrogram(tone(440.0, 44100), 44100, size=None)
  # 8820 Hz at 44.1 kHz / 2048 points: bins 0..409.
  assert image.shape == (410, 1 + 44100 // 512, 3)
  # A tone above the band leaves the image silent.
  high = unnormalised(audio.faithful_spectrogram(tone(12000.0, 44100), 44100, size=None))
  assert np.mean(high[..., 2] > high[..., 0]) > 0.99


def test_front_ends_refuse_empty_input_and_unknown_kind():
  with pytest.raises(ValueError, match='empty'):
    audio.logmel_spectrogram(np.zeros(0, np.float32), 16000)
  with pytest.raises(ValueError, match='kind'):
    audio.logmel_spectrogram(tone(440, 16000), 16000, kind='mfcc')


# --- Clips and noise padding ----------------------------------------------------------------------


@pytest.mark.parametrize('seconds, count', [(1.0, 1), (3.0, 1), (4.4, 1), (4.6, 2), (7.5, 3)])
def test_clip_counts_and_lengths(seconds, count):
  sr = 8000
  clips = audio.clip_waveform(noisy(seconds, sr), sr, seconds=3.0, rng=np.random.default_rng(0))
  assert len(clips) == count
  assert all(c.shape == (3 * sr,) and c.dtype == np.float32 for c in clips)


def test_long_utterances_give_consecutive_clips_and_a_padded_tail():
  sr = 8000
  wave = noisy(7.5, sr)
  clips = audio.clip_waveform(wave, sr, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(clips[0], wave[:3 * sr])
  np.testing.assert_array_equal(clips[1], wave[3 * sr:6 * sr])
  np.testing.assert_array_equal(clips[2][:int(1.5 * sr)], wave[6 * sr:])


def test_clips_are_deterministic_for_a_seed():
  wave, sr = noisy(1.0), 8000
  first = audio.clip_waveform(wave, sr, rng=np.random.default_rng(7))
  again = audio.clip_waveform(wave, sr, rng=np.random.default_rng(7))
  other = audio.clip_waveform(wave, sr, rng=np.random.default_rng(8))
  np.testing.assert_array_equal(first[0], again[0])
  assert not np.array_equal(first[0], other[0])


def test_noise_padding_matches_the_signal_noise_floor_not_zeros():
  sr = 8000
  # A loud tone burst in a quiet background: the floor is the background, not the tone.
  wave = noisy(1.0, sr, level=0.01) + np.concatenate([np.zeros(sr // 2, np.float32), tone(500.0, sr, 0.5, 0.5)])
  padded = audio.pad_with_noise(wave, 3 * sr, rng=np.random.default_rng(0))
  assert padded.shape == (3 * sr,) and padded.dtype == np.float32
  np.testing.assert_array_equal(padded[:sr], wave)
  padding = padded[sr:]
  assert np.count_nonzero(padding) == len(padding)
  assert rms(padding) == pytest.approx(0.01, rel=0.15)
  assert rms(padding) < rms(wave) / 10


def test_noise_padding_follows_the_noise_spectrum():
  sr = 8000
  # Low-pass background: the padding's energy should also sit below ~1 kHz.
  background = np.convolve(noisy(2.0, sr, level=0.05), np.ones(16) / 16, mode='same').astype(np.float32)
  padding = audio.pad_with_noise(background, 4 * sr, rng=np.random.default_rng(0))[2 * sr:]
  spectrum = np.abs(np.fft.rfft(padding)) ** 2
  freqs = np.fft.rfftfreq(len(padding), 1 / sr)
  assert spectrum[freqs < 1000].sum() > 0.8 * spectrum.sum()


def test_noise_floor_ignores_digital_silence():
  wave = np.concatenate([np.zeros(4000, np.float32), noisy(1.0, level=0.02)])
  level, _ = audio.noise_floor(wave)
  # Counting the silent frames would give 0; the frame straddling the edge pulls it a little below 0.02.
  assert 0.01 < level <= 0.02


def test_padding_refuses_a_longer_input():
  with pytest.raises(ValueError, match='shorter'):
    audio.pad_with_noise(noisy(1.0), 100, rng=np.random.default_rng(0))


# --- Denoise --------------------------------------------------------------------------------------


def band_energy(x: np.ndarray, sr: int, freq: float) -> float:
  spectrum, freqs = np.abs(np.fft.rfft(x)), np.fft.rfftfreq(len(x), 1 / sr)
  return float(np.sum(spectrum[np.abs(freqs - freq) < 20] ** 2))


@pytest.mark.parametrize('sr', [16000, 44100])
def test_denoise_removes_stationary_noise_and_keeps_a_tone(sr):
  t = np.arange(3 * sr) / sr
  signal = (0.3 * np.sin(2 * np.pi * 1000 * t) * ((t > 1) & (t < 2))).astype(np.float32)
  wave = signal + noisy(3.0, sr, level=0.02)
  cleaned = audio.denoise(wave, sr)
  assert cleaned.shape == wave.shape and cleaned.dtype == np.float32
  pause = slice(0, int(0.9 * sr))
  assert rms(cleaned[pause]) < rms(wave[pause]) / 5
  speech = slice(int(1.2 * sr), int(1.8 * sr))
  assert band_energy(cleaned[speech], sr, 1000) > 0.5 * band_energy(wave[speech], sr, 1000)


def test_denoise_removes_dc_offset():
  sr = 16000
  cleaned = audio.denoise(noisy(2.0, sr) + 0.2, sr)
  assert abs(float(np.mean(cleaned[sr // 2:-sr // 2]))) < 0.01


# --- Loading --------------------------------------------------------------------------------------


def test_load_wav_with_start_end_and_resampling(tmp_path):
  path = str(tmp_path / 'ramp.wav')
  sr = 8000
  wave = np.linspace(-0.5, 0.5, 2 * sr, dtype=np.float32)
  sf.write(path, np.stack([wave, -wave], axis=1), sr, subtype='FLOAT')  # stereo: averages to zeros
  mono, got_sr = audio.load_waveform(path)
  assert got_sr == sr and mono.shape == (2 * sr,) and np.allclose(mono, 0.0)
  sf.write(path, wave, sr, subtype='FLOAT')
  cut, _ = audio.load_waveform(path, start=0.5, end=1.25)
  np.testing.assert_array_equal(cut, wave[sr // 2:int(1.25 * sr)])
  tail, _ = audio.load_waveform(path, start=1.5)
  np.testing.assert_array_equal(tail, wave[int(1.5 * sr):])
  resampled, new_sr = audio.load_waveform(path, sample_rate=16000)
  assert new_sr == 16000 and len(resampled) == 4 * sr


def test_infinite_samples_are_refused_not_clipped(tmp_path):
  path = str(tmp_path / 'inf.wav')
  wave = np.full(1600, 0.1, np.float32)
  wave[100] = np.inf
  wave[200] = -np.inf  # no NaN anywhere: the clip to [-1, 1] would have hidden these
  sf.write(path, wave, 16000, subtype='FLOAT')
  with pytest.raises(ValueError, match='non-finite samples'):
    audio.load_waveform(path)


def test_load_real_emodb_wav():
  path = data_files('emodb/wav/*.wav')[0]
  wave, sr = audio.load_waveform(path)
  assert sr == 22050 and wave.dtype == np.float32 and wave.shape == (2 * sr,)
  assert np.abs(wave).max() <= 1.0 and rms(wave) > 1e-3
  cut, _ = audio.load_waveform(path, start=0.5, end=1.5)
  np.testing.assert_array_equal(cut, wave[sr // 2:int(1.5 * sr)])


def test_load_real_ravdess_flac():
  path = data_files('ravdess/Actor_01/*.flac')[0]
  wave, sr = audio.load_waveform(path)
  assert sr == 16000 and 3 * sr <= len(wave) <= 6 * sr and rms(wave) > 1e-3
  cut, _ = audio.load_waveform(path, start=1.0, end=2.0)
  np.testing.assert_array_equal(cut, wave[sr:2 * sr])
  resampled, new_sr = audio.load_waveform(path, sample_rate=44100, start=1.0, end=2.0)
  assert new_sr == 44100 and len(resampled) == 44100


def test_load_real_cremad_mp3():
  path = data_files('crema-d-sample/AudioMP3/*.mp3')[0]
  wave, sr = audio.load_waveform(path)
  assert sr == 44100 and 1.5 * sr < len(wave) < 4 * sr and rms(wave) > 1e-3
  cut, _ = audio.load_waveform(path, start=0.5, end=1.0)
  assert len(cut) == sr // 2
  np.testing.assert_allclose(cut, wave[sr // 2:sr], atol=1e-4)


def test_load_real_cremad_flv_audio_track_through_the_container_path():
  path = data_files('crema-d-sample/VideoFlash/*.flv')[0]
  wave, sr = audio.load_waveform(path, sample_rate=16000, start=0.5, end=1.5)
  assert sr == 16000 and len(wave) == pytest.approx(16000, abs=2) and rms(wave) > 1e-3


def test_truncated_wav_is_a_clear_error_naming_the_file(tmp_path):
  path = tmp_path / 'cut_off.wav'
  sf.write(str(path), noisy(1.0), 8000)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=r'cut_off\.wav: truncated'):
    audio.load_waveform(str(path))


def test_truncated_mp3_is_a_clear_error_naming_the_file(tmp_path):
  source = data_files('crema-d-sample/AudioMP3/*.mp3')[0]
  path = tmp_path / 'cut_off.mp3'
  path.write_bytes(open(source, 'rb').read()[:3000])
  with pytest.raises(ValueError, match=r'cut_off\.mp3: truncated'):
    audio.load_waveform(str(path))


def test_unreadable_empty_and_missing_files_are_clear_errors(tmp_path):
  junk = tmp_path / 'junk.wav'
  junk.write_bytes(b'not a riff header at all' * 10)
  with pytest.raises(OSError, match=r'junk\.wav: cannot read audio'):
    audio.load_waveform(str(junk))
  empty = tmp_path / 'empty.flac'
  empty.write_bytes(b'')
  with pytest.raises(ValueError, match=r'empty\.flac: empty file'):
    audio.load_waveform(str(empty))
  with pytest.raises(FileNotFoundError, match='missing.wav'):
    audio.load_waveform(str(tmp_path / 'missing.wav'))


def test_bad_ranges_are_clear_errors(tmp_path):
  path = str(tmp_path / 'one_second.wav')
  sf.write(path, noisy(1.0), 8000)
  with pytest.raises(ValueError, match='past the end'):
    audio.load_waveform(path, start=2.0)
  with pytest.raises(ValueError, match='not after start'):
    audio.load_waveform(path, start=0.5, end=0.5)
