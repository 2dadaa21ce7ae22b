"""The embedded synthetic corpus: audio-video synchrony survives the feature path; its cache key."""
import collections

import ml_collections
import numpy as np

from emojax import corpora, features
from emojax.corpora import synthetic
from experiments.configs import common


def loudness_and_mouth(corpus, utterances, spec):
  """Per clip, z-scored over its frames: the log-mel loudness at each video frame's time, and how
  dark (open) the lower half of each frame is."""
  loud, mouth = [], []
  for utt in utterances:
    example = next(features.utterance_examples(corpus, utt, spec, collections.Counter()))
    columns = example['audio'][..., 0].mean(axis=0)  # mean over mel rows, per column of the clip
    frames = example['video'].astype(np.float32).mean(axis=-1)
    times = (np.arange(len(frames)) + 0.5) / len(frames)  # frames and columns span the same clip
    loud.append(np.interp(times, (np.arange(len(columns)) + 0.5) / len(columns), columns))
    mouth.append(-frames[:, frames.shape[1] // 2:].mean(axis=(1, 2)))
  z = lambda x: (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
  return z(np.array(loud)), z(np.array(mouth))


def test_mouth_follows_the_audio_at_the_default_frame_rate():
  """A hand-made probe, no training: each clip's loudness track correlates with its own mouth
  track far more than with other clips' and picks its own video out of 48 clips of two
  held-out-like speakers, through the default config's features (3-s clips, 12 frames)."""
  c = common.base_config('fusion', None)
  corpus = synthetic.SyntheticCorpus(**c.corpus.synthetic.to_dict())
  spec = features.spec_from_config(c)
  utterances = [u for u in corpus.utterances() if u.speaker in ('spk02', 'spk04') and int(u.id[-3:]) < 6]
  loud, mouth = loudness_and_mouth(corpus, utterances, spec)
  correlation = loud @ mouth.T / loud.shape[1]  # (audio clip, video clip)
  own = np.diag(correlation).mean()
  others = correlation[~np.eye(len(correlation), dtype=bool)].mean()
  recall_at_1 = np.mean(correlation.argmax(axis=1) == np.arange(len(correlation)))
  assert len(utterances) == 48
  assert own > 0.5 and own > others + 0.3, (own, others)
  assert recall_at_1 > 10 / 48, recall_at_1  # chance: 1/48


def test_cache_key_follows_the_generator_version(monkeypatch):
  config = ml_collections.ConfigDict({'name': 'synthetic', 'synthetic': {'seed': 0}})
  key = corpora.corpus_key(config)
  assert corpora.corpus_key(config) == key
  monkeypatch.setattr(synthetic, 'VERSION', synthetic.VERSION + 1)
  assert corpora.corpus_key(config) != key
