"""`video3d` on the embedded synthetic corpus (presets: see common.py)."""
from experiments.configs import common


def get_config(arg=None):
  return common.base_config('video3d', arg)
