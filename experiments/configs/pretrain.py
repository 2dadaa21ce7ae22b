"""Contrastive audio-video pre-training of fusion's two encoders (the paper's first method).

Positive pairs (audio and video of one clip), hard negatives (another clip of a
different emotion) and super-hard negatives (another clip of the same emotion),
with the margin loss; then fine-tune with configs/fusion.py:pretrained.
"""
from experiments.configs import common


def get_config(arg=None):
  c = common.base_config('fusion', arg)
  c.workdir = c.workdir.replace('fusion', 'pretrain')
  c.objective = 'contrastive'
  c.train.num_epochs = 5 if 'smoke' not in common.variants(arg, ('smoke', 'paper')) else 2  # paper: 5 beat 10
  # The encoders start from scratch here and the embedded run has ~13 steps per epoch:
  # at 1e-4 five epochs left the embeddings where they started (measured), so 1e-3.
  c.optim.learning_rate = 1e-3
  return c
