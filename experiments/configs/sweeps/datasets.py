r"""The paper's open noise question: its dataset variants DS I-IV for one audio model (cnn_rnn).

  ds1  full utterances, raw            ds2  3-s clips, raw (emojax's default)
  ds3  full utterances, denoised       ds4  3-s clips, denoised (band-pass + spectral gating)

  python -m experiments.sweep --config=configs/sweeps/datasets.py            # embedded corpus
  python -m experiments.sweep --config=configs/sweeps/datasets.py:ravdess --config.corpus.root=/path/to/ravdess  # RAVDESS speech (3-5 s clips)
  python -m experiments.sweep --config=configs/sweeps/datasets.py:emodb --config.corpus.root=/path/to/emodb  # Emo-DB (2-s files)
  python -m experiments.sweep --config=configs/sweeps/datasets.py:smoke      # 2 tiny points

Sizes (points x epochs; wall on 2 CPU cores, estimated where not said):
  (default)  4 variants x 3 seeds = 12 points x 10 epochs: 7 min 23 s with --jobs=1 plus the array builds (measured)
  emodb, ravdess  12 points x 40 epochs (configs/emodb.py), about 50 min on Emo-DB, longer on RAVDESS
  smoke      ds2, ds4, seed 0: 2 points x 1 epoch, about 45 s (measured, arrays built)
Each variant is its own array build (denoising makes ds3/ds4's the slowest); they are cached
in data/ and shared by the seeds. Embedded utterances last 1.5-3 s and carry a room noise floor;
Emo-DB here is cut to 2 s, so its ds2 clips are noise-padded 2-s files.
"""
from emojax import sweeps
from experiments.configs import common
from experiments.configs import sweeps as sweep_files

PRESETS = ('smoke', 'emodb', 'ravdess')


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  c = sweep_files.base_config('datasets', chosen,
                              lambda: common.base_config('cnn_rnn', 'smoke' if 'smoke' in chosen else None))
  c.model.name = 'cnn_rnn'
  return c


def get_sweep(arg=None):
  chosen = common.presets(arg, PRESETS)
  if 'smoke' in chosen:
    return sweeps.values('data.variant', ['ds2', 'ds4'])
  return sweeps.product(sweeps.values('data.variant', ['ds1', 'ds2', 'ds3', 'ds4']), sweeps.seeds(3))
