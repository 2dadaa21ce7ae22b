"""Contrastive audio-video pre-training of fusion's two encoders; then fine-tune with configs/fusion.py:pretrained.

  (default)  InfoNCE: each clip's audio picks its own video out of the batch's (and back). Not the
             paper's loss; on the embedded corpus it learns the audio-video synchrony where the
             paper's margin loss stays at chance (README).
  :margin    the paper's method: positive pairs (audio and video of one clip), hard negatives
             (another clip of a different emotion) and super-hard negatives (another clip of the
             same emotion) mined in the batch, 3/4 and 1/4, with the margin loss.
Other presets (smoke, paper) as in common.py.
"""
from experiments.configs import common


def get_config(arg=None):
  c = common.base_config('fusion', arg, extra_presets=('margin',))
  chosen = common.presets(arg, common.PRESETS + ('margin',))
  c.workdir = common.workdir('pretrain', chosen)
  c.objective = 'contrastive'
  c.contrastive.loss = 'margin' if 'margin' in chosen else 'infonce'
  c.train.num_epochs = 30 if 'margin' not in chosen else 5  # the paper: 5 epochs beat 10
  if 'smoke' in chosen:
    c.train.num_epochs = 2
  # The encoders start from scratch here with few steps per epoch: at 1e-4 the embeddings
  # stayed where they started after five epochs, so 1e-3.
  c.optim.learning_rate = 1e-3
  return c
