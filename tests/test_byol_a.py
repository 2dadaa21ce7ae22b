"""BYOL-S (BYOL-A) encoder: the Flax port equals a PyTorch twin of AudioNTT2020, random or pretrained weights;
the front end equals torchaudio's MelSpectrogram; the weight file's errors are named.

Tolerances: network outputs (values of order 1) rtol 1e-4 / atol 1e-4 against the float32 PyTorch twin; the
log-mel (values -16 .. 8) atol 1e-3, i.e. 0.1% of the mel power (observed: 2e-4 in the quietest bins).
"""
from __future__ import annotations

import glob
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the 'torch' extra, part of the 'test' extra

from emojax import audio
from emojax.models import byol_a

SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared'))
DATA = os.path.join(SHARED, 'data')
WEIGHTS = os.path.join(SHARED, 'weights', 'byol-s', 'byols_d512.npz')
RTOL = ATOL = 1e-4
LOGMEL_ATOL = 1e-3


def data_files(pattern: str, count: int) -> list[str]:
  files = sorted(glob.glob(os.path.join(DATA, pattern)))[:count]
  if not files:
    pytest.skip(f'no real recordings at {os.path.join(DATA, pattern)} (shared/data absent)')
  return files


@pytest.fixture(scope='module')
def pretrained():
  if not os.path.isfile(WEIGHTS):
    pytest.skip(f'no BYOL-S weights at {WEIGHTS} (shared/weights absent)')
  return byol_a.load_variables(WEIGHTS)


# --- The PyTorch twin: BYOL-A's AudioNTT2020, as published --------------------------------------------------


class TorchAudioNTT2020(torch.nn.Module):
  """BYOL-A's AudioNTT2020 (Niizumi et al. 2021), input (B, 1, mel, T)."""

  def __init__(self, n_mels: int = 64, d: int = 512):
    super().__init__()
    blocks = []
    for channels_in in (1, 64, 64):
      blocks += [torch.nn.Conv2d(channels_in, 64, 3, stride=1, padding=1), torch.nn.BatchNorm2d(64),
                 torch.nn.ReLU(), torch.nn.MaxPool2d(2, stride=2)]
    self.features = torch.nn.Sequential(*blocks)
    self.fc = torch.nn.Sequential(torch.nn.Linear(64 * (n_mels // 8), d), torch.nn.ReLU(), torch.nn.Dropout(p=0.3),
                                  torch.nn.Linear(d, d), torch.nn.ReLU())

  def frames(self, x):
    x = self.features(x).permute(0, 3, 2, 1)  # (batch, time, mel, ch)
    batch, time, mel, channels = x.shape
    return self.fc(x.reshape((batch, time, channels * mel)))

  def forward(self, x):
    x = self.frames(x)
    return torch.max(x, dim=1)[0] + torch.mean(x, dim=1)


def torch_twin(arrays: dict[str, np.ndarray]) -> TorchAudioNTT2020:
  model = TorchAudioNTT2020()
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()},
                        strict='features.1.num_batches_tracked' in arrays)
  return model.eval()


def torch_outputs(model: TorchAudioNTT2020, logmel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(frames, embedding) of the twin for a flax-layout batch (B, mel, T, 1)."""
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(np.transpose(logmel, (0, 3, 1, 2))))
    return model.frames(x).numpy(), model(x).numpy()


def random_variables(seed: int = 0, frames: int = 24) -> dict:
  """Flax-initialised variables, with running statistics and BatchNorm affine made non-trivial."""
  variables = byol_a.BYOLAEncoder().init(jax.random.key(seed), jnp.zeros((1, 64, frames, 1)), train=False)
  keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
  jitter = lambda tree, scale, offset: jax.tree.map(
      lambda a: offset + a + scale * jax.random.normal(next(keys), a.shape), tree)
  params = dict(variables['params'])
  for name in ('features_1', 'features_5', 'features_9'):
    params[name] = jitter(params[name], 0.1, 0.0)
  stats = {name: {'mean': jitter(s['mean'], 0.2, 0.0), 'var': jnp.abs(jitter(s['var'], 0.3, 0.0))}
           for name, s in variables['batch_stats'].items()}
  return {'params': params, 'batch_stats': stats}


def batch(shape, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- The port, with random weights (no shared files needed) --------------------------------------------------


def test_random_weights_give_the_torch_twins_frames_and_embedding():
  variables = random_variables()
  x = batch((2, 64, 101, 1))  # 101 frames: the pools floor to 50, 25, 12
  model = byol_a.BYOLAEncoder()
  frames = model.apply(variables, x, train=False)
  embedding = model.apply(variables, x, train=False, method='embed')
  expected_frames, expected_embedding = torch_outputs(torch_twin(byol_a.state_dict(variables)), x)
  assert frames.shape == expected_frames.shape == (2, 12, 512)
  assert embedding.shape == expected_embedding.shape == (2, 512)
  np.testing.assert_allclose(np.asarray(frames), expected_frames, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(np.asarray(embedding), expected_embedding, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(np.asarray(byol_a.embed(variables, x[..., 0])), expected_embedding, rtol=RTOL,
                             atol=ATOL)
  assert float(jnp.std(embedding)) > 1e-2 and float(jnp.mean(frames > 0)) > 0.1  # not a comparison of zeros


def test_state_dict_round_trips_through_an_npz(tmp_path):
  variables = random_variables(seed=3)
  arrays = byol_a.state_dict(variables)
  assert {k: v.shape for k, v in arrays.items()} == byol_a.expected_shapes()
  path = tmp_path / 'byol.npz'
  np.savez(path, **arrays, **{'features.1.num_batches_tracked': np.array(7)})
  loaded = byol_a.load_variables(str(path))
  assert jax.tree.structure(loaded) == jax.tree.structure(variables)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize('frames', [8, 15, 17, 63])
def test_odd_lengths_floor_as_torch_max_pool(frames):
  variables = random_variables(frames=frames)
  x = batch((1, 64, frames, 1), seed=frames)
  out = byol_a.BYOLAEncoder().apply(variables, x, train=False)
  expected, _ = torch_outputs(torch_twin(byol_a.state_dict(variables)), x)
  assert out.shape == expected.shape == (1, frames // 8, 512) == (1, byol_a.frames_out(frames), 512)
  np.testing.assert_allclose(np.asarray(out), expected, rtol=RTOL, atol=ATOL)


def test_too_short_or_misshapen_inputs_are_refused():
  variables = random_variables()
  model = byol_a.BYOLAEncoder()
  with pytest.raises(ValueError, match='7 frames'):
    model.apply(variables, jnp.zeros((1, 64, 7, 1)), train=False)
  with pytest.raises(ValueError, match=r'\(batch, 64 mel, time, 1\)'):
    model.apply(variables, jnp.zeros((1, 32, 96, 1)), train=False)
  with pytest.raises(ValueError, match='batch, mel, time'):
    byol_a.embed(variables, jnp.zeros((64, 96)))


def test_dropout_only_in_training_and_eval_leaves_the_running_statistics():
  variables = random_variables()
  model = byol_a.BYOLAEncoder()
  x = batch((2, 64, 32, 1))
  train = lambda seed: model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(seed)},
                                   mutable=['batch_stats'])
  (first, stats), (second, _), (again, _) = train(0), train(1), train(0)
  assert not np.allclose(first, second)  # different dropout masks
  np.testing.assert_array_equal(np.asarray(first), np.asarray(again))
  assert not np.allclose(stats['batch_stats']['features_1']['mean'], variables['batch_stats']['features_1']['mean'])

  evaluated, unchanged = model.apply(variables, x, train=False, mutable=['batch_stats'])  # no 'dropout' rng needed
  np.testing.assert_array_equal(np.asarray(evaluated), np.asarray(model.apply(variables, x, train=False)))
  for a, b in zip(jax.tree.leaves(unchanged), jax.tree.leaves(variables['batch_stats'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_training_mode_normalises_and_updates_the_statistics_as_torch():
  """With dropout 0: batch statistics in the forward pass, running mean updated with PyTorch's momentum 0.1.

  (PyTorch's running variance takes the unbiased batch variance, flax's the biased one: not compared.)
  """
  variables = random_variables()
  x = batch((2, 64, 24, 1), seed=5)
  frames, stats = byol_a.BYOLAEncoder(dropout=0.0).apply(variables, x, train=True, mutable=['batch_stats'])
  twin = torch_twin(byol_a.state_dict(variables)).train()
  twin.fc[2].p = 0.0
  with torch.no_grad():
    expected = twin.frames(torch.from_numpy(np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2))))).numpy()
  np.testing.assert_allclose(np.asarray(frames), expected, rtol=RTOL, atol=ATOL)
  for flax_name, torch_name in (('features_1', 'features.1'), ('features_5', 'features.5'),
                                ('features_9', 'features.9')):
    np.testing.assert_allclose(np.asarray(stats['batch_stats'][flax_name]['mean']),
                               twin.state_dict()[f'{torch_name}.running_mean'].numpy(), rtol=RTOL, atol=ATOL)


# --- The weight file's errors --------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path):
  path = str(tmp_path / 'absent.npz')
  with pytest.raises(FileNotFoundError, match='absent.npz'):
    byol_a.load_variables(path)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path):
  text = tmp_path / 'weights.npz'
  text.write_text('not an archive')
  with pytest.raises(ValueError, match='not a NumPy .npz'):
    byol_a.load_variables(str(text))
  single = tmp_path / 'single.npy'
  np.save(single, np.zeros(3))
  with pytest.raises(ValueError, match='not an .npz archive'):
    byol_a.load_variables(str(single))


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path):
  arrays = byol_a.state_dict(random_variables())
  arrays['fc.0.weight'] = np.zeros((512, 256), np.float32)
  np.savez(tmp_path / 'w.npz', **arrays)
  with pytest.raises(ValueError, match=r'fc\.0\.weight has shape \(512, 256\); expected \(512, 512\)'):
    byol_a.load_variables(str(tmp_path / 'w.npz'))


def test_missing_and_unexpected_keys_are_named(tmp_path):
  arrays = byol_a.state_dict(random_variables())
  del arrays['features.5.running_var']
  np.savez(tmp_path / 'w.npz', **arrays)
  with pytest.raises(ValueError, match=r"missing keys \['features\.5\.running_var'\]"):
    byol_a.load_variables(str(tmp_path / 'w.npz'))
  arrays = byol_a.state_dict(random_variables())
  np.savez(tmp_path / 'w.npz', **arrays, **{'head.weight': np.zeros((4, 512), np.float32)})
  with pytest.raises(ValueError, match=r"unexpected keys \['head\.weight'\]"):
    byol_a.load_variables(str(tmp_path / 'w.npz'))


def test_object_arrays_are_not_unpickled(tmp_path):
  arrays = byol_a.state_dict(random_variables())
  arrays['fc.3.bias'] = np.array([{'a': 1}], dtype=object)
  np.savez(tmp_path / 'w.npz', **arrays)
  with pytest.raises(ValueError, match=r'fc\.3\.bias: cannot be read without pickle'):
    byol_a.load_variables(str(tmp_path / 'w.npz'))


# --- Front end -----------------------------------------------------------------------------------------------


def _hz_to_mel(freq: float) -> float:
  return 2595.0 * math.log10(1.0 + freq / 700.0)


def torchaudio_logmel(wave: np.ndarray) -> np.ndarray:
  """torchaudio.transforms.MelSpectrogram's defaults (periodic Hann, centre, reflect, power 2, HTK, no norm),
  written out with torch.stft and torchaudio's melscale_fbanks, then BYOL-A's log(mel + eps)."""
  spec = torch.stft(torch.from_numpy(wave), byol_a.N_FFT, hop_length=byol_a.HOP_LENGTH,
                    win_length=byol_a.WIN_LENGTH, window=torch.hann_window(byol_a.WIN_LENGTH), center=True,
                    pad_mode='reflect', normalized=False, onesided=True, return_complex=True).abs().pow(2.0)
  all_freqs = torch.linspace(0, byol_a.SAMPLE_RATE // 2, byol_a.N_FFT // 2 + 1)
  mel_points = torch.linspace(_hz_to_mel(byol_a.F_MIN), _hz_to_mel(byol_a.F_MAX), byol_a.N_MELS + 2)
  freq_points = 700.0 * (10 ** (mel_points / 2595.0) - 1.0)
  slopes = freq_points.unsqueeze(0) - all_freqs.unsqueeze(1)
  down = -slopes[:, :-2] / (freq_points[1:] - freq_points[:-1])[:-1]
  up = slopes[:, 2:] / (freq_points[1:] - freq_points[:-1])[1:]
  fbank = torch.clamp(torch.min(down, up), min=0.0)
  mel = torch.matmul(spec.transpose(-1, -2), fbank).transpose(-1, -2)
  return (mel + torch.finfo(torch.float).eps).log().numpy()


def test_frontend_shape_and_resampling():
  rng = np.random.default_rng(0)
  wave = (0.1 * rng.standard_normal(16000 + 37)).astype(np.float32)
  logmel = byol_a.frontend(wave, 16000)
  assert logmel.shape == (64, 1 + len(wave) // 160) and logmel.dtype == np.float32
  assert np.all(np.isfinite(logmel))
  assert byol_a.frontend(np.zeros(2000, np.float32), 16000).min() == np.float32(np.log(byol_a.LOG_EPS))
  assert byol_a.frontend(np.repeat(wave, 3), 48000).shape == logmel.shape  # 48 kHz resampled to 16 kHz
  with pytest.raises(ValueError, match='mono waveform'):
    byol_a.frontend(np.zeros((2, 100), np.float32), 16000)
  x = byol_a.standardise(logmel, -3.0, 2.0)
  np.testing.assert_allclose(x, (logmel + 3.0) / 2.0, rtol=1e-6)
  mean, std = byol_a.statistics([logmel, logmel[:, :5]])
  np.testing.assert_allclose([mean, std], [np.concatenate([logmel, logmel[:, :5]], 1).mean(),
                                           np.concatenate([logmel, logmel[:, :5]], 1).std()], rtol=1e-5)


def test_frontend_equals_torchaudio_computation_on_real_clips():
  for path in data_files('ravdess/Actor_01/*.flac', 1) + data_files('emodb/wav/*.wav', 1):
    wave, sr = audio.load_waveform(path, sample_rate=byol_a.SAMPLE_RATE)
    logmel = byol_a.frontend(wave, sr)
    np.testing.assert_allclose(logmel, torchaudio_logmel(wave), rtol=0, atol=LOGMEL_ATOL)
    np.testing.assert_array_equal(byol_a.load_logmel(path), logmel)


def test_frontend_equals_torchaudio_itself():
  torchaudio = pytest.importorskip('torchaudio', reason='torchaudio not installed: the written-out twin '
                                                        'above stands in for it')
  wave = (0.1 * np.random.default_rng(1).standard_normal(24000)).astype(np.float32)
  transform = torchaudio.transforms.MelSpectrogram(
      sample_rate=byol_a.SAMPLE_RATE, n_fft=byol_a.N_FFT, win_length=byol_a.WIN_LENGTH,
      hop_length=byol_a.HOP_LENGTH, n_mels=byol_a.N_MELS, f_min=byol_a.F_MIN, f_max=byol_a.F_MAX)
  expected = (transform(torch.from_numpy(wave)) + torch.finfo(torch.float).eps).log().numpy()
  np.testing.assert_allclose(byol_a.frontend(wave, byol_a.SAMPLE_RATE), expected, rtol=0, atol=LOGMEL_ATOL)


# --- The pretrained encoder on real clips --------------------------------------------------------------------


def real_logmels() -> list[np.ndarray]:
  """Two RAVDESS and two Emo-DB clips, each standardised with SERAB's statistics of its dataset."""
  clips = []
  for pattern, stats in (('ravdess/Actor_01/*.flac', 'ravdess'), ('emodb/wav/*.wav', 'emodb')):
    clips += [byol_a.standardise(byol_a.load_logmel(p), *byol_a.SERAB_STATS[stats]) for p in data_files(pattern, 2)]
  return clips


def test_pretrained_embeddings_equal_torchs_on_real_clips(pretrained):
  clips = real_logmels()
  twin = torch_twin(dict(np.load(WEIGHTS, allow_pickle=False)))
  frames = min(c.shape[1] for c in clips)
  frames -= 1 - frames % 2  # an odd number of frames: the pools floor
  x = np.stack([c[:, :frames] for c in clips])[..., None]
  expected_frames, expected = torch_outputs(twin, x)
  out = byol_a.BYOLAEncoder().apply(pretrained, x, train=False)
  embedding = byol_a.embed(pretrained, x)
  assert embedding.shape == (4, 512) and out.shape == (4, frames // 8, 512)
  np.testing.assert_allclose(np.asarray(out), expected_frames, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(np.asarray(embedding), expected, rtol=RTOL, atol=ATOL)
  assert float(np.std(expected)) > 0.1 and float(np.mean(expected > 0)) > 0.2  # a real embedding, not zeros
  # A whole clip at its own length (not a multiple of 8 frames).
  whole = clips[0][None, ..., None]
  np.testing.assert_allclose(np.asarray(byol_a.embed(pretrained, whole)), torch_outputs(twin, whole)[1],
                             rtol=RTOL, atol=ATOL)
