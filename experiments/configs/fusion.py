"""`fusion`: CNN+RNN audio and 3D-CNN video, concatenated (presets: see common.py).

  :pretrained  fine-tune from contrastive pre-training (run configs/pretrain.py first with
               the same other presets): the encoders start from its last checkpoint (not
               its best, which is picked by validation retrieval).
Without it the fusion model is trained directly (the paper's second method).
"""
from experiments.configs import common


def get_config(arg=None):
  c = common.base_config('fusion', arg, extra_presets=('pretrained',))
  chosen = common.presets(arg, common.PRESETS + ('pretrained',))
  if 'pretrained' in chosen:
    c.init_from = common.workdir('pretrain', chosen - {'pretrained'}) + '/checkpoints/latest'
    c.init_keys = ('audio_encoder', 'video_encoder')
  return c
