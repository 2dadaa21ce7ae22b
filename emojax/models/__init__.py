"""The model zoo, chosen by name: cnn, cnn_rnn, cnn_lstm, video3d, fusion.

Every model is a Flax Linen module used through `init`/`apply`:
`model.apply(variables, inputs, train=...)` gives logits (B, classes) from
`inputs['audio']` (B, H, W, C) and/or `inputs['video']` (B, T, H, W, 3);
`method='embed'` gives the 64-d embedding (fusion: {'audio', 'video'}).
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from emojax.models.cnn import AudioCNN
from emojax.models.fusion import Fusion
from emojax.models.recurrent import AudioRecurrent
from emojax.models.video3d import Video3D

MODELS = {
    'cnn': AudioCNN,
    'cnn_rnn': functools.partial(AudioRecurrent, cell='rnn'),
    'cnn_lstm': functools.partial(AudioRecurrent, cell='lstm'),
    'video3d': Video3D,
    'fusion': Fusion,
}
# The inputs each model reads: the data build computes video only for models that read it.
INPUTS = {'cnn': ('audio',), 'cnn_rnn': ('audio',), 'cnn_lstm': ('audio',), 'video3d': ('video',),
          'fusion': ('audio', 'video')}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
_COMMON = ('width', 'batchnorm', 'dropout', 'embed_dim', 'dtype', 'conv_impl', 'pool_impl')
_RECURRENT = ('rnn_dropout', 'rnn_hidden', 'rnn_layers', 'time_scan', 'rnn_unroll')
# The config fields each model reads; the others do not apply to it.
FIELDS = {
    'cnn': _COMMON,
    'cnn_rnn': _COMMON + _RECURRENT,
    'cnn_lstm': _COMMON + _RECURRENT,
    'video3d': _COMMON,
    'fusion': _COMMON + _RECURRENT + ('audio_model',),
}


def get_model(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """The model `name` with the given hyper-parameters (unknown ones are a TypeError)."""
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; expected one of {sorted(MODELS)}.')
  unknown = set(kwargs) - set(FIELDS[name])
  if unknown:
    raise TypeError(f'Model {name!r} takes no {sorted(unknown)}; its fields are {sorted(FIELDS[name])}.')
  if isinstance(kwargs.get('dtype'), str):
    kwargs['dtype'] = DTYPES[kwargs['dtype']]
  return MODELS[name](num_classes=num_classes, **kwargs)


def reads_video(name: str) -> bool:
  """Whether the model `name` reads face video (else audio only)."""
  return 'video' in INPUTS[name]


def options(model_config) -> dict:
  """The fields of a config's `model` section that its model reads."""
  return {k: model_config[k] for k in FIELDS[model_config.name]}
