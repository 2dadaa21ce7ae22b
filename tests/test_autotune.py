"""The per-machine kernel plan: the tuner finds every convolution of a network, keeps the fastest candidate
(one of the tested impls), caches the choice per machine, and never changes what the network computes."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from emojax import kernels, models
from emojax.kernels import autotune
from emojax.models.cnn import AUDIO_CONVS
from emojax.models.video3d import VIDEO_CHANNELS

AUDIO = jax.ShapeDtypeStruct((2, 24, 32, 1), jnp.float32)
VIDEO = jax.ShapeDtypeStruct((2, 10, 46, 50, 3), jnp.float32)


def test_the_tracer_finds_each_convolution_of_each_network_in_plan_order():
  convs = autotune.network_convs(models.get_model('fusion', num_classes=4), {'audio': AUDIO, 'video': VIDEO})
  audio = [c for c in convs if c.stream == 'audio']
  video = [c for c in convs if c.stream == 'video']
  assert [c.index for c in audio] == [0, 1, 2] and [c.index for c in video] == [0, 1, 2, 3]
  assert [c.rhs[-1] for c in audio] == [channels for channels, _, _ in AUDIO_CONVS]
  assert [c.rhs[:2] for c in audio] == [kernel for _, kernel, _ in AUDIO_CONVS]
  assert [c.padding for c in audio] == [tuple((p, p) for p in pad) for _, _, pad in AUDIO_CONVS]
  assert [c.rhs[-1] for c in video] == list(VIDEO_CHANNELS)
  assert audio[0].lhs == AUDIO.shape and video[0].lhs == VIDEO.shape
  assert audio[1].lhs == (2, 12, 16, 16)  # after conv 1 (same size) and the 2x2 pool
  assert not audio[0].needs_input_gradient and video[1].needs_input_gradient
  only_audio = autotune.network_convs(models.get_model('cnn_lstm', num_classes=4), {'audio': AUDIO})
  assert [c.stream for c in only_audio] == ['audio'] * 3


def _fake_steps(monkeypatch, cost):
  """Candidates whose step takes cost[impl] seconds per sample, (fixed, per sample) seconds, or
  cost[impl](batch) seconds, on a clock that reads exactly that (no compilation, no other load's noise):
  the choice is known."""
  timed = []

  def compiled_step(impl, conv, batch, training):
    timed.append((impl, batch))
    if callable(cost[impl]):
      return lambda: cost[impl](batch)
    fixed, per_sample = cost[impl] if isinstance(cost[impl], tuple) else (0.0, cost[impl])
    return lambda: fixed + per_sample * batch

  monkeypatch.setattr(autotune, '_compiled_step', compiled_step)
  monkeypatch.setattr(autotune, '_seconds', lambda run: run())
  return timed


def test_the_fastest_candidate_is_kept_and_big_layers_time_only_the_close_ones_at_full_batch(monkeypatch):
  [_, conv, _] = autotune.network_convs(models.get_model('cnn', num_classes=4), {'audio': AUDIO})
  timed = _fake_steps(monkeypatch, {'native': 0.004, 'fft': 0.001, 'xla': 0.03, 'patches': 0.0015})
  result = autotune.time_layer(conv, ('native', 'fft', 'xla', 'patches'), training=True, budget_s=30)
  assert result['impl'] == 'fft' and set(result['ms']) == {'native', 'fft', 'xla', 'patches'}
  assert result['probe_ms'] == {}  # a small layer: every candidate at the run's batch

  big = conv.__class__(**{**conv.__dict__, 'lhs': (64, 200, 300, 16)})  # over PROBE_FLOPS
  assert autotune.step_flops(big, True) > autotune.PROBE_FLOPS
  timed.clear()
  result = autotune.time_layer(big, ('native', 'fft', 'xla', 'patches'), training=True, budget_s=30)
  for probe_batch in autotune.PROBE_BATCHES:
    assert {impl for impl, batch in timed if batch == probe_batch} == {'native', 'fft', 'xla', 'patches'}
  full = {impl for impl, batch in timed if batch == 64}
  assert full == {'fft', 'patches'}  # the two best predictions; native (4x) and xla (30x) are far behind
  assert result['impl'] == 'fft'


def test_the_probe_predicts_the_full_batch_from_two_batches(monkeypatch):
  """An impl with a fixed cost per call (the FFT's kernel transforms) loses at the probe batches and wins at
  the run's: the prediction keeps it."""
  [_, conv, _] = autotune.network_convs(models.get_model('cnn', num_classes=4), {'audio': AUDIO})
  big = conv.__class__(**{**conv.__dict__, 'lhs': (64, 200, 300, 16)})
  timed = _fake_steps(monkeypatch, {'fft': (0.05, 0.001), 'native': 0.004})
  result = autotune.time_layer(big, ('native', 'fft'), training=True, budget_s=30)
  assert result['probe_ms']['fft'][0] > 2 * result['probe_ms']['native'][0]  # one probe batch alone would have dropped the FFT
  # predicted at 64: fft 0.114 s, native 0.256 s (over PROBE_MARGIN x the FFT's, but timed there: one of
  # the two best predictions)
  assert {impl for impl, batch in timed if batch == 64} == {'fft', 'native'} and result['impl'] == 'fft'


def test_a_flat_probe_line_does_not_hide_the_second_best_prediction(monkeypatch):
  """The FFT of the first audio layer on the AVX2 EPYC: about as slow at batch 2 as at 4 (its fixed costs and
  the probes' noise), 22 ms a sample at 64. Its line predicted 67 ms at batch 64, 13x below native's."""
  [_, conv, _] = autotune.network_convs(models.get_model('cnn', num_classes=4), {'audio': AUDIO})
  big = conv.__class__(**{**conv.__dict__, 'lhs': (64, 200, 300, 16)})
  timed = _fake_steps(monkeypatch, {'fft': lambda batch: 0.07 if batch <= 4 else 0.022 * batch,
                                    'native': 0.0155})
  result = autotune.time_layer(big, ('native', 'fft'), training=True, budget_s=30)
  assert {impl for impl, batch in timed if batch == 64} == {'fft', 'native'}
  assert result['impl'] == 'native'  # 0.99 s against 1.41 s measured


def test_a_big_layer_times_its_two_best_predictions_even_when_the_probes_spent_its_budget(monkeypatch):
  [_, conv, _] = autotune.network_convs(models.get_model('cnn', num_classes=4), {'audio': AUDIO})
  big = conv.__class__(**{**conv.__dict__, 'lhs': (64, 200, 300, 16)})
  # native slows down past the probe batches (its rows fall out of cache): the probes under-predict it
  timed = _fake_steps(monkeypatch, {'native': lambda batch: (0.02 if batch <= 4 else 0.025) * batch,
                                    'fft': (0.2, 0.018), 'xla': 0.05})
  clock = [0.0]  # advances by each fake step's seconds

  def run_on_clock(run):
    clock[0] += run()
    return run()

  monkeypatch.setattr(autotune, '_seconds', run_on_clock)
  monkeypatch.setattr(autotune.time, 'perf_counter', lambda: clock[0])
  # the probes take 0.73 s of clock: the budget is spent before the run's batch
  result = autotune.time_layer(big, ('native', 'fft', 'xla'), training=True, budget_s=0.5)
  # predicted at 64: native 1.28 s, fft 1.35 s (xla, over the budget, probed at batch 2 only: 3.2 s);
  # measured: native 1.6 s, fft 1.35 s
  assert [impl for impl, batch in timed if batch == 64] == ['native', 'fft']
  assert result['impl'] == 'fft'


def test_an_impl_that_cannot_take_a_convolution_is_skipped_with_its_reason():
  [conv, *_] = autotune.network_convs(models.get_model('cnn', num_classes=4), {'audio': AUDIO})
  result = autotune.time_layer(conv, ('fold2d', 'xla'), training=False, budget_s=30)  # fold2d: 3D only
  assert result['impl'] == 'xla' and set(result['ms']) == {'xla'} and 'ValueError' in result['errors']['fold2d']
  with pytest.raises(RuntimeError, match='No convolution impl runs'):
    autotune.time_layer(conv, ('fold2d',), training=False, budget_s=30)


def test_tuned_plans_are_cached_per_machine_and_read_back_without_timing(tmp_path, monkeypatch):
  path = tmp_path / 'autotune.json'
  model = models.get_model('fusion', num_classes=4)
  inputs = {'audio': AUDIO, 'video': VIDEO}
  plan = autotune.tune(model, inputs, min_flops=0, budget_s=20, path=path)
  cache = json.loads(path.read_text())
  [entry] = cache.values()
  assert entry['machine'] == autotune.machine() and len(entry['layers']) == 7
  for stream in ('audio', 'video'):
    for impl in getattr(plan, stream):
      kernels.conv_function(impl)  # one of the tested impls
  for layer in entry['layers'].values():
    assert layer['impl'] in layer['ms'] and layer['ms'][layer['impl']] == min(layer['ms'].values())
  assert 'timed now' in plan.origin and plan.pool == model.plan.pool

  def no_timing(*args, **kwargs):
    raise AssertionError('timed a cached layer')

  monkeypatch.setattr(autotune, 'time_layer', no_timing)
  again = autotune.tune(model, inputs, min_flops=0, path=path)
  assert (again.audio, again.video) == (plan.audio, plan.video) and '7 from the cache' in again.origin
  # another machine (or jax, or core count) times its own plan
  monkeypatch.setattr(autotune, 'machine', lambda: {**entry['machine'], 'cores': 99})
  with pytest.raises(AssertionError, match='timed a cached layer'):
    autotune.tune(model, inputs, min_flops=0, path=path)


def test_a_damaged_cache_is_timed_again_and_rewritten(tmp_path):
  path = tmp_path / 'autotune.json'
  path.write_text('{"truncated": ')
  plan = autotune.tune(models.get_model('cnn', num_classes=4), {'audio': AUDIO}, min_flops=0, budget_s=5, path=path)
  assert '3 conv(s) timed now' in plan.origin
  assert len(next(iter(json.loads(path.read_text()).values()))['layers']) == 3


def test_small_convolutions_keep_the_untuned_plan_and_forced_impls_are_not_tuned(tmp_path):
  path = tmp_path / 'autotune.json'
  model = models.get_model('cnn', num_classes=4)
  plan = autotune.tune(model, {'audio': AUDIO}, path=path)  # tiny: every conv under MIN_FLOPS
  assert plan.audio == model.plan.audio and '3 too small to time' in plan.origin
  forced = models.get_model('cnn', num_classes=4, conv_impl='xla', tune_for={'audio': AUDIO})
  assert forced.plan.audio == ('xla',) * 3 and forced.plan.origin == ''


@pytest.mark.parametrize('name', ['cnn_rnn', 'video3d'])
def test_a_tuned_network_computes_the_plain_networks_values_and_gradients(name, tmp_path, monkeypatch):
  monkeypatch.setenv('EMOJAX_CACHE', str(tmp_path))
  monkeypatch.setattr(autotune, 'MIN_FLOPS', 0)
  inputs = {'video': VIDEO} if name == 'video3d' else {'audio': AUDIO}
  tuned = models.get_model(name, num_classes=4, tune_for=inputs)
  plain = models.get_model(name, num_classes=4, conv_impl='xla', pool_impl='xla')
  assert 'timed now' in tuned.plan.origin and str(tmp_path) in tuned.plan.origin
  batch = {k: jax.random.normal(jax.random.key(1), v.shape) for k, v in inputs.items()}
  variables = plain.init(jax.random.key(0), batch, train=False)

  def loss(params, model):
    return jnp.sum(jnp.square(model.apply({**variables, 'params': params}, batch, train=False)))

  for want, got in zip(jax.tree.leaves(jax.value_and_grad(loss)(variables['params'], plain)),
                       jax.tree.leaves(jax.value_and_grad(loss)(variables['params'], tuned))):
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
