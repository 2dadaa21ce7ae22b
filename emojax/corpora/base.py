"""What every corpus reader returns: one `Utterance` per labelled utterance.

A reader lists utterances (cheap: file names and label files only) and loads the
raw signals of one utterance at a time, so that nothing downstream ever holds a
whole corpus in memory.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class Utterance:
  """One labelled utterance of a corpus.

  Attributes:
    id: unique within the corpus (e.g. 'Ses01F_impro01_F000', '03a01Fa').
    speaker: speaker id; speaker-independent splits hold out whole speakers.
    group: the unit of leave-one-group-out folds (IEMOCAP session, actor, ...).
    label: the corpus's own emotion label ('neu', 'hap', 'W', '05', ...).
    audio_path: file holding the audio, or None for generated corpora.
    start, end: seconds within `audio_path` (and `video_path`); None = whole file.
    video_path: file holding the video, if the corpus has one.
    video_side: 'left' or 'right' half of a side-by-side video, else None.
    gender: 'F', 'M' or None.
    vad: valence/activation/dominance where the corpus gives them.
  """

  id: str
  speaker: str
  group: str
  label: str
  audio_path: str | None = None
  start: float | None = None
  end: float | None = None
  video_path: str | None = None
  video_side: str | None = None
  gender: str | None = None
  vad: tuple[float, float, float] | None = None


@dataclasses.dataclass(frozen=True)
class Skipped:
  """An utterance a reader could not use, and why (it goes in the manifest)."""

  id: str
  reason: str
  source: str = ''  # file (and line) the problem was found in


class Corpus(Protocol):
  """The interface every corpus reader implements.

  A reader of a corpus that never has video (Emo-DB) also sets `audio_only = True`: a build with
  video then refuses it before reading any file.
  """

  name: str
  # Every label the corpus uses, in a fixed order.
  labels: tuple[str, ...]
  # Maps the corpus's labels to the paper's names ('hap', 'sad', 'ang', 'neu', ...).
  canonical: dict[str, str]

  def utterances(self) -> Iterator[Utterance | Skipped]:
    """Every utterance of the corpus, usable or not (never silently dropped)."""

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    """Mono float32 waveform in [-1, 1] and its sample rate."""

  def load_video(self, utt: Utterance) -> tuple[np.ndarray, float] | None:
    """uint8 frames (T, H, W, 3) of the speaker, cut to the utterance, and fps; None if no video."""
