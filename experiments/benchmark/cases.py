"""The emojax cases: one model in one setting (conv_impl/pool_impl:dtype), its jitted AdamW training
step (compile time, compilations, XLA FLOPs, samples/s, peak memory) and batch-1 latency."""
from __future__ import annotations

from collections.abc import Iterator
import contextlib
import os
import time
from typing import Any

import flax.linen as nn
import jax
import ml_collections

from emojax import models, train
from experiments.benchmark import common, machine

OPTIMIZER = ml_collections.ConfigDict({'learning_rate': 1e-4, 'weight_decay': 0.01, 'max_grad_norm': 0.0,
                                       'schedule': 'constant', 'warmup_epochs': 0.0})
# The jax.monitoring event of each XLA compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT); its
# `fun_name` is 'jit(<function name>)'.
BACKEND_COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


@contextlib.contextmanager
def compilations(name: str) -> Iterator[list[float]]:
  """While open, collects the duration of every XLA compilation of the jitted function `name`."""
  seen = []

  def listener(event: str, duration: float, **kwargs):
    if event == BACKEND_COMPILE_EVENT and kwargs.get('fun_name') == f'jit({name})':
      seen.append(duration)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def setting_kwargs(setting: tuple[str, str, str]) -> dict[str, Any]:
  """get_model's options for a setting (an empty conv_impl or pool_impl, and float32, keep the default)."""
  conv_impl, pool_impl, dtype = setting
  kwargs = {k: v for k, v in (('conv_impl', conv_impl), ('pool_impl', pool_impl)) if v}
  if dtype != 'float32':
    kwargs['dtype'] = dtype
  return kwargs


def model_kwargs(name: str, setting: tuple[str, str, str], quick: bool) -> dict[str, Any]:
  """get_model's options for the model `name` in a setting."""
  return {**setting_kwargs(setting), **(common.quick_kwargs(models.FIELDS[name]) if quick else {})}


def xla_flops(compiled) -> float:
  """XLA's cost analysis of a compiled function: its FLOPs."""
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', 0.0))


def time_train_step(model: nn.Module, batch: dict[str, Any], steps: int) -> tuple[dict[str, Any], Any, Any, Any]:
  """Compile time, then the median of `steps` training steps after one warm-up, on a device-resident batch,
  and the compilations of the step meanwhile.

  Returns the figures, and the final train state, the device batch and the rng.
  """
  state = train.create_state(model, batch, train.make_optimizer(OPTIMIZER), jax.random.key(0))
  step = train.make_train_step()
  device_batch = jax.device_put(batch)
  rng = jax.random.key(1)
  with compilations(step.__name__) as compiled:
    start = time.perf_counter()
    step.lower(state, device_batch, rng).compile()
    compile_s = time.perf_counter() - start
    state, metrics = step(state, device_batch, jax.random.fold_in(rng, 0))  # warm-up
    jax.block_until_ready(metrics)
    before_timing = len(compiled)
    counter = iter(range(1, steps + 1))

    def one_step():
      nonlocal state
      state, m = step(state, device_batch, jax.random.fold_in(rng, next(counter)))
      jax.block_until_ready(m)

    step_s, times = common.median_time(one_step, steps)
  figures = {'samples_per_s': len(batch['label']) / step_s, 'step_s': step_s, 'step_times_s': times,
             'compile_s': compile_s, 'compilations_total': len(compiled),
             'compilations_timed_steps': len(compiled) - before_timing}
  return figures, state, device_batch, rng


def step_flops(name: str, kwargs: dict[str, Any], state, batch, rng) -> float:
  """XLA's FLOP count of one training step of the plain model (lax.conv, nn.max_pool).

  These are the direct convolution's FLOPs whatever the setting: the FFT does
  far fewer, and the 'patches' convolutions run in a loop over batch chunks,
  whose body XLA's cost analysis counts once. So "% of peak" compares settings
  on the same work: the direct model's FLOPs over the step's time.
  """
  model = models.get_model(name, num_classes=common.NUM_CLASSES, **{**kwargs, 'conv_impl': 'xla', 'pool_impl': 'xla'})
  step = train.make_train_step()
  return xla_flops(step.lower(state.replace(apply_fn=model.apply), batch, rng).compile())


def _batches(name: str, shapes: dict[str, tuple[int, ...]], batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
  """A training batch of the model's inputs, and the batch-1 inputs of the latency column."""
  batch = common.numpy_batch(shapes, models.INPUTS[name], batch_size)
  return batch, {k: v[:1] for k, v in batch.items() if k != 'label'}


def tuned_models(name: str, kwargs: dict[str, Any], batch: dict[str, Any],
                 one: dict[str, Any]) -> tuple[nn.Module, nn.Module, float, float]:
  """The model for the training `batch` and for the batch-1 forward on `one`, each with its kernel plan
  autotuned (or read from the cache), and the seconds each plan took."""
  start = time.perf_counter()
  model = models.get_model(name, num_classes=common.NUM_CLASSES, **kwargs, tune_for=train.input_structs(batch))
  middle = time.perf_counter()
  one_model = models.get_model(name, num_classes=common.NUM_CLASSES, **kwargs, tune_for=train.input_structs(one),
                               training=False)
  return model, one_model, middle - start, time.perf_counter() - middle


def tune_case(name: str, setting: tuple[str, str, str], shapes: dict[str, tuple[int, ...]], batch_size: int, *,
              quick: bool) -> dict[str, Any]:
  """The model's kernel plans, training step and batch-1 forward, autotuned (or read from the cache) in this
  process, before the model case: a run tunes once per machine, so the candidates' buffers stay out of the
  model case's peak memory, and the cost of tuning is reported on its own."""
  model, one_model, train_s, one_s = tuned_models(name, model_kwargs(name, setting, quick),
                                                  *_batches(name, shapes, batch_size))
  return {'framework': 'emojax_tune', 'model': name, 'setting': common.setting_name(*setting),
          'autotune_s': train_s, 'autotune_batch1_s': one_s, 'peak_rss_mb': common.peak_rss_mb(),
          'kernel_plan': model.plan.describe(), 'latency_kernel_plan': one_model.plan.describe()}


def model_case(name: str, setting: tuple[str, str, str], shapes: dict[str, tuple[int, ...]], batch_size: int,
               steps: int, *, quick: bool, count_flops: bool) -> dict[str, Any]:
  """Compile time, XLA FLOPs, training samples/s, compilations, peak memory and batch-1 latency of one model."""
  kwargs = model_kwargs(name, setting, quick)
  batch, one = _batches(name, shapes, batch_size)
  # ~0 s after tune_case: the plans are in the cache
  model, one_model, autotune_s, _ = tuned_models(name, kwargs, batch, one)
  figures, state, device_batch, rng = time_train_step(model, batch, steps)

  variables = {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats is not None else {})}
  forward = jax.jit(lambda v, x: one_model.apply(v, train.model_inputs(x), train=False))
  jax.block_until_ready(forward(variables, one))
  latency_s, _ = common.median_time(lambda: jax.block_until_ready(forward(variables, one)), max(steps, 5))
  # A training run's high-water mark: imports, init, compilation, the steps (and the small batch-1 forward),
  # not the FLOP count's extra compilation below.
  peak_rss_mb = common.peak_rss_mb()
  flops = step_flops(name, kwargs, state, device_batch, rng) if count_flops else None
  return {
      'framework': 'emojax', 'model': name, 'setting': common.setting_name(*setting), **figures,
      'flops_per_step': flops, 'latency_ms': latency_s * 1e3, 'peak_rss_mb': peak_rss_mb,
      'device_peak_mb': machine.device_peak_mb(), 'device': machine.jax_device(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      # None: XLA's default, which on NVIDIA GPUs lets float32 convolutions and matmuls use TF32.
      'matmul_precision': jax.config.jax_default_matmul_precision,
      'model_kwargs': kwargs, 'kernel_plan': model.plan.describe(), 'latency_kernel_plan': one_model.plan.describe(),
      'model_setup_s': autotune_s, 'threads': common.usable_cores()}
