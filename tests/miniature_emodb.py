"""A generated corpus in Emo-DB's layout (wav/SSTTTEV.wav): each emotion its own pitch and loudness."""
import os

import numpy as np
import soundfile


def make_miniature_emodb(root, speakers=('03', '08', '09', '10'), per_emotion=2):
  os.makedirs(root / 'wav')
  rng = np.random.default_rng(0)
  sr = 16000
  t = np.arange(int(0.6 * sr)) / sr
  for s, speaker in enumerate(speakers):
    for e, emotion in enumerate('WLEAFTN'):
      for v in range(per_emotion):
        pitch = 110 * (1 + 0.15 * e) * (1 + 0.05 * s)
        wave = (0.05 + 0.04 * e) * np.sin(2 * np.pi * pitch * t * (1 + 0.1 * v * t)) + 0.005 * rng.normal(size=t.size)
        soundfile.write(root / 'wav' / f'{speaker}a0{v + 1}{emotion}{"ab"[v]}.wav', wave.astype(np.float32), sr)
  return root
