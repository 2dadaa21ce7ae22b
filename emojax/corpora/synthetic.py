"""The embedded default corpus: SYNTHETIC audio-visual emotional speech, generated from a seed.

Nothing is downloaded: every utterance is rendered on demand, deterministically
from (seed, utterance id), as a raw waveform and raw video frames, so it goes
through the same feature and loading path as a recorded corpus.

Each synthetic speaker has a voice (F0, vocal-tract length, speaking rate,
loudness, voice quality) and a face (skin and hair colour, head shape, eye
spacing, mouth width, a room behind it). Speech is a glottal pulse train with
an emotion- and speaker-dependent F0 contour, aspiration noise, vowel formant
filters, a syllable-rate amplitude envelope, consonant bursts and background
noise. Syllables come in phrases separated by pauses, each phrase with its own
loudness, as in running speech. Emotion shows in prosody (pitch level and contour, energy, tempo, voice
quality: tense and bright for anger, breathy and dark for sadness) and in the
face (mouth curvature, brow angle and height, eye openness, mouth width).
Expression intensity varies per utterance and per modality (a face may show
more than the voice), and every speaker has quirks of its own, so classes
overlap and held-out speakers are harder than seen ones. In every frame the
mouth opens with the loudness of the speech in that frame's time span, so a
clip's audio matches its own video better than any other clip's. At the video's
rates (20 frames per 3 s, 12 kept per clip by default) single syllables (3.5-6
per second) are too fast to follow; phrases, pauses and phrase loudness are not:
tests/test_synthetic.py measures that this synchrony survives the feature path.
"""
from __future__ import annotations

import re
from typing import Iterator, Sequence

import numpy as np
import scipy.ndimage
import scipy.signal

from emojax.corpora.base import Utterance

EMOTIONS = ('hap', 'sad', 'ang', 'neu')

# Voice at full intensity, per emotion (rows in EMOTIONS order):
#   pitch: mean F0 shift (semitones); accent: depth of the pitch accents (semitones);
#   slope: pitch drift across the utterance (semitones; declination < 0);
#   energy: level (dB); tempo: syllable-rate factor; tension: glottal closure
#   sharpness (> 0 bright and pressed, < 0 smooth and dark); breath: aspiration fraction.
VOICE_KEYS = ('pitch', 'accent', 'slope', 'energy', 'tempo', 'tension', 'breath')
VOICE = np.array([
    [3.0, 4.0, 1.0, 4.0, 1.12, 0.3, 0.0],     # hap
    [-2.5, 1.0, -3.0, -6.0, 0.78, -0.8, 0.35],  # sad
    [2.0, 3.0, -4.0, 7.0, 1.15, 1.0, 0.0],    # ang
    [0.0, 2.0, -2.0, 0.0, 1.0, 0.0, 0.0],     # neu
])
# Per-utterance spread (standard deviations) and per-speaker quirks of the same keys.
VOICE_SPREAD = np.array([0.8, 0.6, 1.0, 1.8, 0.06, 0.2, 0.04])
VOICE_QUIRK = np.array([0.7, 0.5, 0.8, 1.5, 0.05, 0.2, 0.04])

# Face at full intensity, per emotion:
#   curve: mouth-corner lift (mouth half-widths; smile > 0); brow_tilt: inner brow ends
#   lowered (radians; anger > 0, sadness < 0); brow_raise: brows up (eye heights);
#   eye_open: lid opening factor; mouth_width: factor; mouth_gain: how wide the mouth
#   opens for the same loudness.
FACE_KEYS = ('curve', 'brow_tilt', 'brow_raise', 'eye_open', 'mouth_width', 'mouth_gain')
FACE = np.array([
    [0.35, -0.05, 0.4, 0.85, 1.15, 1.1],    # hap
    [-0.25, -0.3, 0.2, 0.65, 0.9, 0.7],     # sad
    [-0.1, 0.35, -0.5, 0.8, 0.95, 1.2],     # ang
    [0.0, 0.0, 0.0, 1.0, 1.0, 1.0],         # neu
])
FACE_SPREAD = np.array([0.07, 0.07, 0.2, 0.07, 0.05, 0.1])
FACE_QUIRK = np.array([0.06, 0.06, 0.2, 0.06, 0.04, 0.08])

# Formants (Hz) of five vowels for an adult male vocal tract: /a/ /i/ /u/ /e/ /o/.
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240],
                   [530, 1840, 2480], [570, 840, 2410]], dtype=np.float64)
FORMANT_BANDWIDTHS = np.array([80.0, 100.0, 150.0])
# Skin tones (light to dark) and hair colours, RGB.
SKIN_LIGHT, SKIN_DARK = np.array([236, 200, 172]), np.array([110, 72, 50])
HAIR = np.array([[30, 24, 22], [92, 60, 36], [196, 164, 104], [150, 148, 146], [140, 64, 32]])
MOUTH_INSIDE = np.array([34, 8, 12])
CONTROL_RATE = 200  # Hz of the pitch, envelope and vowel tracks
# Names the precomputed arrays (emojax.corpora.corpus_key): bump it whenever rendering changes.
# 2: speech in phrases with pauses and a loudness of their own.
VERSION = 2
_ID = re.compile(r'^spk(?P<speaker>\d+)_(?P<emotion>[a-z]{3})_(?P<index>\d+)$')


class SyntheticCorpus:
  """A procedural audio-visual emotion corpus (Corpus protocol): no download, fully synthetic.

  Args:
    num_speakers: synthetic speakers, alternately female and male.
    utterances_per_emotion: utterances of each emotion per speaker.
    seconds: the longest utterance; durations are uniform in [seconds / 2, seconds].
    sample_rate: audio sample rate (Hz).
    fps: video frame rate (20 frames per 3 s by default, the paper's rate).
    frame_size: (height, width) of the video frames.
    seed: everything is a function of the seed and the utterance id.
  """

  name = 'synthetic'
  labels = EMOTIONS

  def __init__(self, *, num_speakers: int = 8, utterances_per_emotion: int = 40, seconds: float = 3.0,
               sample_rate: int = 16000, fps: float = 20 / 3, frame_size: Sequence[int] = (72, 96),
               seed: int = 0):
    if not 1 <= num_speakers <= 99:
      raise ValueError(f'num_speakers must be in 1..99, got {num_speakers}.')
    if not 1 <= utterances_per_emotion <= 999:
      raise ValueError(f'utterances_per_emotion must be in 1..999, got {utterances_per_emotion}.')
    if seconds < 1.0:
      raise ValueError(f'seconds must be at least 1.0 (an utterance lasts seconds / 2 or more), got {seconds}.')
    if sample_rate < 8000:
      raise ValueError(f'sample_rate must be at least 8000 Hz to hold the formants, got {sample_rate}.')
    if fps <= 0:
      raise ValueError(f'fps must be positive, got {fps}.')
    height, width = (int(n) for n in frame_size)
    if height < 32 or width < 32:
      raise ValueError(f'frame_size must be at least (32, 32), got {tuple(frame_size)}.')
    if seed < 0:
      raise ValueError(f'seed must be non-negative, got {seed}.')
    self.canonical = {label: label for label in EMOTIONS}
    self.num_speakers = num_speakers
    self.utterances_per_emotion = utterances_per_emotion
    self.seconds = float(seconds)
    self.sample_rate = int(sample_rate)
    self.fps = float(fps)
    self.frame_size = (height, width)
    self.seed = int(seed)
    self._speakers = tuple(_make_speaker(np.random.default_rng([self.seed, 0, index]), index, self.frame_size)
                           for index in range(num_speakers))

  def utterances(self) -> Iterator[Utterance]:
    """Every utterance, speaker by speaker, emotion by emotion (ids like 'spk03_ang_017')."""
    for index, speaker in enumerate(self._speakers):
      for emotion in EMOTIONS:
        for number in range(self.utterances_per_emotion):
          yield Utterance(id=f'spk{index:02d}_{emotion}_{number:03d}', speaker=f'spk{index:02d}',
                          group=f'spk{index:02d}', label=emotion, gender=speaker['gender'])

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    """Mono float32 waveform in [-1, 1] and its sample rate; the same array on every call."""
    wave, _ = self._render_audio(utt)
    return wave, self.sample_rate

  def load_video(self, utt: Utterance) -> tuple[np.ndarray, float]:
    """uint8 frames (T, H, W, 3), T = round(duration * fps), and fps; the same array on every call."""
    _, loudness = self._render_audio(utt)
    return self._render_video(utt, loudness), self.fps

  def _parse(self, utt: Utterance) -> tuple[dict, int, int]:
    """(speaker, emotion index, number) of an utterance id of this corpus."""
    match = _ID.match(utt.id)
    if (not match or int(match['speaker']) >= self.num_speakers or match['emotion'] not in EMOTIONS
        or int(match['index']) >= self.utterances_per_emotion):
      raise ValueError(f'{utt.id!r} is no utterance of this synthetic corpus ({self.num_speakers} speakers, '
                       f'{self.utterances_per_emotion} utterances per emotion, ids like spk00_hap_000).')
    return self._speakers[int(match['speaker'])], EMOTIONS.index(match['emotion']), int(match['index'])

  def _rng(self, utt: Utterance, stream: int) -> np.random.Generator:
    """Independent random streams of one utterance: 0 shared, 1 audio, 2 video."""
    speaker, emotion, number = self._parse(utt)
    return np.random.default_rng([self.seed, 1, speaker['index'], emotion, number, stream])

  def _delivery(self, utt: Utterance) -> tuple[float, dict, dict]:
    """Duration and the voice and face parameters of one utterance."""
    speaker, emotion, _ = self._parse(utt)
    rng = self._rng(utt, 0)
    duration = self.seconds * rng.uniform(0.5, 1.0)
    # How strongly this utterance shows its emotion, in the voice and in the face apart.
    intensity = rng.uniform(0.4, 1.0)
    vocal = np.clip(intensity * speaker['vocal_expressiveness'] * rng.uniform(0.7, 1.3), 0.0, 1.5)
    facial = np.clip(intensity * speaker['facial_expressiveness'] * rng.uniform(0.7, 1.3), 0.0, 1.5)
    neutral = EMOTIONS.index('neu')
    voice = (VOICE[neutral] + vocal * (VOICE[emotion] - VOICE[neutral]) + speaker['voice_quirks'][emotion]
             + VOICE_SPREAD * rng.standard_normal(len(VOICE_KEYS)))
    face = (FACE[neutral] + facial * (FACE[emotion] - FACE[neutral]) + speaker['face_quirks'][emotion]
            + FACE_SPREAD * rng.standard_normal(len(FACE_KEYS)))
    return duration, dict(zip(VOICE_KEYS, voice.tolist())), dict(zip(FACE_KEYS, face.tolist()))

  def _render_audio(self, utt: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """The waveform and the speech RMS in each video frame's time span (which drives the mouth)."""
    speaker, _, _ = self._parse(utt)
    duration, voice, _ = self._delivery(utt)
    return _speech(self._rng(utt, 1), speaker, voice, duration, self.sample_rate, self.fps)

  def _render_video(self, utt: Utterance, loudness: np.ndarray) -> np.ndarray:
    speaker, _, _ = self._parse(utt)
    _, _, face = self._delivery(utt)
    return _frames(self._rng(utt, 2), speaker, face, loudness, self.frame_size)


def _make_speaker(rng: np.random.Generator, index: int, frame_size: tuple[int, int]) -> dict:
  """A speaker's voice, face and room (read-only after creation)."""
  female = index % 2 == 0
  height, width = frame_size
  scale = min(height / 72, width / 96)
  head_half_height = scale * rng.uniform(25, 29)
  skin = SKIN_LIGHT + rng.uniform() * (SKIN_DARK - SKIN_LIGHT) + rng.normal(0, 6, 3)
  return dict(
      index=index,
      gender='F' if female else 'M',
      # Voice.
      f0=rng.uniform(170, 240) if female else rng.uniform(95, 140),
      tract=rng.uniform(1.1, 1.2) if female else rng.uniform(0.95, 1.05),
      rate=rng.uniform(3.5, 5.5),  # syllables per second
      loudness=rng.normal(0, 3),  # dB: distance to the microphone
      tension=rng.normal(0, 0.3),
      breath=rng.uniform(0.0, 0.15),
      noise_db=rng.uniform(-62, -48),  # the room's noise floor
      vocal_expressiveness=rng.uniform(0.7, 1.2),
      facial_expressiveness=rng.uniform(0.7, 1.2),
      voice_quirks=VOICE_QUIRK * rng.standard_normal((len(EMOTIONS), len(VOICE_KEYS))),
      face_quirks=FACE_QUIRK * rng.standard_normal((len(EMOTIONS), len(FACE_KEYS))),
      # Face geometry (pixels) and colours.
      center=(width / 2 + scale * rng.uniform(-6, 6), height / 2 + scale * rng.uniform(-1.5, 1.5)),
      head=(scale * rng.uniform(20, 25), head_half_height),
      hairline=rng.uniform(0.45, 0.65),  # of the head's half height, above the centre
      eye_dx=scale * rng.uniform(8.0, 10.5),
      eye_dy=head_half_height * rng.uniform(0.18, 0.26),
      eye_size=(scale * rng.uniform(3.2, 4.2), scale * rng.uniform(1.8, 2.4)),
      brow_gap=scale * rng.uniform(3.2, 4.4),
      brow_length=scale * rng.uniform(3.6, 5.0),
      brow_thickness=scale * rng.uniform(0.8, 1.4),
      nose_dy=head_half_height * rng.uniform(0.12, 0.2),
      mouth_dy=head_half_height * rng.uniform(0.42, 0.5),
      mouth_half_width=scale * rng.uniform(6.5, 9.0),
      lip_thickness=scale * rng.uniform(1.0, 1.6),
      mouth_max_open=scale * rng.uniform(4.5, 6.5),
      skin=np.clip(skin, 0, 255),
      hair=HAIR[rng.integers(len(HAIR))] + rng.normal(0, 8, 3),
      lips=np.clip(skin * np.array([0.85, 0.55, 0.58]) + np.array([30, 0, 0]), 0, 255),
      room=_room(rng, frame_size),
      scale=scale,
  )


def _room(rng: np.random.Generator, frame_size: tuple[int, int]) -> np.ndarray:
  """A background: a colour gradient with a few boxes and discs of clutter, float32 (H, W, 3)."""
  height, width = frame_size
  y, x = np.mgrid[0:height, 0:width].astype(np.float32)
  base = rng.uniform(80, 200, 3)
  gradient = rng.uniform(-30, 30, 3)
  room = base + gradient * (x / width - 0.5)[..., None] + rng.uniform(-15, 15) * (y / height - 0.5)[..., None]
  for _ in range(rng.integers(4, 9)):
    colour = rng.uniform(70, 230, 3)
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    rx, ry = rng.uniform(3, width / 4), rng.uniform(3, height / 4)
    if rng.uniform() < 0.5:
      inside = np.minimum(rx - np.abs(x - cx), ry - np.abs(y - cy))
    else:
      inside = (1 - np.hypot((x - cx) / rx, (y - cy) / ry)) * min(rx, ry)
    alpha = np.clip(inside + 0.5, 0, 1)[..., None]
    room = room * (1 - alpha) + colour * alpha
  return np.clip(room, 0, 255).astype(np.float32)


def _syllables(rng: np.random.Generator, duration: float,
               rate: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Onsets and lengths (seconds) of syllables at `rate` per second, and each one's phrase gain.

  Syllables come in phrases of 2-7, separated by pauses of 1.2-3 syllable periods (about
  0.25-0.8 s, longer when the tempo is slow), and each phrase has its own loudness: this
  slow structure is what a 4-7 fps mouth track can follow (single syllables are too fast).
  """
  n = int(duration * rate * 2) + 4
  phrase = np.repeat(np.arange(n), rng.integers(2, 8, n))[:n]  # phrase index of each syllable
  ends_phrase = np.append(phrase[1:] != phrase[:-1], False)
  gaps = rng.uniform(0.7, 1.3, n) / rate + np.where(ends_phrase, rng.uniform(1.2, 3.0, n) / rate, 0.0)
  onsets = rng.uniform(0.03, 0.2) + np.concatenate([[0.0], np.cumsum(gaps[:-1])])
  lengths = rng.uniform(0.55, 0.9, n) / rate
  lengths[0] = min(lengths[0], duration - onsets[0] - 0.03)  # at least one syllable fits
  gains = np.exp(rng.normal(0, 0.4, n))[phrase]
  keep = onsets + lengths <= duration - 0.03
  keep[0] = True
  return onsets[keep], lengths[keep], gains[keep]


def _resonators(formants: np.ndarray, bandwidths: np.ndarray, sr: int) -> np.ndarray:
  """Denominator of a cascade of two-pole resonators (unit gain at 0 Hz)."""
  radius = np.exp(-np.pi * bandwidths / sr)
  denominator = np.array([1.0])
  for r, f in zip(radius, formants):
    denominator = np.convolve(denominator, [1.0, -2 * r * np.cos(2 * np.pi * f / sr), r * r])
  return denominator


def _speech(rng: np.random.Generator, speaker: dict, voice: dict, duration: float, sr: int,
            fps: float) -> tuple[np.ndarray, np.ndarray]:
  """One utterance's waveform (float32) and its speech RMS per video frame span."""
  n = int(round(duration * sr))
  control = np.arange(int(duration * CONTROL_RATE) + 2) / CONTROL_RATE
  times = np.arange(n) / sr
  tension = speaker['tension'] + voice['tension']
  onsets, lengths, phrase_gains = _syllables(rng, duration, speaker['rate'] * max(voice['tempo'], 0.5))
  syllable_count = len(onsets)

  # Syllable envelope: a bump per syllable, stressed ones louder (more contrast when tense).
  phase = (control[None] - onsets[:, None]) / lengths[:, None]
  bumps = np.where((phase > 0) & (phase < 1), np.sin(np.pi * np.clip(phase, 0, 1)) ** 0.7, 0.0)
  stress = phrase_gains * np.exp(rng.normal(0, 0.25 + 0.1 * max(tension, 0.0), syllable_count))
  envelope = np.max(bumps * stress[:, None], axis=0)

  # Vowel of each syllable, cross-faded over the gaps between syllables.
  vowel_of = rng.integers(len(VOWELS), size=syllable_count)
  wide = np.clip(1 - np.abs(phase - 0.5) / 1.2, 0, 1)
  weights = np.stack([np.max(np.where((vowel_of == v)[:, None], wide, 0.0), axis=0) for v in range(len(VOWELS))])
  weights /= weights.sum(0) + 1e-3

  # F0: level, drift, pitch accents on some syllables, slow wander, jitter.
  accents = rng.uniform(0.4, 1.0, syllable_count) * (rng.uniform(size=syllable_count) < 0.6) * voice['accent']
  centres = onsets + lengths * rng.uniform(0.2, 0.6, syllable_count)
  semitones = (voice['pitch'] + voice['slope'] * (control / duration - 0.5)
               + np.sum(accents[:, None] * np.exp(-0.5 * ((control[None] - centres[:, None])
                                                          / (0.35 * lengths[:, None])) ** 2), axis=0)
               + 0.6 * scipy.ndimage.gaussian_filter1d(rng.standard_normal(len(control)), 20) * np.sqrt(40))
  f0 = speaker['f0'] * 2 ** (semitones / 12) * np.exp(rng.normal(0, 0.005, len(control)))
  f0 = np.interp(times, control, f0)

  # Glottal source: Rosenberg flow pulses, differentiated; a tense voice closes abruptly.
  cycle = np.cumsum(f0 / sr) % 1.0
  opening, closing = 0.42, np.clip(0.18 - 0.08 * tension, 0.05, 0.35)
  flow = np.where(cycle < opening, 0.5 * (1 - np.cos(np.pi * cycle / opening)),
                  np.where(cycle < opening + closing,
                           np.cos(0.5 * np.pi * np.clip(cycle - opening, 0, None) / closing), 0.0))
  source = np.diff(flow, prepend=0.0)
  tilt = np.clip(0.55 - 0.35 * tension, 0.0, 0.9)  # one-pole low-pass: a dark voice for low tension
  source = scipy.signal.lfilter([1 - tilt], [1, -tilt], source)
  source /= np.sqrt(np.mean(source ** 2)) + 1e-9
  breath = np.clip(speaker['breath'] + voice['breath'], 0.0, 0.9)
  aspiration = rng.standard_normal(n) * (0.3 + 0.7 * flow)
  aspiration /= np.sqrt(np.mean(aspiration ** 2))
  excitation = (1 - breath) * source + breath * aspiration

  # Vocal tract: one formant filter per vowel, mixed by the vowel weights.
  formant_scale = speaker['tract'] * (1 + 0.03 * max(voice['energy'], 0.0) / 4)  # open mouth: higher F1
  voiced = np.zeros(n)
  for vowel, weight in zip(VOWELS, weights):
    formants = np.minimum(vowel * formant_scale, 0.45 * sr)
    denominator = _resonators(formants, FORMANT_BANDWIDTHS, sr)
    voiced += np.interp(times, control, weight) * scipy.signal.lfilter([denominator.sum()], denominator,
                                                                       excitation)
  speech = voiced * np.interp(times, control, envelope)

  # Consonant bursts: high-passed noise at syllable onsets.
  burst_phase = (control[None] - onsets[:, None] + 0.04) / rng.uniform(0.03, 0.07, (syllable_count, 1))
  bursts = np.max(np.where((burst_phase > 0) & (burst_phase < 1), stress[:, None], 0.0), axis=0)
  hiss = np.diff(rng.standard_normal(n + 1))
  speech_rms = np.sqrt(np.mean(speech[np.interp(times, control, envelope) > 0.3] ** 2))
  speech += 0.5 * speech_rms * np.interp(times, control, bursts) * hiss

  # Level: emotion, speaker's distance, a little per utterance; then the room's noise.
  level_db = -26 + voice['energy'] + speaker['loudness']
  speech *= 10 ** (level_db / 20) / speech_rms
  colour = rng.uniform(0.0, 0.95)
  noise = scipy.signal.lfilter([1 - colour], [1, -colour], rng.standard_normal(n))
  noise *= 10 ** ((speaker['noise_db'] + rng.normal(0, 2)) / 20) / np.sqrt(np.mean(noise ** 2))
  wave = np.clip(speech + noise, -1.0, 1.0).astype(np.float32)

  frame_count = max(1, int(round(duration * fps)))
  edges = np.minimum(np.round(np.arange(frame_count + 1) * sr / fps).astype(int), n)
  power = np.concatenate([[0.0], np.cumsum(speech ** 2)])
  spans = np.maximum(edges[1:] - edges[:-1], 1)
  loudness = np.sqrt((power[edges[1:]] - power[edges[:-1]]) / spans)
  return wave, loudness


def _soft(inside: np.ndarray) -> np.ndarray:
  """Coverage of a pixel from its signed distance (pixels) into a shape: anti-aliased edges."""
  return np.clip(inside + 0.5, 0.0, 1.0)


def _ellipse(u: np.ndarray, v: np.ndarray, cu, cv, a, b) -> np.ndarray:
  """An ellipse of half-axes (a, b) at (cu, cv); its distance field to first order, so thin ones stay thin."""
  du, dv = (u - cu) / a, (v - cv) / np.maximum(b, 0.05)
  gradient = 2 * np.sqrt((du / a) ** 2 + (dv / np.maximum(b, 0.05)) ** 2) + 1e-6
  return _soft((1 - du * du - dv * dv) / gradient)


def _segment(u: np.ndarray, v: np.ndarray, start, end, thickness: float) -> np.ndarray:
  """A thick line from `start` to `end` ((u, v) pairs, each scalar or per frame)."""
  du, dv = end[0] - start[0], end[1] - start[1]
  t = np.clip(((u - start[0]) * du + (v - start[1]) * dv) / (du * du + dv * dv), 0, 1)
  return _soft(thickness - np.sqrt((u - start[0] - t * du) ** 2 + (v - start[1] - t * dv) ** 2))


def _paint(image: np.ndarray, alpha: np.ndarray, colour) -> None:
  """Paints `colour` (RGB, or per pixel) over `image` (float32 (T, H, W, 3)) in place, with coverage `alpha`."""
  rows = np.flatnonzero(alpha.any(axis=(0, 2)))
  cols = np.flatnonzero(alpha.any(axis=(0, 1)))
  if not len(rows):
    return
  box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
  colour = np.asarray(colour, np.float32)
  if colour.ndim > 1:
    colour = colour[box]
  region = image[box]
  region += alpha[box][..., None] * (colour - region)


def _smooth_walk(rng: np.random.Generator, count: int, amplitude: float) -> np.ndarray:
  walk = scipy.ndimage.gaussian_filter1d(rng.standard_normal(count + 8), 2.0, mode='nearest')[4:-4]
  return amplitude * walk / (np.std(walk) + 1e-9) if count > 1 else np.zeros(count)


def _frames(rng: np.random.Generator, speaker: dict, face: dict, loudness: np.ndarray,
            frame_size: tuple[int, int]) -> np.ndarray:
  """The video of one utterance: the speaker's face in its room, mouth opening with `loudness`."""
  count = len(loudness)
  height, width = frame_size
  scale = speaker['scale']
  per_frame = lambda values: np.asarray(values, np.float32)[:, None, None]

  # Small head motion: translation and roll, smooth over time.
  cx = per_frame(speaker['center'][0] + scale * rng.uniform(-2, 2) + _smooth_walk(rng, count, 1.0 * scale))
  cy = per_frame(speaker['center'][1] + scale * rng.uniform(-1, 1) + _smooth_walk(rng, count, 0.7 * scale))
  roll = per_frame(rng.normal(0, 0.03) + _smooth_walk(rng, count, 0.03))
  # The face is drawn within the box the head stays in, on a view of the frames.
  reach = 1.1 * max(speaker['head']) + 2
  top, bottom = max(0, int(cy.min() - reach)), min(height, int(np.ceil(cy.max() + reach)))
  left, right = max(0, int(cx.min() - reach)), min(width, int(np.ceil(cx.max() + reach)))
  y, x = np.mgrid[top:bottom, left:right].astype(np.float32)
  u = (x - cx) * np.cos(roll) + (y - cy) * np.sin(roll)
  v = -(x - cx) * np.sin(roll) + (y - cy) * np.cos(roll)

  frames = np.repeat(speaker['room'][None], count, axis=0)
  image = frames[:, top:bottom, left:right]
  head_a, head_b = speaker['head']
  shading = 1 - 0.22 * np.clip((u / head_a) ** 2 + (v / head_b) ** 2, 0, 1)
  _paint(image, _ellipse(u, v, 0, 0, head_a, head_b), speaker['skin'].astype(np.float32) * shading[..., None])
  hair = _ellipse(u, v, 0, -0.04 * head_b, 1.06 * head_a, 1.04 * head_b) * _soft(
      -speaker['hairline'] * head_b - v + 1.5 * scale * np.cos(3 * u / head_a))
  _paint(image, hair, speaker['hair'])
  _paint(image, 0.6 * _ellipse(u, v, 0, speaker['nose_dy'], 1.6 * scale, 3.0 * scale), 0.8 * speaker['skin'])

  # Eyes (with blinks), irises, brows.
  eye_w, eye_h = speaker['eye_size']
  blink = np.where(rng.uniform(size=count) < 0.06, 0.1, 1.0)
  opening = per_frame(eye_h * np.clip(face['eye_open'], 0.2, 1.4) * blink)
  gaze = rng.normal(0, 0.3 * eye_w)
  for side in (-1, 1):
    eye_u, eye_v = side * speaker['eye_dx'], -speaker['eye_dy']
    eye = _ellipse(u, v, eye_u, eye_v, eye_w, opening)
    _paint(image, eye, (235, 235, 230))
    _paint(image, eye * _ellipse(u, v, eye_u + gaze, eye_v, 0.9 * eye_h, 0.9 * eye_h), (60, 40, 30))
    brow_v = eye_v - speaker['brow_gap'] - face['brow_raise'] * eye_h
    along = speaker['brow_length'] * np.array([np.cos(face['brow_tilt']), np.sin(face['brow_tilt'])])
    inner = (eye_u - side * along[0], brow_v + along[1])
    outer = (eye_u + side * along[0], brow_v - along[1])
    _paint(image, _segment(u, v, inner, outer, speaker['brow_thickness']), 0.8 * speaker['hair'])

  # Mouth: corners lifted by the curve; the lips part with the loudness of the speech.
  half_width = speaker['mouth_half_width'] * np.clip(face['mouth_width'], 0.7, 1.4)
  across = np.clip(u / half_width, -1.5, 1.5)
  lift = np.clip(face['curve'], -0.5, 0.6) * half_width
  gap = np.abs(v - (speaker['mouth_dy'] - lift * across ** 2 + lift / 3))
  open_now = per_frame(speaker['mouth_max_open'] * np.clip(face['mouth_gain'], 0.4, 1.6)
                       * loudness / (loudness.max() + 1e-12))
  profile = np.sqrt(np.clip(1 - across ** 2, 0, 1))
  within = half_width - np.abs(u)
  lips = open_now / 2 * profile + speaker['lip_thickness'] * (0.3 + 0.7 * profile) - gap
  _paint(image, _soft(np.minimum(within, lips)), speaker['lips'])
  _paint(image, _soft(np.minimum(within, open_now / 2 * profile - gap)), MOUTH_INSIDE)

  frames *= rng.uniform(0.85, 1.15)  # lighting
  noise = rng.random(frames.shape, dtype=np.float32)  # camera noise (uniform: cheaper to draw than normal)
  frames += rng.uniform(2, 6) * np.sqrt(12) * (noise - 0.5)
  return np.clip(frames + 0.5, 0, 255).astype(np.uint8)
