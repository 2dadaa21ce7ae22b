r"""Audio-visual cross-validation on RAVDESS speech with its facial action units: the fusion networks, the face
network and the baselines (audio, face, early fusion, frozen BYOL-S) on the same 5 actor-disjoint folds, both modes.

  python -m experiments.sweep --config=configs/sweeps/av_crossval.py --config.corpus.root=R \
      --config.corpus.visual_features=F --config.model.pretrained=W --jobs=2
  python -m experiments.sweep --config=configs/sweeps/av_crossval.py:smoke ...   # 2 folds, 1 epoch, 2 baselines

R the RAVDESS folder, F the per-clip action units (au.csv layout, configs/ravdess_av.py), W the BYOL-S weights
(.npz, emojax.models.byol_a). Folds as configs/sweeps/crossval.py:ravdess (actors dealt round-robin into 5); in
every fold one training actor, chosen by the seed, is the validation speaker: it alone picks checkpoints and C.
Rows (model x mode, 8 classes):
  fusion+byols  configs/ravdess_av.py with the frozen BYOL-S embedding beside the eGeMAPS functionals in the
                audio stream (data.functionals=byols_egemaps)
  fusion        configs/ravdess_av.py as it is (eGeMAPS functionals only)
  visual        the face network alone (visual_mlp on the action units)
  baselines     <features>_<classifier> of emojax.baselines: eGeMAPS, AUs, eGeMAPS+AUs, BYOL-S+AUs,
                BYOL-S+eGeMAPS+AUs, logistic regression and RBF SVM
  late fusion   the report's mean of two rows' test probabilities (equal weights): egemaps_svm + au_svm, the two
                logregs, and fusion+byols + byols_egemaps_au_logreg
Networks: SEEDS seeds per fold (the report gives their mean and the seed ensemble).
"""
from emojax import sweeps
from experiments.configs import common, ravdess_av
from experiments.configs.sweeps import crossval

PRESETS = ('smoke', 'seeds3')
SPEECHLESS = {'data.functionals': '', 'data.augment.freq_masks': 0, 'data.augment.time_masks': 0}
NETWORKS = {
    'fusion+byols': {'data.functionals': 'byols_egemaps'},
    'visual': {'model.name': 'visual_mlp', 'model.visual': 'frames', **SPEECHLESS},
    'fusion': {},
}
BASELINES = ('egemaps_logreg', 'egemaps_svm', 'au_logreg', 'au_svm', 'egemaps_au_logreg', 'egemaps_au_svm',
             'byols_au_logreg', 'byols_egemaps_au_logreg', 'byols_egemaps_au_svm')
FUSIONS = [('model', ('egemaps_svm', 'au_svm')), ('model', ('egemaps_logreg', 'au_logreg')),
           ('model', ('fusion+byols', 'byols_egemaps_au_logreg'))]


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  c = ravdess_av.get_config('smoke' if 'smoke' in chosen else None)
  c.workdir = common.workdir('sweeps/av_crossval', chosen)
  c.data.split = 'folds'
  c.data.num_folds = 5
  if 'smoke' in chosen:
    c.train.num_epochs = 1
  return c


def get_sweep(arg, config):
  chosen = common.presets(arg, PRESETS)
  folds = sweeps.folds(2 if 'smoke' in chosen else crossval.num_folds(config))
  mode = sweeps.options('mode', crossval.MODES)
  networks = {'fusion+byols': NETWORKS['fusion+byols']} if 'smoke' in chosen else NETWORKS
  points = []
  for seed in range(3 if 'seeds3' in chosen else 1):  # whole passes first: an interrupted sweep has every fold
    for name, overrides in networks.items():
      points += sweeps.product(sweeps.options('model', {name: overrides}), mode, folds, sweeps.seeds([seed]))
  baselines = ('egemaps_svm', 'au_svm') if 'smoke' in chosen else BASELINES
  points += sweeps.product(sweeps.options('model', {n: {'model.name': n} for n in baselines}), mode, folds)
  return points
