"""Audio: waveform loading, 3-second clips with noise padding, noise cleanup, spectrogram front ends.

Two front ends turn a waveform into an image-like array:

* `faithful_spectrogram`: the paper's features (44.1 kHz STFT, n_fft 2048, hop
  512, dB on a fixed +/-60 dB scale, frequencies above ~8.8 kHz cropped away,
  rendered through matplotlib's 'seismic' colormap, 200x300 RGB, ImageNet
  normalisation).
* `logmel_spectrogram`: one channel of log-mel (or linear STFT) dB, on a fixed
  dB scale relative to a full-scale sine, scaled to [-1, 1]; no rendering.

Both put the HIGHEST kept frequency in row 0 (like the paper's PNGs, so
cropping rows from the top removes high frequencies) and time in columns,
left to right. `faithful_row_of_frequency` and `logmel_row_of_frequency` say
which row a frequency lands in.
"""
from __future__ import annotations

import os
import re

import cv2
import librosa
import matplotlib
import numpy as np
import scipy.signal
import soundfile as sf

from emojax import video

# Extensions libsndfile reads itself; anything else is treated as a container (video) file.
SOUNDFILE_EXTENSIONS = ('.wav', '.flac', '.ogg', '.mp3', '.aiff', '.aif')

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# Frame length (samples) of the noise-floor estimate and the share of quietest frames it averages.
_NOISE_FRAME = 512
_QUIETEST_SHARE = 0.1
# STFT size of the spectral gate, and the share of the quietest pieces of that size that make its noise clip.
_DENOISE_FRAME = 2048
_DENOISE_NOISE_SHARE = 0.2


def load_waveform(path: str, *, sample_rate: int | None = None, start: float | None = None,
                  end: float | None = None) -> tuple[np.ndarray, int]:
  """Reads a mono float32 waveform in [-1, 1], optionally cut to [start, end) seconds and resampled.

  wav/flac/ogg/mp3 are read with soundfile, seeking to `start` so only the
  requested range is read; other extensions (.avi, .mp4, .flv, ...) are
  containers whose audio track is decoded with `emojax.video.decode_audio_track`
  and then cut. Channels are averaged.

  Args:
    path: the audio (or audio-visual) file.
    sample_rate: resample to this rate (librosa); None keeps the file's rate.
    start: first second to read; None = the beginning.
    end: second to stop at (exclusive); None = the end of the file.

  Returns:
    (waveform of shape (n,), sample rate).

  Raises:
    OSError: the file is missing or libsndfile / FFmpeg cannot read it.
    ValueError: the file or the requested range holds no samples, or the range is invalid.
  """
  if start is not None and start < 0:
    raise ValueError(f'{path}: start {start} s is negative.')
  if start is not None and end is not None and end <= start:
    raise ValueError(f'{path}: end {end} s is not after start {start} s.')
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such audio file.')
  if os.path.getsize(path) == 0:
    raise ValueError(f'{path}: empty file (0 bytes).')
  if os.path.splitext(path)[1].lower() in SOUNDFILE_EXTENSIONS:
    wave, sr = _read_soundfile(path, start, end)
  else:
    wave, sr = video.decode_audio_track(path)
    first = 0 if start is None else int(round(start * sr))
    last = len(wave) if end is None else int(round(end * sr))
    if first >= len(wave):
      raise ValueError(f'{path}: start {start} s is past the end of its audio ({len(wave) / sr:.3f} s).')
    wave = wave[first:last]
  if wave.size == 0:
    raise ValueError(f'{path}: no audio samples in the requested range.')
  if not np.all(np.isfinite(wave)):  # before the clip below, which would turn +/-inf into +/-1
    raise ValueError(f'{path}: non-finite samples (NaN or inf) in the waveform.')
  if sample_rate is not None and sample_rate != sr:
    wave, sr = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate), sample_rate
  return np.clip(wave, -1.0, 1.0).astype(np.float32), int(sr)


def _read_soundfile(path: str, start: float | None, end: float | None) -> tuple[np.ndarray, int]:
  try:
    with sf.SoundFile(path) as f:
      sr = f.samplerate
      first = 0 if start is None else int(round(start * sr))
      if f.frames and first >= f.frames:
        raise ValueError(f'{path}: start {start} s is past the end of the file ({f.frames / sr:.3f} s).')
      if first:
        f.seek(first)
      count = -1 if end is None else int(round(end * sr)) - first
      wave = f.read(count, dtype='float32', always_2d=True)
      _check_complete(path, f, first, count, len(wave))
  except sf.LibsndfileError as err:
    raise OSError(f'{path}: cannot read audio: {err}') from err
  return wave.mean(axis=1), sr


def _check_complete(path: str, f: sf.SoundFile, first: int, count: int, got: int) -> None:
  """Raises ValueError when a file holds less audio than its header declares (a cut-off copy).

  libsndfile silently shortens a truncated WAV to the bytes present and logs the
  header's claim ('data : 88200 (should be 44078)'); compressed formats (mp3)
  keep the declared length and just return fewer samples.
  """
  declared = re.search(r'^data : (\d+) \(should be (\d+)\)', f.extra_info, re.MULTILINE)
  # 0 and 0xFFFFFFFF are what streaming writers put in a header they cannot rewind to fill in.
  if declared and int(declared[2]) < int(declared[1]) and int(declared[1]) not in (0, 0xFFFFFFFF):
    raise ValueError(f'{path}: truncated file: its header declares {declared[1]} bytes of audio, '
                     f'only {declared[2]} are present.')
  expected = f.frames - first if count < 0 else min(count, f.frames - first)
  # Compressed lengths are estimates (mp3 frames hold 1152 samples): allow 1% and a few frames.
  if got < expected - 0.01 * f.frames - 4 * 1152:
    raise ValueError(f'{path}: truncated file: {got} samples readable where {expected} were expected.')


def _quietest_frames(wave: np.ndarray, frame_length: int, hop_length: int, share: float) -> np.ndarray:
  """The `share` of lowest-energy frames of `wave`, shape (k, frame_length), k >= 1.

  Frames of exact digital silence are ignored when the signal has any others,
  so a zeroed lead-in does not hide the real background noise.
  """
  if wave.size == 0:
    raise ValueError('cannot estimate the noise of an empty waveform.')
  padded = np.pad(wave.astype(np.float64), (0, max(0, frame_length - len(wave))))
  frames = librosa.util.frame(padded, frame_length=frame_length, hop_length=hop_length, axis=0)
  energy = np.mean(frames ** 2, axis=1)
  candidates = np.flatnonzero(energy > 0) if np.any(energy > 0) else np.arange(len(energy))
  quietest = candidates[np.argsort(energy[candidates], kind='stable')[:max(1, int(len(candidates) * share))]]
  return frames[np.sort(quietest)]


def noise_floor(wave: np.ndarray) -> tuple[float, np.ndarray]:
  """The recording's background noise: RMS and mean magnitude spectrum of its quietest 10% of frames.

  Frames are `_NOISE_FRAME` samples long, half overlapping.

  Returns:
    (RMS, magnitude spectrum of shape (_NOISE_FRAME // 2 + 1,)).
  """
  frames = _quietest_frames(wave, _NOISE_FRAME, _NOISE_FRAME // 2, _QUIETEST_SHARE)
  window = scipy.signal.get_window('hann', _NOISE_FRAME)
  spectrum = np.abs(np.fft.rfft(frames * window, axis=1)).mean(axis=0)
  return float(np.sqrt(np.mean(frames ** 2))), spectrum


def _synthesise_noise(rms: float, spectrum: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
  """`length` samples of noise with the given magnitude spectrum (random phases) and RMS."""
  if length <= 0:
    return np.zeros(0, np.float32)
  hop = _NOISE_FRAME // 4
  columns = 1 + int(np.ceil(length / hop))
  phases = np.exp(2j * np.pi * rng.random((len(spectrum), columns)))
  noise = librosa.istft(spectrum[:, None] * phases, hop_length=hop, n_fft=_NOISE_FRAME, length=length)
  level = np.sqrt(np.mean(noise ** 2))
  # Overlap-add of random phases changes the level; set it to the measured floor.
  return (noise * (rms / level if level > 0 else 0.0)).astype(np.float32)


def pad_with_noise(wave: np.ndarray, length: int, *, rng: np.random.Generator) -> np.ndarray:
  """Appends noise shaped like the recording's own noise floor until `wave` has `length` samples.

  The noise has the level and spectrum of the signal's quietest frames (see
  `noise_floor`), so the padding looks like the recording's own pauses rather
  than digital silence (zero padding distorted the paper's spectrograms).
  A digitally silent signal is padded with zeros.

  Raises:
    ValueError: `wave` is empty or already longer than `length`.
  """
  if len(wave) > length:
    raise ValueError(f'cannot pad {len(wave)} samples to the shorter length {length}.')
  rms, spectrum = noise_floor(wave)
  return _pad(wave, length, rms, spectrum, rng)


def _pad(wave: np.ndarray, length: int, rms: float, spectrum: np.ndarray,
         rng: np.random.Generator) -> np.ndarray:
  noise = _synthesise_noise(rms, spectrum, length - len(wave), rng)
  return np.concatenate([wave.astype(np.float32), noise])


def clip_waveform(wave: np.ndarray, sr: int, *, seconds: float = 3.0,
                  rng: np.random.Generator) -> list[np.ndarray]:
  """Cuts an utterance into consecutive clips of `seconds` (the paper's DS II / DS IV).

  A long utterance gives `len // clip` consecutive clips. The remainder becomes
  one more clip, padded with noise, when it lasts at least half a clip, and is
  dropped otherwise (so no clip is mostly padding). An utterance shorter than a
  clip always gives one clip, padded with noise. The padding noise matches the
  noise floor of the WHOLE utterance (see `pad_with_noise`).

  Args:
    wave: mono waveform.
    sr: its sample rate.
    seconds: clip length.
    rng: source of the padding noise (the same rng state gives the same clips).

  Returns:
    Clips of exactly round(seconds * sr) samples, float32.
  """
  clip = int(round(seconds * sr))
  if clip <= 0:
    raise ValueError(f'a clip of {seconds} s at {sr} Hz holds no samples.')
  rms, spectrum = noise_floor(wave)
  wave = wave.astype(np.float32)
  clips = [wave[i:i + clip] for i in range(0, len(wave) - clip + 1, clip)]
  remainder = wave[len(clips) * clip:]
  if not clips or len(remainder) >= clip / 2:
    clips.append(_pad(remainder, clip, rms, spectrum, rng))
  return clips


def denoise(wave: np.ndarray, sr: int) -> np.ndarray:
  """The paper's noise cleanup (DS III / IV): band-pass 1 Hz .. 30 kHz, then spectral gating.

  The band's upper edge is lowered to 0.99 of Nyquist when the sample rate
  cannot hold 30 kHz. Spectral gating is `noisereduce`'s stationary mode, as in
  the method the paper cites (Sainburg's noise reduction), which takes its
  noise statistics from a noise-only clip: here the quietest 20% of the
  utterance (in 2048-sample pieces). Estimating them from the whole signal
  instead would gate away any sustained voiced sound. STFT size (2048),
  threshold (1.5 std) and mask smoothing (2 bins x 4 frames) are Sainburg's;
  noisereduce's default 500 Hz smoothing would blur away harmonics.
  """
  # Imported here: noisereduce imports PyTorch when it is installed (0.5 GB and 2 s in every process).
  import noisereduce  # pylint: disable=import-outside-toplevel

  high = min(30_000.0, 0.99 * sr / 2)
  sos = scipy.signal.butter(4, [1.0, high], btype='bandpass', fs=sr, output='sos')
  filtered = scipy.signal.sosfiltfilt(sos, wave.astype(np.float64))
  noise = _quietest_frames(filtered, _DENOISE_FRAME, _DENOISE_FRAME, _DENOISE_NOISE_SHARE).reshape(-1)
  hop = _DENOISE_FRAME // 4
  # Sainburg's mask smoothing: 2 frequency bins and 4 frames (noisereduce truncates these to whole bins).
  cleaned = noisereduce.reduce_noise(
      y=filtered, sr=sr, y_noise=noise, stationary=True, n_fft=_DENOISE_FRAME, hop_length=hop,
      freq_mask_smooth_hz=2.5 * sr / (_DENOISE_FRAME / 2), time_mask_smooth_ms=4.5 * hop / sr * 1000)
  return np.asarray(cleaned, np.float32)


def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
  """Bilinear resize of (rows, columns[, channels]) to size = (height, width); keeps the channel axis."""
  if size is None or image.shape[:2] == tuple(size):
    return image
  resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
  return resized.reshape(size[0], size[1], *image.shape[2:])


def _resampled(wave: np.ndarray, sr: int, sample_rate: int) -> np.ndarray:
  if wave.size == 0:
    raise ValueError('cannot compute the spectrogram of an empty waveform.')
  wave = wave.astype(np.float32)
  return wave if sr == sample_rate else librosa.resample(wave, orig_sr=sr, target_sr=sample_rate)


def _row(position: float, rows: int, height: int | None) -> int:
  """Image row of fractional bin `position` (0 = lowest kept bin) after flipping and resizing."""
  flipped = rows - 1 - position
  if height is None:
    return int(round(flipped))
  # cv2's bilinear resize aligns pixel centres: source row r lands at (r + 0.5) * height / rows - 0.5.
  return int(np.clip(round((flipped + 0.5) * height / rows - 0.5), 0, height - 1))


def logmel_warp_rows(height: int, alpha: float, *, n_mels: int = 64, fmax: float = 8000.0) -> np.ndarray:
  """For each row of a `logmel_spectrogram` image of `height` rows (row 0 the highest), the fractional row
  where the frequency 1/alpha times its own lies: sampling the image there scales every frequency by alpha,
  as a shorter (alpha > 1) or longer vocal tract would (vocal tract length perturbation, Jaitly & Hinton
  2013). Rows whose source lies outside the image take the nearest edge row."""
  mels = librosa.hz_to_mel(librosa.mel_frequencies(n_mels=n_mels + 2, fmax=fmax)[1:-1])  # band centres, ascending
  step = mels[1] - mels[0]  # equally spaced in mel
  # cv2's bilinear resize: output row j samples source row (j + 0.5) * n_mels / height - 0.5 of the flipped bands.
  band = n_mels - 1 - ((np.arange(height) + 0.5) * n_mels / height - 0.5)
  source_hz = librosa.mel_to_hz(mels[0] + band * step) / alpha
  source_band = (librosa.hz_to_mel(source_hz) - mels[0]) / step
  rows = (n_mels - 1 - source_band + 0.5) * height / n_mels - 0.5
  return np.clip(rows, 0, height - 1)


def _faithful_bins(n_fft: int, sample_rate: int, max_freq: float) -> int:
  return int(np.sum(librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft) < max_freq))


def faithful_spectrogram(wave: np.ndarray, sr: int, *, size: tuple[int, int] | None = (200, 300),
                         n_fft: int = 2048, hop_length: int = 512, sample_rate: int = 44100,
                         db_range: float = 60.0, max_freq: float = 8820.0) -> np.ndarray:
  """The paper's spectrogram image: seismic-coloured fixed-scale dB, ImageNet-normalised.

  The original code plotted librosa dB spectrograms with matplotlib (seismic,
  vmin/vmax -60/+60 dB) into 200x300 PNGs, cropped the top 60% (above ~8 kHz)
  and resized back. Here the same colours come from a colormap lookup on the
  array, with no figure: dB = amplitude_to_db(|STFT|, ref=1.0) with no
  per-utterance `top_db` floor, so the scale is truly fixed (a full-scale sine
  peaks near +54 dB; silence is -60 dB, the darkest blue).

  Args:
    wave: mono waveform.
    sr: its sample rate; resampled to `sample_rate` first (the paper used 44.1 kHz).
    size: (height, width) of the image; None keeps one row per kept STFT bin and one column per frame.
    n_fft: STFT window.
    hop_length: STFT hop.
    sample_rate: analysis sample rate.
    db_range: the dB scale is [-db_range, +db_range].
    max_freq: only frequencies below this are kept.

  Returns:
    float32 (height, width, 3), row 0 the highest kept frequency.
  """
  wave = _resampled(wave, sr, sample_rate)
  magnitude = np.abs(librosa.stft(wave, n_fft=n_fft, hop_length=hop_length))
  db = librosa.amplitude_to_db(magnitude[:_faithful_bins(n_fft, sample_rate, max_freq)], ref=1.0, top_db=None)
  scaled = (np.clip(db, -db_range, db_range) + db_range) / (2 * db_range)
  rgb = matplotlib.colormaps['seismic'](scaled[::-1])[..., :3].astype(np.float32)
  return ((_resize(rgb, size) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def faithful_row_of_frequency(freq_hz: float, *, height: int | None = 200, n_fft: int = 2048,
                              sample_rate: int = 44100, max_freq: float = 8820.0) -> int:
  """The row of `faithful_spectrogram` (same arguments; height = size[0]) where `freq_hz` lands."""
  rows = _faithful_bins(n_fft, sample_rate, max_freq)
  return _row(freq_hz * n_fft / sample_rate, rows, height)


def logmel_spectrogram(wave: np.ndarray, sr: int, *, kind: str = 'logmel',
                       size: tuple[int, int] | None = (64, 96), sample_rate: int = 16000, n_fft: int = 512,
                       hop_length: int = 160, n_mels: int = 64, fmax: float = 8000.0,
                       db_range: float = 80.0) -> np.ndarray:
  """Single-channel log-mel (kind='logmel') or linear STFT (kind='db') dB array on a fixed scale.

  The STFT is scaled so a full-scale sine peaks at 0 dB (dBFS); mel filters are
  unnormalised triangles (peak 1), so a full-scale tone at a band's centre is
  also ~0 dB. Values are clipped to [-db_range, 0] dBFS and mapped linearly to
  [-1, 1]: the constants never depend on the utterance, so loudness survives.

  Args:
    wave: mono waveform.
    sr: its sample rate; resampled to `sample_rate` first.
    kind: 'logmel' or 'db' (linear frequency bins up to `fmax`).
    size: (height, width) after a bilinear resize; None keeps bins x frames.
    sample_rate: analysis sample rate.
    n_fft: STFT window.
    hop_length: STFT hop.
    n_mels: mel bands (kind='logmel').
    fmax: highest frequency kept.
    db_range: dB below full scale that maps to -1.

  Returns:
    float32 (height, width, 1), row 0 the highest frequency.
  """
  if kind not in ('logmel', 'db'):
    raise ValueError(f"Unknown spectrogram kind {kind!r}; expected 'logmel' or 'db'.")
  wave = _resampled(wave, sr, sample_rate)
  stft = librosa.stft(wave, n_fft=n_fft, hop_length=hop_length)
  # Full-scale sine -> peak magnitude 1 (a Hann window's sum is n_fft / 2; a sine gets half of it).
  power = (np.abs(stft) * (2.0 / np.sum(scipy.signal.get_window('hann', n_fft)))) ** 2
  if kind == 'logmel':
    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmax=fmax, norm=None)
    power = basis @ power
  else:
    power = power[librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft) <= fmax]
  db = np.clip(librosa.power_to_db(power, ref=1.0, amin=1e-12, top_db=None), -db_range, 0.0)
  image = (db / (db_range / 2) + 1.0)[::-1].astype(np.float32)
  return _resize(image, size)[..., None]


def logmel_row_of_frequency(freq_hz: float, *, kind: str = 'logmel', height: int | None = 64,
                            sample_rate: int = 16000, n_fft: int = 512, n_mels: int = 64,
                            fmax: float = 8000.0) -> int:
  """The row of `logmel_spectrogram` (same arguments; height = size[0]) where `freq_hz` lands."""
  if kind == 'logmel':
    centres = librosa.mel_frequencies(n_mels=n_mels + 2, fmax=fmax)[1:-1]
    position = np.interp(librosa.hz_to_mel(freq_hz), librosa.hz_to_mel(centres), np.arange(n_mels))
    return _row(float(position), n_mels, height)
  rows = int(np.sum(librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft) <= fmax))
  return _row(freq_hz * n_fft / sample_rate, rows, height)
