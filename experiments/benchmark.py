r"""Training and inference speed of emojax's models against the PyTorch reference networks.

  python -m experiments.benchmark                                  # every model, paper sizes, batch 64
  python -m experiments.benchmark --models=cnn_rnn,video3d --steps=5
  python -m experiments.benchmark --quick                          # tiny shapes: a smoke test in seconds
  python -m experiments.benchmark --layers                         # each paper conv layer, xla vs patches
  python -m experiments.benchmark --layers --xla_flags=--xla_cpu_experimental_onednn_custom_call=true

Each (framework, model) case runs in its own child process, so its peak
memory is its own (the child's RSS high-water mark, `ru_maxrss`, which covers
parameters, optimizer state, activations and the compiler) and XLA_FLAGS can
differ per run. Torch uses as many threads as XLA's CPU client (every core).
Writes benchmark.json and benchmark.md under --out and prints the table.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from absl import app, flags

MODELS = ('cnn', 'cnn_rnn', 'cnn_lstm', 'video3d', 'fusion')
PAPER_SHAPES = {'audio': (200, 300, 3), 'video': (20, 60, 100, 3)}
QUICK_SHAPES = {'audio': (24, 32, 3), 'video': (10, 46, 50, 3)}
NUM_CLASSES = 4
# The paper's convolutions at their real input sizes: (input without batch, kernel, C_out, padding).
PAPER_LAYERS = {
    'audio1': ((200, 300, 3), (12, 16), 16, ((6, 6), (8, 8))),
    'audio2': ((100, 150, 16), (8, 12), 24, ((4, 4), (6, 6))),
    'audio3': ((50, 75, 24), (5, 7), 32, ((2, 2), (3, 3))),
    'video1': ((20, 60, 100, 3), (3, 3, 3), 16, ((0, 0),) * 3),
    'video2': ((18, 28, 48, 16), (3, 3, 3), 32, ((0, 0),) * 3),
    'video3': ((16, 12, 22, 32), (3, 3, 3), 64, ((0, 0),) * 3),
    'video4': ((14, 4, 9, 64), (3, 3, 3), 128, ((0, 0),) * 3),
}
# Zen 4/5 and Intel AVX-512 server cores: two 512-bit FMA pipes, 16 float32 lanes, 2 FLOPs per FMA.
FLOPS_PER_CYCLE_PER_CORE = 2 * 16 * 2

_MODELS = flags.DEFINE_list('models', list(MODELS), 'Models to time.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Training batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed training steps (after one warm-up step).')
_OUT = flags.DEFINE_string('out', 'benchmarks', 'Folder for benchmark.json and benchmark.md.')
_QUICK = flags.DEFINE_bool('quick', False, 'Tiny shapes and batch: checks the harness, times nothing useful.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch reference (skipped when torch is absent).')
_LAYERS = flags.DEFINE_bool('layers', False, 'Time each paper conv layer (forward + backward) instead.')
_CONV_IMPL = flags.DEFINE_string('conv_impl', '', "Passed to get_model as conv_impl ('xla' or 'patches').")
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'], 'Compute dtype (layers; models: '
                           'passed to get_model as dtype when not float32).')
_XLA_FLAGS = flags.DEFINE_string('xla_flags', '', 'XLA_FLAGS for the JAX children.')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: run one case (framework:model) and print its JSON.')


def _median_time(fn, steps: int) -> tuple[float, list[float]]:
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _numpy_batch(shapes: dict[str, tuple[int, ...]], inputs: tuple[str, ...], batch_size: int) -> dict[str, Any]:
  import numpy as np
  rng = np.random.default_rng(0)
  batch = {'label': rng.integers(0, NUM_CLASSES, batch_size).astype(np.int32)}
  if 'audio' in inputs:
    batch['audio'] = rng.standard_normal((batch_size, *shapes['audio'])).astype(np.float32)
  if 'video' in inputs:
    batch['video'] = rng.integers(0, 256, (batch_size, *shapes['video'])).astype(np.uint8)
  return batch


def model_inputs_of(name: str) -> tuple[str, ...]:
  return {'video3d': ('video',), 'fusion': ('audio', 'video')}.get(name, ('audio',))


def _recurrent(name: str) -> bool:
  return name in ('cnn_rnn', 'cnn_lstm', 'fusion')


def _model_kwargs(name: str, quick: bool) -> dict[str, Any]:
  kwargs = {}
  if _CONV_IMPL.value:
    kwargs['conv_impl'] = _CONV_IMPL.value
  if _DTYPE.value != 'float32':
    kwargs['dtype'] = _DTYPE.value
  if quick and _recurrent(name):
    kwargs['rnn_hidden'] = 8
  return kwargs


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', 0.0))


def _step_flops(name: str, quick: bool, state, batch, rng) -> float:
  """XLA's FLOP count of one training step, taken from the model with lax convolutions.

  The 'patches' convolutions run in a loop over batch chunks, whose body XLA's
  cost analysis counts once, so their own count is too low.
  """
  import jax

  from emojax import models, train

  kwargs = {**_model_kwargs(name, quick), 'conv_impl': 'xla'}
  model = models.get_model(name, num_classes=NUM_CLASSES, **kwargs)
  step = train.make_train_step()
  return _flops(step.lower(state.replace(apply_fn=model.apply), batch, rng).compile())


def _flax_case(name: str, shapes, batch_size: int, steps: int, quick: bool) -> dict[str, Any]:
  """Compile time, XLA FLOPs, training samples/s, compilations and batch-1 latency of one Flax model."""
  import logging

  import jax
  import ml_collections

  from emojax import models, train

  compiles = []

  class _CountCompiles(logging.Handler):

    def emit(self, record):
      if 'Finished XLA compilation of jit(step)' in record.getMessage():
        compiles.append(record.getMessage())

  jax.config.update('jax_log_compiles', True)
  logging.getLogger('jax').addHandler(_CountCompiles())
  logging.getLogger('jax').setLevel(logging.DEBUG)

  model = models.get_model(name, num_classes=NUM_CLASSES, **_model_kwargs(name, quick))
  batch = _numpy_batch(shapes, model_inputs_of(name), batch_size)
  optim = ml_collections.ConfigDict({'learning_rate': 1e-4, 'weight_decay': 0.01, 'max_grad_norm': 0.0})
  state = train.create_state(model, batch, train.make_optimizer(optim), jax.random.key(0))
  step = train.make_train_step()
  device_batch = jax.device_put(batch)
  rng = jax.random.key(1)

  start = time.perf_counter()
  compiled = step.lower(state, device_batch, rng).compile()
  compile_s = time.perf_counter() - start
  del compiled

  state, metrics = step(state, device_batch, jax.random.fold_in(rng, 0))  # warm-up
  jax.block_until_ready(metrics)
  compiles_before_timing = len(compiles)
  counter = iter(range(1, steps + 1))

  def one_step():
    nonlocal state
    state, m = step(state, device_batch, jax.random.fold_in(rng, next(counter)))
    jax.block_until_ready(m)

  step_s, times = _median_time(one_step, steps)
  compiles_timed = len(compiles) - compiles_before_timing
  compiles_total = len(compiles)
  flops = _step_flops(name, quick, state, device_batch, rng)  # compiles once more: after the count

  variables = {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats is not None else {})}
  forward = jax.jit(lambda v, x: model.apply(v, train.model_inputs(x), train=False))
  one = {k: v[:1] for k, v in batch.items() if k != 'label'}
  jax.block_until_ready(forward(variables, one))
  latency_s, _ = _median_time(lambda: jax.block_until_ready(forward(variables, one)), max(steps, 5))
  return {
      'framework': 'emojax', 'model': name, 'samples_per_s': batch_size / step_s, 'step_s': step_s,
      'step_times_s': times, 'compile_s': compile_s, 'flops_per_step': flops,
      'compilations_total': compiles_total, 'compilations_timed_steps': compiles_timed,
      # `compilations_*` count XLA compilations of the step (jax_log_compiles); jit's cache may hold one
      # more trace entry (the first state differs from later ones in commitment/weak types) than that.
      'jit_cache_size': step._cache_size(), 'latency_ms': latency_s * 1e3, 'peak_rss_mb': _peak_rss_mb(),
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'model_kwargs': _model_kwargs(name, quick),
      'threads': os.cpu_count()}


def _torch_case(name: str, shapes, batch_size: int, steps: int, quick: bool, channels_last: bool) -> dict[str, Any]:
  """The same figures for the PyTorch reference network (eager)."""
  import torch

  from experiments import torch_reference

  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  kwargs = {'rnn_hidden': 8} if quick and _recurrent(name) else {}
  if 'audio' in model_inputs_of(name):
    kwargs['audio_shape'] = shapes['audio']
  if 'video' in model_inputs_of(name):
    kwargs['video_shape'] = shapes['video']
  model = torch_reference.get_model(name, num_classes=NUM_CLASSES, **kwargs)
  batch = {k: torch.from_numpy(v) for k, v in _numpy_batch(shapes, model_inputs_of(name), batch_size).items()}
  inputs = torch_reference.model_inputs(batch, channels_last=channels_last)
  if channels_last:
    model = torch_reference.to_channels_last(model)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  labels = batch['label'].long()

  def one_step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    loss.backward()
    optimizer.step()

  model.train()
  start = time.perf_counter()
  one_step()  # warm-up: allocator and oneDNN primitive caches
  warmup_s = time.perf_counter() - start
  step_s, times = _median_time(one_step, steps)
  model.eval()
  one = {k: v[:1] for k, v in inputs.items()}
  with torch.inference_mode():
    model(one)
    latency_s, _ = _median_time(lambda: model(one), max(steps, 5))
  return {
      'framework': 'torch_channels_last' if channels_last else 'torch', 'model': name,
      'samples_per_s': batch_size / step_s, 'step_s': step_s, 'step_times_s': times, 'warmup_s': warmup_s,
      'latency_ms': latency_s * 1e3, 'peak_rss_mb': _peak_rss_mb(), 'threads': torch.get_num_threads()}


def _layer_cases(batch_size: int, steps: int, dtype: str) -> list[dict[str, Any]]:
  """Forward + backward of each paper conv layer: lax.conv vs patches (and torch when installed)."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  from emojax.models import fastconv

  results = []
  for layer, (shape, kernel, features, pads) in PAPER_LAYERS.items():
    x = jax.random.normal(jax.random.key(0), (batch_size, *shape), dtype)
    w = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], features), dtype) * 0.05
    spatial = 'DHW'[3 - len(kernel):]
    dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
    first = shape[-1] == 3  # the first layer needs no input gradient
    for impl in fastconv.IMPLS:
      conv = lax.conv_general_dilated if impl == 'xla' else fastconv.conv_patches

      def loss(x, w, conv=conv):
        y = conv(x, w, (1,) * len(kernel), pads, dimension_numbers=dn)
        return jnp.sum(jnp.square(jax.nn.relu(y.astype(jnp.float32))))

      grad = jax.jit(jax.grad(loss, argnums=1 if first else (0, 1)))
      start = time.perf_counter()
      compiled = grad.lower(x, w).compile()
      compile_s = time.perf_counter() - start
      flops = _flops(compiled)
      jax.block_until_ready(compiled(x, w))
      step_s, _ = _median_time(lambda: jax.block_until_ready(compiled(x, w)), steps)
      results.append({'layer': layer, 'impl': impl, 'dtype': dtype, 'batch': batch_size, 'ms': step_s * 1e3,
                      'samples_per_s': batch_size / step_s, 'compile_s': compile_s, 'flops': flops,
                      'gflops_per_s': flops / step_s / 1e9, 'xla_flags': os.environ.get('XLA_FLAGS', '')})
  return results


def _torch_layer_cases(batch_size: int, steps: int) -> list[dict[str, Any]]:
  import torch

  torch.set_num_threads(os.cpu_count())
  results = []
  for layer, (shape, kernel, features, pads) in PAPER_LAYERS.items():
    conv_cls = torch.nn.Conv2d if len(kernel) == 2 else torch.nn.Conv3d
    for channels_last in (False, True):
      conv = conv_cls(shape[-1], features, kernel, padding=tuple(lo for lo, _ in pads))
      x = torch.randn(batch_size, shape[-1], *shape[:-1])
      if channels_last:
        fmt = torch.channels_last if len(kernel) == 2 else torch.channels_last_3d
        x, conv = x.contiguous(memory_format=fmt), conv.to(memory_format=fmt)
      x.requires_grad_(shape[-1] != 3)

      def step(conv=conv, x=x):
        conv.zero_grad()
        torch.square(torch.relu(conv(x))).sum().backward()

      step()
      step_s, _ = _median_time(step, steps)
      results.append({'layer': layer, 'impl': 'torch_channels_last' if channels_last else 'torch',
                      'dtype': 'float32', 'batch': batch_size, 'ms': step_s * 1e3,
                      'samples_per_s': batch_size / step_s})
  return results


def measured_peak_flops() -> float:
  """FLOP/s of XLA's best case on this machine: a large float32 matmul (best of 5)."""
  import jax
  import jax.numpy as jnp

  n = 2048
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  best = min(_median_time(lambda: jax.block_until_ready(matmul(a)), 1)[0] for _ in range(5))
  return 2 * n ** 3 / best


def machine() -> dict[str, Any]:
  """CPU model, cores, nominal clock, and the theoretical float32 peak at that clock."""
  info = {'cpu': platform.processor() or platform.machine(), 'cores': os.cpu_count(), 'nominal_ghz': None}
  try:
    with open('/proc/cpuinfo') as f:
      lines = f.read().splitlines()
    fields = dict(line.split(':', 1) for line in lines if ':' in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info['cpu'] = fields.get('model name', info['cpu'])
    info['avx512'] = 'avx512f' in fields.get('flags', '')
    info['nominal_ghz'] = float(fields['cpu MHz']) / 1000 if 'cpu MHz' in fields else None
  except OSError:
    pass
  if info['nominal_ghz'] and info.get('avx512'):
    info['theoretical_peak_flops'] = info['cores'] * FLOPS_PER_CYCLE_PER_CORE * info['nominal_ghz'] * 1e9
  return info


def _run_worker(case: str, quick: bool) -> dict[str, Any]:
  """Runs one case in a child process; returns its JSON (or the error it printed)."""
  argv = [sys.executable, '-m', 'experiments.benchmark', f'--worker={case}', f'--batch_size={_BATCH.value}',
          f'--steps={_STEPS.value}', f'--conv_impl={_CONV_IMPL.value}', f'--dtype={_DTYPE.value}',
          '--quick' if quick else '--noquick']
  env = dict(os.environ)
  if _XLA_FLAGS.value:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + _XLA_FLAGS.value).strip()
  proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  framework, _, model = case.partition(':')
  errors = [line for line in proc.stderr.splitlines() if 'Error' in line] or ['no traceback']
  return {'framework': framework, 'model': model,
          'error': f'exit status {proc.returncode} (-9: killed, e.g. out of memory): {errors[-1][:300]}'}


def _fmt(value, spec):
  return format(value, spec) if isinstance(value, (int, float)) else '-'


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
  """One row per model: emojax against torch eager and torch channels_last."""
  peak = info.get('measured_peak_flops')
  lines = [
      f"Machine: {info['cpu']}, {info['cores']} cores; batch {info['batch_size']}, shapes {info['shapes']}; "
      f"XLA matmul peak {_fmt(peak and peak / 1e9, '.0f')} GFLOP/s, theoretical at nominal clock "
      f"{_fmt(info.get('theoretical_peak_flops') and info['theoretical_peak_flops'] / 1e9, '.0f')} GFLOP/s.",
      '',
      '| model | emojax samples/s | torch | torch channels_last | ratio vs torch | ratio vs channels_last | '
      'compile s | compilations (total / in timed steps) | GFLOP/step | % of matmul peak | peak RSS MB '
      '(emojax / torch) | batch-1 latency ms (emojax / torch) |',
      '|' + '---|' * 12]
  by = {(r['framework'], r['model']): r for r in results}
  for name in info['models']:
    jx, pt, cl = (by.get((f, name), {}) for f in ('emojax', 'torch', 'torch_channels_last'))
    ratio = lambda other: (jx.get('samples_per_s', 0) / other['samples_per_s']  # noqa: E731
                           if other.get('samples_per_s') and jx.get('samples_per_s') else None)
    fraction = (jx['flops_per_step'] / jx['step_s'] / peak * 100) if peak and jx.get('flops_per_step') else None
    lines.append(
        f"| {name}{' (error: ' + jx['error'] + ')' if 'error' in jx else ''} | {_fmt(jx.get('samples_per_s'), '.1f')} "
        f"| {_fmt(pt.get('samples_per_s'), '.1f')} | {_fmt(cl.get('samples_per_s'), '.1f')} "
        f"| {_fmt(ratio(pt), '.2f')} | {_fmt(ratio(cl), '.2f')} | {_fmt(jx.get('compile_s'), '.1f')} "
        f"| {jx.get('compilations_total', '-')} / {jx.get('compilations_timed_steps', '-')} "
        f"| {_fmt(jx.get('flops_per_step') and jx['flops_per_step'] / 1e9, '.0f')} | {_fmt(fraction, '.1f')} "
        f"| {_fmt(jx.get('peak_rss_mb'), '.0f')} / {_fmt(pt.get('peak_rss_mb'), '.0f')} "
        f"| {_fmt(jx.get('latency_ms'), '.1f')} / {_fmt(pt.get('latency_ms'), '.1f')} |")
  return '\n'.join(lines) + '\n'


def layers_markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
  impls = list(dict.fromkeys(r['impl'] for r in results))
  lines = [f"Conv layer forward + backward, batch {info['batch_size']}, {info['dtype']}, ms per step "
           f"(XLA_FLAGS={info['xla_flags'] or 'none'}); {info['cpu']}, {info['cores']} cores.", '',
           '| layer | ' + ' | '.join(impls) + ' | patches GFLOP/s |', '|' + '---|' * (len(impls) + 2)]
  for layer in PAPER_LAYERS:
    row = {r['impl']: r for r in results if r['layer'] == layer}
    lines.append(f'| {layer} | ' + ' | '.join(_fmt(row.get(i, {}).get('ms'), '.1f') for i in impls)
                 + f" | {_fmt(row.get('patches', {}).get('gflops_per_s'), '.0f')} |")
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  quick = _QUICK.value
  shapes = QUICK_SHAPES if quick else PAPER_SHAPES
  batch_size = min(_BATCH.value, 4) if quick else _BATCH.value
  steps = min(_STEPS.value, 2) if quick else _STEPS.value
  if _WORKER.value:
    framework, _, name = _WORKER.value.partition(':')
    if framework == 'emojax':
      result = _flax_case(name, shapes, batch_size, steps, quick)
    elif framework == 'layers':
      result = {'cases': _layer_cases(batch_size, steps, _DTYPE.value), 'xla_flags': os.environ.get('XLA_FLAGS', '')}
    elif framework == 'torch_layers':
      result = {'cases': _torch_layer_cases(batch_size, steps)}
    else:
      result = _torch_case(name, shapes, batch_size, steps, quick, channels_last=framework == 'torch_channels_last')
    print(json.dumps(result))
    return

  unknown = set(_MODELS.value) - set(MODELS)
  if unknown:
    raise app.UsageError(f'Unknown models {sorted(unknown)}; expected among {MODELS}.')
  try:
    import torch  # noqa: F401  pylint: disable=unused-import
    have_torch = _TORCH.value
  except ImportError:
    have_torch = False
    print('torch is not installed: timing emojax only (pip install torch==2.13.0 for the CPU build).')
  info = {**machine(), 'batch_size': batch_size, 'steps': steps, 'shapes': shapes, 'models': list(_MODELS.value),
          'dtype': _DTYPE.value, 'xla_flags': _XLA_FLAGS.value, 'conv_impl': _CONV_IMPL.value or 'model default',
          'measured_peak_flops': measured_peak_flops()}
  os.makedirs(_OUT.value, exist_ok=True)
  if _LAYERS.value:
    results = _run_worker('layers:', quick).get('cases', [])
    if have_torch and _DTYPE.value == 'float32':
      results += _run_worker('torch_layers:', quick).get('cases', [])
    table, stem = layers_markdown(results, info), 'layers'
  else:
    results = []
    for name in _MODELS.value:
      frameworks = ['emojax'] + (['torch', 'torch_channels_last'] if have_torch else [])
      for framework in frameworks:
        results.append(_run_worker(f'{framework}:{name}', quick))
        print(json.dumps({k: v for k, v in results[-1].items() if k != 'step_times_s'}), flush=True)
    table, stem = markdown(results, info), 'benchmark'
  with open(os.path.join(_OUT.value, f'{stem}.json'), 'w') as f:
    json.dump({'machine': info, 'results': results}, f, indent=1)
  with open(os.path.join(_OUT.value, f'{stem}.md'), 'w') as f:
    f.write(table)
  print(table)


if __name__ == '__main__':
  app.run(main)
