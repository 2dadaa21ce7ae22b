r"""Cross-validation over every speaker of a real corpus: the networks and the baselines on the same
folds, in both modes, mean +/- std over folds.

  python -m experiments.sweep --config=configs/sweeps/crossval.py:emodb --config.corpus.root=/path/to/emodb
  python -m experiments.sweep --config=configs/sweeps/crossval.py:ravdess --config.corpus.root=/path/to/ravdess
  python -m experiments.sweep --config=configs/sweeps/crossval.py:emodb,smoke --config.corpus.root=...  # 2 folds, 1 epoch, one baseline

Folds: Emo-DB leave-one-speaker-out; RAVDESS 5 actor-disjoint folds (actors dealt round-robin, so
each fold mixes odd/male and even/female actors; --config.data.num_folds=k for k). A fold is one
sweep point (`data.fold`), resumable in its own workdir. In every fold one speaker of the training
side, chosen by the seed, is the validation speaker: it picks the network's best checkpoint (and
stops training early) and the baselines' C; the held-out fold chooses nothing.

Rows: model x mode, all classes of the corpus (7 on Emo-DB, 8 on RAVDESS).
  model  recipe (emojax's real-speech recipe, configs/emodb.py; 3 seeds per fold, and their
         ensemble), four baselines (emojax.baselines),
         paper (the paper's front end and network: faithful RGB spectrograms, length-one RNN,
         speaker-blind only, run last: the slowest by far)
  mode   speaker-blind (spectrograms on the build's fixed dB scale) or speaker-normalised (standardised
         per speaker over the speaker's unlabelled clips, test speakers included: transductive)
         recipe+pretrain-<other> (preset `pretrained`): the recipe fine-tuned from a run on the other corpus
         (RAVDESS for Emo-DB and back, named by --config.pretrain_root; in each mode), which is a point
         of the sweep too, run first: its row is that run on its own held-out speaker of the other corpus
         hybrid (preset `hybrid`): the recipe with 128-row spectrograms, also reading each utterance's eGeMAPS
         functionals beside its spectrogram (data.functionals=egemaps), standardised as the mode says: the two
         changes of configs/sweeps/changes.py that raised validation accuracy; 3 seeds per fold, as the recipe
  recipe + egemaps_svm (and the like): late fusion, computed by the report from the points above: per
         fold, the network's seed-averaged test probabilities and the baseline's, averaged with equal weights
Presets: emodb | ravdess (one required); smoke; blind or normalised (that mode only); nopaper; pretrained; hybrid.
"""
from emojax import corpora, sweeps
from emojax import splits
from emojax.corpora.base import Utterance
from experiments.configs import common
from experiments.configs import sweeps as sweep_files

PRESETS = ('emodb', 'ravdess', 'smoke', 'blind', 'normalised', 'nopaper', 'pretrained', 'hybrid')
MODES = {'speaker-blind': {'data.normalize': 'none'}, 'speaker-normalised': {'data.normalize': 'speaker'}}
BASELINES = ('egemaps_logreg', 'egemaps_svm', 'mfcc_logreg', 'mfcc_svm')
SEEDS = 3  # of the network per fold: the report gives their mean and their ensemble (probabilities averaged)
# The recipe's ingredients (configs/emodb.py sets the chosen ones), all off.
INGREDIENTS_OFF = {'data.augment.freq_masks': 0, 'data.augment.time_masks': 0, 'data.augment.mask_width': 8,
                   'train.mixup_alpha': 0.0, 'optim.label_smoothing': 0.0, 'optim.schedule': 'constant',
                   'optim.warmup_epochs': 0.0, 'model.pooling': 'last'}
# The paper's recipe: no ingredient, its front end and length-one RNN (configs/emodb.py's epochs and lr kept).
# Cross-corpus pre-training (preset `pretrained`): the recipe trained on the OTHER corpus (every class, its
# own speaker split), in clips at this corpus's time scale; the folds' runs start from its encoder (the
# classifier head starts afresh). Nothing of this corpus's speakers is seen before fine-tuning.
OTHER = {'emodb': 'ravdess', 'ravdess': 'emodb'}
PRETRAIN = {'emodb': {'corpus.name': 'ravdess', 'data.variant': 'ds2', 'data.clip_seconds': 2.0, 'train.num_epochs': 30},
            'ravdess': {'corpus.name': 'emodb', 'data.variant': 'ds1', 'train.num_epochs': 30}}
POINT_WINS = ('corpus.root',)  # the pre-training points read the other corpus
# Late fusion of the network with the eGeMAPS baselines (the report averages their test probabilities).
FUSIONS = [('model', (network, baseline)) for network in ('recipe', 'recipe+pretrain-emodb', 'recipe+pretrain-ravdess')
           for baseline in ('egemaps_logreg', 'egemaps_svm')]
ENCODER = ('convs', 'layers_0', 'layers_1', 'fc')  # cnn_rnn's parameters but the head
HYBRID = {'data.audio_size': (128, 96), 'data.functionals': 'egemaps'}
PAPER = {**INGREDIENTS_OFF, 'data.frontend': 'faithful', 'data.audio_size': (200, 300), 'data.normalize': 'none',
         'model.time_scan': False}


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  if not chosen & {'emodb', 'ravdess'}:
    raise ValueError('Name the corpus: configs/sweeps/crossval.py:emodb or :ravdess.')
  c = sweep_files.base_config('crossval', chosen & {'emodb', 'ravdess', 'smoke'}, None)
  c.workdir = common.workdir('sweeps/crossval', chosen)
  c.data.class_set = 'all'
  c.data.split = 'folds'
  c.data.num_folds = 5 if 'ravdess' in chosen else 0
  c.pretrain_root = ''  # preset `pretrained`: the other corpus's folder (RAVDESS for emodb, Emo-DB for ravdess)
  return c


def num_folds(config) -> int:
  """The folds of config's corpus (its speakers are listed: cheap, file names only)."""
  corpus = corpora.get_corpus(config.corpus)
  speakers = [u.speaker for u in corpus.utterances() if isinstance(u, Utterance)]
  return len(splits.speaker_folds(speakers, config.data.num_folds))


def get_sweep(arg, config):
  chosen = common.presets(arg, PRESETS)
  if {'blind', 'normalised'} <= chosen:
    raise ValueError('Choose one of blind, normalised (or neither for both modes).')
  modes = {name: o for name, o in MODES.items()
           if not chosen & {'blind', 'normalised'} or name.split('-')[1].startswith(
               'blind' if 'blind' in chosen else 'normalised')}
  folds = sweeps.folds(2 if 'smoke' in chosen else num_folds(config))
  mode = sweeps.options('mode', modes)
  # Each network row: its fields in each mode (the pre-trained one starts from that mode's pre-training run).
  networks = {'recipe': {m: {} for m in modes}}
  points = []
  if 'pretrained' in chosen:
    corpus = 'emodb' if 'emodb' in chosen else 'ravdess'
    if not config.pretrain_root:
      raise ValueError(f'The pretrained preset trains on {OTHER[corpus]} first: name its folder with '
                       '--config.pretrain_root=/path/to/' + OTHER[corpus])
    name = f'pretrain-{OTHER[corpus]}'
    overrides = {**PRETRAIN[corpus], 'corpus.root': config.pretrain_root}
    if 'smoke' in chosen:
      del overrides['train.num_epochs']
    pretrain = sweeps.product(sweeps.options('model', {name: overrides}), mode)
    points += pretrain  # first: the fine-tuning points wait for them
    networks[f'recipe+{name}'] = {p.axes[1].label: {'init_from': f'{sweeps.SWEEP_DIR}/{p.name}/checkpoints/latest',
                                                    'init_keys': ENCODER} for p in pretrain}
  if 'hybrid' in chosen:
    networks['hybrid'] = {m: HYBRID for m in modes}
  # The networks: every fold of seed 0 first, then of seed 1, ... (an interrupted sweep has whole passes).
  for seed in range(1 if 'smoke' in chosen else SEEDS):
    for network, by_mode in networks.items():
      for mode_point in mode:
        points += sweeps.product(sweeps.options('model', {network: by_mode[mode_point.axes[0].label]}), mode_point,
                                 folds, sweeps.seeds([seed]))
  baselines = ('mfcc_logreg',) if 'smoke' in chosen else BASELINES  # deterministic: one seed
  points += sweeps.product(sweeps.options('model', {n: {'model.name': n} for n in baselines}), mode, folds)
  if 'nopaper' not in chosen and 'speaker-blind' in modes:
    points += sweeps.product(sweeps.options('model', paper=PAPER), sweeps.options('mode', {'speaker-blind': {}}),
                             folds)
  return points
