"""Berlin Database of Emotional Speech (Emo-DB; Burkhardt et al. 2005): German actors, audio only.

Layout under the corpus root: `wav/SSTTTEV.wav` with SS the speaker, TTT the text
(a01..a07, b01..b10), E the emotion's German initial and V a version letter.
"""
from __future__ import annotations

import os
import re
from typing import Iterator

import numpy as np

from emojax import audio
from emojax.corpora.base import Skipped, Utterance

# Emotion letters: Wut, Langeweile, Ekel, Angst, Freude, Trauer, Neutral.
CANONICAL = {'W': 'ang', 'L': 'bor', 'E': 'dis', 'A': 'fea', 'F': 'hap', 'T': 'sad', 'N': 'neu'}
# The corpus's ten speakers (its documentation).
SPEAKER_GENDER = {'03': 'M', '08': 'F', '09': 'F', '10': 'M', '11': 'M',
                  '12': 'M', '13': 'F', '14': 'F', '15': 'M', '16': 'F'}
_FILE_NAME = re.compile(r'^(?P<speaker>\d\d)(?P<text>[ab]\d\d)(?P<emotion>[A-Z])(?P<version>[a-z])\.wav$')


class EmodbCorpus:
  """Reader of Emo-DB: one utterance per wav file, grouped by speaker.

  Args:
    root: the corpus folder, holding `wav/`.
  """

  name = 'emodb'
  labels = tuple(CANONICAL)
  canonical = CANONICAL
  audio_only = True  # a build with video refuses it at once

  def __init__(self, root: str):
    self.root = root
    self.wav_dir = os.path.join(root, 'wav')
    if not os.path.isdir(self.wav_dir):
      raise ValueError(f'{root!r} is not an Emo-DB folder: expected a wav/ folder of SSTTTEV.wav files '
                       '(e.g. wav/03a01Fa.wav).')

  def utterances(self) -> Iterator[Utterance | Skipped]:
    for file_name in sorted(os.listdir(self.wav_dir)):
      if file_name.startswith('.'):
        continue
      path = os.path.join(self.wav_dir, file_name)
      fields = _FILE_NAME.match(file_name)
      utt_id = os.path.splitext(file_name)[0]
      if fields is None:
        yield Skipped(utt_id, 'file name is not SSTTTEV.wav (speaker, text, emotion, version)', path)
      elif fields['emotion'] not in CANONICAL:
        yield Skipped(utt_id, f'unknown emotion letter {fields["emotion"]!r}; expected one of {sorted(CANONICAL)}',
                      path)
      elif fields['speaker'] not in SPEAKER_GENDER:
        yield Skipped(utt_id, f'unknown speaker {fields["speaker"]!r}; expected one of {sorted(SPEAKER_GENDER)}',
                      path)
      else:
        speaker = fields['speaker']
        yield Utterance(id=utt_id, speaker=speaker, group=speaker, label=fields['emotion'], audio_path=path,
                        gender=SPEAKER_GENDER[speaker])

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    return audio.load_waveform(utt.audio_path)

  def load_video(self, utt: Utterance) -> None:
    del utt  # audio only
    return None
