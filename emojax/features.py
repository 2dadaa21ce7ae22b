"""Features: one utterance -> the audio (and video) arrays of its examples, as a `FeatureSpec` says.

`spec_from_config` is the one place that maps a run config to a FeatureSpec, so
`experiments.prepare` and `experiments.run` of the same config build the same arrays.
"""
from __future__ import annotations

import collections
import dataclasses
import zlib
from typing import Any, Iterator

import av
import librosa
import numpy as np
import scipy.signal

from emojax import audio
from emojax import video as video_lib
from emojax.corpora.base import Corpus, Utterance

# The paper's four dataset variants (Table 1): (3-second clips?, noise cleanup?).
VARIANTS = {'ds1': (False, False), 'ds2': (True, False), 'ds3': (False, True), 'ds4': (True, True)}
FRONTENDS = ('logmel', 'faithful')
# Errors that mean "this utterance's data is unusable" (unreadable, truncated, empty, non-finite):
# the build records the utterance as skipped, with the message, and goes on.
DATA_ERRORS = (ValueError, OSError, RuntimeError, EOFError, av.error.FFmpegError,
               librosa.util.exceptions.ParameterError)
MIN_SECONDS = 0.2    # shorter audio is refused: a few STFT frames say nothing about emotion
LONG_SECONDS = 30.0  # longer utterances are kept but named in the manifest (ds1 squeezes each into one image)


DEFAULT_MEL_BANDS = 64  # a config saved before data.mel_bands existed means these


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """Which features a build computes (everything that changes the arrays).

  A run's spec comes from its config (`spec_from_config`); the defaults serve direct use.
  """

  variant: str = 'ds2'
  frontend: str = 'logmel'            # 'logmel' (1 channel) or 'faithful' (paper: RGB colormap, 200x300)
  audio_size: tuple[int, int] = (64, 96)
  mel_bands: int = 64                 # 'logmel': bands computed, then resized (bilinear) to audio_size's rows
  clip_seconds: float = 3.0
  class_set: str = '4class'
  merge_exc: bool = False
  with_video: bool = True
  video_frames: int = 20              # per clip (the paper: 20 frames per 3 s)
  video_size: tuple[int, int] = (60, 100)
  video_crop: str = 'fixed'           # 'fixed' (paper) or 'face' (detector, fixed-crop fallback)
  # The paper's future-work augmentation: extra copies of every clip with a faint tone sweep
  # mixed into the waveform (see `mix_tone_sweep`); training splits use them, held-out sets never.
  augment_copies: int = 0
  augment_level_db: float = -20.0     # RMS of the sweep relative to the clip's RMS

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'Unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}.')
    if self.frontend not in FRONTENDS:
      raise ValueError(f'Unknown front end {self.frontend!r}; expected one of {list(FRONTENDS)}.')
    if self.video_crop not in ('fixed', 'face'):
      raise ValueError(f"Unknown video crop {self.video_crop!r}; expected 'fixed' or 'face'.")
    if self.augment_copies < 0:
      raise ValueError(f'augment_copies must be >= 0, got {self.augment_copies}.')
    for name in ('audio_size', 'video_size'):
      size = getattr(self, name)
      if len(size) != 2 or not all(isinstance(n, int) and n > 0 for n in size):
        raise ValueError(f'data.{name} must be (height, width), two positive integers; got {size!r}.')
    if not isinstance(self.mel_bands, int) or not 8 <= self.mel_bands <= 256:
      raise ValueError(f'data.mel_bands must be an integer in 8..256 (the 512-point STFT has 257 bins), '
                       f'got {self.mel_bands!r}.')
    if self.clip_seconds <= 0:
      raise ValueError(f'data.clip_seconds must be > 0, got {self.clip_seconds}.')

  @property
  def audio_channels(self) -> int:
    return 3 if self.frontend == 'faithful' else 1


def fields_read(spec: FeatureSpec) -> dict[str, Any]:
  """The fields of `spec` its features depend on: the video's only with video, mel_bands only for the log-mel
  front end. (augment_level_db stays even without augmented copies: the builds of the default spec keep the
  keys they had.)"""
  fields = dataclasses.asdict(spec)
  unread = []
  if not spec.with_video:
    unread += ['video_frames', 'video_size', 'video_crop']
  if spec.frontend != 'logmel':
    unread.append('mel_bands')
  return {k: v for k, v in fields.items() if k not in unread}


def spec_from_config(config) -> FeatureSpec:
  """The features a run of `config` reads: `config.data`'s fields, video only if the model reads it."""
  from emojax import models  # here, not at the top: a build alone need not import JAX
  dc = config.data
  return FeatureSpec(
      variant=dc.variant, frontend=dc.frontend, audio_size=tuple(dc.audio_size),
      mel_bands=dc.mel_bands, clip_seconds=dc.clip_seconds,
      class_set=dc.class_set, merge_exc=dc.merge_exc, with_video=models.reads_video(config.model),
      video_frames=dc.video_frames, video_size=tuple(dc.video_size), video_crop=dc.video_crop,
      augment_copies=dc.augment_copies, augment_level_db=dc.augment_level_db)


def audio_features(wave: np.ndarray, sr: int, spec: FeatureSpec) -> np.ndarray:
  if spec.frontend == 'faithful':
    return audio.faithful_spectrogram(wave, sr, size=spec.audio_size)
  return audio.logmel_spectrogram(wave, sr, size=spec.audio_size, n_mels=spec.mel_bands)


def mix_tone_sweep(wave: np.ndarray, sr: int, *, level_db: float, rng: np.random.Generator) -> np.ndarray:
  """Mixes a faint linear sine sweep between two random frequencies (100 Hz .. 4 kHz) into `wave`.

  The paper's future work: "mixing a low-amplitude signal of varying frequency
  into the waveform" before the spectrogram. The sweep's RMS is `level_db`
  relative to the waveform's RMS, so it stays faint on loud and quiet clips.
  """
  seconds = np.arange(len(wave)) / sr
  low, high = 100.0, min(4000.0, 0.45 * sr)
  start_hz, end_hz = rng.uniform(low, high, size=2)
  sweep = scipy.signal.chirp(seconds, f0=start_hz, t1=max(seconds[-1], 1 / sr), f1=end_hz,
                             phi=rng.uniform(0, 360))
  amplitude = np.sqrt(2 * np.mean(np.square(wave, dtype=np.float64))) * 10 ** (level_db / 20)
  return np.clip(wave + amplitude * sweep, -1.0, 1.0).astype(np.float32)


def clip_frames(frames: np.ndarray, fps: float, index: int, seconds: float) -> np.ndarray:
  """The frames under the time window of clip `index` (clips of `seconds` back to back).

  A video that ends inside the window (a short utterance or the last clip, whose audio is
  padded with noise) holds its last frame to the window's end, so frame time maps to the
  same clip time as the audio's columns in every clip (stretching the short window instead
  would make that map differ clip by clip and blur the audio-video synchrony).
  """
  length = max(1, int(round(seconds * fps)))
  first = int(round(index * seconds * fps))
  window = frames[first:first + length]
  if not len(window):
    window = frames[-1:]
  return np.concatenate([window, np.repeat(window[-1:], length - len(window), axis=0)])


def check_waveform(wave: np.ndarray, sr: int) -> None:
  """Raises ValueError for a waveform no feature can come from: empty, non-finite, all zeros or
  shorter than MIN_SECONDS."""
  if wave.size == 0:
    raise ValueError('empty audio (0 samples)')
  if not np.all(np.isfinite(wave)):
    raise ValueError('non-finite samples (NaN or inf) in the waveform')
  if not np.any(wave):
    raise ValueError('silent audio (every sample is 0)')
  if wave.size / sr < MIN_SECONDS:
    raise ValueError(f'too short: {wave.size / sr:.3f} s of audio, the minimum is {MIN_SECONDS} s')


def utterance_examples(corpus: Corpus, utt: Utterance, spec: FeatureSpec,
                       stats: collections.Counter) -> Iterator[dict[str, Any]]:
  """The feature arrays of one utterance of a corpus (`recording_examples` of its audio and video; the
  padding noise and augmentation are seeded by its id, so every build makes the same arrays).

  Raises:
    one of DATA_ERRORS when the utterance's data is unusable.
  """
  wave, sr = corpus.load_audio(utt)
  loaded = corpus.load_video(utt) if spec.with_video else None
  yield from recording_examples(wave, sr, spec, seed=zlib.crc32(utt.id.encode()), video=loaded, stats=stats)


def recording_examples(wave: np.ndarray, sr: int, spec: FeatureSpec, *, seed: int,
                       video: tuple[np.ndarray, float] | None = None,
                       stats: collections.Counter | None = None) -> Iterator[dict[str, Any]]:
  """The feature arrays of one recording, the one path from a waveform (and its video's (frames, fps)) to
  model inputs, used by the array build and by prediction alike: per clip (3-s clips back to back, the last
  padded with noise seeded by `seed`, for ds2/ds4; the whole recording for ds1/ds3) its video frames and
  spectrogram, then `spec.augment_copies` augmented copies. Counts face-crop outcomes in `stats`, and the
  audio's length in stats['audio_ms'].

  Raises:
    one of DATA_ERRORS when the recording is unusable.
  """
  clips_wanted, cleanup = VARIANTS[spec.variant]
  check_waveform(wave, sr)
  if spec.with_video and video is None:
    raise ValueError('no video')
  stats = collections.Counter() if stats is None else stats
  stats['audio_ms'] += int(round(1000 * wave.size / sr))
  if cleanup:
    wave = audio.denoise(wave, sr)
  if clips_wanted:
    clips = audio.clip_waveform(wave, sr, seconds=spec.clip_seconds, rng=np.random.default_rng(seed))
  else:
    clips = [wave]
  for index, clip in enumerate(clips):
    example = {'clip': index}
    if spec.with_video:
      frames, fps = video
      window = clip_frames(frames, fps, index, spec.clip_seconds) if clips_wanted else frames
      example['video'], found = video_lib.video_clip(
          window, n_frames=spec.video_frames, size=spec.video_size, crop=spec.video_crop)
      if spec.video_crop == 'face':
        stats['face_found' if found else 'face_fallback_fixed_crop'] += 1
    for copy in range(spec.augment_copies + 1):
      signal = clip if copy == 0 else mix_tone_sweep(
          clip, sr, level_db=spec.augment_level_db, rng=np.random.default_rng([seed, index, copy]))
      features = audio_features(signal, sr, spec)
      if not np.all(np.isfinite(features)):
        raise ValueError(f'non-finite audio features in clip {index}')
      yield {**example, 'audio': features.astype(np.float32), 'copy': copy}
