"""The run config's schema: the rule of every field, checked once before any work (`validate`); the one rule
for which fields do not change a run's result (`result_changes`, shared by resume and sweeps); and `upgrade`,
which brings a config saved by an older version to the current fields.

The fields themselves, with their defaults and meaning, are experiments/configs/common.py.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import ml_collections

from emojax import baselines, corpora, features, kernels, loader, models, objectives, train
from emojax.corpora import labels
from emojax.models import recurrent

# Fields that never change what a run computes: the cadence of logs and checkpoints, loader workers and where
# the array cache lives, speed-only kernel choices, and how a run is asked for. A resumed run may change them,
# and a sweep does not compare them with the run already in a point's workdir.
RESULT_NEUTRAL = ('train.checkpoint_every_steps', 'train.keep_checkpoints', 'train.log_every_steps',
                  'data.num_workers', 'data.data_dir', 'model.conv_impl', 'model.pool_impl', 'model.rnn_unroll',
                  'workdir', 'eval_only', 'allow_changes', 'pretrain_root')
# Growing train.num_epochs extends a run (a resume trains the new epochs); shrinking it changes the result.
EXTENDABLE = ('train.num_epochs',)
SPLITS = ('speaker', 'group', 'folds', 'random')
OBJECTIVES = ('cross_entropy', 'contrastive')
CLASS_SETS = (*labels.CLASS_SETS, 'all')


class InvalidConfig(ValueError):
  """A run config that cannot work: every problem found, each naming its field."""


# ---------------------------------------------------------------------------------------------
# Rules of single fields: (check, what the value must be).

# A rule gives, for a value, what is wrong with it ('must be ...') or None.
Rule = Callable[[Any], 'str | None']


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _finite_number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def one_of(*options) -> Rule:
  return lambda v: None if isinstance(v, (str, bool, int)) and v in options else f'one of {list(options)}'


def integer(low: int = 0) -> Rule:
  return lambda v: f'an integer, not {type(v).__name__}' if not _is_int(v) else None if v >= low else f'>= {low}'


def number(low: float, high: float = math.inf, *, above: bool = False, below: bool = False) -> Rule:
  """A finite number in [low, high] (`above`: > low, `below`: < high)."""
  text = (('> ' if above else '>= ') + f'{low:g}' if high == math.inf else
          f"in {'(' if above else '['}{low:g}, {high:g}{')' if below else ']'}")

  def rule(v):
    if not _finite_number(v):
      return f'a finite number {text}'
    return None if (v > low if above else v >= low) and (v < high if below else v <= high) else text
  return rule


def boolean() -> Rule:
  return lambda v: None if isinstance(v, bool) else 'True or False'


def size() -> Rule:
  return lambda v: None if isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(n) and n > 0 for n in v) \
      else '(height, width), two positive integers'


def names() -> Rule:
  return lambda v: None if isinstance(v, (tuple, list)) and all(isinstance(n, str) for n in v) \
      else 'a tuple of names'


def text() -> Rule:
  return lambda v: None if isinstance(v, str) else 'a string'


FIELDS: dict[str, Rule] = {
    'seed': integer(0),
    'workdir': text(),
    'init_from': text(),
    'init_keys': names(),
    'freeze_steps': integer(0),
    'eval_only': boolean(),
    'allow_changes': names(),
    'objective': one_of(*OBJECTIVES),
    'contrastive.margin': number(0, above=True),
    'contrastive.normalize': boolean(),
    'contrastive.center': boolean(),
    'contrastive.hard_fraction': number(0, 1),
    'contrastive.super_hard_same_speaker': boolean(),
    'contrastive.negatives': one_of('mined', 'all'),
    'contrastive.loss': one_of(*objectives.LOSSES),
    'contrastive.temperature': number(0, above=True),
    'corpus.name': one_of(*corpora.READERS),
    'corpus.root': text(),
    'corpus.iemocap_audio_source': one_of('sentences', 'dialog'),
    'corpus.ravdess_keep_song': boolean(),
    'corpus.visual_features': text(),
    'corpus.synthetic.num_speakers': integer(2),
    'corpus.synthetic.utterances_per_emotion': integer(1),
    'corpus.synthetic.seconds': number(features.MIN_SECONDS),
    'corpus.synthetic.frame_size': size(),
    'corpus.synthetic.seed': integer(0),
    'data.data_dir': text(),
    'data.variant': one_of(*features.VARIANTS),
    'data.frontend': one_of(*features.FRONTENDS),
    'data.audio_size': size(),
    'data.mel_bands': lambda v: None if _is_int(v) and 8 <= v <= 256 else \
        'an integer in 8..256 (the 512-point STFT has 257 bins)',
    'data.clip_seconds': number(0, above=True),
    'data.class_set': one_of(*CLASS_SETS),
    'data.merge_exc': boolean(),
    'data.video_frames': integer(1),
    'data.video_size': size(),
    'data.video_crop': one_of('fixed', 'face'),
    'data.split': one_of(*SPLITS),
    'data.test_speakers': names(),
    'data.num_test_speakers': integer(0),
    'data.num_val_speakers': integer(0),
    'data.fold': integer(0),
    'data.num_folds': integer(0),
    'data.test_fraction': number(0, 1, above=True, below=True),
    'data.normalize': one_of(*loader.NORMALIZE),
    'data.crop_frames': integer(0),
    'data.test_crops': integer(1),
    'data.functionals': one_of(*loader.FUNCTIONALS),
    'data.balance_per_class': integer(0),
    'data.num_workers': integer(0),
    'data.augment_copies': integer(0),
    'data.augment_level_db': number(-120, 0),
    'data.augment.top_crop_px': integer(0),
    'data.augment.rotate_degrees': number(0, 180),
    'data.augment.freq_masks': integer(0),
    'data.augment.time_masks': integer(0),
    'data.augment.mask_width': integer(0),
    'data.augment.freq_warp': number(0, 0.5, below=True),
    'model.name': one_of(*models.MODELS, *baselines.MODELS),
    'model.width': number(0, above=True),
    'model.batchnorm': boolean(),
    'model.dropout': number(0, 1, below=True),
    'model.rnn_dropout': number(0, 1, below=True),
    'model.rnn_hidden': integer(1),
    'model.rnn_layers': integer(1),
    'model.embed_dim': integer(1),
    'model.pooling': one_of(*recurrent.POOLINGS),
    'model.time_scan': boolean(),
    'model.rnn_unroll': integer(1),
    'model.audio_model': one_of(*models.AUDIO_MODELS),
    'model.visual': one_of('frames', 'features'),
    'model.visual_hidden': integer(1),
    'model.pretrained': text(),
    'model.dtype': one_of(*models.DTYPES),
    'model.conv_impl': one_of('fast', *kernels.CONV_IMPLS),
    'model.pool_impl': one_of('fast', *kernels.POOL_IMPLS),
    'optim.learning_rate': number(0, above=True),
    'optim.weight_decay': number(0),
    'optim.l1': number(0),
    'optim.max_grad_norm': number(0),
    'optim.label_smoothing': number(0, 1, below=True),
    'optim.schedule': one_of(*train.SCHEDULES),
    'optim.warmup_epochs': number(0),
    'train.batch_size': integer(1),
    'train.num_epochs': integer(1),
    'train.checkpoint_every_steps': integer(0),
    'train.keep_checkpoints': integer(1),
    'train.log_every_steps': integer(1),
    'train.mixup_alpha': number(0),
    'train.max_bad_steps': integer(1),
    'train.early_stopping_patience': integer(0),
}


# Fields only some config files have: crossval's sweep names the other corpus's folder for its pre-training points.
OPTIONAL: dict[str, Rule] = {'pretrain_root': text()}


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{'a.b.c': value} of a nested dict or ConfigDict."""
  if isinstance(tree, ml_collections.ConfigDict):
    tree = tree.to_dict()
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() for k, v in flatten(value, f'{prefix}{key}.').items()}
  return {prefix[:-1]: tree}


# ---------------------------------------------------------------------------------------------
# Rules across fields.

def _model_field_defaults() -> dict[str, Any]:
  """The default of every hyper-parameter some model reads, from the model modules themselves."""
  defaults = {}
  for name in models.MODELS:
    module = models.MODELS[name]
    module = getattr(module, 'func', module)
    for field in dataclasses.fields(module):
      if field.name in models.FIELDS[name] and field.default is not dataclasses.MISSING:
        defaults.setdefault(field.name, field.default)
  return defaults


def _across_fields(config: ml_collections.ConfigDict, check_paths: bool) -> list[str]:
  """Problems of fields that are valid alone but not together (and, with check_paths, paths that are not there)."""
  problems = []
  dc, mc = config.data, config.model
  network = mc.name in models.MODELS

  if network:  # a field the model does not read would be ignored without a word
    read = models.fields_read(mc)
    for field, default in _model_field_defaults().items():
      if field not in read and field in mc and mc[field] != default:
        problems.append(f'model.{field} is not read by model {mc.name!r} (it reads {", ".join(sorted(read))}): '
                        f'leave it at {default!r}, got {mc[field]!r}')
  # (A baseline reads only baselines.READS: the network fields of a sweep's base config are not its concern.)
  if dc.functionals and network and not models.reads_functionals(mc.name):
    problems.append(f'data.functionals must be empty for model {mc.name!r} (only '
                    f'{", ".join(models.FUNCTIONALS_MODELS)} read functionals), got {dc.functionals!r}')
  if dc.functionals and dc.variant not in baselines.WHOLE_UTTERANCE:
    problems.append(f'data.functionals must be empty for the clip variant {dc.variant!r} (functionals describe '
                    f'whole utterances: {", ".join(baselines.WHOLE_UTTERANCE)}), got {dc.functionals!r}')
  if dc.augment.freq_warp and dc.frontend != 'logmel':
    problems.append(f"data.augment.freq_warp must be 0 for the front end {dc.frontend!r} (it warps log-mel rows)")
  if network and 'audio' not in models.INPUTS[mc.name]:
    changed = [k for k, v in dc.augment.items() if v and k != 'mask_width']
    if changed or dc.crop_frames:
      problems.append(f'data.augment.{(changed or ["crop_frames"])[0]} augments spectrograms, which model '
                      f'{mc.name!r} does not read: leave it at 0')
  if dc.crop_frames > dc.audio_size[1]:
    problems.append(f'data.crop_frames must be at most the spectrogram width data.audio_size[1] = '
                    f'{dc.audio_size[1]}, got {dc.crop_frames}')
  reads_visual = network and 'visual' in models.inputs_of(mc)
  if reads_visual and not config.corpus.visual_features:
    problems.append(f'corpus.visual_features must name the visual features (a .csv table or a folder of OpenFace '
                    f'CSVs) for model {mc.name!r}' + (" with model.visual='features'" if mc.name == 'fusion' else ''))
  elif check_paths and config.corpus.visual_features and not os.path.exists(config.corpus.visual_features):
    problems.append(f'corpus.visual_features {config.corpus.visual_features!r} does not exist')
  elif config.corpus.visual_features and network and not reads_visual:
    problems.append(f'corpus.visual_features is not read by model {mc.name!r}'
                    + (" with model.visual='frames'" if mc.name == 'fusion' else '') + ': leave it empty')
  if check_paths and mc.pretrained and not os.path.isfile(mc.pretrained):
    problems.append(f'model.pretrained {mc.pretrained!r} is not a file')
  elif not mc.pretrained and 'byols' in (dc.functionals if network else mc.name).split('_'):
    problems.append(f'model.pretrained must name the BYOL-S weights (.npz) that the byols features of '
                    f'{"data.functionals" if network else "model " + repr(mc.name)} come from')
  if config.objective == 'contrastive' and mc.name != 'fusion':
    problems.append(f"objective 'contrastive' pre-trains fusion's two encoders: model.name must be 'fusion', "
                    f'got {mc.name!r}')
  if (config.init_keys or config.freeze_steps) and not config.init_from:
    problems.append('init_keys and freeze_steps need init_from (the checkpoint they come from)')
  if config.freeze_steps and not config.init_keys:
    problems.append('freeze_steps freezes the init_keys subtrees: name them with init_keys')
  if check_paths and config.corpus.name != 'synthetic':
    root = config.corpus.root
    if not root:
      problems.append(f'corpus.root must name the folder of corpus {config.corpus.name!r} '
                      f'(--config.corpus.root=/path/to/it)')
    elif not os.path.isdir(root):
      problems.append(f'corpus.root {root!r} is not a folder')
    elif not os.listdir(root):
      problems.append(f'corpus.root {root!r} is empty')
  return problems


def validate(config: ml_collections.ConfigDict, *, check_paths: bool = True) -> None:
  """Raises InvalidConfig listing every field that cannot work (each named), before anything is built.

  Each field is checked alone (its type, range or choices), then the fields that must agree together, and (with
  `check_paths`) that the folders and files named are there: a sweep listed here may run on another machine.
  """
  values = flatten(config)
  problems = [f'unknown field {k}' for k in sorted(set(values) - set(FIELDS) - set(OPTIONAL))]
  problems += [f'missing field {k}' for k in sorted(set(FIELDS) - set(values))]
  for field, rule in {**FIELDS, **OPTIONAL}.items():
    wrong = rule(values[field]) if field in values else None
    if wrong:
      problems.append(f'{field} must be {wrong}, got {values[field]!r}')
  if not problems:  # the rules across fields read fields the single rules have vouched for
    problems += _across_fields(config, check_paths)
  if problems:
    raise InvalidConfig('Invalid config: ' + '; '.join(problems) + '.')


def result_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """The fields (flattened names) whose change from `recorded` to `current` changes a run's result:
  every differing field shared by both but the RESULT_NEUTRAL ones and a grown train.num_epochs."""
  return [k for k in sorted(set(recorded) & set(current))
          if recorded[k] != current[k] and k not in RESULT_NEUTRAL
          and not (k in EXTENDABLE and current[k] > recorded[k])]


# ---------------------------------------------------------------------------------------------
# Configs saved by older versions.

# Fields added since the first version, with the value that reproduces what a config saved before them meant.
ADDED = {
    'data.mel_bands': features.DEFAULT_MEL_BANDS,
    'data.functionals': '',
    'data.crop_frames': 0,
    'data.test_crops': 3,  # read only with crop_frames, added with it
    'data.augment.freq_warp': 0.0,
    'optim.schedule': 'constant',
    'optim.warmup_epochs': 0.0,
    'corpus.visual_features': '',
    'model.visual': 'frames',
    'model.visual_hidden': 128,
    'model.pretrained': '',
}


def upgrade(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
  """A config saved by an older emojax (a workdir's config.json) with the fields it lacks set to what it meant."""
  config = ml_collections.ConfigDict(config if isinstance(config, dict) else config.to_dict())
  for field, value in ADDED.items():
    *path, leaf = field.split('.')
    section = config
    for part in path:
      if part not in section:
        section[part] = ml_collections.ConfigDict()
      section = section[part]
    if leaf not in section:
      section[leaf] = value
  return config
