r"""Audio-visual fusion on RAVDESS speech: the voice (log-mel spectrograms with eGeMAPS functionals, the hybrid
audio stream of configs/emodb.py) and the face as per-clip facial action units (OpenFace), all 8 emotions.

  python -m experiments.run --config=configs/ravdess_av.py --config.corpus.root=R --config.corpus.visual_features=F
  python -m experiments.run --config=configs/ravdess_av.py:audio ...    # the same audio stream alone
  python -m experiments.run --config=configs/ravdess_av.py:visual ...   # the same face stream alone (visual_mlp)
  python -m experiments.run --config=configs/ravdess_av.py --config.data.normalize=speaker ...  # speaker-normalised

R is the RAVDESS folder (Actor_NN/03-01-....wav or .flac), F a table of per-clip visual features keyed by the
audio-visual clip name 01-01-EE-II-SS-RR-NN (a .csv with a `clip` column) or a folder of OpenFace CSVs named so
(emojax.visual_features). Fusion is the paper's early fusion: the audio and face embeddings joined, then the
classifier (model.visual='features'). Held out: actors 01-04 (configs/emodb.py:ravdess); --config.data.split=folds
--config.data.fold=k for actor folds. Mode: speaker-blind (the visual features standardised on the training side)
or --config.data.normalize=speaker (each actor's spectrograms, functionals and visual features on that actor's clips).
Presets (comma-separated): audio | visual (one stream); byols (the audio stream also reads the frozen BYOL-S
embedding, data.functionals=byols_egemaps: name its weights with --config.model.pretrained=W; better than the
default on the validation actors of configs/sweeps/av_crossval.py, docs/results.md); pretrain (contrastive pre-training of the fusion's two
encoders: InfoNCE, `margin` for the paper's loss) then pretrained (the fusion fine-tuned from its last checkpoint,
with the same other presets); smoke (two epochs, batch 8).
"""
from experiments.configs import common, emodb

PRESETS = ('audio', 'visual', 'byols', 'pretrain', 'margin', 'pretrained', 'smoke')


def get_config(arg=None):
  chosen = common.presets(arg, PRESETS)
  if len(chosen & {'audio', 'visual', 'pretrain', 'pretrained'}) > 1:
    raise ValueError('Choose one of audio, visual, pretrain, pretrained (or none: the fusion).')
  if 'margin' in chosen and 'pretrain' not in chosen:
    raise ValueError('margin is a loss of the pretrain preset.')
  c = emodb.get_config(','.join(['ravdess', *sorted(chosen & {'smoke'})]))
  c.workdir = common.workdir('ravdess_av', chosen)
  c.data.class_set = 'all'
  if 'audio' not in chosen:
    c.corpus.visual_features = ''  # required: the visual features of the clips
    c.model.name = 'visual_mlp' if 'visual' in chosen else 'fusion'
  if c.model.name == 'fusion':
    c.model.visual = 'features'
  if 'byols' in chosen:
    c.data.functionals = 'byols_egemaps'
  if 'pretrain' in chosen:  # as configs/pretrain.py: the encoders from scratch, a higher rate
    c.objective = 'contrastive'
    c.contrastive.loss = 'margin' if 'margin' in chosen else 'infonce'
    c.optim.learning_rate = 1e-3
    c.optim.label_smoothing = 0.0
  if 'pretrained' in chosen:
    c.init_from = common.workdir('ravdess_av', (chosen - {'pretrained'}) | {'pretrain'}) + '/checkpoints/latest'
    c.init_keys = ('audio_encoder', 'video_encoder')
  if 'visual' in chosen:  # the face alone reads no spectrogram augmentation or functionals
    c.data.functionals = ''
    c.data.augment.freq_masks = c.data.augment.time_masks = 0
  return c
