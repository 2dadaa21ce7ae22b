r"""The paper's recipe against emojax's corrections, one at a time, so each departure has a number.

  recipe=paper              the authors' length-one RNN (model.time_scan=False), the paper's
                            'faithful' colormap-RGB spectrograms (data.frontend=faithful)
  recipe=paper+time_scan    the RNN scans the feature map's time axis (emojax's fix)
  recipe=paper+logmel       one channel of log-mel dB instead of the RGB rendering
  recipe=emojax             both (emojax's defaults)
cnn_rnn, 3 seeds each, at the base config's image size (the faithful front end renders at it).
Preset `folds` (real speech only): every class, and one point per speaker fold (as configs/sweeps/crossval.py,
speaker-blind, seed 0) instead of 3 seeds on one split.

  python -m experiments.sweep --config=configs/sweeps/faithful.py            # embedded corpus
  python -m experiments.sweep --config=configs/sweeps/faithful.py:emodb --config.corpus.root=/path/to/emodb
  python -m experiments.sweep --config=configs/sweeps/faithful.py:emodb --config.corpus.root=... --config.data.class_set=all
  python -m experiments.sweep --config=configs/sweeps/faithful.py:emodb,folds --config.corpus.root=/path/to/emodb
  python -m experiments.sweep --config=configs/sweeps/faithful.py:pretrain   # the contrastive loss
  python -m experiments.sweep --config=configs/sweeps/faithful.py:smoke      # 2 tiny points

:pretrain compares fusion's contrastive pre-training (held-out audio->video recall@1/@5):
recipe=margin (the paper's loss and its mined negatives), margin with every batch negative
(contrastive.negatives=all) and InfoNCE (emojax's default), 10 epochs each. The fix of the
authors' clamp (max=0 where the formula needs min=0) has no switch: emojax only implements the
formula, so the authors' clamped loss cannot be a point.

Sizes (points x epochs; wall on 2 CPU cores, estimated where not said):
  (default)  4 recipes x 3 seeds = 12 points x 10 epochs: 7 min 17 s with --jobs=1 plus 1 array build (measured)
  emodb, ravdess  12 points x 40 epochs (configs/emodb.py), about 50 min on Emo-DB
  emodb,folds     4 recipes x 8 folds = 32 points x 40 epochs: 40 min 28 s with --jobs=2 (measured)
  pretrain   3 recipes x 3 seeds = 9 points x 10 epochs, about 40 min
  smoke      paper and emojax, seed 0: 2 points x 1 epoch, about 45 s (pretrain,smoke: 65 s; measured)
"""
from emojax import sweeps
from experiments.configs import common, pretrain
from experiments.configs import sweeps as sweep_files
from experiments.configs.sweeps import crossval

PRESETS = ('smoke', 'emodb', 'ravdess', 'pretrain', 'folds')
RECIPES = {
    'paper': {'model.time_scan': False, 'data.frontend': 'faithful'},
    'paper+time_scan': {'model.time_scan': True, 'data.frontend': 'faithful'},
    'paper+logmel': {'model.time_scan': False, 'data.frontend': 'logmel'},
    'emojax': {'model.time_scan': True, 'data.frontend': 'logmel'},
}
PRETRAIN_RECIPES = {
    'margin': {'contrastive.loss': 'margin', 'contrastive.negatives': 'mined'},
    'margin+all_negatives': {'contrastive.loss': 'margin', 'contrastive.negatives': 'all'},
    'infonce': {'contrastive.loss': 'infonce', 'contrastive.negatives': 'mined'},
}


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  if chosen & {'emodb', 'ravdess'} and 'pretrain' in chosen:
    raise ValueError(f'Choose one of emodb, ravdess, pretrain; got {sorted(chosen)}.')
  smoke = 'smoke' if 'smoke' in chosen else None

  def synthetic():
    if 'pretrain' not in chosen:
      return common.base_config('cnn_rnn', smoke)
    c = pretrain.get_config(smoke)
    c.train.num_epochs = 10
    return c

  if 'folds' in chosen and not chosen & {'emodb', 'ravdess'}:
    raise ValueError('The folds preset is for real speech: faithful.py:emodb,folds or :ravdess,folds.')
  c = sweep_files.base_config('faithful', chosen, synthetic)
  if 'pretrain' not in chosen:
    c.model.name = 'cnn_rnn'
  if 'folds' in chosen:
    c.data.class_set = 'all'
    c.data.split = 'folds'
    c.data.num_folds = 5 if 'ravdess' in chosen else 0
  return c


def get_sweep(arg, config):
  chosen = common.presets(arg, PRESETS)
  recipes = PRETRAIN_RECIPES if 'pretrain' in chosen else RECIPES
  if 'folds' in chosen:
    return sweeps.product(sweeps.options('recipe', recipes), sweeps.folds(crossval.num_folds(config)))
  if 'smoke' in chosen:
    first, last = list(recipes)[0], list(recipes)[-1]
    return sweeps.options('recipe', {first: recipes[first], last: recipes[last]})
  return sweeps.product(sweeps.options('recipe', recipes), sweeps.seeds(3))
