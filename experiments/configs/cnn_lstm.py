"""`cnn_lstm` on the embedded synthetic corpus (presets: see common.py)."""
from experiments.configs import common


def get_config(arg=None):
  return common.base_config('cnn_lstm', arg)
