r"""What each ingredient of the real-speech recipe is worth: cross-validated over every speaker
(the folds of configs/sweeps/crossval.py), one row per ingredient added to the base network, and
one with all of them.

  python -m experiments.sweep --config=configs/sweeps/recipe.py:emodb --config.corpus.root=/path/to/emodb --jobs=2
  python -m experiments.sweep --config=configs/sweeps/recipe.py:ravdess --config.corpus.root=/path/to/ravdess --jobs=2
  python -m experiments.sweep --config=configs/sweeps/recipe.py:emodb,smoke --config.corpus.root=...  # 2 rows, 2 folds

Base: configs/emodb.py with every ingredient off, in the mode the presets name (speaker-normalised
unless `blind`). Rows (`recipe` axis): base, +specaugment, +mixup, +smoothing, +cosine, +stats, all.
"""
from emojax import sweeps
from experiments.configs import common
from experiments.configs.sweeps import crossval

PRESETS = ('emodb', 'ravdess', 'smoke', 'blind')
INGREDIENTS = {
    'specaugment': {'data.augment.freq_masks': 2, 'data.augment.time_masks': 2, 'data.augment.mask_width': 8},
    'mixup': {'train.mixup_alpha': 0.2},
    'smoothing': {'optim.label_smoothing': 0.1},
    'cosine': {'optim.schedule': 'cosine', 'optim.warmup_epochs': 2.0},
    'stats': {'model.pooling': 'stats'},
}



def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  c = crossval.get_config(','.join(sorted(chosen & {'emodb', 'ravdess', 'smoke'})))
  c.workdir = common.workdir('sweeps/recipe', chosen)
  c.data.normalize = 'utterance' if 'blind' in chosen else 'speaker'
  return sweeps.apply_overrides(c, crossval.INGREDIENTS_OFF)  # every ingredient off, whatever configs/emodb.py's defaults


def get_sweep(arg, config):
  chosen = common.presets(arg, PRESETS)
  rows = {'base': {}, **{f'+{name}': o for name, o in INGREDIENTS.items()},
          'all': {k: v for o in INGREDIENTS.values() for k, v in o.items()}}
  if 'smoke' in chosen:
    rows = {k: rows[k] for k in ('base', 'all')}
  return sweeps.product(sweeps.options('recipe', rows), sweeps.folds(2 if 'smoke' in chosen else crossval.num_folds(config)))
