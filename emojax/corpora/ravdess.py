"""RAVDESS (Livingstone & Russo 2018): 24 actors, two sentences, speech and song, audio and video.

Layout under the corpus root: `Actor_NN/MM-VV-EE-II-SS-RR-NN.<ext>` with fields
modality (01 audio-visual .mp4, 02 video-only .mp4, 03 audio-only .wav/.flac),
vocal channel (01 speech, 02 song), emotion (01..08), intensity (01 normal,
02 strong), statement (01, 02), repetition (01, 02) and actor (odd = male).

The files of one take (same fields but modality) are one utterance, whose id is
the name without the modality field ('01-03-02-01-01-12'): audio from the
audio-only file, else the audio-visual mp4's track; video from the audio-visual
mp4, else the video-only one.
"""
from __future__ import annotations

import collections
import os
import re
from typing import Iterator

import numpy as np

from emojax import audio, video
from emojax.corpora.base import Skipped, Utterance

CANONICAL = {'01': 'neu', '02': 'cal', '03': 'hap', '04': 'sad', '05': 'ang', '06': 'fea', '07': 'dis', '08': 'sur'}
# modality -> (role of the file in its take, allowed extensions)
_MODALITIES = {'01': ('audio_visual', ('.mp4',)), '02': ('video_only', ('.mp4',)),
               '03': ('audio_only', ('.wav', '.flac'))}
_FILE_NAME = re.compile(r'^(?P<modality>\d\d)-(?P<channel>\d\d)-(?P<emotion>\d\d)-(?P<intensity>\d\d)-'
                        r'(?P<statement>\d\d)-(?P<repetition>\d\d)-(?P<actor>\d\d)(?P<ext>\.[A-Za-z0-9]+)$')
_ALLOWED = {'channel': ('01', '02'), 'emotion': tuple(CANONICAL), 'intensity': ('01', '02'),
            'statement': ('01', '02'), 'repetition': ('01', '02')}
_ACTOR_DIR = re.compile(r'^Actor_(\d\d)$')


class RavdessCorpus:
  """Reader of RAVDESS speech (and optionally song) takes, grouped by actor.

  Args:
    root: the corpus folder, holding Actor_01 ... Actor_24.
    keep_song: also yield sung takes (vocal channel 02); by default they are skipped as 'song'.
  """

  name = 'ravdess'
  labels = tuple(CANONICAL)
  canonical = CANONICAL

  def __init__(self, root: str, *, keep_song: bool = False):
    self.root = root
    self.keep_song = keep_song
    self.actor_dirs = sorted(entry for entry in (os.listdir(root) if os.path.isdir(root) else [])
                             if _ACTOR_DIR.match(entry) and os.path.isdir(os.path.join(root, entry)))
    if not self.actor_dirs:
      raise ValueError(f'{root!r} is not a RAVDESS folder: expected Actor_NN/ folders of '
                       'MM-VV-EE-II-SS-RR-NN.(wav|flac|mp4) files.')

  def utterances(self) -> Iterator[Utterance | Skipped]:
    for actor_dir in self.actor_dirs:
      yield from self._actor_utterances(actor_dir)

  def _actor_utterances(self, actor_dir: str) -> Iterator[Utterance | Skipped]:
    folder_actor = _ACTOR_DIR.match(actor_dir).group(1)
    takes = collections.defaultdict(dict)  # take id -> {role: path}
    for file_name in sorted(os.listdir(os.path.join(self.root, actor_dir))):
      if file_name.startswith('.'):
        continue
      path = os.path.join(self.root, actor_dir, file_name)
      problem, take, role = _parse(file_name, folder_actor)
      if problem is None and role in takes[take]:
        problem = f'duplicate {role} file of take {take} (first: {takes[take][role]})'
      if problem is not None:
        yield Skipped(os.path.splitext(file_name)[0], problem, path)
        continue
      takes[take][role] = path
    for take, files in sorted(takes.items()):
      channel, emotion, _, _, _, actor = take.split('-')
      source = ', '.join(sorted(files.values()))
      if channel == '02' and not self.keep_song:
        yield Skipped(take, 'song', source)
        continue
      audio_path = files.get('audio_only', files.get('audio_visual'))
      if audio_path is None:
        yield Skipped(take, 'video only: no audio file or track', source)
        continue
      yield Utterance(id=take, speaker=f'Actor_{actor}', group=f'Actor_{actor}', label=emotion,
                      audio_path=audio_path, video_path=files.get('audio_visual', files.get('video_only')),
                      gender='M' if int(actor) % 2 else 'F')

  def load_audio(self, utt: Utterance) -> tuple[np.ndarray, int]:
    if utt.audio_path.endswith('.mp4'):
      return video.decode_audio_track(utt.audio_path)
    return audio.load_waveform(utt.audio_path)

  def load_video(self, utt: Utterance) -> tuple[np.ndarray, float] | None:
    if utt.video_path is None:
      return None
    return video.decode_video(utt.video_path)


def _parse(file_name: str, folder_actor: str) -> tuple[str | None, str, str]:
  """(problem or None, take id, role) of one file name."""
  fields = _FILE_NAME.match(file_name)
  if fields is None:
    return 'file name is not MM-VV-EE-II-SS-RR-NN.(wav|flac|mp4)', '', ''
  if fields['modality'] not in _MODALITIES:
    return f'unknown modality {fields["modality"]!r}; expected 01, 02 or 03', '', ''
  role, extensions = _MODALITIES[fields['modality']]
  if fields['ext'].lower() not in extensions:
    return f'modality {fields["modality"]} ({role}) expects {"/".join(extensions)}, not {fields["ext"]}', '', ''
  for field, allowed in _ALLOWED.items():
    if fields[field] not in allowed:
      return f'unknown {field} {fields[field]!r}; expected one of {allowed}', '', ''
  if fields['emotion'] == '01' and fields['intensity'] != '01':
    return 'neutral has normal intensity (01) only', '', ''
  if fields['actor'] != folder_actor:
    return f'actor {fields["actor"]} filed under Actor_{folder_actor}', '', ''
  take = '-'.join(fields[f] for f in ('channel', 'emotion', 'intensity', 'statement', 'repetition', 'actor'))
  return None, take, role
