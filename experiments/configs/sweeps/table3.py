r"""The paper's Table 3 grid: CNN, CNN+LSTM, CNN+RNN and CNN+RNN+3DCNN (fusion), with and without
data augmentation, on 4 and 3 emotions, 3 seeds each; speaker-independent splits (the seed picks
the held-out speakers as well as the initialisation).

  python -m experiments.sweep --config=configs/sweeps/table3.py           # embedded corpus
  python -m experiments.sweep --config=configs/sweeps/table3.py:smoke     # 4 tiny points (tests, timing)
  python -m experiments.sweep --config=configs/sweeps/table3.py:emodb --config.corpus.root=/path/to/emodb  # audio models, Emo-DB
  python -m experiments.sweep --config=configs/sweeps/table3.py:ravdess --config.corpus.root=/path/to/ravdess  # audio models, RAVDESS speech
  python -m experiments.sweep --config=configs/sweeps/table3.py:full      # the paper's sizes, bigger host

Sizes (points x epochs; wall on 2 CPU cores):
  (default)  4 models x 2 x 2 x 3 seeds = 48 points x 10 epochs: 29 min 33 s with --jobs=2 (measured, AMD EPYC)
  smoke      cnn, cnn_rnn x augmentation off/on, 4 classes, seed 0: 4 points x 1 epoch, about 1 min (measured)
  emodb      3 audio models x 2 x 2 x 3 seeds = 36 points x 40 epochs (configs/emodb.py:spectrogram):
             17 min 48 s with --jobs=2 (measured, AMD EPYC)
  ravdess    the same on RAVDESS: 44 min 27 s with --jobs=2 (measured, AMD EPYC, partly beside other work)
  full       48 points x 30 epochs at the paper's sizes (200x300 faithful spectrograms, 60x100 video)
The paper's Table 3 is IEMOCAP with a random 80/20 split over clips: its numbers are not
comparable with these (another corpus, and held-out speakers rather than held-out clips).

Augmentation 'on' is the paper's kind (emojax.loader.Augment): crop up to 4 rows off the top
(highest frequencies) and resize back, and rotate by a random angle within +-5 degrees, for
training only; the amounts are emojax's, for its 48-row spectrograms.
"""
from emojax import sweeps
from experiments.configs import common
from experiments.configs import sweeps as sweep_files

PRESETS = ('smoke', 'full', 'emodb', 'ravdess')
AUDIO_MODELS = ('cnn', 'cnn_lstm', 'cnn_rnn')
AUGMENT = {
    'off': {'data.augment.top_crop_px': 0, 'data.augment.rotate_degrees': 0.0},
    'on': {'data.augment.top_crop_px': 4, 'data.augment.rotate_degrees': 5.0},
}


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  if chosen & {'emodb', 'ravdess'} and 'full' in chosen:
    raise ValueError(f'Choose one of emodb, ravdess, full; got {sorted(chosen)}.')
  synthetic = (chosen & {'smoke'}) | ({'paper'} if 'full' in chosen else set())
  return sweep_files.base_config('table3', chosen, lambda: common.base_config('cnn', ','.join(sorted(synthetic))))


def get_sweep(arg=None):
  chosen = common.presets(arg, PRESETS)
  if 'smoke' in chosen:
    # The smoke preset's recurrent size, which the base (cnn) config does not carry.
    smoke_models = {'cnn': {'model.name': 'cnn'}, 'cnn_rnn': {'model.name': 'cnn_rnn', 'model.rnn_hidden': 16}}
    return sweeps.product(sweeps.options('model.name', smoke_models), sweeps.options('augment', AUGMENT))
  models = AUDIO_MODELS if chosen & {'emodb', 'ravdess'} else AUDIO_MODELS + ('fusion',)
  return sweeps.product(sweeps.values('model.name', models), sweeps.options('augment', AUGMENT),
                        sweeps.values('data.class_set', ['4class', '3class']), sweeps.seeds(3))
