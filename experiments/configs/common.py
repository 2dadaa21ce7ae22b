"""The full set of fields every run config has; model configs change a few.

Presets (the `:arg` after the config path; several join with commas, e.g. `:smoke,pretrained`):
  (none)  the embedded synthetic corpus, sized so the run takes about five minutes on 2 CPU cores
  smoke   a tiny corpus and tiny shapes for tests (seconds)
  paper   the paper's front end and sizes (faithful 200x300 RGB spectrograms, 60x100 video,
          batch 64); point it at a real corpus with --config.corpus.name/root
"""
import ml_collections


PRESETS = ('smoke', 'paper')


def presets(arg: str | None, known: tuple[str, ...] = PRESETS) -> set[str]:
  """The comma-separated presets in `arg`; an unknown one is an error."""
  chosen = {a.strip() for a in (arg or '').split(',') if a.strip()}
  if chosen - set(known):
    raise ValueError(f'Unknown config preset(s) {sorted(chosen - set(known))}; expected among {list(known)}.')
  return chosen


def workdir(name: str, chosen: set[str]) -> str:
  """The workdir of a run: `name` (the model, or a stage such as 'pretrain') and its presets, sorted."""
  return 'workdirs/' + '_'.join([name, *sorted(chosen)])


def base_config(model: str, arg: str | None, extra_presets: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
  chosen = presets(arg, PRESETS + extra_presets)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = workdir(model, chosen)
  c.init_from = ''                # checkpoint (step dir, manager dir or workdir) to start from
  c.init_keys = ()                # parameter subtrees taken from init_from (empty: all)
  c.freeze_steps = 0              # keep the init_keys subtrees frozen for this many steps
  c.eval_only = False             # restore init_from (or the workdir's best) and evaluate only
  c.allow_changes = ()            # fields a resumed run may change (else a changed field stops it; emojax.workdirs)
  c.objective = 'cross_entropy'   # cross_entropy | contrastive (encoder pre-training)

  c.contrastive = ml_collections.ConfigDict()
  # Hinge margin. With normalize=True random unit embeddings lie about sqrt(2) apart, so a margin
  # of 1.0 leaves negatives untouched until training pulls the embeddings together (their
  # losses are 0 for the first steps); above sqrt(2) they push from step 1.
  c.contrastive.margin = 1.0
  c.contrastive.normalize = True
  c.contrastive.center = True     # subtract each modality's batch mean before normalising
  c.contrastive.hard_fraction = 0.75  # weight of negatives of another emotion; the rest share the emotion
  c.contrastive.super_hard_same_speaker = False  # super-hard negatives share the speaker too
  c.contrastive.negatives = 'mined'  # mined: one partner drawn per clip (the authors'); all: every other
                                     # clip of the batch, weighted: the same loss in expectation, less noise
  c.contrastive.loss = 'margin'   # margin (the paper's) | infonce (softmax over the batch, not in the paper)
  c.contrastive.temperature = 0.1  # infonce: logits are -d^2 / temperature

  c.corpus = ml_collections.ConfigDict()
  c.corpus.name = 'synthetic'     # synthetic | iemocap | emodb | ravdess | cremad
  c.corpus.root = ''              # folder of a real corpus
  c.corpus.iemocap_audio_source = 'sentences'  # sentences/wav files, or 'dialog': cut by the label times
  c.corpus.ravdess_keep_song = False
  # Per-clip visual features (facial action units): a table keyed by clip (.csv) or a folder of OpenFace CSVs
  # (emojax.visual_features); read by visual_mlp and by fusion with model.visual='features'.
  c.corpus.visual_features = ''
  c.corpus.synthetic = ml_collections.ConfigDict(dict(
      num_speakers=8, utterances_per_emotion=36, seconds=3.0, frame_size=(72, 96), seed=0))

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = 'data'        # where precomputed arrays are cached
  c.data.variant = 'ds2'          # ds1 full/raw, ds2 3-s clips/raw, ds3 full/denoised, ds4 clips/denoised
  c.data.frontend = 'logmel'      # logmel (1 channel) | faithful (paper: colormap RGB)
  # The defaults are sized for the embedded corpus on 2 CPU cores (about five minutes);
  # the 'paper' preset sets the paper's sizes.
  c.data.audio_size = (48, 64)    # (frequency rows, time columns)
  c.data.mel_bands = 64            # logmel front end: mel bands, then resized (bilinear) to audio_size's rows
  c.data.clip_seconds = 3.0
  c.data.class_set = '4class'     # 4class (hap sad ang neu) | 3class (sad ang neu) | all
  c.data.merge_exc = False        # IEMOCAP: count 'exc' as 'hap'
  c.data.video_frames = 12        # per clip (the paper: 20 per 3 s)
  c.data.video_size = (48, 64)    # (the paper: 60x100)
  c.data.video_crop = 'fixed'     # fixed (paper) | face (detector, fixed-crop fallback)
  c.data.split = 'speaker'        # speaker | group | folds (speaker cross-validation) | random (the paper's, optimistic)
  c.data.test_speakers = ()       # explicit held-out speakers; else num_test_speakers chosen by seed
  c.data.num_test_speakers = 2
  c.data.num_val_speakers = 1     # validation speakers taken from the training side (picks the best checkpoint)
  c.data.fold = 0                 # for split=group or folds: index of the held-out group or fold
  c.data.num_folds = 0            # for split=folds: speaker folds (0: one per speaker, leave-one-speaker-out)
  c.data.test_fraction = 0.2      # for split=random
  c.data.normalize = 'none'       # spectrogram standardisation: none | utterance (speaker-blind) | speaker
                                  # (speaker-normalised: uses each speaker's unlabelled clips, test speakers'
                                  # too); see emojax.loader.NORMALIZE
  c.data.crop_frames = 0          # audio: train on random windows of this many time columns (0: whole image)
  c.data.test_crops = 3           # with crop_frames: evaluation averages this many evenly spaced windows
  c.data.functionals = ''         # audio models, ds1/ds3: also read each utterance's functionals, egemaps | mfcc
                                  # (a hybrid network: emojax.loader.FUNCTIONALS); '' for spectrograms only
  c.data.balance_per_class = 0    # the paper's 1600: duplicate/undersample training classes to N (0: off)
  c.data.num_workers = 0          # Grain worker processes
  c.data.augment_copies = 0       # build-time copies with a faint tone sweep mixed in (training side only)
  c.data.augment_level_db = -20.0  # the sweep's RMS relative to the clip's
  c.data.augment = ml_collections.ConfigDict(dict(  # training only; see emojax.loader.Augment
      top_crop_px=0, rotate_degrees=0.0, freq_masks=0, time_masks=0, mask_width=8,
      freq_warp=0.0))  # logmel: every frequency scaled by a random factor in 1 +- freq_warp (VTLP)

  c.model = ml_collections.ConfigDict()
  c.model.name = model
  # multiplier on every layer width (the paper: 1; x2, x4 gave +1-2%); visual_mlp has no conv layers to widen
  convolutional = model != 'visual_mlp'
  c.model.width = 0.5 if convolutional else 1.0
  c.model.batchnorm = False
  c.model.dropout = 0.2           # fully connected layers
  c.model.rnn_dropout = 0.1       # between recurrent layers
  c.model.rnn_hidden = 128
  c.model.rnn_layers = 2
  c.model.embed_dim = 64
  c.model.pooling = 'last'        # cnn_rnn/cnn_lstm over time: last (the paper) | mean | stats | attention
  c.model.time_scan = True        # False: the authors' length-one "sequence" (faithful defect)
  c.model.rnn_unroll = 1          # time steps per lax.scan iteration (speed only)
  c.model.audio_model = 'cnn_rnn'  # fusion's audio branch: cnn | cnn_rnn | cnn_lstm
  c.model.visual = 'frames'       # fusion's face stream: frames (3D CNN) | features (MLP on corpus.visual_features)
  c.model.visual_hidden = 128     # visual_mlp, fusion with visual='features': the MLP's hidden width
  c.model.pretrained = ''         # weights of the frozen BYOL-S encoder (.npz) for the byols baselines
  c.model.dtype = 'float32'       # computation dtype: float32 | bfloat16 (parameters stay float32)
  c.model.conv_impl = 'fast'      # speed only: fast (emojax.kernels' plan for this machine) | native | fft | fold2d | patches | xla
  c.model.pool_impl = 'fast'      # speed only: fast (native on one CPU device, else slices) | native | slices | xla

  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-4
  c.optim.weight_decay = 0.01
  c.optim.l1 = 0.0
  c.optim.max_grad_norm = 0.0     # 0: no clipping
  c.optim.label_smoothing = 0.0
  c.optim.schedule = 'constant'   # constant | cosine (linear warmup over warmup_epochs, cosine decay to 0)
  c.optim.warmup_epochs = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 64
  c.train.num_epochs = 10
  c.train.checkpoint_every_steps = 25
  c.train.keep_checkpoints = 2     # latest checkpoints kept: a damaged newest one falls back to the one before
  c.train.log_every_steps = 10    # metrics stay on the device between host transfers (and at checkpoints)
  c.train.mixup_alpha = 0.0       # > 0: mixup of inputs and targets, weight ~ Beta(alpha, alpha)
  c.train.max_bad_steps = 20       # consecutive non-finite steps (each skipped) before the run stops as diverged
  c.train.early_stopping_patience = 0  # stop when validation has not improved for this many epochs (0: off)

  if 'smoke' in chosen:
    c.corpus.synthetic.update(num_speakers=4, utterances_per_emotion=4, seconds=1.5, frame_size=(48, 64))
    c.data.audio_size = (32, 48)
    c.data.video_frames = 9
    c.data.video_size = (48, 64)
    c.data.num_test_speakers = 1
    if convolutional:
      c.model.width = 0.25
    if model in ('cnn_rnn', 'cnn_lstm', 'fusion'):  # the models with a recurrent layer
      c.model.rnn_hidden = 16
    c.train.batch_size = 8
    c.train.num_epochs = 2
    c.train.checkpoint_every_steps = 2
  if 'paper' in chosen:  # the paper's sizes throughout
    c.data.frontend = 'faithful'
    c.data.audio_size = (200, 300)
    c.data.video_frames = 20
    c.data.video_size = (60, 100)
    c.model.width = 1.0
    c.train.num_epochs = 30
  return c
