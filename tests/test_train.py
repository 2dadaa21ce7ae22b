"""The jitted step, finiteness guard and checkpoint round trips, on a small model."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from emojax import checkpoints, train


class _Tiny(nn.Module):
  """A small audio classifier with dropout and batchnorm: the state shapes real models have."""

  @nn.compact
  def __call__(self, inputs, *, train: bool):
    x = inputs['audio'].reshape(inputs['audio'].shape[0], -1)
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dropout(0.2, deterministic=not train)(nn.relu(x))
    return nn.Dense(3)(x)


def _optim(**kw):
  return ml_collections.ConfigDict({**dict(learning_rate=1e-2, weight_decay=0.01, l1=0.0, max_grad_norm=0.0,
                                          schedule='constant', warmup_epochs=0.0), **kw})


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  return {'audio': rng.normal(size=(4, 6, 5, 1)).astype(np.float32), 'label': np.array([0, 1, 2, 1])}


def _state():
  return train.create_state(_Tiny(), _batch(), train.make_optimizer(_optim()), jax.random.key(0))


def test_one_step_changes_parameters_and_batch_stats():
  state = _state()
  before = jax.tree_util.tree_map(np.asarray, (state.params, state.batch_stats))
  new, m = train.make_train_step()(state, _batch(), jax.random.key(1))
  assert int(new.step) == 1 and bool(m['finite'])
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b), before, (new.params, new.batch_stats))
  assert all(jax.tree_util.tree_leaves(changed))
  assert np.isfinite(float(m['loss'])) and float(m['grad_norm']) > 0


def test_loss_decreases_over_steps_on_a_fixed_batch():
  state, step, batch = _state(), train.make_train_step(), _batch()
  losses = []
  for i in range(30):
    state, m = step(state, batch, jax.random.key(i))
    losses.append(float(m['loss_ce']))
  assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_l1_adds_to_the_loss():
  state = _state()
  _, plain = train.make_train_step()(state, _batch(), jax.random.key(1))
  _, with_l1 = train.make_train_step(l1=0.1)(_state(), _batch(), jax.random.key(1))
  assert float(with_l1['loss']) > float(with_l1['loss_ce']) == pytest.approx(float(plain['loss_ce']))


def test_non_finite_batch_leaves_the_parameters_unchanged_and_counts_the_step():
  state = _state()
  before = jax.tree_util.tree_map(np.asarray, state.params)
  optimizer_before = jax.tree_util.tree_map(np.asarray, state.opt_state)
  bad = _batch()
  bad['audio'][0, 0, 0, 0] = np.nan
  new, m = train.make_train_step()(state, bad, jax.random.key(1))
  assert not bool(m['finite'])
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.tree_util.tree_map(np.asarray, new.params))
  jax.tree_util.tree_map(np.testing.assert_array_equal, optimizer_before,
                         jax.tree_util.tree_map(np.asarray, new.opt_state))
  assert int(new.step) == 1  # the loop numbers steps on the host; a skipped one still counts


def test_checkpoint_round_trip_and_resolution(tmp_path):
  state, _ = train.make_train_step()(_state(), _batch(), jax.random.key(1))
  ckpts = checkpoints.RunCheckpoints(str(tmp_path))
  ckpts.save_latest(1, state, {'epoch': 0, 'position': 1})
  assert ckpts.save_best(1, state, {'epoch': 0, 'position': 1}, {'accuracy': 0.5, 'unweighted_accuracy': 0.4})
  assert not ckpts.save_best(2, state, {'epoch': 1, 'position': 0}, {'accuracy': 0.4, 'unweighted_accuracy': 0.4})
  ckpts.close()
  step_dir = checkpoints.find_step_dir(str(tmp_path))
  assert step_dir.endswith('best/1')
  restored, meta = checkpoints.restore(step_dir, _state())
  assert meta['metrics']['accuracy'] == 0.5
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored), strict=True):
    np.testing.assert_array_equal(a, b)
  params = train.init_params_from(str(tmp_path), _state().params)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(state.params), jax.device_get(params))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='No checkpoint'):
    checkpoints.find_step_dir(str(tmp_path))


class _TinyPair(nn.Module):
  """Two linear encoders with the `embed` method a contrastive step calls."""

  def setup(self):
    self.audio_encoder = nn.Dense(4)
    self.video_encoder = nn.Dense(4)

  def embed(self, inputs, *, train: bool):
    del train
    flat = lambda x: x.reshape(x.shape[0], -1)
    return {'audio': self.audio_encoder(flat(inputs['audio'])), 'video': self.video_encoder(flat(inputs['video']))}

  def __call__(self, inputs, *, train: bool):
    emb = self.embed(inputs, train=train)
    return jnp.concatenate([emb['audio'], emb['video']], -1)


@pytest.mark.parametrize('negatives,loss', [('mined', 'margin'), ('all', 'margin'), ('all', 'infonce')])
def test_contrastive_step_pulls_each_clip_s_audio_and_video_together(negatives, loss):
  rng = np.random.default_rng(0)
  signal = rng.normal(size=(8, 5)).astype(np.float32)  # what a clip's audio and video share
  batch = {'audio': signal[:, :, None, None] + 0.1 * rng.normal(size=(8, 5, 1, 1)).astype(np.float32),
           'video': np.stack([signal, -signal], -1)[:, None, :, :, None].astype(np.float32),
           'label': np.array([0, 0, 1, 1, 2, 2, 3, 3])}
  state = train.create_state(_TinyPair(), batch, train.make_optimizer(_optim()), jax.random.key(0))
  step = train.make_contrastive_step(margin=1.5, normalize=True, center=True, hard_fraction=0.75,
                                     negatives=negatives, loss=loss, temperature=0.2)
  first = None
  for i in range(60):
    state, m = step(state, batch, jax.random.key(i))
    first = first or m
  assert float(m['loss']) < float(first['loss'])
  assert float(m['distance_positive']) < float(first['distance_positive'])
  assert float(m['distance_negative']) > float(m['distance_positive'])
  expected_pairs = (6, 2) if negatives == 'mined' else (8 * 6, 8 * 1)
  assert (int(m['pairs_hard']), int(m['pairs_super_hard'])) == expected_pairs


def test_contrastive_step_rejects_an_unknown_negative_scheme():
  with pytest.raises(ValueError, match="expected 'all' or 'mined'"):
    train.make_contrastive_step(margin=1.0, normalize=True, center=True, hard_fraction=0.75, negatives='every')


def test_cosine_schedule_warms_up_then_decays_to_zero_and_constant_stays():
  rate = train.learning_rate(_optim(schedule='cosine', warmup_epochs=2.0), total_steps=100, steps_per_epoch=10)
  assert float(rate(0)) == 0.0 and float(rate(10)) == pytest.approx(5e-3)  # linear warmup over 20 steps
  assert float(rate(20)) == pytest.approx(1e-2)
  assert float(rate(60)) == pytest.approx(1e-2 * 0.5 * (1 + np.cos(np.pi * 40 / 80)), rel=1e-5)
  assert float(rate(100)) == pytest.approx(0.0, abs=1e-9)
  assert train.learning_rate(_optim(), 100, 10) == 1e-2
  with pytest.raises(ValueError, match="Unknown optim.schedule 'step'"):
    train.learning_rate(_optim(schedule='step'), 100, 10)


def test_smoothing_and_mixup_steps_train_and_differ_from_the_plain_step():
  plain_state, plain = train.make_train_step()(_state(), _batch(), jax.random.key(1))
  smooth_state, smooth = train.make_train_step(label_smoothing=0.2)(_state(), _batch(), jax.random.key(1))
  mixed_state, mixed = train.make_train_step(mixup_alpha=0.4)(_state(), _batch(), jax.random.key(1))
  for m in (smooth, mixed):
    assert bool(m['finite']) and float(m['loss_ce']) != pytest.approx(float(plain['loss_ce']))
  again = train.make_train_step(mixup_alpha=0.4)(_state(), _batch(), jax.random.key(1))[1]
  assert float(again['loss']) == float(mixed['loss'])  # the key fixes the mixing


def test_evaluation_averages_the_probabilities_of_the_time_windows():
  from emojax import loader
  rng = np.random.default_rng(1)
  source = [{'audio': rng.normal(size=(6, 9, 1)).astype(np.float32), 'label': np.int64(i % 3)} for i in range(5)]
  split = loader.Split(source, list(range(5)), crop_frames=5, test_crops=2)
  state = train.create_state(_Tiny(), split.example_batch(4), train.make_optimizer(_optim()), jax.random.key(0))
  mesh = train.data_mesh()
  result = train.evaluate(state, split, 4, 3, mesh)
  images = np.stack([s['audio'] for s in source])
  expected = np.mean([train.eval_step(state, {'audio': images[:, :, s:s + 5]}) for s in (0, 4)], axis=0)
  np.testing.assert_allclose(result['probabilities'], expected, rtol=1e-5, atol=1e-6)
  assert result['count'] == 5


def test_evaluation_refuses_non_finite_outputs():
  from emojax import loader
  source = [{'audio': np.full((6, 5, 1), 1e30, np.float32), 'label': np.int64(i % 3)} for i in range(4)]
  split = loader.Split(source, list(range(4)))
  state = _state()
  state = state.replace(params=jax.tree_util.tree_map(lambda p: p * 1e30, state.params))  # finite, overflowing
  with pytest.raises(train.Diverged, match='Non-finite model outputs at evaluation'):
    train.evaluate(state, split, 4, 3, train.data_mesh())

