"""The PyTorch reference networks are the emojax networks: same parameter counts, same logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch  # the 'torch' extra, part of the 'test' extra: these tests always run

from emojax import models, train
from experiments import torch_reference

NAMES = ('cnn', 'cnn_rnn', 'cnn_lstm', 'video3d', 'fusion')
PAPER = {'audio': (200, 300, 3), 'video': (20, 60, 100, 3)}
SMALL = {'audio': (24, 32, 3), 'video': (10, 46, 50, 3)}


def _shape_kwargs(name, shapes):
  return {'cnn': {'audio_shape': shapes['audio']}, 'cnn_rnn': {'audio_shape': shapes['audio']},
          'cnn_lstm': {'audio_shape': shapes['audio']}, 'video3d': {'video_shape': shapes['video']},
          'fusion': {'audio_shape': shapes['audio'], 'video_shape': shapes['video']}}[name]


def _batch(shapes, size=2):
  rng = np.random.default_rng(0)
  return {'audio': rng.standard_normal((size, *shapes['audio'])).astype(np.float32),
          'video': rng.integers(0, 256, (size, *shapes['video'])).astype(np.uint8)}


@pytest.mark.parametrize('name', NAMES)
def test_parameter_counts_equal_at_the_paper_sizes(name):
  flax_model = models.get_model(name, num_classes=4)
  shapes = jax.eval_shape(lambda: flax_model.init(jax.random.key(0), train.model_inputs(_batch(PAPER, 1)),
                                                  train=False))['params']
  flax_count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes))
  torch_model = torch_reference.get_model(name, num_classes=4, **_shape_kwargs(name, PAPER))
  assert torch_reference.trainable_parameter_count(torch_model) == flax_count


@pytest.mark.parametrize('name,kwargs', [
    ('cnn', {}), ('cnn_rnn', {'rnn_hidden': 16}), ('cnn_lstm', {'rnn_hidden': 16}), ('video3d', {}),
    ('fusion', {'rnn_hidden': 16, 'audio_model': 'cnn_lstm'}), ('cnn_rnn', {'rnn_hidden': 16, 'time_scan': False}),
])
@pytest.mark.parametrize('channels_last', [False, True])
def test_logits_agree_with_weights_copied_from_flax(name, kwargs, channels_last):
  batch = _batch(SMALL)
  flax_model = models.get_model(name, num_classes=5, **kwargs)
  params = flax_model.init(jax.random.key(1), train.model_inputs(batch), train=False)['params']
  params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params)  # biases != 0
  expected = flax_model.apply({'params': params}, train.model_inputs(batch), train=False)

  torch_model = torch_reference.get_model(name, num_classes=5, **_shape_kwargs(name, SMALL), **kwargs)
  torch_reference.load_flax_params(torch_model, jax.device_get(params))
  if channels_last:
    torch_model = torch_reference.to_channels_last(torch_model)
  with torch.no_grad():
    logits = torch_model.eval()(torch_reference.model_inputs(batch, channels_last=channels_last))
  assert logits.shape == expected.shape
  np.testing.assert_allclose(logits.numpy(), np.asarray(expected), rtol=1e-4, atol=1e-4)
  assert float(jnp.std(expected)) > 1e-3  # the comparison is not between two constants


def test_loading_parameters_of_another_model_is_an_error():
  params = models.get_model('cnn', num_classes=4).init(
      jax.random.key(0), train.model_inputs(_batch(SMALL)), train=False)['params']
  with pytest.raises(ValueError, match='do not fit'):
    torch_reference.load_flax_params(
        torch_reference.get_model('video3d', num_classes=4, video_shape=SMALL['video']), jax.device_get(params))
