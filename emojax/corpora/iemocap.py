"""IEMOCAP (Busso et al. 2008): five sessions of dyadic conversations, two actors each.

Layout under the corpus root (the `IEMOCAP_full_release` folder):

  SessionN/dialog/EmoEvaluation/<dialog>.txt     labels, one line per utterance:
      [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]
  SessionN/sentences/wav/<dialog>/<utterance>.wav  one utterance
  SessionN/dialog/wav/<dialog>.wav                 the whole dialog
  SessionN/dialog/avi/DivX/<dialog>.avi            both actors side by side

The last '_' field of an utterance id starts with the speaker's gender letter
('Ses01F_script01_1_M003' -> M). In the video, the actor whose gender letter ends
the session id ('Ses01F' -> F) sits on the left half, the other on the right.
All five sessions are read (the original code's loop read sessions 1-4 only).
"""
from __future__ import annotations

import glob
import os
import re
from typing import Iterator

import numpy as np

from emojax import audio, video
from emojax.corpora.base import Skipped, Utterance

LABELS = ('neu', 'hap', 'sad', 'ang', 'exc', 'fru', 'sur', 'fea', 'dis', 'oth', 'xxx')

_UTTERANCE_LINE = re.compile(
    r'^\[\s*(?P<start>\d+(?:\.\d+)?)\s*-\s*(?P<end>\d+(?:\.\d+)?)\s*\]\s+(?P<id>\S+)\s+(?P<label>\S+)\s+'
    r'\[\s*(?P<v>-?\d+(?:\.\d+)?)\s*,\s*(?P<a>-?\d+(?:\.\d+)?)\s*,\s*(?P<d>-?\d+(?:\.\d+)?)\s*\]\s*$')
# Lines of the label files that describe no utterance: the header ('% [START_TIME ...'),
# and the evaluators' categorical ('C-E1:') and attribute ('A-F2:') assessments.
_NOT_AN_UTTERANCE = re.compile(r'^(%|[A-Z]-[A-Za-z0-9]+:)')
_UTTERANCE_ID = re.compile(r'^Ses(?P<session>\d\d)(?P<left>[FM])_.+_(?P<gender>[FM])\d+$')
_SESSION_DIR = re.compile(r'^Session(\d+)$')


class IemocapCorpus:
  """Reader of IEMOCAP's labelled utterances, their audio and the speaker's half of the video.

  Args:
    root: the corpus folder, holding Session1 ... Session5.
    audio_source: 'sentences' reads `sentences/wav/<dialog>/<utt>.wav`, cutting the
      dialog wav by the label times where that file is missing; 'dialog' always
      cuts the dialog wav.
  """

  name = 'iemocap'
  labels = LABELS
  canonical = {label: label for label in LABELS}

  def __init__(self, root: str, *, audio_source: str = 'sentences'):
    if audio_source not in ('sentences', 'dialog'):
      raise ValueError(f"Unknown audio_source {audio_source!r}; expected 'sentences' or 'dialog'.")
    self.root = root
    self.audio_source = audio_source
    self.sessions = {}  # session number -> its folder
    if os.path.isdir(root):
      for entry in sorted(os.listdir(root)):
        found = _SESSION_DIR.match(entry)
        if found and os.path.isdir(os.path.join(root, entry, 'dialog', 'EmoEvaluation')):
          self.sessions[int(found.group(1))] = os.path.join(root, entry)
    if not self.sessions:
      raise ValueError(f'{root!r} is not an IEMOCAP folder: expected Session1 ... Session5, each with '
                       'dialog/EmoEvaluation/*.txt label files (the IEMOCAP_full_release layout).')

  def utterances(self) -> Iterator[Utterance | Skipped]:
    for session, folder in sorted(self.sessions.items()):
      label_files = sorted(glob.glob(os.path.join(folder, 'dialog', 'EmoEvaluation', '*.txt')))
      for label_file in label_files:
        if os.path.basename(label_file).startswith('.'):  # macOS metadata ('._Ses01F_impro01.txt')
          continue
        yield from self._dialog_utterances(session, folder, label_file)

  def _dialog_utterances(self, session: int, folder: str, label_file: str) -> Iterator[Utterance | Skipped]:
    dialog = os.path.splitext(os.path.basename(label_file))[0]
    dialog_wav = os.path.join(folder, 'dialog', 'wav', f'{dialog}.wav')
    avi = os.path.join(folder, 'dialog', 'avi', 'DivX', f'{dialog}.avi')
    video_path = avi if os.path.isfile(avi) else None
    with open(label_file, encoding='utf-8', errors='replace') as f:
      lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
      source = f'{label_file}:{number}'
      if not line.strip() or _NOT_AN_UTTERANCE.match(line):
        continue
      fields = _UTTERANCE_LINE.match(line)
      if fields is None:
        guess = re.search(r'Ses\d\d[FM]_\S+', line)
        yield Skipped(guess.group(0) if guess else source, f'malformed label line {line.strip()!r}', source)
        continue
      utt_id, label = fields['id'], fields['label']
      id_fields = _UTTERANCE_ID.match(utt_id)
      start, end = float(fields['start']), float(fields['end'])
      if id_fields is None or not utt_id.startswith(f'{dialog}_'):
        yield Skipped(utt_id, f'utterance id does not match its dialog {dialog!r} '
                      '(expected <dialog>_<F|M><number>)', source)
        continue
      if int(id_fields['session']) != session:
        yield Skipped(utt_id, f'utterance of session {int(id_fields["session"])} listed in Session{session}', source)
        continue
      if label not in LABELS:
        yield Skipped(utt_id, f'unknown label {label!r}; expected one of {LABELS}', source)
        continue
      if not end > start:
        yield Skipped(utt_id, f'end time {end} not after start time {start}', source)
        continue
      sentence_wav = os.path.join(folder, 'sentences', 'wav', dialog, f'{utt_id}.wav')
      if self.audio_source == 'sentences' and os.path.isfile(sentence_wav):
        audio_path, audio_start, audio_end = sentence_wav, None, None
      elif os.path.isfile(dialog_wav):
        audio_path, audio_start, audio_end = dialog_wav, start, end
      else:
        missing = ([sentence_wav] if self.audio_source == 'sentences' else []) + [dialog_wav]
        yield Skipped(utt_id, f'missing audio: none of {missing} exists', source)
        continue
      gender = id_fields['gender']
      yield Utterance(
          id=utt_id,
          speaker=f'Ses{id_fields["session"]}_{gender}',
          group=f'Session{session}',
          label=label,
          audio_path=audio_path,
          start=audio_start,
          end=audio_end,
          video_path=video_path,
          video_side='left' if gender == id_fields['left'] else 'right',
          gender=gender,
          vad=(float(fields['v']), float(fields['a']), float(fields['d'])),
      )

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    return audio.load_waveform(utt.audio_path, start=utt.start, end=utt.end)

  def load_video(self, utt: Utterance) -> tuple[np.ndarray, float] | None:
    if utt.video_path is None:
      return None
    start, end = (utt.start, utt.end) if utt.start is not None else self._label_times(utt.id)
    frames, fps = video.decode_video(utt.video_path, start=start, end=end)
    return video.speaker_half(frames, utt.video_side), fps

  def _label_times(self, utt_id: str) -> tuple[float, float]:
    """The label file's times of an utterance whose audio is a sentence file (for its video cut)."""
    dialog = utt_id.rsplit('_', 1)[0]
    label_file = os.path.join(self.sessions[int(utt_id[3:5])], 'dialog', 'EmoEvaluation', f'{dialog}.txt')
    with open(label_file, encoding='utf-8', errors='replace') as f:
      for line in f:
        fields = _UTTERANCE_LINE.match(line.rstrip('\n'))
        if fields is not None and fields['id'] == utt_id:
          return float(fields['start']), float(fields['end'])
    raise ValueError(f'{label_file} has no label line for {utt_id!r}.')
