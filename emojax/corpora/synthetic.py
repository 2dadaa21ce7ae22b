"""The embedded default corpus: procedural audio-visual emotional speech. SYNTHETIC, not recordings.

Speakers each have their own voice (pitch range, vocal-tract size, speaking rate,
breathiness) and face (skin, head shape, eye spacing, mouth width, background).
Each utterance is a string of syllables on a harmonic voice whose emotion shows
in its prosody - pitch level and contour, loudness, tempo, voice quality
(spectral tilt, breathiness, jitter) - and in the face - mouth curvature, brow
angle, eye openness. Expression strength varies per speaker and per utterance
and the class distributions overlap, so the task is not linearly separable,
and speakers differ enough that held-out speakers are harder than seen ones.

In every video frame the mouth opens with the loudness of the audio at that
instant (the RMS of the voice over the frame's time window), so audio and video
are truly synchronous: the audio of a clip matches its own video better than
another clip's, even of the same speaker and emotion.

Everything is a deterministic function of (seed, utterance id).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from emojax.corpora.base import Utterance

EMOTIONS = ('hap', 'sad', 'ang', 'neu')


@dataclasses.dataclass(frozen=True)
class Expression:
  """Mean prosody and face of one emotion; each utterance draws around these."""

  pitch: float       # F0 relative to the speaker's base
  pitch_range: float  # contour excursion, in octaves
  contour: str       # 'flat', 'rise_fall', 'fall', 'accents'
  loudness_db: float
  tempo: float       # syllables/s relative to the speaker's rate
  tilt: float        # harmonic roll-off exponent (less negative = brighter, tenser)
  breath: float      # aspiration noise share
  jitter: float      # cycle-to-cycle F0 irregularity
  smile: float       # mouth curvature (+ up at the corners, - down)
  brow: float        # brow slope (+ inner ends raised, - inner ends lowered)
  eyes: float        # eye openness


PROFILES = {
    'neu': Expression(1.00, 0.10, 'flat', 0.0, 1.00, -1.6, 0.10, 0.004, 0.0, 0.0, 1.0),
    'hap': Expression(1.18, 0.30, 'rise_fall', 3.0, 1.12, -1.3, 0.10, 0.006, 0.8, 0.25, 0.75),
    'sad': Expression(0.90, 0.06, 'fall', -6.0, 0.78, -2.0, 0.35, 0.006, -0.6, 0.6, 0.65),
    'ang': Expression(1.12, 0.22, 'accents', 6.0, 1.22, -0.9, 0.15, 0.02, -0.25, -0.8, 0.6),
}


@dataclasses.dataclass(frozen=True)
class Speaker:
  id: str
  gender: str
  f0: float              # base pitch, Hz
  formant_scale: float   # vocal-tract size: scales every formant
  rate: float            # syllables per second
  breath: float
  expressiveness: float  # how strongly this speaker shows emotion
  skin: np.ndarray       # RGB 0..1
  background: np.ndarray
  head: tuple[float, float]  # ellipse radii as fractions of the frame height / width
  eye_spacing: float
  mouth_width: float


# Formant centre frequencies (Hz) of a few vowels, for an average adult vocal tract.
VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
                  np.float64)
FORMANT_WIDTHS = np.array([90.0, 110.0, 170.0])


class SyntheticCorpus:
  """A procedural audio-visual emotion corpus implementing `emojax.corpora.base.Corpus`.

  Args:
    num_speakers: speakers, alternately female and male.
    utterances_per_emotion: utterances of each emotion per speaker.
    seconds: the longest utterance; durations vary between 60% and 100% of it.
    sample_rate: audio sample rate.
    fps: video frame rate (default: the paper's 20 frames per 3 s).
    frame_size: (height, width) of the camera frames.
    seed: everything derives from it.
  """

  name = 'synthetic'
  labels = EMOTIONS
  canonical = {e: e for e in EMOTIONS}

  def __init__(self, *, num_speakers: int = 8, utterances_per_emotion: int = 36, seconds: float = 3.0,
               sample_rate: int = 16000, fps: float = 20 / 3, frame_size: tuple[int, int] = (72, 96), seed: int = 0):
    if num_speakers < 2:
      raise ValueError('A synthetic corpus needs at least 2 speakers (splits hold whole speakers out).')
    self.num_speakers = num_speakers
    self.utterances_per_emotion = utterances_per_emotion
    self.seconds = seconds
    self.sample_rate = sample_rate
    self.fps = fps
    self.frame_size = tuple(frame_size)
    self.seed = seed
    self.speakers = [self._speaker(i) for i in range(num_speakers)]
    self._last: tuple[str, np.ndarray, np.ndarray] | None = None  # audio and video come from one rendering

  def _speaker(self, index: int) -> Speaker:
    rng = np.random.default_rng([self.seed, 1, index])
    female = index % 2 == 0
    return Speaker(
        id=f'spk{index:02d}', gender='F' if female else 'M',
        f0=rng.uniform(175, 245) if female else rng.uniform(90, 140),
        formant_scale=rng.uniform(1.05, 1.18) if female else rng.uniform(0.86, 1.0),
        rate=rng.uniform(3.2, 4.8), breath=rng.uniform(0.03, 0.15), expressiveness=rng.uniform(0.55, 1.3),
        skin=rng.uniform(0.35, 0.95) * np.array([1.0, rng.uniform(0.68, 0.8), rng.uniform(0.5, 0.65)]),
        background=rng.uniform(0.1, 0.9, 3),
        head=(rng.uniform(0.28, 0.34), rng.uniform(0.16, 0.22)),
        eye_spacing=rng.uniform(0.28, 0.4), mouth_width=rng.uniform(0.3, 0.45))

  def utterances(self) -> Iterator[Utterance]:
    for speaker in self.speakers:
      for emotion in EMOTIONS:
        for i in range(self.utterances_per_emotion):
          yield Utterance(id=f'{speaker.id}_{emotion}_{i:03d}', speaker=speaker.id, group=speaker.id,
                          label=emotion, gender=speaker.gender)

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    return self._render(utt.id)[0], self.sample_rate

  def load_video(self, utt: Utterance) -> tuple[np.ndarray, float]:
    return self._render(utt.id)[1], self.fps

  def _render(self, utt_id: str) -> tuple[np.ndarray, np.ndarray]:
    if self._last is None or self._last[0] != utt_id:
      speaker_id, emotion, index = utt_id.split('_')
      speaker = self.speakers[int(speaker_id[3:])]
      rng = np.random.default_rng([self.seed, 2, int(speaker_id[3:]), EMOTIONS.index(emotion), int(index)])
      style = _draw_style(PROFILES[emotion], speaker, rng)
      voice, loudness = _voice(speaker, style, self.seconds, self.sample_rate, rng)
      frames = _face_video(speaker, style, loudness, self.sample_rate, self.fps, self.frame_size, rng)
      self._last = (utt_id, voice, frames)
    return self._last[1], self._last[2]


def _draw_style(profile: Expression, speaker: Speaker, rng: np.random.Generator) -> dict:
  """One utterance's expression: the emotion's profile, scaled by how expressive the speaker
  (and this utterance) is, with noise, so classes overlap."""
  strength = speaker.expressiveness * rng.uniform(0.5, 1.3)
  neutral = PROFILES['neu']
  mix = lambda field, sd: (getattr(neutral, field) + strength * (getattr(profile, field) - getattr(neutral, field))
                           + rng.normal(0, sd))
  return {
      'pitch': mix('pitch', 0.06), 'pitch_range': max(0.02, mix('pitch_range', 0.05)), 'contour': profile.contour,
      'loudness_db': mix('loudness_db', 2.5), 'tempo': max(0.5, mix('tempo', 0.08)), 'tilt': mix('tilt', 0.2),
      'breath': float(np.clip(mix('breath', 0.05) + speaker.breath, 0.0, 0.8)), 'jitter': max(0.0, mix('jitter', 0.003)),
      'smile': mix('smile', 0.25), 'brow': mix('brow', 0.25), 'eyes': float(np.clip(mix('eyes', 0.1), 0.3, 1.2)),
      'duration_share': rng.uniform(0.6, 1.0),
  }


def _contour(kind: str, t: np.ndarray, duration: float, accents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Pitch contour in units of the utterance's pitch range (roughly -1..1)."""
  x = t / duration
  if kind == 'flat':
    return 0.3 - 0.6 * x + 0.2 * np.sin(2 * np.pi * (1.0 * x + rng.uniform()))
  if kind == 'rise_fall':
    return np.sin(np.pi * x * rng.uniform(1.5, 2.5) + rng.uniform(-0.5, 0.5)) * 0.8 + 0.3 * x
  if kind == 'fall':
    return 0.6 - 1.4 * x
  return 1.6 * accents - 0.5  # 'accents': pitch jumps on stressed syllables


def _voice(speaker: Speaker, style: dict, seconds: float, sr: int, rng: np.random.Generator):
  """The waveform and its loudness envelope (the mouth follows the latter)."""
  duration = seconds * style['duration_share']
  n = int(round(duration * sr))
  t = np.arange(n) / sr

  # Syllables: Gaussian loudness bumps at jittered intervals, some stressed.
  rate = speaker.rate * style['tempo']
  gaps = rng.uniform(0.7, 1.3, int(duration * rate) + 3) / rate
  centres = 0.12 + np.cumsum(gaps) - gaps[0]
  centres = centres[centres < duration - 0.08]
  stress = rng.choice([0.55, 1.0], size=len(centres), p=[0.6, 0.4])
  width = 0.22 / rate
  bumps = stress[:, None] * np.exp(-0.5 * ((t[None, :] - centres[:, None]) / width) ** 2)
  envelope = bumps.max(axis=0) if len(centres) else np.zeros(n)
  accents = (bumps * (stress[:, None] > 0.9)).max(axis=0) if len(centres) else np.zeros(n)

  # F0: speaker base x emotion level, a contour, vibrato-free jitter.
  f0 = speaker.f0 * style['pitch'] * 2.0 ** (style['pitch_range'] * _contour(style['contour'], t, duration, accents, rng))
  f0 *= 1 + style['jitter'] * np.repeat(rng.normal(size=n // 160 + 1), 160)[:n]
  phase = 2 * np.pi * np.cumsum(f0) / sr

  # Harmonic amplitudes on a coarse time grid: tilt x formant envelope of the current vowel.
  hop = 160
  coarse_t = np.arange(0, n, hop) / sr
  syllable = np.clip(np.searchsorted(centres, coarse_t), 0, max(len(centres) - 1, 0))
  vowels = VOWELS[rng.integers(0, len(VOWELS), max(len(centres), 1))][syllable] * speaker.formant_scale
  coarse_f0 = f0[::hop]
  harmonics = np.arange(1, 41)
  freqs = harmonics[:, None] * coarse_f0[None, :]  # (K, frames)
  formants = np.exp(-0.5 * ((freqs[:, :, None] - vowels[None]) / FORMANT_WIDTHS) ** 2).sum(-1)
  amps = harmonics[:, None] ** style['tilt'] * (0.15 + formants) * (freqs < 0.45 * sr)
  amps = np.repeat(amps, hop, axis=1)[:, :n]
  voiced = (amps * np.sin(harmonics[:, None] * phase[None, :])).sum(axis=0)
  voiced /= np.sqrt(np.mean(voiced ** 2)) + 1e-9

  breath = rng.normal(size=n)
  breath = np.diff(breath, prepend=0.0) * 0.7  # brighter than white: aspiration
  speech = envelope * ((1 - style['breath']) * voiced + style['breath'] * breath * 1.5)
  gain = 0.08 * 10 ** (style['loudness_db'] / 20)
  speech *= gain

  # Background: brown-ish room noise at a random SNR, then a little white noise.
  level = np.sqrt(np.mean(speech ** 2)) * 10 ** (-rng.uniform(12, 28) / 20)
  room = np.cumsum(rng.normal(size=n))
  room -= np.convolve(room, np.ones(401) / 401, mode='same')
  room *= level / (np.std(room) + 1e-9)
  wave = speech + room + rng.normal(0, level * 0.3, n)
  loudness = np.abs(envelope) * gain
  return np.clip(wave, -1, 1).astype(np.float32), loudness


def _face_video(speaker: Speaker, style: dict, loudness: np.ndarray, sr: int, fps: float,
                size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
  """Frames (T, H, W, 3) uint8 of the speaker's face; the mouth opening follows `loudness`."""
  height, width = size
  frames = max(1, int(round(len(loudness) / sr * fps)))
  # Mouth opening per frame: loudness averaged over the frame's window, on a fixed scale.
  edges = (np.arange(frames + 1) * sr / fps).astype(int)
  per_frame = np.array([loudness[a:max(b, a + 1)].mean() for a, b in zip(edges[:-1], edges[1:])])
  opening = np.clip(per_frame / 0.12, 0, 1) ** 0.7

  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  yy, xx = yy / height, xx / width  # unit coordinates
  sway = 0.015 * np.cumsum(rng.normal(size=(frames, 2)), axis=0)  # small head motion
  cy = 0.5 + sway[:, 0, None, None]
  cx = 0.5 + sway[:, 1, None, None]
  ry, rx = speaker.head
  image = np.broadcast_to(speaker.background, (frames, height, width, 3)).copy()
  image += 0.08 * rng.normal(size=(1, height, width, 1))  # background texture, fixed per clip

  head = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
  image[head] = speaker.skin

  # Eyes: dark ellipses whose height follows the eye openness (and blinks).
  blink = np.ones(frames)
  blink[rng.random(frames) < 0.06] = 0.15
  eye_h = 0.035 * style['eyes'] * blink[:, None, None]
  eye_y = cy - 0.08
  for side in (-1, 1):
    ex = cx + side * speaker.eye_spacing * rx
    eye = ((yy - eye_y) / eye_h) ** 2 + ((xx - ex) / (0.25 * rx)) ** 2 < 1
    image[eye] = (0.08, 0.06, 0.05)
    # Brow: a slanted bar above the eye; brow > 0 raises the inner end (sad), < 0 lowers it (angry).
    along = (xx - ex) / (0.35 * rx)  # -1..1 across the brow
    inner = -side * along  # +1 at the end nearest the nose
    brow_y = eye_y - 0.075 - 0.035 * style['brow'] * inner
    brow = (np.abs(yy - brow_y) < 0.014) & (np.abs(along) < 1)
    image[brow] = speaker.skin * 0.35

  # Mouth: between an upper and a lower lip curve; curvature shows the smile, the gap the loudness.
  mouth_y = cy + 0.14
  across = (xx - cx) / (speaker.mouth_width * rx)  # -1..1 across the mouth
  curve = -0.045 * style['smile'] * across ** 2  # smile: corners up (smaller y)
  upper = mouth_y + curve - 0.006
  lower = mouth_y + curve + 0.006 + 0.09 * opening[:, None, None] * (1 - across ** 2)
  mouth = (yy > upper) & (yy < lower) & (np.abs(across) < 1)
  image[mouth] = (0.35, 0.05, 0.08)

  image += rng.normal(0, 0.03, image.shape)  # camera noise
  return (np.clip(image, 0, 1) * 255).astype(np.uint8)
