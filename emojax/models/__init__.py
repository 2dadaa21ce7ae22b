"""The models, chosen by name: the paper's cnn, cnn_rnn, cnn_lstm, video3d, fusion; and visual_mlp.

Every model is a Flax Linen module used through `init`/`apply`:
`model.apply(variables, inputs, train=...)` gives logits (B, classes) from
`inputs['audio']` (B, H, W, C) and/or `inputs['video']` (B, T, H, W, 3) or `inputs['visual']` (B, D), per-clip
visual features (visual_mlp; fusion with visual='features');
`method='embed'` gives the 64-d embedding (fusion: {'audio', 'video'}).
The audio models also read `inputs['functionals']` (B, F) when the data gives them (`data.functionals`: a
hybrid network): the utterance's standardised eGeMAPS or MFCC statistics join the pooled spectrogram
features before the embedding layer.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from emojax import kernels
from emojax.kernels import autotune
from emojax.models.cnn import AudioCNN
from emojax.models.fusion import Fusion
from emojax.models.recurrent import AudioRecurrent
from emojax.models.video3d import Video3D
from emojax.models.visual import VisualMLP

MODELS = {
    'cnn': AudioCNN,
    'cnn_rnn': functools.partial(AudioRecurrent, cell='rnn'),
    'cnn_lstm': functools.partial(AudioRecurrent, cell='lstm'),
    'video3d': Video3D,
    'fusion': Fusion,
    'visual_mlp': VisualMLP,
}
# The inputs each model reads: the data build computes video only for models that read it.
INPUTS = {'cnn': ('audio',), 'cnn_rnn': ('audio',), 'cnn_lstm': ('audio',), 'video3d': ('video',),
          'fusion': ('audio', 'video'), 'visual_mlp': ('visual',)}
# the models that can also read per-utterance functionals (fusion: its audio encoder)
FUNCTIONALS_MODELS = ('cnn', 'cnn_rnn', 'cnn_lstm', 'fusion')
AUDIO_MODELS = ('cnn', 'cnn_rnn', 'cnn_lstm')  # fusion's audio branch (`audio_model`)
RECURRENT_FIELDS = ('rnn_dropout', 'rnn_hidden', 'rnn_layers', 'time_scan', 'rnn_unroll', 'pooling')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Module fields that are not hyper-parameters of the config's `model` section: set by get_model or by the name.
_NOT_OPTIONS = ('parent', 'name', 'num_classes', 'cell', 'plan')


def _fields(name: str) -> tuple[str, ...]:
  model = MODELS[name]
  model = getattr(model, 'func', model)  # the class behind a functools.partial
  return tuple(f.name for f in dataclasses.fields(model) if f.name not in _NOT_OPTIONS)


# The config fields each model reads (its module's fields, and the kernel choice); the others do not apply to it.
FIELDS = {name: _fields(name) + ('conv_impl', 'pool_impl') for name in MODELS}


def get_model(name: str, *, num_classes: int, conv_impl: str = 'fast', pool_impl: str = 'fast',
              tune_for: dict[str, jax.ShapeDtypeStruct] | None = None, training: bool = True,
              **kwargs) -> nn.Module:
  """The model `name` with the given hyper-parameters (unknown ones are a TypeError).

  `conv_impl` and `pool_impl` choose how convolutions and pools are computed, not what:
  they resolve here, once, to the model's `kernels.Plan` for this backend and device count.
  With `tune_for` (the inputs of one device's batch: shapes and dtypes), a 'fast' plan on a CPU is
  autotuned: each convolution's impl is the fastest on this machine at those shapes, for
  training (forward + backward) or not (forward), timed once and cached (`kernels.autotune`).
  """
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; expected one of {sorted(MODELS)}.')
  unknown = set(kwargs) - set(FIELDS[name])
  if unknown:
    raise TypeError(f'Model {name!r} takes no {sorted(unknown)}; its fields are {sorted(FIELDS[name])}.')
  if isinstance(kwargs.get('dtype'), str):
    kwargs['dtype'] = DTYPES[kwargs['dtype']]
  model = MODELS[name](num_classes=num_classes, plan=kernels.resolve(conv_impl, pool_impl), **kwargs)
  if tune_for is not None and conv_impl == 'fast' and jax.default_backend() == 'cpu':
    model = model.clone(plan=autotune.tune(model, tune_for, training=training))
  return model


def reads_video(model_config) -> bool:
  """Whether the configured model reads face video frames."""
  return 'video' in inputs_of(model_config)


def reads_functionals(name: str) -> bool:
  """Whether the model `name` can read per-utterance functionals beside its spectrogram (`data.functionals`)."""
  return name in FUNCTIONALS_MODELS


def fields_read(model_config) -> tuple[str, ...]:
  """The fields of a config's `model` section that its model reads (fusion with a CNN audio branch reads no
  recurrent field, with face frames no visual_hidden)."""
  read = FIELDS[model_config.name]
  if model_config.name == 'fusion' and model_config.audio_model == 'cnn':
    read = tuple(k for k in read if k not in RECURRENT_FIELDS)
  if model_config.name == 'fusion' and model_config.visual == 'frames':
    read = tuple(k for k in read if k != 'visual_hidden')
  return read


def inputs_of(model_config) -> tuple[str, ...]:
  """The inputs the configured model reads: fusion reads face frames ('video') or visual features ('visual')."""
  if model_config.name not in INPUTS:
    raise ValueError(f'Unknown model {model_config.name!r}; expected one of {sorted(MODELS)} (or a baseline of '
                     'emojax.baselines).')
  if model_config.name == 'fusion' and model_config.visual == 'features':
    return ('audio', 'visual')
  return INPUTS[model_config.name]


def options(model_config) -> dict:
  """The fields of a config's `model` section that its model reads."""
  return {k: model_config[k] for k in FIELDS[model_config.name]}
