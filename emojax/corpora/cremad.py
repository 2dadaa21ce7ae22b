"""CREMA-D (Cao et al. 2014): 91 actors, 12 sentences, six emotions, audio and face video.

Layout under the corpus root: `AudioWAV/*.wav`, `AudioMP3/*.mp3`, `VideoFlash/*.flv`
(any of them), named `ActorID_Sentence_Emotion_Level` ('1001_DFA_ANG_XX'), and
`VideoDemographics.csv` (ActorID,Age,Sex,Race,Ethnicity) for the actors' genders.
The files sharing a name are one utterance: audio from the wav, else the mp3,
else the flv's audio track; video from the flv.
"""
from __future__ import annotations

import collections
import csv
import os
import re
from typing import Iterator

import numpy as np

from emojax import audio, video
from emojax.corpora.base import Skipped, Utterance

CANONICAL = {'ANG': 'ang', 'DIS': 'dis', 'FEA': 'fea', 'HAP': 'hap', 'NEU': 'neu', 'SAD': 'sad'}
SENTENCES = ('IEO', 'TIE', 'IOM', 'IWW', 'TAI', 'MTI', 'IWL', 'ITH', 'DFA', 'ITS', 'TSI', 'WSI')
LEVELS = ('LO', 'MD', 'HI', 'XX')
# folder -> extension, in the order audio is taken from
FOLDERS = {'AudioWAV': '.wav', 'AudioMP3': '.mp3', 'VideoFlash': '.flv'}
_FILE_NAME = re.compile(r'^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{1,2})$')
_SEX = {'Male': 'M', 'Female': 'F'}


class CremadCorpus:
  """Reader of CREMA-D utterances, grouped by actor.

  Args:
    root: the corpus folder, holding AudioWAV/, AudioMP3/ and/or VideoFlash/.
  """

  name = 'cremad'
  labels = tuple(CANONICAL)
  canonical = CANONICAL

  def __init__(self, root: str):
    self.root = root
    self.folders = [folder for folder in FOLDERS if os.path.isdir(os.path.join(root, folder))]
    if not self.folders:
      raise ValueError(f'{root!r} is not a CREMA-D folder: expected AudioWAV/, AudioMP3/ and/or VideoFlash/ '
                       'of ActorID_Sentence_Emotion_Level files (e.g. AudioWAV/1001_DFA_ANG_XX.wav).')
    demographics = os.path.join(root, 'VideoDemographics.csv')
    self.genders = read_genders(demographics) if os.path.isfile(demographics) else {}

  def utterances(self) -> Iterator[Utterance | Skipped]:
    files = collections.defaultdict(dict)  # name -> {extension: path}
    for folder in self.folders:
      extension = FOLDERS[folder]
      for file_name in sorted(os.listdir(os.path.join(self.root, folder))):
        if file_name.startswith('.'):
          continue
        path = os.path.join(self.root, folder, file_name)
        stem, ext = os.path.splitext(file_name)
        problem = _name_problem(stem)
        if ext.lower() != extension:
          problem = f'{folder}/ holds {extension} files, not {ext or "files without extension"}'
        if problem is not None:
          yield Skipped(stem, problem, path)
        else:
          files[stem][extension] = path
    for stem, paths in sorted(files.items()):
      # Files of zero bytes exist in the public release (e.g. AudioWAV/1076_MTI_SAD_XX.wav).
      usable = {ext: path for ext, path in paths.items() if os.path.getsize(path) > 0}
      if not usable:
        yield Skipped(stem, 'empty file', ', '.join(sorted(paths.values())))
        continue
      actor, _, emotion, _ = stem.split('_')
      audio_path = next(usable[ext] for ext in FOLDERS.values() if ext in usable)
      yield Utterance(id=stem, speaker=actor, group=actor, label=emotion, audio_path=audio_path,
                      video_path=usable.get('.flv'), gender=self.genders.get(actor))

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    if utt.audio_path.endswith('.flv'):
      return video.decode_audio_track(utt.audio_path)
    return audio.load_waveform(utt.audio_path)

  def load_video(self, utt: Utterance) -> tuple[np.ndarray, float] | None:
    if utt.video_path is None:
      return None
    return video.decode_video(utt.video_path)


def read_genders(path: str) -> dict[str, str]:
  """ActorID -> 'F' / 'M' from VideoDemographics.csv."""
  genders = {}
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    if reader.fieldnames is None or not {'ActorID', 'Sex'} <= set(reader.fieldnames):
      raise ValueError(f'{path}: expected a header with ActorID and Sex columns, got {reader.fieldnames}.')
    for row in reader:
      if row['Sex'] not in _SEX:
        raise ValueError(f'{path}:{reader.line_num}: Sex {row["Sex"]!r} is neither Male nor Female.')
      genders[row['ActorID']] = _SEX[row['Sex']]
  return genders


def _name_problem(stem: str) -> str | None:
  fields = _FILE_NAME.match(stem)
  if fields is None:
    return 'file name is not ActorID_Sentence_Emotion_Level (e.g. 1001_DFA_ANG_XX)'
  for field, allowed in (('sentence', SENTENCES), ('emotion', tuple(CANONICAL)), ('level', LEVELS)):
    if fields[field] not in allowed:
      return f'unknown {field} {fields[field]!r}; expected one of {allowed}'
  return None
