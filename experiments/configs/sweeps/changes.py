r"""Changes tried on the real-speech recipe, one per row, on every speaker fold, seed 0.

  python -m experiments.sweep --config=configs/sweeps/changes.py:emodb --config.corpus.root=/path/to/emodb --jobs=2
  python -m experiments.sweep --config=configs/sweeps/changes.py:emodb,mels128 --config.corpus.root=...  # chosen rows
  python -m experiments.sweep --config=configs/sweeps/changes.py:emodb,smoke --config.corpus.root=...    # 2 rows, 2 folds
  python -m experiments.sweep --config=configs/sweeps/changes.py:ravdess,m128_egemaps,seeds3 --config.corpus.root=...  # + seeds 1, 2

Each row is configs/emodb.py on all classes and the folds of configs/sweeps/crossval.py, with the row's
overrides; `recipe` and `recipe_spk` are the recipe itself, the rows the others are paired with (a `_spk`
row is speaker-normalised, the others speaker-blind). One seed (the config's, 0): differences of a few points
are within the seed-to-seed spread, so a row here only rules out large effects or shortlists a change for
crossval.py. Preset `seeds3` adds seeds 1 and 2 of the chosen rows (the seed-0 points keep their names).
"""
from emojax import sweeps
from experiments.configs import common
from experiments.configs.sweeps import crossval

SPEAKER = {'data.normalize': 'speaker'}
MELS128 = {'data.audio_size': (128, 96)}
EGEMAPS = {'data.functionals': 'egemaps'}
ROWS = {
    'recipe': {},
    'recipe_spk': SPEAKER,
    'bn': {'model.batchnorm': True},                          # BatchNorm after each conv (momentum 0.9)
    'crop64': {'data.crop_frames': 64, 'data.test_crops': 5},  # random 64 of 96 columns; 5 crops at test
    'mels128': MELS128,  # 128 rows instead of 64: the same 64 mel bands, resized (bilinear) to 128 rows
    'egemaps': EGEMAPS,                                       # a hybrid: eGeMAPS functionals beside the spectrogram
    'egemaps_spk': {**EGEMAPS, **SPEAKER},
    'm128_egemaps': {**MELS128, **EGEMAPS},
    'm128_egemaps_spk': {**MELS128, **EGEMAPS, **SPEAKER},
    'bands128_egemaps': {**MELS128, 'data.mel_bands': 128, **EGEMAPS},  # the hybrid with 128 true mel bands
    'm128_egemaps_vtlp': {**MELS128, **EGEMAPS, 'data.augment.freq_warp': 0.1},  # the hybrid + VTLP (+-10%)
}
PRESETS = ('emodb', 'ravdess', 'smoke', 'seeds3') + tuple(ROWS)


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  c = crossval.get_config(','.join(sorted(chosen & {'emodb', 'ravdess', 'smoke'})))
  c.workdir = common.workdir('sweeps/changes', chosen & {'emodb', 'ravdess', 'smoke'})
  c.data.normalize = 'none'
  return c


def get_sweep(arg, config):
  chosen = common.presets(arg, PRESETS)
  names = [n for n in ROWS if n in chosen] or list(ROWS)
  if 'smoke' in chosen:
    names = names[:2]
  folds = sweeps.folds(2 if 'smoke' in chosen else crossval.num_folds(config))
  rows = sweeps.options('row', {n: ROWS[n] for n in names})
  points = sweeps.product(rows, folds)
  if 'seeds3' in chosen:
    points += sweeps.product(rows, folds, sweeps.seeds([1, 2]))
  return points
