r"""Audio models on real speech (Emo-DB or RAVDESS), speaker-independent (whole speakers held out).

  python -m experiments.run --config=configs/emodb.py --config.corpus.root=/path/to/emodb      # cnn_rnn hybrid, 4-class
  python -m experiments.run --config=configs/emodb.py:cnn --config.corpus.root=/path/to/emodb  # the CNN instead
  python -m experiments.run --config=configs/emodb.py:ravdess --config.corpus.root=/path/to/ravdess
  python -m experiments.run --config=configs/emodb.py:spectrogram --config.corpus.root=/path/to/emodb  # no eGeMAPS input

Presets (comma-separated): cnn | cnn_rnn (default) | cnn_lstm; ravdess; spectrogram; smoke (two epochs, batch 8).
The default network is the hybrid: 128x96 log-mel spectrograms (64 mel bands resized to 128 rows), and
each utterance's 88 eGeMAPS functionals (openSMILE) beside them, joined before the embedding layer;
`spectrogram` is the spectrogram-only recipe (64x96, no functionals), the base of the real-speech sweeps. Chosen on validation speakers
(configs/sweeps/changes.py, then crossval.py's `hybrid` preset; docs/results.md).
Mode: speaker-blind (spectrograms on the build's fixed dB scale, functionals standardised on the training
side); --config.data.normalize=speaker standardises each speaker's spectrograms and functionals on that
speaker's clips (speaker-normalised: the test speakers' unlabelled clips are used, so a prediction needs
several clips of its speaker).
Cross-validation over every speaker, beside the baselines: configs/sweeps/crossval.py.
The corpus folder is downloaded by hand (docs/corpora.md) and named with --config.corpus.root.
The Emo-DB copy these settings were made for is cut to 2.0 s per file, so the full-utterance variant (ds1) gives one
image per file; RAVDESS clips last 3-5 s and use ds1 too. Held out: one male and one
female speaker on Emo-DB (03, 08), two of each on RAVDESS (actors 01, 02, 03, 04);
change with --config.data.test_speakers or use --config.data.split=folds
--config.data.fold=k for leave-one-speaker-out folds (configs/sweeps/crossval.py runs them all).
"""
from experiments.configs import common

_MODELS = ('cnn', 'cnn_rnn', 'cnn_lstm')


def get_config(arg=None):
  chosen = common.presets(arg, _MODELS + ('ravdess', 'spectrogram', 'smoke'))
  models = chosen & set(_MODELS)
  if len(models) > 1:
    raise ValueError(f'Choose one model, got {sorted(models)}.')
  model = models.pop() if models else 'cnn_rnn'
  c = common.base_config(model, None)
  corpus = 'ravdess' if 'ravdess' in chosen else 'emodb'
  c.workdir = common.workdir(f'{corpus}_{model}', chosen & {'spectrogram', 'smoke'})
  c.corpus.name = corpus
  c.corpus.root = ''              # required: the corpus folder
  c.data.variant = 'ds1'
  c.data.frontend = 'logmel'
  c.data.audio_size = (64, 96) if 'spectrogram' in chosen else (128, 96)
  c.data.functionals = '' if 'spectrogram' in chosen else 'egemaps'
  c.data.class_set = '4class'
  c.data.split = 'speaker'
  c.data.test_speakers = ('Actor_01', 'Actor_02', 'Actor_03', 'Actor_04') if corpus == 'ravdess' else ('03', '08')
  c.model.width = 1.0
  # The real-speech recipe (configs/sweeps/recipe.py measures each ingredient, docs/results.md):
  # SpecAugment, label smoothing, warmup + cosine decay; speaker-blind (the build's fixed dB scale;
  # data.normalize='speaker' for the speaker-normalised mode).
  c.data.normalize = 'none'
  c.data.augment.freq_masks = 2
  c.data.augment.time_masks = 2
  c.data.augment.mask_width = 8
  c.optim.label_smoothing = 0.1
  c.optim.schedule = 'cosine'
  c.optim.warmup_epochs = 2.0
  c.optim.learning_rate = 3e-4    # a few hundred steps, not the paper's tens of thousands
  c.train.batch_size = 8 if 'smoke' in chosen else 32
  c.train.num_epochs = 2 if 'smoke' in chosen else 40
  c.train.checkpoint_every_steps = 100
  return c
