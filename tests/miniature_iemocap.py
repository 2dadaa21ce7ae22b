"""Writes a miniature IEMOCAP: the real folder layout and label-file format, tiny generated signals.

Each dialog gets a 16 kHz wav in which utterance k of the dialog is a tone of
`300 + 100 k` Hz (silence between utterances), per-utterance sentence wavs cut
from it, and a side-by-side 160x60 AVI (mpeg4) at 10 fps: each half is painted
in the colour of its actor's gender (F red, M blue; the actor whose letter ends
the session id on the left) and the green channel encodes which utterance is
being spoken (`green_code(k)`, 0 between utterances). All times are multiples of
1/16 s, so label times fall on exact samples and print exactly with 4 decimals.
"""
from __future__ import annotations

import os

import av
import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000
FPS = 10
FRAME_HEIGHT, FRAME_WIDTH = 60, 160
GENDER_COLOUR = {'F': (220, 0, 0), 'M': (0, 0, 220)}  # RGB; green is left for the time code
LABEL_CYCLE = ('neu', 'hap', 'sad', 'ang', 'exc', 'fru', 'xxx', 'sur')
_TICK = 1 / 16  # seconds; every time is a multiple of it
_EVALUATION = {'neu': 'Neutral state', 'hap': 'Happiness', 'sad': 'Sadness', 'ang': 'Anger',
               'exc': 'Excited', 'fru': 'Frustration', 'xxx': 'Other', 'sur': 'Surprise'}


def tone_frequency(index_in_dialog: int) -> float:
  return 300.0 + 100.0 * index_in_dialog


def green_code(index_in_dialog: int) -> int:
  """The green level of the video frames while utterance `index_in_dialog` is spoken."""
  return 60 + 30 * (index_in_dialog % 6)


def _dialog_name(session: int, dialog: int) -> tuple[str, str]:
  """(dialog name, gender letter of the left actor); alternates improvised and scripted names."""
  left = 'F' if (session + dialog) % 2 else 'M'
  kind = f'script0{dialog + 1}_1' if (session + dialog) % 2 else f'impro0{dialog + 1}'
  return f'Ses{session:02d}{left}_{kind}', left


def _write_video(path: str, duration: float, left: str, spans: list[tuple[float, float]]) -> None:
  right = 'M' if left == 'F' else 'F'
  half = FRAME_WIDTH // 2
  with av.open(path, 'w', format='avi') as container:
    stream = container.add_stream('mpeg4', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = FRAME_WIDTH, FRAME_HEIGHT, 'yuv420p'
    stream.bit_rate = 2_000_000
    for i in range(int(np.ceil(duration * FPS))):
      t = i / FPS
      frame = np.zeros((FRAME_HEIGHT, FRAME_WIDTH, 3), np.uint8)
      frame[:, :half] = GENDER_COLOUR[left]
      frame[:, half:] = GENDER_COLOUR[right]
      speaking = [k for k, (start, end) in enumerate(spans) if start <= t < end]
      frame[:, :, 1] = green_code(speaking[0]) if speaking else 0
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _label_block(start: float, end: float, utt_id: str, label: str, vad: tuple[float, ...]) -> list[str]:
  v, a, d = vad
  return [f'[{start:.4f} - {end:.4f}]\t{utt_id}\t{label}\t[{v:.4f}, {a:.4f}, {d:.4f}]',
          f'C-E1:\t{_EVALUATION[label]};\t()',
          f'C-E2:\t{_EVALUATION[label]}; Neutral state;\t()',
          f'A-E1:\tval {int(v)}; act {int(a)}; dom  {int(d)};\t()',
          '']


def make_miniature_iemocap(root: str, *, sessions=(1, 2, 3, 4, 5), dialogs_per_session: int = 1,
                           utterances_per_dialog: int = 6, seed: int = 0, defects: bool = False) -> dict:
  """Writes the miniature corpus under `root` and returns its ground truth.

  Args:
    root: folder to write Session1 ... into.
    sessions: session numbers to write.
    dialogs_per_session: dialogs per session (improvised and scripted names alternate).
    utterances_per_dialog: utterances per dialog, genders alternating, durations
      alternating below and above 3 s.
    seed: seeds durations and valence/activation/dominance.
    defects: also inject (a) a malformed utterance line, (b) a missing sentence wav
      (the reader falls back to the dialog cut), (c) a label file whose dialog has
      no recordings at all.

  Returns:
    {'utterances': {id: {label, speaker, group, gender, side, start, end, vad, frequency,
      green, dialog, wav, sentence_wav}}, 'sample_rate', 'fps', 'defects': {...}}
    where 'defects' holds 'malformed_line' and 'missing_audio' as (id, 'file:line') and
    'missing_sentence_wav' as an utterance id (empty when `defects` is False).
  """
  rng = np.random.default_rng(seed)
  truth = {'utterances': {}, 'sample_rate': SAMPLE_RATE, 'fps': FPS, 'defects': {}}
  label_counter = 0
  for session in sessions:
    session_dir = os.path.join(root, f'Session{session}')
    for sub in ('dialog/EmoEvaluation', 'dialog/wav', 'dialog/avi/DivX'):
      os.makedirs(os.path.join(session_dir, sub), exist_ok=True)
    for d in range(dialogs_per_session):
      dialog, left = _dialog_name(session, d)
      sentence_dir = os.path.join(session_dir, 'sentences', 'wav', dialog)
      os.makedirs(sentence_dir, exist_ok=True)
      spans, blocks, counts, t = [], [], {'F': 0, 'M': 0}, 0.5
      for k in range(utterances_per_dialog):
        gender = 'FM'[(k + session) % 2]
        utt_id = f'{dialog}_{gender}{counts[gender]:03d}'
        counts[gender] += 1
        ticks = int(rng.integers(0, 8))
        duration = (1.5 if k % 2 == 0 else 3.25) + ticks * _TICK
        start, end = t, t + duration
        t = end + 0.5
        label = LABEL_CYCLE[label_counter % len(LABEL_CYCLE)]
        label_counter += 1
        vad = tuple(float(x) for x in rng.integers(2, 11, size=3) / 2)
        spans.append((start, end))
        blocks += _label_block(start, end, utt_id, label, vad)
        truth['utterances'][utt_id] = {
            'label': label, 'speaker': f'Ses{session:02d}_{gender}', 'group': f'Session{session}',
            'gender': gender, 'side': 'left' if gender == left else 'right', 'start': start, 'end': end,
            'vad': vad, 'frequency': tone_frequency(k), 'green': green_code(k), 'dialog': dialog,
            'wav': os.path.join(session_dir, 'dialog', 'wav', f'{dialog}.wav'),
            'sentence_wav': os.path.join(sentence_dir, f'{utt_id}.wav')}
      duration = t
      wave = np.zeros(int(round(duration * SAMPLE_RATE)), np.float32)
      for k, (start, end) in enumerate(spans):
        first, last = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
        wave[first:last] = 0.5 * np.sin(2 * np.pi * tone_frequency(k) * np.arange(last - first) / SAMPLE_RATE)
      wave = (np.round(wave * 32767) / 32767).astype(np.float32)  # what 16-bit PCM stores
      sf.write(os.path.join(session_dir, 'dialog', 'wav', f'{dialog}.wav'), wave, SAMPLE_RATE, subtype='PCM_16')
      for (start, end), utt_id in zip(spans, list(truth['utterances'])[-len(spans):]):
        first, last = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
        sf.write(os.path.join(sentence_dir, f'{utt_id}.wav'), wave[first:last], SAMPLE_RATE, subtype='PCM_16')
      _write_video(os.path.join(session_dir, 'dialog', 'avi', 'DivX', f'{dialog}.avi'), duration, left, spans)
      header = ['% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]', '']
      lines = header + blocks
      if defects and not truth['defects']:
        bad_id = f'{dialog}_F099'
        lines.append(f'[{t:.4f} - ]\t{bad_id}\tneu\t[2.5000, 2.5000]')
        label_file = os.path.join(session_dir, 'dialog', 'EmoEvaluation', f'{dialog}.txt')
        truth['defects']['malformed_line'] = (bad_id, f'{label_file}:{len(lines)}')
        second = list(truth['utterances'])[-len(spans) + 1]
        os.remove(truth['utterances'][second]['sentence_wav'])
        truth['defects']['missing_sentence_wav'] = second
        orphan_dialog = f'Ses{session:02d}{left}_impro09'
        orphan_file = os.path.join(session_dir, 'dialog', 'EmoEvaluation', f'{orphan_dialog}.txt')
        with open(orphan_file, 'w') as f:
          f.write('\n'.join(header + _label_block(1.0, 2.5, f'{orphan_dialog}_F000', 'neu', (3.0, 3.0, 3.0))) + '\n')
        truth['defects']['missing_audio'] = (f'{orphan_dialog}_F000', f'{orphan_file}:{len(header) + 1}')
      with open(os.path.join(session_dir, 'dialog', 'EmoEvaluation', f'{dialog}.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')
  return truth
