"""BYOL-S: the BYOL-A encoder (AudioNTT2020) pretrained on AudioSet speech, its log-mel front end, its weights.

The network, the front end and the weight file are those of `shared/weights/README.md` (section byol-s):
log-mel (64 bands, row 0 the LOWEST band, as torchaudio gives them; unlike `emojax.audio`'s images) ->
three blocks [3x3 conv 64, BatchNorm, ReLU, 2x2 max-pool] -> per frame 8 bands x 64 channels -> FC 512,
ReLU, dropout 0.3, FC 512, ReLU -> frame features (B, T // 8, 512); the clip embedding is their mean over
time plus their max over time. Layer names follow the PyTorch state_dict ('features.0' -> 'features_0'),
so `load_variables` and `state_dict` are renames plus layout transposes.

Typical use (frozen embeddings):

  variables = byol_a.load_variables('.../byol-s/byols_d512.npz')
  logmel = byol_a.standardise(byol_a.frontend(wave, sr), *byol_a.SERAB_STATS['ravdess'])
  embedding = byol_a.embed(variables, logmel[None])  # (1, 512)
"""
from __future__ import annotations

import os
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from emojax.models.cnn import BATCHNORM_MOMENTUM  # PyTorch's momentum 0.1, as BYOL-A trained with

# The front end BYOL-S was trained with (torchaudio.transforms.MelSpectrogram's arguments in SERAB's config).
SAMPLE_RATE = 16000
N_FFT = 1024
HOP_LENGTH = 160
# SERAB's window; BYOL-A's original config used 1024, and the checkpoint does not record which.
WIN_LENGTH = 400
N_MELS = 64
F_MIN = 60.0
F_MAX = 7800.0
# BYOL-A adds torch.finfo(torch.float).eps to the mel power before the log.
LOG_EPS = float(np.finfo(np.float32).eps)
# SERAB's per-dataset (mean, std) of the log-mel, for `standardise`; or compute them with `statistics`.
SERAB_STATS = {'emodb': (-2.693, 4.103), 'ravdess': (-10.320, 5.000)}

CHANNELS = 64
BLOCKS = 3
DOWNSAMPLE = 2 ** BLOCKS  # each block's 2x2 pool halves the bands and the frames (floor, as PyTorch)
BATCHNORM_EPS = 1e-5
DROPOUT = 0.3


def frames_out(frames: int) -> int:
  """The number of feature frames for `frames` input frames: each pool floors, so frames // 8."""
  for _ in range(BLOCKS):
    frames //= 2
  return frames


def clip_embedding(features: jax.Array) -> jax.Array:
  """BYOL-A's clip embedding of frame features (B, T', D): mean over time plus max over time, (B, D)."""
  return jnp.mean(features, axis=1) + jnp.max(features, axis=1)


class BYOLAEncoder(nn.Module):
  """AudioNTT2020: log-mel (B, n_mels, T, 1) -> frame features (B, T // 8, dim); `embed` -> (B, dim).

  Input layout: emojax's audio layout (B, H = frequency, W = time, C = 1), with row 0 the lowest mel band
  (PyTorch's (B, 1, mel, T) moved channels-last). Training mode uses and updates the batch statistics
  (apply with mutable=['batch_stats']) and needs a 'dropout' rng.
  """

  dim: int = 512
  n_mels: int = N_MELS
  dropout: float = DROPOUT

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if x.ndim != 4 or x.shape[1] != self.n_mels or x.shape[3] != 1:
      raise ValueError(f'BYOL-A input must be (batch, {self.n_mels} mel, time, 1); got {x.shape}.')
    if frames_out(x.shape[2]) < 1:
      raise ValueError(f'BYOL-A input of {x.shape[2]} frames leaves no frame after three 2x2 pools '
                       f'(at least {DOWNSAMPLE} needed).')
    x = x.astype(jnp.float32)
    for block in range(BLOCKS):
      x = nn.Conv(CHANNELS, (3, 3), padding=((1, 1), (1, 1)), name=f'features_{4 * block}')(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=BATCHNORM_MOMENTUM, epsilon=BATCHNORM_EPS,
                       name=f'features_{4 * block + 1}')(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2), padding='VALID')  # VALID floors, as PyTorch
    batch, bands, frames, channels = x.shape
    # PyTorch's permute(0, 3, 2, 1).reshape(B, T, F * C): per frame, band outer and channel inner.
    x = jnp.transpose(x, (0, 2, 1, 3)).reshape(batch, frames, bands * channels)
    x = nn.relu(nn.Dense(self.dim, name='fc_0')(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return nn.relu(nn.Dense(self.dim, name='fc_3')(x))

  def embed(self, x: jax.Array, *, train: bool) -> jax.Array:
    return clip_embedding(self(x, train=train))


# --- Weights --------------------------------------------------------------------------------------------------


def expected_shapes(dim: int = 512, n_mels: int = N_MELS) -> dict[str, tuple[int, ...]]:
  """The PyTorch state_dict's keys and shapes (conv (out, in, kh, kw), Linear (out, in)); no num_batches_tracked."""
  shapes = {}
  for block in range(BLOCKS):
    conv, norm = f'features.{4 * block}', f'features.{4 * block + 1}'
    shapes[f'{conv}.weight'] = (CHANNELS, 1 if block == 0 else CHANNELS, 3, 3)
    shapes[f'{conv}.bias'] = (CHANNELS,)
    for name in ('weight', 'bias', 'running_mean', 'running_var'):
      shapes[f'{norm}.{name}'] = (CHANNELS,)
  shapes.update({'fc.0.weight': (dim, CHANNELS * (n_mels // DOWNSAMPLE)), 'fc.0.bias': (dim,),
                 'fc.3.weight': (dim, dim), 'fc.3.bias': (dim,)})
  return shapes


def _from_torch(arrays: dict[str, np.ndarray]) -> dict:
  """Renames and transposes a checked state_dict into Flax variables."""
  params, stats = {}, {}
  for block in range(BLOCKS):
    conv, norm = f'features.{4 * block}', f'features.{4 * block + 1}'
    params[conv.replace('.', '_')] = {'kernel': arrays[f'{conv}.weight'].transpose(2, 3, 1, 0),
                                      'bias': arrays[f'{conv}.bias']}
    params[norm.replace('.', '_')] = {'scale': arrays[f'{norm}.weight'], 'bias': arrays[f'{norm}.bias']}
    stats[norm.replace('.', '_')] = {'mean': arrays[f'{norm}.running_mean'], 'var': arrays[f'{norm}.running_var']}
  for fc in ('fc.0', 'fc.3'):
    params[fc.replace('.', '_')] = {'kernel': arrays[f'{fc}.weight'].T, 'bias': arrays[f'{fc}.bias']}
  return jax.tree.map(lambda a: jnp.asarray(np.ascontiguousarray(a, np.float32)),
                      {'params': params, 'batch_stats': stats})


def state_dict(variables: dict) -> dict[str, np.ndarray]:
  """The inverse of `load_variables`: Flax variables as a PyTorch state_dict of float32 arrays (for np.savez
  or torch's load_state_dict(strict=False); num_batches_tracked is not kept)."""
  params, stats = jax.device_get(variables['params']), jax.device_get(variables['batch_stats'])
  arrays = {}
  for block in range(BLOCKS):
    conv, norm = f'features_{4 * block}', f'features_{4 * block + 1}'
    torch_conv, torch_norm = conv.replace('_', '.'), norm.replace('_', '.')
    arrays[f'{torch_conv}.weight'] = np.asarray(params[conv]['kernel']).transpose(3, 2, 0, 1)
    arrays[f'{torch_conv}.bias'] = np.asarray(params[conv]['bias'])
    arrays[f'{torch_norm}.weight'] = np.asarray(params[norm]['scale'])
    arrays[f'{torch_norm}.bias'] = np.asarray(params[norm]['bias'])
    arrays[f'{torch_norm}.running_mean'] = np.asarray(stats[norm]['mean'])
    arrays[f'{torch_norm}.running_var'] = np.asarray(stats[norm]['var'])
  for fc in ('fc_0', 'fc_3'):
    arrays[f"{fc.replace('_', '.')}.weight"] = np.asarray(params[fc]['kernel']).T
    arrays[f"{fc.replace('_', '.')}.bias"] = np.asarray(params[fc]['bias'])
  return {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}


def load_variables(path: str, *, dim: int = 512, n_mels: int = N_MELS) -> dict:
  """Flax variables {'params', 'batch_stats'} of `BYOLAEncoder(dim, n_mels)` from an .npz of the PyTorch
  state_dict (README's byol-s). Read without pickle; every key and shape is checked, so a wrong file fails
  here, naming the key, rather than as a shape error deep inside `apply`.

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not an .npz archive; a key missing or unexpected; an array of the wrong shape, of a
      non-float dtype, or holding NaN/inf.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such BYOL-A weight file.')
  try:
    archive = np.load(path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
    raise ValueError(f'{path}: not a NumPy .npz archive of the BYOL-A state_dict ({err}).') from err
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f'{path}: a single NumPy array (.npy), not an .npz archive of the BYOL-A state_dict.')
  expected = expected_shapes(dim, n_mels)
  with archive:
    keys = set(archive.files)
    missing = sorted(set(expected) - keys)
    unexpected = sorted(k for k in keys - set(expected) if not k.endswith('.num_batches_tracked'))
    if missing or unexpected:
      raise ValueError(f'{path}: not the BYOL-A (AudioNTT2020) state_dict: missing keys {missing}, '
                       f'unexpected keys {unexpected}.')
    arrays = {}
    for key, shape in expected.items():
      try:
        array = archive[key]
      except ValueError as err:  # an object array, which would need pickle
        raise ValueError(f'{path}: {key}: cannot be read without pickle ({err}).') from err
      if array.shape != shape:
        raise ValueError(f'{path}: {key} has shape {array.shape}; expected {shape} '
                         f'(BYOLAEncoder(dim={dim}, n_mels={n_mels})).')
      if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f'{path}: {key} has dtype {array.dtype}; expected floating point.')
      if not np.all(np.isfinite(array)):
        raise ValueError(f'{path}: {key} holds NaN or infinite values.')
      arrays[key] = array
  return _from_torch(arrays)


@jax.jit
def _embed(variables: dict, x: jax.Array) -> jax.Array:
  model = BYOLAEncoder(dim=variables['params']['fc_3']['kernel'].shape[1], n_mels=x.shape[1])
  return model.apply(variables, x, train=False, method='embed')


def embed(variables: dict, logmel_batch) -> jax.Array:
  """Eval-mode clip embeddings (B, dim) of standardised log-mels (B, n_mels, T) or (B, n_mels, T, 1).

  Compiled once per input shape: clips of different lengths are best cut or grouped to a few lengths.
  """
  x = jnp.asarray(logmel_batch, jnp.float32)
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f'log-mel batch must be (batch, mel, time) or (batch, mel, time, 1); got {x.shape}.')
  return _embed(variables, x)


# --- Front end ------------------------------------------------------------------------------------------------


def frontend(wave: np.ndarray, sr: int, *, win_length: int = WIN_LENGTH) -> np.ndarray:
  """BYOL-A's log-mel (N_MELS, T) of a mono waveform: natural log of (mel power + float32 eps), not standardised.

  torchaudio.transforms.MelSpectrogram's computation, with librosa: 16 kHz (resampled by librosa when `sr`
  differs), periodic Hann window of `win_length` zero-padded to n_fft 1024, hop 160, centred frames with
  reflect padding (T = 1 + samples // 160), power 2, HTK mel scale without area normalisation, 60-7800 Hz.
  Row 0 is the lowest band.
  """
  # Imported here: the network needs none of librosa, which takes a second to import.
  import librosa  # pylint: disable=import-outside-toplevel

  wave = np.asarray(wave, np.float32)
  if wave.ndim != 1 or wave.size == 0:
    raise ValueError(f'BYOL-A front end takes a non-empty mono waveform (n,); got shape {wave.shape}.')
  if sr != SAMPLE_RATE:
    wave = librosa.resample(wave, orig_sr=sr, target_sr=SAMPLE_RATE).astype(np.float32)
  mel = librosa.feature.melspectrogram(
      y=wave, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=win_length, window='hann',
      center=True, pad_mode='reflect', power=2.0, n_mels=N_MELS, fmin=F_MIN, fmax=F_MAX, htk=True, norm=None)
  return np.log(mel + np.float32(LOG_EPS)).astype(np.float32)


def load_logmel(path: str, *, win_length: int = WIN_LENGTH) -> np.ndarray:
  """`frontend` of an audio (or audio-visual) file, read and resampled to 16 kHz by `emojax.audio.load_waveform`."""
  from emojax import audio  # pylint: disable=import-outside-toplevel  # (cv2, PyAV: not needed by the network)

  wave, sr = audio.load_waveform(path, sample_rate=SAMPLE_RATE)
  return frontend(wave, sr, win_length=win_length)


def standardise(logmel, mean: float, std: float):
  """(logmel - mean) / std: BYOL-A's one dataset-wide normalisation (SERAB_STATS, or `statistics`)."""
  if not std > 0:
    raise ValueError(f'standard deviation must be positive; got {std}.')
  return (logmel - np.float32(mean)) / np.float32(std)


def statistics(logmels) -> tuple[float, float]:
  """The (mean, std) over every value of several log-mels (N_MELS, T_i), as BYOL-A computes a dataset's."""
  values = np.concatenate([np.asarray(m, np.float64).reshape(-1) for m in logmels])
  if values.size == 0:
    raise ValueError('no log-mel values to compute statistics from.')
  return float(values.mean()), float(values.std())
