"""Shapes and exact parameter counts of every model at the paper's sizes, the time-scan switch,
dropout and batchnorm behaviour, fusion's encoder structure, and finite gradients on tiny inputs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emojax import kernels, models
from emojax.models.cnn import audio_feature_shape
from emojax.models.video3d import video_feature_shape

AUDIO = (200, 300, 3)
VIDEO = (20, 60, 100, 3)
RNGS = {'params': jax.random.key(0), 'dropout': jax.random.key(1)}


def _abstract(name, shapes, batch=2, **kwargs):
  model = models.get_model(name, num_classes=4, **kwargs)
  inputs = {k: jax.ShapeDtypeStruct((batch, *v), jnp.float32) for k, v in shapes.items()}
  variables = jax.eval_shape(lambda x: model.init(RNGS, x, train=False), inputs)
  return model, variables, inputs


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


def conv(k, cin, cout):
  return int(np.prod(k)) * cin * cout + cout


def dense(i, o):
  return i * o + o


def rnn_layer(i, h):  # one direction of a flax SimpleCell: input kernel (no bias) + recurrent kernel and bias
  return i * h + h * h + h


def lstm_layer(i, h):  # OptimizedLSTMCell: 4 gates, input kernels without bias, recurrent kernels with bias
  return 4 * (i * h + h * h + h)


CONVS = conv((12, 16), 3, 16) + conv((8, 12), 16, 24) + conv((5, 7), 24, 32)
VIDEO_CONVS = conv((3, 3, 3), 3, 16) + conv((3, 3, 3), 16, 32) + conv((3, 3, 3), 32, 64) + conv((3, 3, 3), 64, 128)
VIDEO_FC = dense(12 * 2 * 7 * 128, 256) + dense(256, 64)


def test_feature_map_sizes_at_paper_sizes():
  assert audio_feature_shape(200, 300) == (25, 37)
  assert video_feature_shape(20, 60, 100) == (12, 2, 7)


@pytest.mark.parametrize('name,expected', [
    ('cnn', CONVS + dense(25 * 37 * 32, 64) + dense(64, 4)),
    ('cnn_rnn', CONVS + 2 * rnn_layer(25 * 32, 128) + 2 * rnn_layer(256, 128) + dense(256, 64) + dense(64, 4)),
    ('cnn_lstm', CONVS + 2 * lstm_layer(25 * 32, 128) + 2 * lstm_layer(256, 128) + dense(256, 64) + dense(64, 4)),
])
def test_audio_models_shapes_and_parameter_counts(name, expected):
  model, variables, inputs = _abstract(name, {'audio': AUDIO})
  assert _count(variables['params']) == expected
  assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs).shape == (2, 4)
  assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False, method='embed'), variables, inputs).shape == (2, 64)


def test_video_and_fusion_shapes_and_parameter_counts():
  model, variables, inputs = _abstract('video3d', {'video': VIDEO})
  assert _count(variables['params']) == VIDEO_CONVS + VIDEO_FC + dense(64, 4)
  assert jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs).shape == (2, 4)

  model, variables, inputs = _abstract('fusion', {'audio': AUDIO, 'video': VIDEO})
  audio = CONVS + 2 * rnn_layer(800, 128) + 2 * rnn_layer(256, 128) + dense(256, 64)
  assert _count(variables['params']) == audio + VIDEO_CONVS + VIDEO_FC + dense(128, 64) + dense(64, 4)
  emb = jax.eval_shape(lambda v, x: model.apply(v, x, train=False, method='embed'), variables, inputs)
  assert emb['audio'].shape == emb['video'].shape == (2, 64)


def test_fusion_encoders_have_the_standalone_encoders_structure():
  _, fused, _ = _abstract('fusion', {'audio': AUDIO, 'video': VIDEO})
  _, audio, _ = _abstract('cnn_rnn', {'audio': AUDIO})
  _, video, _ = _abstract('video3d', {'video': VIDEO})
  drop_head = lambda p: {k: v for k, v in p.items() if k != 'head'}
  shapes = lambda t: jax.tree_util.tree_map(lambda l: l.shape, t)
  assert shapes(fused['params']['audio_encoder']) == shapes(drop_head(audio['params']))
  assert shapes(fused['params']['video_encoder']) == shapes(drop_head(video['params']))


def test_width_multiplier_scales_layers():
  _, variables, _ = _abstract('cnn', {'audio': AUDIO}, width=2.0)
  convs = conv((12, 16), 3, 32) + conv((8, 12), 32, 48) + conv((5, 7), 48, 64)
  assert _count(variables['params']) == convs + dense(25 * 37 * 64, 64) + dense(64, 4)


def test_time_scan_switch_sets_the_sequence_the_rnn_sees():
  scanned = _abstract('cnn_rnn', {'audio': AUDIO})[1]['params']
  flat = _abstract('cnn_rnn', {'audio': AUDIO}, time_scan=False)[1]['params']
  # The first layer's input kernel: one time step of 25 rows x 32 channels vs the whole flattened map.
  assert scanned['layers_0']['forward_rnn']['cell']['i']['kernel'].shape == (800, 128)
  assert flat['layers_0']['forward_rnn']['cell']['i']['kernel'].shape == (29600, 128)
  model = models.get_model('cnn_rnn', num_classes=4)
  x = {'audio': jnp.zeros((1, 64, 96, 1))}
  variables = model.init(RNGS, x, train=False)
  assert audio_feature_shape(64, 96) == (8, 12)
  assert model.apply(variables, x, train=False, method='sequence').shape == (1, 12, 8 * 32)
  flat_model = models.get_model('cnn_rnn', num_classes=4, time_scan=False)
  assert flat_model.apply(flat_model.init(RNGS, x, train=False), x, train=False, method='sequence').shape == (1, 1, 8 * 12 * 32)


def test_scanned_rnn_depends_on_the_order_of_time():
  model = models.get_model('cnn_rnn', num_classes=4, rnn_hidden=16)
  x = jax.random.normal(jax.random.key(2), (1, 32, 64, 1))
  variables = model.init(RNGS, {'audio': x}, train=False)
  # Swapping the two halves of time keeps every column's content but changes its order.
  swapped = jnp.concatenate([x[:, :, 32:], x[:, :, :32]], axis=2)
  out = model.apply(variables, {'audio': x}, train=False)
  out_swapped = model.apply(variables, {'audio': swapped}, train=False)
  assert not np.allclose(out, out_swapped, atol=1e-6)


def test_dropout_only_in_training():
  model = models.get_model('cnn', num_classes=4, dropout=0.5)
  x = {'audio': jax.random.normal(jax.random.key(3), (4, 32, 48, 1))}
  variables = model.init(RNGS, x, train=False)
  np.testing.assert_array_equal(model.apply(variables, x, train=False), model.apply(variables, x, train=False))
  a = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(4)})
  b = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(5)})
  assert not np.allclose(a, b)


def test_batchnorm_adds_batch_stats_updated_in_training():
  model = models.get_model('video3d', num_classes=4, batchnorm=True, width=0.25)
  x = {'video': jax.random.normal(jax.random.key(6), (2, 9, 48, 64, 3))}
  variables = model.init(RNGS, x, train=False)
  assert 'batch_stats' in variables
  _, updates = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(7)}, mutable=['batch_stats'])
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), variables['batch_stats'],
                                   updates['batch_stats'])
  assert all(jax.tree_util.tree_leaves(changed))


def test_too_small_inputs_and_unknown_names_are_clear_errors():
  model = models.get_model('video3d', num_classes=4)
  with pytest.raises(ValueError, match='too small'):
    model.init(RNGS, {'video': jnp.zeros((1, 8, 40, 40, 3))}, train=False)
  with pytest.raises(ValueError, match='Unknown model'):
    models.get_model('resnet', num_classes=4)
  with pytest.raises(TypeError, match='takes no'):
    models.get_model('video3d', num_classes=4, rnn_hidden=3)


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_tiny_models_train_with_finite_gradients(name):
  kwargs = {k: v for k, v in {'rnn_hidden': 8, 'width': 0.25}.items() if k in models.FIELDS[name]}
  model = models.get_model(name, num_classes=3, **kwargs)
  x = {'audio': jax.random.normal(jax.random.key(8), (2, 32, 48, 1)),
       'video': jax.random.normal(jax.random.key(9), (2, 9, 48, 64, 3)),
       'visual': jax.random.normal(jax.random.key(10), (2, 35))}
  params = model.init(RNGS, x, train=False)['params']

  @jax.jit
  def grads(params):
    def loss(p):
      logits = model.apply({'params': p}, x, train=True, rngs={'dropout': jax.random.key(10)})
      return -jax.nn.log_softmax(logits)[:, 0].mean()
    return jax.value_and_grad(loss)(params)

  value, g = grads(params)
  assert np.isfinite(float(value))
  assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree_util.tree_leaves(g))
  assert sum(float(jnp.abs(leaf).sum()) > 0 for leaf in jax.tree_util.tree_leaves(g)) == len(jax.tree_util.tree_leaves(g))


@pytest.mark.parametrize('name', sorted(models.MODELS))
def test_fast_layers_give_the_straightforward_models_values_and_gradients(name):
  """conv_impl='fast' / pool_impl='fast' (the defaults) against lax.conv and nn.max_pool: same
  parameters, same logits and gradients up to float32 rounding."""
  kwargs = {k: v for k, v in {'rnn_hidden': 8, 'width': 0.25}.items() if k in models.FIELDS[name]}
  x = {'audio': jax.random.normal(jax.random.key(8), (2, 32, 48, 3)),
       'video': jax.random.normal(jax.random.key(9), (2, 9, 48, 64, 3)),
       'visual': jax.random.normal(jax.random.key(10), (2, 35))}
  results = []
  for conv_impl, pool_impl in (('xla', 'xla'), ('fast', 'fast')):
    model = models.get_model(name, num_classes=3, conv_impl=conv_impl, pool_impl=pool_impl, **kwargs)
    params = model.init(RNGS, x, train=False)['params']
    results.append(jax.jit(jax.value_and_grad(
        lambda p, model=model: jnp.sum(jnp.sin(model.apply({'params': p}, x, train=False)))))(params))
  (value_ref, grads_ref), (value, grads) = results
  np.testing.assert_allclose(value, value_ref, rtol=1e-4)
  assert jax.tree.structure(grads) == jax.tree.structure(grads_ref)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * float(jnp.abs(want).max()) + 1e-6)


@pytest.mark.parametrize('name', ['cnn_rnn', 'cnn_lstm'])
def test_unrolled_scan_gives_the_same_values_and_gradients(name):
  x = {'audio': jax.random.normal(jax.random.key(8), (2, 32, 80, 1))}  # 10 time steps: unroll 4 leaves a remainder
  results = []
  for unroll in (1, 4):
    model = models.get_model(name, num_classes=3, width=0.25, rnn_hidden=8, rnn_unroll=unroll)
    params = model.init(RNGS, x, train=False)['params']
    results.append(jax.value_and_grad(lambda p, model=model: jnp.sum(jnp.sin(model.apply({'params': p}, x,
                                                                                         train=False))))(params))
  (value_ref, grads_ref), (value, grads) = results
  np.testing.assert_allclose(value, value_ref, rtol=1e-6)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('name,plan', [('cnn', kernels.Plan(audio=('xla', 'xla'))),
                                       ('video3d', kernels.Plan(video=('xla',) * 5))])
def test_a_kernel_plan_that_does_not_name_every_layer_is_an_error(name, plan):
  model = models.MODELS[name](num_classes=3, width=0.25, plan=plan)
  x = {'audio': jnp.zeros((1, 32, 48, 1)), 'video': jnp.zeros((1, 9, 48, 64, 3))}
  with pytest.raises(ValueError, match='kernel plan names'):
    model.init(RNGS, x, train=False)


def test_pooling_over_time_hand_computed_on_given_outputs():
  x = jax.random.normal(jax.random.key(3), (2, 5, 32))  # (B, T, 2H)

  def pool(pooling, params=None):  # only the pooling's own parameters are needed
    model = models.get_model('cnn_rnn', num_classes=4, rnn_hidden=16, pooling=pooling)
    return model.apply({'params': params or {}}, x, method='pool')

  np.testing.assert_allclose(pool('last'), jnp.concatenate([x[:, -1, :16], x[:, 0, 16:]], -1))
  np.testing.assert_allclose(pool('mean'), x.mean(axis=1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pool('stats'), jnp.concatenate([x.mean(axis=1), jnp.sqrt(x.var(axis=1) + 1e-6)], -1),
                             rtol=1e-5, atol=1e-6)
  # Attention: a score of 1000 x feature 0 puts (almost) all weight on the step where feature 0 is largest.
  score = {'kernel': jnp.zeros((32, 1)).at[0, 0].set(1000.0), 'bias': jnp.zeros((1,))}
  np.testing.assert_allclose(pool('attention', {'score': score}), x[jnp.arange(2), jnp.argmax(x[:, :, 0], axis=1)],
                             atol=1e-3)
  flat = pool('attention', {'score': jax.tree_util.tree_map(jnp.zeros_like, score)})
  np.testing.assert_allclose(flat, x.mean(axis=1), rtol=1e-5, atol=1e-6)  # equal scores: the mean


def test_pooled_model_classifies_and_unknown_pooling_is_an_error():
  model = models.get_model('cnn_lstm', num_classes=7, width=0.25, rnn_hidden=8, pooling='stats')
  x = {'audio': jnp.zeros((3, 32, 48, 1))}
  assert model.apply(model.init(RNGS, x, train=False), x, train=False).shape == (3, 7)
  with pytest.raises(ValueError, match="Unknown pooling 'max'"):
    models.get_model('cnn_rnn', num_classes=4, pooling='max').init(RNGS, x, train=False)


def test_batchnorm_running_mean_moves_a_tenth_of_the_way_per_step():
  # PyTorch's momentum 0.1: after one training step from zero, the running mean of the first conv's
  # channels is 0.1 x the batch mean of that conv's output.
  model = models.get_model('cnn', num_classes=3, batchnorm=True, width=0.25)
  x = {'audio': jax.random.normal(jax.random.key(8), (4, 32, 40, 1)) + 2.0}
  variables = model.init(RNGS, x, train=False)
  _, updates = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(9)}, mutable=['batch_stats'])
  stack = variables['params']['convs']
  conv = nn.Conv(stack['Conv_0']['kernel'].shape[-1], (12, 16), padding=((6, 6), (8, 8)))
  out = conv.apply({'params': stack['Conv_0']}, x['audio'])
  np.testing.assert_allclose(updates['batch_stats']['convs']['BatchNorm_0']['mean'], 0.1 * out.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name, pooled', [('cnn', 25 * 37 * 32), ('cnn_rnn', 256)])
def test_functionals_join_the_pooled_features_before_the_embedding(name, pooled):
  model, variables, inputs = _abstract(name, {'audio': AUDIO, 'functionals': (88,)})
  assert variables['params']['fc']['kernel'].shape == (pooled + 88, 64)  # the hybrid's only extra weights
  _, plain, _ = _abstract(name, {'audio': AUDIO})
  assert _count(variables['params']) == _count(plain['params']) + 88 * 64
  small = models.get_model(name, num_classes=4, width=0.25, **({'rnn_hidden': 8} if name == 'cnn_rnn' else {}))
  x = {'audio': jax.random.normal(jax.random.key(2), (2, 32, 48, 1)), 'functionals': jnp.zeros((2, 5))}
  params = small.init(RNGS, x, train=False)
  logits = small.apply(params, x, train=False)
  # Only the functionals' rows of the embedding layer see them: zeroing those rows ignores the functionals.
  moved = {**x, 'functionals': jnp.ones((2, 5))}
  assert not np.allclose(small.apply(params, moved, train=False), logits)
  kernel = params['params']['fc']['kernel']
  blind = jax.tree_util.tree_map(lambda v: v, params)
  blind['params']['fc']['kernel'] = kernel.at[-5:].set(0.0)
  np.testing.assert_allclose(small.apply(blind, moved, train=False), small.apply(blind, x, train=False), atol=1e-6)
  assert models.reads_functionals(name) and not models.reads_functionals('video3d')


def test_the_visual_feature_encoder_and_fusion_over_visual_features():
  """visual_mlp: (B, D) action units -> FC hidden ReLU Dropout -> FC 64 (embedding) -> ReLU Dropout FC classes;
  fusion with visual='features' puts it where the 3D CNN was (`video_encoder`, so pre-training restores it by
  name), and its audio encoder reads the functionals beside the spectrogram when given."""
  visual = models.get_model('visual_mlp', num_classes=8, visual_hidden=32)
  x = {'visual': jnp.ones((3, 35))}
  variables = visual.init(RNGS, x, train=False)
  assert _count(variables['params']) == dense(35, 32) + dense(32, 64) + dense(64, 8)
  assert visual.apply(variables, x, train=False).shape == (3, 8)
  assert visual.apply(variables, x, train=False, method='embed').shape == (3, 64)
  train = [visual.apply(variables, x, train=True, rngs={'dropout': jax.random.key(s)}) for s in (1, 2)]
  assert not np.allclose(train[0], train[1])  # dropout in training only
  with pytest.raises(ValueError, match='batch, features'):
    visual.init(RNGS, {'visual': jnp.ones((3, 5, 35))}, train=False)

  inputs = {'audio': jnp.ones((2, 32, 48, 1)), 'visual': jnp.ones((2, 35)), 'functionals': jnp.ones((2, 88))}
  fusion = models.get_model('fusion', num_classes=8, width=0.25, rnn_hidden=8, visual='features', visual_hidden=32)
  params = fusion.init(RNGS, inputs, train=False)['params']
  assert sorted(params) == ['audio_encoder', 'fc', 'head', 'video_encoder']
  assert _count(params['video_encoder']) == dense(35, 32) + dense(32, 64)  # its own head is not fusion's
  without = fusion.init(RNGS, {k: v for k, v in inputs.items() if k != 'functionals'}, train=False)['params']
  # The audio embedding layer takes the 88 functionals after the pooled features.
  assert params['audio_encoder']['fc']['kernel'].shape[0] == without['audio_encoder']['fc']['kernel'].shape[0] + 88
  emb = fusion.apply({'params': params}, inputs, train=False, method='embed')
  assert emb['audio'].shape == emb['video'].shape == (2, 64)
  assert fusion.apply({'params': params}, inputs, train=False).shape == (2, 8)
