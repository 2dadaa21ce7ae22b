r"""Training and inference speed of emojax's models against the PyTorch reference networks.

  python -m experiments.benchmark                                  # every model, paper sizes, batch 64
  python -m experiments.benchmark --models=cnn_rnn,video3d --steps=5
  python -m experiments.benchmark --quick                          # tiny shapes: a smoke test in seconds
  python -m experiments.benchmark --layers                         # each paper conv layer, xla vs patches
  python -m experiments.benchmark --layers --xla_flags=--xla_cpu_experimental_onednn_custom_call=true
  python -m experiments.benchmark --settings=xla,patches,xla:bfloat16    # several emojax settings, the fastest shown
  python -m experiments.benchmark --torch_device=cuda                     # GPU: JAX takes it by itself
  python -m experiments.benchmark --nomodel_cases --pipeline_workers=4    # input pipeline and latency only

Each (framework, model) case runs in its own child process, so its peak
memory is its own (the child's RSS high-water mark, `ru_maxrss`, which covers
parameters, optimizer state, activations and the compiler; on a GPU also the
device allocator's peak) and XLA_FLAGS can differ per run. Torch uses as many
threads as XLA's CPU client (every core), and the GPU when --torch_device says
so (by default whenever torch sees one).

Besides the models, two more parts (each in its own child; --nopipeline / --nolatency skip them):
  * input pipeline: samples/s of the Grain training iterator (`emojax.loader`) over the precomputed
    ArrayRecord arrays of the default config (experiments/configs/fusion.py; --quick: its smoke
    variant) with 0 and --pipeline_workers worker processes, and with augmentation on, next to
    the samples/s that config's training step consumes: the input pipeline is the bottleneck
    where it delivers fewer.
  * single-clip inference latency: one real file from ../shared/data (an Emo-DB wav for the audio
    models, a CREMA-D .flv, video and audio track, for video3d and fusion) decoded, turned into
    features by the functions the arrays build uses, and classified by the jitted model at batch 1.
Writes benchmark.json and benchmark.md under --out (after every case, so an interrupted run keeps
what it measured) and prints the tables.
"""
from __future__ import annotations

import glob
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

from emojax import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ('cnn', 'cnn_rnn', 'cnn_lstm', 'video3d', 'fusion')
DTYPES = ('float32', 'bfloat16')
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
# The augmentation of the pipeline's augmented row: every Augment transform on (emojax.loader.Augment).
PIPELINE_AUGMENT = {'top_crop_px': 4, 'rotate_degrees': 5.0, 'freq_masks': 2, 'time_masks': 2, 'mask_width': 6}
# Zen 4/5 and Intel AVX-512 server cores: two 512-bit FMA pipes, 16 float32 lanes, 2 FLOPs per FMA.
FLOPS_PER_CYCLE_PER_CORE = 2 * 16 * 2

_MODELS = flags.DEFINE_list('models', list(MODELS), 'Models to time.')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Training batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed training steps (after one warm-up step).')
_OUT = flags.DEFINE_string('out', 'benchmarks', 'Folder for benchmark.json and benchmark.md.')
_QUICK = flags.DEFINE_bool('quick', False, 'Tiny shapes and batch: checks the harness, times nothing useful.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch reference (skipped when torch is absent).')
_LAYERS = flags.DEFINE_bool('layers', False, 'Time each paper conv layer (forward + backward) instead.')
_LAYER_NAMES = flags.DEFINE_list('layer_names', list(PAPER_LAYERS), 'With --layers: the layers to time.')
_LAYER_IMPLS = flags.DEFINE_list(
    'layer_impls', ['xla', 'patches', 'patches:2', 'fft', 'fold2d', 'fold2d+patches', 'fold2d+patches:2', 'native'],
    "With --layers: the fastconv impls to time ('A+B': output and input gradient by A, kernel gradient by B; "
    "fold2d only for the 3D layers).")
# The defaults of the run configs and the model classes.
_CONV_IMPL = flags.DEFINE_string('conv_impl', 'fast', "Passed to get_model as conv_impl ('fast', 'native', "
                                 "'fft', 'fold2d', 'patches', 'patches:<fold>', 'xla' or 'A+B').")
_POOL_IMPL = flags.DEFINE_string('pool_impl', 'fast', "Passed to get_model as pool_impl ('fast', 'native', 'slices' or 'xla').")
_DTYPE = flags.DEFINE_enum('dtype', 'float32', list(DTYPES), 'Compute dtype (layers; models: '
                           'passed to get_model as dtype when not float32).')
_XLA_FLAGS = flags.DEFINE_string('xla_flags', '', 'XLA_FLAGS for the JAX children.')
_SETTINGS = flags.DEFINE_list(
    'settings', [], "emojax settings to time, each conv_impl[/pool_impl][:dtype] (e.g. 'fast', 'xla/xla', "
    "'patches/xla', 'fast:bfloat16'; pool_impl default 'fast'); the table shows the fastest per model and lists "
    'them all. Empty: the one of --conv_impl, --pool_impl and --dtype.')
_TORCH_DEVICE = flags.DEFINE_enum('torch_device', 'auto', ['auto', 'cpu', 'cuda'],
                                  "Device of the torch reference; 'auto': cuda when torch sees a GPU.")
_FLOPS = flags.DEFINE_bool('flops', True, "Count a step's FLOPs (XLA cost analysis; one more compilation).")
_MODEL_CASES = flags.DEFINE_bool('model_cases', True, 'Time the models (--nomodel_cases: only the pipeline and '
                                 'latency parts).')
_PIPELINE = flags.DEFINE_bool('pipeline', True, 'Time the Grain input pipeline against the training step.')
_PIPELINE_WORKERS = flags.DEFINE_integer('pipeline_workers', 2, 'Grain worker processes of the pipeline rows '
                                         'with workers (config field data.num_workers).')
_PIPELINE_EPOCHS = flags.DEFINE_integer('pipeline_epochs', 2, 'Epochs read per pipeline row (median reported).')
_DATA_DIR = flags.DEFINE_string('data_dir', '', 'Where the pipeline part builds/finds its arrays (default: '
                                "the config's data.data_dir, 'data').")
_LATENCY = flags.DEFINE_bool('latency', True, 'Time single-clip inference: decode + features + model.')
_SHARED_DATA = flags.DEFINE_string('shared_data', os.path.join(ROOT, '..', 'shared', 'data'),
                                   'The real recordings the latency part reads (see its README).')
_WORKER = flags.DEFINE_string('worker', '', 'Internal: run one case (framework:model) and print its JSON.')


def usable_cores() -> int:
  """The cores this process may run on (a `taskset` narrows them; os.cpu_count() counts the machine's)."""
  return len(os.sched_getaffinity(0))


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


def _setting_kwargs() -> dict[str, Any]:
  """The model options --conv_impl, --pool_impl and --dtype set (those left empty or float32 keep the default)."""
  kwargs = {}
  if _CONV_IMPL.value:
    kwargs['conv_impl'] = _CONV_IMPL.value
  if _POOL_IMPL.value:
    kwargs['pool_impl'] = _POOL_IMPL.value
  if _DTYPE.value != 'float32':
    kwargs['dtype'] = _DTYPE.value
  return kwargs


def _model_kwargs(name: str, quick: bool) -> dict[str, Any]:
  kwargs = _setting_kwargs()
  if quick and _recurrent(name):
    kwargs['rnn_hidden'] = 8
  return kwargs


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost).get('flops', 0.0))


def _step_flops(name: str, quick: bool, state, batch, rng) -> float:
  """XLA's FLOP count of one training step of the straightforward model (lax.conv, nn.max_pool).

  These are the direct convolution's FLOPs whatever the setting: the FFT does
  far fewer, and the 'patches' convolutions run in a loop over batch chunks,
  whose body XLA's cost analysis counts once. So "% of peak" compares settings
  on the same work: the direct model's FLOPs over the step's time.
  """
  import jax

  from emojax import models, train

  kwargs = {**_model_kwargs(name, quick), 'conv_impl': 'xla', 'pool_impl': 'xla'}
  model = models.get_model(name, num_classes=NUM_CLASSES, **kwargs)
  step = train.make_train_step()
  return _flops(step.lower(state.replace(apply_fn=model.apply), batch, rng).compile())


_COMPILES: list[str] = []  # every XLA compilation of a jitted `step` in this process, once counted


def _count_compiles() -> list[str]:
  """Starts (once per process) recording every XLA compilation of a jitted `step` in `_COMPILES`."""
  import logging

  import jax

  class _CountCompiles(logging.Handler):

    def emit(self, record):
      if 'Finished XLA compilation of jit(step)' in record.getMessage():
        _COMPILES.append(record.getMessage())

  logger = logging.getLogger('jax')
  if not any(type(h).__name__ == '_CountCompiles' for h in logger.handlers):
    jax.config.update('jax_log_compiles', True)
    logger.addHandler(_CountCompiles())
    logger.setLevel(logging.DEBUG)
  return _COMPILES


def _device_peak_mb() -> float | None:
  """Peak bytes of JAX's allocator on the first device (GPU/TPU); None where it keeps no statistics (CPU)."""
  import jax

  stats = jax.local_devices()[0].memory_stats() or {}
  return stats['peak_bytes_in_use'] / 2 ** 20 if 'peak_bytes_in_use' in stats else None


def _time_flax_step(model, batch: dict[str, Any], steps: int, optim=None) -> dict[str, Any]:
  """Compile time, then the median of `steps` training steps after one warm-up, on a device-resident batch.

  Returns the figures and the final train state (under 'state').
  """
  import jax
  import ml_collections

  from emojax import train

  compiles = _count_compiles()
  optim = optim or ml_collections.ConfigDict({'learning_rate': 1e-4, 'weight_decay': 0.01, 'max_grad_norm': 0.0})
  state = train.create_state(model, batch, train.make_optimizer(optim), jax.random.key(0))
  step = train.make_train_step()
  device_batch = jax.device_put(batch)
  rng = jax.random.key(1)
  compiles_before = len(compiles)

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
  batch_size = len(batch['label'])
  return {'samples_per_s': batch_size / step_s, 'step_s': step_s, 'step_times_s': times, 'compile_s': compile_s,
          'compilations_total': len(compiles) - compiles_before,
          'compilations_timed_steps': len(compiles) - compiles_before_timing,
          'jit_cache_size': step._cache_size(), 'state': state, 'device_batch': device_batch, 'rng': rng}


def _flax_case(name: str, shapes, batch_size: int, steps: int, quick: bool) -> dict[str, Any]:
  """Compile time, XLA FLOPs, training samples/s, compilations and batch-1 latency of one Flax model."""
  import jax

  from emojax import models, train

  model = models.get_model(name, num_classes=NUM_CLASSES, **_model_kwargs(name, quick))
  batch = _numpy_batch(shapes, model_inputs_of(name), batch_size)
  timed = _time_flax_step(model, batch, steps)
  state = timed.pop('state')
  device_batch, rng = timed.pop('device_batch'), timed.pop('rng')
  # compiles once more, after the count
  flops = _step_flops(name, quick, state, device_batch, rng) if _FLOPS.value else None

  variables = {'params': state.params, **({'batch_stats': state.batch_stats} if state.batch_stats is not None else {})}
  forward = jax.jit(lambda v, x: model.apply(v, train.model_inputs(x), train=False))
  one = {k: v[:1] for k, v in batch.items() if k != 'label'}
  jax.block_until_ready(forward(variables, one))
  latency_s, _ = _median_time(lambda: jax.block_until_ready(forward(variables, one)), max(steps, 5))
  return {
      'framework': 'emojax', 'model': name, 'setting': setting_name(), **timed, 'flops_per_step': flops,
      # `compilations_*` count XLA compilations of the step (jax_log_compiles); jit's cache may hold one
      # more trace entry (the first state differs from later ones in commitment/weak types) than that.
      'latency_ms': latency_s * 1e3, 'peak_rss_mb': _peak_rss_mb(), 'device_peak_mb': _device_peak_mb(),
      'device': _jax_device(), 'xla_flags': os.environ.get('XLA_FLAGS', ''),
      # None: XLA's default, which on NVIDIA GPUs lets float32 convolutions and matmuls use TF32.
      'matmul_precision': jax.config.jax_default_matmul_precision,
      'model_kwargs': _model_kwargs(name, quick), 'threads': usable_cores()}


def setting_name(conv_impl: str = '', pool_impl: str = '', dtype: str = '') -> str:
  """'conv_impl/pool_impl:dtype' of an emojax setting (default: --conv_impl, --pool_impl and --dtype)."""
  return f"{conv_impl or _CONV_IMPL.value}/{pool_impl or _POOL_IMPL.value}:{dtype or _DTYPE.value}"


def _jax_device() -> str:
  import jax

  device = jax.local_devices()[0]
  return f'{device.platform}: {device.device_kind}'


def _torch_device() -> str:
  import torch

  if _TORCH_DEVICE.value == 'auto':
    return 'cuda' if torch.cuda.is_available() else 'cpu'
  return _TORCH_DEVICE.value


def _torch_case(name: str, shapes, batch_size: int, steps: int, quick: bool, channels_last: bool) -> dict[str, Any]:
  """The same figures for the PyTorch reference network (eager), on --torch_device."""
  import torch

  from experiments import torch_reference

  torch.set_num_threads(usable_cores())
  torch.manual_seed(0)
  device = _torch_device()
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  kwargs = {'rnn_hidden': 8} if quick and _recurrent(name) else {}
  if 'audio' in model_inputs_of(name):
    kwargs['audio_shape'] = shapes['audio']
  if 'video' in model_inputs_of(name):
    kwargs['video_shape'] = shapes['video']
  model = torch_reference.get_model(name, num_classes=NUM_CLASSES, **kwargs).to(device)
  batch = {k: torch.from_numpy(v) for k, v in _numpy_batch(shapes, model_inputs_of(name), batch_size).items()}
  # .to keeps the memory format (channels_last strides survive the move).
  inputs = {k: v.to(device) for k, v in torch_reference.model_inputs(batch, channels_last=channels_last).items()}
  if channels_last:
    model = torch_reference.to_channels_last(model)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  labels = batch['label'].long().to(device)

  def one_step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    loss.backward()
    optimizer.step()
    sync()

  model.train()
  start = time.perf_counter()
  one_step()  # warm-up: allocator and oneDNN/cuDNN primitive caches
  warmup_s = time.perf_counter() - start
  step_s, times = _median_time(one_step, steps)
  model.eval()
  one = {k: v[:1] for k, v in inputs.items()}

  def forward():
    model(one)
    sync()

  with torch.inference_mode():
    forward()
    latency_s, _ = _median_time(forward, max(steps, 5))
  device_peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else None
  return {
      'framework': 'torch_channels_last' if channels_last else 'torch', 'model': name,
      'samples_per_s': batch_size / step_s, 'step_s': step_s, 'step_times_s': times, 'warmup_s': warmup_s,
      'latency_ms': latency_s * 1e3, 'peak_rss_mb': _peak_rss_mb(), 'device_peak_mb': device_peak,
      'device': device + (f': {torch.cuda.get_device_name()}' if device == 'cuda' else ''),
      'cudnn_tf32': torch.backends.cudnn.allow_tf32, 'matmul_tf32': torch.backends.cuda.matmul.allow_tf32,
      'torch_version': torch.__version__, 'threads': torch.get_num_threads()}


def _layer_cases(batch_size: int, steps: int, dtype: str) -> list[dict[str, Any]]:
  """Forward + backward of each paper conv layer in every fastconv impl (and torch when installed)."""
  import jax
  import jax.numpy as jnp
  from jax import lax

  from emojax.models import fastconv

  results = []
  for layer in _LAYER_NAMES.value:
    shape, kernel, features, pads = PAPER_LAYERS[layer]
    x = jax.random.normal(jax.random.key(0), (batch_size, *shape), dtype)
    w = jax.random.normal(jax.random.key(1), (*kernel, shape[-1], features), dtype) * 0.05
    spatial = 'DHW'[3 - len(kernel):]
    dn = lax.conv_dimension_numbers(x.shape, w.shape, (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C'))
    first = shape[-1] == 3  # the first layer needs no input gradient
    for impl in _LAYER_IMPLS.value:
      if 'fold2d' in impl and len(kernel) != 3:
        continue
      conv = fastconv.conv_function(impl)

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

  torch.set_num_threads(usable_cores())
  results = []
  for layer in _LAYER_NAMES.value:
    shape, kernel, features, pads = PAPER_LAYERS[layer]
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


def _median_of(rows: list[dict[str, Any]], key: str) -> float | None:
  values = [r[key] for r in rows if r.get(key) is not None]
  return statistics.median(values) if values else None


def _pipeline_case(quick: bool, steps: int) -> dict[str, Any]:
  """Samples/s of the Grain training iterator over the default config's arrays, with 0 and
  --pipeline_workers workers, with augmentation off and on; and the samples/s that config's
  training step consumes (same model, batch and shapes; batch already on the device)."""
  import dataclasses

  from emojax import loader, models
  from experiments.configs import fusion

  variant = 'smoke' if quick else None
  config = fusion.get_config(variant)
  if _DATA_DIR.value:
    config.data.data_dir = _DATA_DIR.value
  config.model.update(_setting_kwargs())
  start = time.perf_counter()
  data = loader.load_data(config)  # builds the arrays on first use (minutes at the default size)
  load_s = time.perf_counter() - start
  batch_size = config.train.batch_size
  workers = _PIPELINE_WORKERS.value
  cases = [(0, False), (workers, False), (0, True), (workers, True)]
  rows = []
  for num_workers, augment in dict.fromkeys(cases):
    split = dataclasses.replace(data.train, num_workers=num_workers,
                                augment=loader.Augment(**(PIPELINE_AUGMENT if augment else {})))
    epochs = []
    for epoch in range(_PIPELINE_EPOCHS.value):
      # A new iterator per epoch, as the training loop makes: worker processes start afresh each time.
      start = time.perf_counter()
      iterator = split.train_batches(batch_size, seed=config.seed, epoch=epoch)
      first = next(iterator)
      first_s = time.perf_counter() - start
      rest = 0
      for batch in iterator:
        rest += len(batch['label'])
      epoch_s = time.perf_counter() - start
      del iterator
      count = len(first['label']) + rest
      epochs.append({'samples': count, 'epoch_s': epoch_s, 'first_batch_s': first_s,
                     'samples_per_s': count / epoch_s,
                     'steady_samples_per_s': rest / (epoch_s - first_s) if rest else None})
    rows.append({'num_workers': num_workers, 'augment': augment,
                 'samples_per_s': _median_of(epochs, 'samples_per_s'),
                 'steady_samples_per_s': _median_of(epochs, 'steady_samples_per_s'),
                 'first_batch_s': _median_of(epochs, 'first_batch_s'), 'epochs': epochs})
    print(json.dumps({k: v for k, v in rows[-1].items() if k != 'epochs'}), file=sys.stderr, flush=True)

  model = models.get_model(config.model.name, num_classes=len(data.class_names), **models.options(config.model))
  timed = _time_flax_step(model, data.train.example_batch(batch_size), steps)
  step = {k: v for k, v in timed.items() if k not in ('state', 'device_batch', 'rng')}
  consumed = step['samples_per_s']
  for row in rows:
    row['pipeline_over_step'] = row['samples_per_s'] / consumed
    row['bottleneck'] = row['samples_per_s'] < consumed
  shapes = {k: list(v.shape[1:]) for k, v in data.train.example_batch(1).items() if k != 'label'}
  return {'config': 'configs/fusion.py' + (':smoke' if quick else ''), 'train_examples': len(data.train),
          'batch_size': batch_size, 'shapes': shapes,
          'load_data_s': load_s, 'augment': PIPELINE_AUGMENT, 'rows': rows,
          'train_step': {**step, 'model': config.model.name, 'model_options': dict(models.options(config.model)),
                         'device': _jax_device(), 'device_peak_mb': _device_peak_mb()},
          'cpu_count': usable_cores()}


def latency_sources(root: str) -> dict[str, str] | str:
  """The real files the latency part reads ({'wav': ..., 'flv': ...}), or why there are none."""
  wavs = sorted(glob.glob(os.path.join(root, 'emodb', 'wav', '*.wav')))
  flvs = sorted(glob.glob(os.path.join(root, 'crema-d-sample', 'VideoFlash', '*.flv')))
  if not wavs or not flvs:
    return (f'no real recordings at {os.path.abspath(root)} (needs emodb/wav/*.wav and '
            'crema-d-sample/VideoFlash/*.flv; see ../shared/data/README.md): latency not measured')
  return {'wav': wavs[0], 'flv': flvs[0]}


def _latency_case(names: list[str], quick: bool, steps: int) -> dict[str, Any]:
  """Single-clip inference, end to end, for each model: decode one real file, compute its features
  with the functions the arrays build uses (`emojax.arrays.audio_features`, `emojax.video.video_clip`,
  the first 3-s clip as variant ds2 makes it), classify it with the jitted model at batch 1."""
  import functools

  import jax
  import numpy as np
  import threadpoolctl

  from emojax import arrays, audio, models, train, video

  sources = latency_sources(_SHARED_DATA.value)
  if isinstance(sources, str):
    return {'skipped': sources}
  shapes = QUICK_SHAPES if quick else PAPER_SHAPES
  spec = arrays.FeatureSpec(variant='ds2', frontend='faithful' if shapes['audio'][-1] == 3 else 'native',
                            audio_size=tuple(shapes['audio'][:2]), video_frames=shapes['video'][0],
                            video_size=tuple(shapes['video'][1:3]), video_crop='fixed')
  repeats = max(steps, 5)
  results = []
  for name in names:
    inputs = model_inputs_of(name)
    path = sources['flv' if 'video' in inputs else 'wav']

    def decode(inputs=inputs, path=path):
      """As the corpus readers load: soundfile for a wav, the container's audio track for a .flv."""
      decoded = {}
      if 'audio' in inputs:
        decoded['audio'] = video.decode_audio_track(path) if path.endswith('.flv') else audio.load_waveform(path)
      if 'video' in inputs:
        decoded['video'] = video.decode_video(path)
      return decoded

    def features(decoded):
      """As `arrays.utterance_examples` makes clip 0 (one BLAS thread, as `arrays.build`)."""
      out = {}
      with threadpoolctl.threadpool_limits(limits=1, user_api='blas'):
        if 'audio' in decoded:
          wave, sr = decoded['audio']
          clip = audio.clip_waveform(wave, sr, seconds=spec.clip_seconds, rng=np.random.default_rng(0))[0]
          out['audio'] = arrays.audio_features(clip, sr, spec)
        if 'video' in decoded:
          frames, fps = decoded['video']
          out['video'], _ = video.video_clip(arrays.clip_frames(frames, fps, 0, spec.clip_seconds), n_frames=spec.video_frames, size=spec.video_size,
                                             crop=spec.video_crop)
      return {k: v[None] for k, v in out.items()}

    model = models.get_model(name, num_classes=NUM_CLASSES, **_model_kwargs(name, quick))
    example = features(decode())
    variables = jax.jit(functools.partial(model.init, train=False))(
        {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, train.model_inputs(example))
    forward = jax.jit(lambda v, x, model=model: model.apply(v, train.model_inputs(x), train=False))
    classify = lambda x, forward=forward, variables=variables: int(np.argmax(forward(variables, x)))  # noqa: E731
    classify(example)  # compile
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      decoded = decode()
      t1 = time.perf_counter()
      batch = features(decoded)
      t2 = time.perf_counter()
      classify(batch)
      t3 = time.perf_counter()
      times.append({'decode_ms': (t1 - t0) * 1e3, 'features_ms': (t2 - t1) * 1e3, 'model_ms': (t3 - t2) * 1e3,
                    'total_ms': (t3 - t0) * 1e3})
    results.append({'model': name, 'source': os.path.relpath(path, _SHARED_DATA.value),
                    **{k: _median_of(times, k) for k in times[0]},
                    'feature_shapes': {k: list(v.shape[1:]) for k, v in batch.items()},
                    'setting': setting_name(), 'model_kwargs': _model_kwargs(name, quick), 'repeats': repeats})
  return {'spec': {'variant': spec.variant, 'frontend': spec.frontend, 'audio_size': list(spec.audio_size),
                   'video_frames': spec.video_frames, 'video_size': list(spec.video_size),
                   'video_crop': spec.video_crop},
          'device': _jax_device(), 'models': results}


def measured_peak_flops() -> float:
  """FLOP/s of XLA's best case on this machine: a large float32 matmul (best of 5)."""
  import jax
  import jax.numpy as jnp

  n = 2048 if jax.default_backend() == 'cpu' else 8192
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda a: a @ a)
  jax.block_until_ready(matmul(a))
  best = min(_median_time(lambda: jax.block_until_ready(matmul(a)), 1)[0] for _ in range(5))
  return 2 * n ** 3 / best


def _peak_case() -> dict[str, Any]:
  """In a child, so that the parent never takes an accelerator (nor its memory) from the cases."""
  import jax

  return {'measured_peak_flops': measured_peak_flops(), 'jax_device': _jax_device(), 'jax_version': jax.__version__}


def machine() -> dict[str, Any]:
  """CPU model, cores, nominal clock, and the theoretical float32 peak at that clock."""
  info = {'cpu': platform.processor() or platform.machine(), 'cores': usable_cores(), 'nominal_ghz': None,
          # the allocator setting every child (emojax and torch alike) inherits: see emojax/host.py
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')}
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


def _run_worker(case: str, quick: bool, setting: tuple[str, str, str] | None = None,
                flops: bool = True) -> dict[str, Any]:
  """Runs one case in a child process; returns its JSON (or the error it printed).

  setting: (conv_impl, pool_impl, dtype) for the emojax children; default --conv_impl, --pool_impl, --dtype.
  """
  conv_impl, pool_impl, dtype = setting or (_CONV_IMPL.value, _POOL_IMPL.value, _DTYPE.value)
  argv = [sys.executable, '-m', 'experiments.benchmark', f'--worker={case}', f'--batch_size={_BATCH.value}',
          f'--steps={_STEPS.value}', f'--conv_impl={conv_impl}', f'--pool_impl={pool_impl}', f'--dtype={dtype}',
          '--quick' if quick else '--noquick', '--flops' if flops else '--noflops',
          f'--models={",".join(_MODELS.value)}', f'--torch_device={_TORCH_DEVICE.value}',
          f'--pipeline_workers={_PIPELINE_WORKERS.value}', f'--pipeline_epochs={_PIPELINE_EPOCHS.value}',
          f'--data_dir={_DATA_DIR.value}', f'--shared_data={_SHARED_DATA.value}',
          f'--layer_names={",".join(_LAYER_NAMES.value)}', f'--layer_impls={",".join(_LAYER_IMPLS.value)}']
  env = dict(os.environ)
  if _XLA_FLAGS.value:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + _XLA_FLAGS.value).strip()
  proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  framework, _, model = case.partition(':')
  errors = [line for line in proc.stderr.splitlines() if 'Error' in line] or ['no traceback']
  return {'framework': framework, 'model': model, 'stderr_tail': proc.stderr[-3000:],
          'error': f'exit status {proc.returncode} (-9: killed, e.g. out of memory): {errors[-1][:300]}'}


def parse_setting(text: str) -> tuple[str, str, str]:
  """'fast' -> ('fast', 'fast', 'float32'); 'xla/xla:bfloat16' -> ('xla', 'xla', 'bfloat16');
  'fold2d+patches:2' -> ('fold2d+patches:2', 'fast', 'float32') (a ':' that names no dtype is the impl's)."""
  from emojax.models import fastconv

  impls, dtype = text, 'float32'
  for name in DTYPES:
    if text.endswith(':' + name):
      impls, dtype = text[:-len(name) - 1], name
  conv_impl, _, pool_impl = impls.partition('/')
  pool_impl = pool_impl or 'fast'
  try:
    fastconv.layer_impls(conv_impl, ())
  except ValueError as error:
    raise app.UsageError(f'Setting {text!r}: {error}') from None
  if pool_impl not in fastconv.POOL_IMPLS:
    raise app.UsageError(f"Setting {text!r} is not conv_impl[/pool_impl][:dtype] with pool_impl among "
                         f"{fastconv.POOL_IMPLS} and dtype among {DTYPES}.")
  return conv_impl, pool_impl, dtype


def _fmt(value, spec):
  return format(value, spec) if isinstance(value, (int, float)) else '-'


def best_emojax(results: list[dict[str, Any]], name: str) -> dict[str, Any]:
  """The fastest emojax setting of a model (an error row when none ran)."""
  rows = [r for r in results if r.get('framework') == 'emojax' and r.get('model') == name]
  timed = [r for r in rows if r.get('samples_per_s')]
  return max(timed, key=lambda r: r['samples_per_s']) if timed else (rows[0] if rows else {})


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
  """One row per model: emojax (its fastest setting) against torch eager and torch channels_last."""
  peak = info.get('measured_peak_flops')
  accelerator = not str(info.get('jax_device', 'cpu')).startswith('cpu')
  lines = [
      f"Machine: {info['cpu']}, {info['cores']} cores; JAX device {info.get('jax_device', '-')} "
      f"(jax {info.get('jax_version', '-')}), torch device {info.get('torch_device') or '-'}; batch "
      f"{info['batch_size']}, shapes {info['shapes']}; XLA float32 matmul peak {_fmt(peak and peak / 1e9, '.0f')} "
      f"GFLOP/s" + ('' if accelerator else ', theoretical at nominal clock '
                    f"{_fmt(info.get('theoretical_peak_flops') and info['theoretical_peak_flops'] / 1e9, '.0f')} "
                    'GFLOP/s') + f"; GLIBC_TUNABLES={info.get('glibc_tunables') or 'none'} (both frameworks).",
      '',
      '| model | emojax samples/s | torch | torch channels_last | ratio vs torch | ratio vs channels_last | '
      'emojax setting (conv_impl/pool_impl:dtype) | compile s | compilations (total / in timed steps) | '
      'GFLOP/step (direct conv) | % of matmul peak | peak RSS MB (emojax / torch) | '
      + ('device peak MB (emojax / torch) | ' if accelerator else '') + 'batch-1 latency ms (emojax / torch) |',
      '|' + '---|' * (13 + accelerator)]
  by = {(r['framework'], r['model']): r for r in results if r.get('framework') != 'emojax'}
  for name in info['models']:
    jx = best_emojax(results, name)
    pt, cl = (by.get((f, name), {}) for f in ('torch', 'torch_channels_last'))
    ratio = lambda other: (jx.get('samples_per_s', 0) / other['samples_per_s']  # noqa: E731
                           if other.get('samples_per_s') and jx.get('samples_per_s') else None)
    # The step's FLOPs do not depend on the setting; they are counted with the first one.
    flops = next((r['flops_per_step'] for r in [jx, *results] if r.get('framework') == 'emojax'
                  and r.get('model') == name and r.get('flops_per_step')), None)
    fraction = flops / jx['step_s'] / peak * 100 if peak and flops and jx.get('step_s') else None
    device_cell = (f"{_fmt(jx.get('device_peak_mb'), '.0f')} / {_fmt(pt.get('device_peak_mb'), '.0f')} | "
                   if accelerator else '')
    lines.append(
        f"| {name}{' (error: ' + jx['error'] + ')' if 'error' in jx else ''} | {_fmt(jx.get('samples_per_s'), '.1f')} "
        f"| {_fmt(pt.get('samples_per_s'), '.1f')} | {_fmt(cl.get('samples_per_s'), '.1f')} "
        f"| {_fmt(ratio(pt), '.2f')} | {_fmt(ratio(cl), '.2f')} | {jx.get('setting', '-')} "
        f"| {_fmt(jx.get('compile_s'), '.1f')} "
        f"| {jx.get('compilations_total', '-')} / {jx.get('compilations_timed_steps', '-')} "
        f"| {_fmt(flops and flops / 1e9, '.0f')} | {_fmt(fraction, '.1f')} "
        f"| {_fmt(jx.get('peak_rss_mb'), '.0f')} / {_fmt(pt.get('peak_rss_mb'), '.0f')} | {device_cell}"
        f"{_fmt(jx.get('latency_ms'), '.1f')} / {_fmt(pt.get('latency_ms'), '.1f')} |")
  settings = list(dict.fromkeys(r['setting'] for r in results if r.get('framework') == 'emojax' and 'setting' in r))
  if len(settings) > 1:
    lines += ['', 'emojax training samples/s per setting (conv_impl/pool_impl:dtype):', '',
              '| model | ' + ' | '.join(settings) + ' |', '|' + '---|' * (len(settings) + 1)]
    rows = {(r['model'], r.get('setting')): r for r in results if r.get('framework') == 'emojax'}
    for name in info['models']:
      cells = []
      for s in settings:
        row = rows.get((name, s), {})
        cells.append('error' if 'error' in row else _fmt(row.get('samples_per_s'), '.1f'))
      lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  errors = [r for r in results if 'error' in r]
  if errors:
    lines += ['', 'Errors: ' + '; '.join(f"{r['framework']}:{r['model']}: {r['error']}" for r in errors)]
  return '\n'.join(lines) + '\n'


def pipeline_markdown(pipeline: dict[str, Any]) -> str:
  if 'error' in pipeline:
    return f"Input pipeline: error: {pipeline['error']}\n"
  step = pipeline['train_step']
  lines = [
      f"Input pipeline (Grain `train_batches` over the ArrayRecord arrays) of {pipeline['config']}: "
      f"{pipeline['train_examples']} training examples, batch {pipeline['batch_size']}, shapes "
      f"{pipeline['shapes']}; {pipeline['cpu_count']} CPU cores. Its training step ({step['model']}, "
      f"{step['model_options'].get('conv_impl')}/{step['model_options'].get('pool_impl')}:"
      f"{step['model_options'].get('dtype')}, on {step['device']}) "
      f"consumes {step['samples_per_s']:.1f} samples/s. An epoch starts a new iterator (and new workers), "
      'as training does.', '',
      '| workers | augment | samples/s (whole epoch) | after the first batch | first batch s | '
      'training step samples/s | pipeline / step | pipeline the bottleneck? |',
      '|' + '---|' * 8]
  for row in pipeline['rows']:
    lines.append(
        f"| {row['num_workers']} | {'on' if row['augment'] else 'off'} | {_fmt(row['samples_per_s'], '.1f')} "
        f"| {_fmt(row['steady_samples_per_s'], '.1f')} | {_fmt(row['first_batch_s'], '.2f')} "
        f"| {step['samples_per_s']:.1f} | {_fmt(row['pipeline_over_step'], '.2f')} "
        f"| {'yes' if row['bottleneck'] else 'no'} |")
  return '\n'.join(lines) + '\n'


def latency_markdown(latency: dict[str, Any]) -> str:
  if 'skipped' in latency:
    return f"Single-clip latency: skipped: {latency['skipped']}\n"
  if 'error' in latency:
    return f"Single-clip latency: error: {latency['error']}\n"
  spec = latency['spec']
  lines = [f"Single-clip inference (median of {latency['models'][0]['repeats'] if latency['models'] else '-'}): "
           f"decode one real file, features as the arrays build makes them ({spec['variant']}, {spec['frontend']} "
           f"audio {spec['audio_size']}, {spec['video_frames']} frames of {spec['video_size']}, "
           f"{spec['video_crop']} crop), then the jitted model at batch 1 on {latency['device']}.", '',
           '| model | file | decode ms | features ms | model ms | total ms |', '|' + '---|' * 6]
  for row in latency['models']:
    lines.append(f"| {row['model']} | {row['source']} | {row['decode_ms']:.1f} | {row['features_ms']:.1f} "
                 f"| {row['model_ms']:.1f} | {row['total_ms']:.1f} |")
  return '\n'.join(lines) + '\n'


def layers_markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
  impls = list(dict.fromkeys(r['impl'] for r in results))
  lines = [f"Conv layer forward + backward, batch {info['batch_size']}, {info['dtype']}, ms per step "
           f"(XLA_FLAGS={info['xla_flags'] or 'none'}, GLIBC_TUNABLES={info.get('glibc_tunables') or 'none'}); "
           f"{info['cpu']}, {info['cores']} cores.", '',
           '| layer | ' + ' | '.join(impls) + ' | fastest emojax | its GFLOP/s (direct-conv FLOPs) |',
           '|' + '---|' * (len(impls) + 3)]
  for layer in dict.fromkeys(r['layer'] for r in results):
    row = {r['impl']: r for r in results if r['layer'] == layer}
    ours = [r for r in row.values() if not r['impl'].startswith('torch') and r.get('ms')]
    best = min(ours, key=lambda r: r['ms']) if ours else {}
    direct = row.get('xla', {}).get('flops')
    rate = direct / best['ms'] * 1e3 / 1e9 if direct and best else None
    lines.append(f'| {layer} | ' + ' | '.join(_fmt(row.get(i, {}).get('ms'), '.1f') for i in impls)
                 + f" | {best.get('impl', '-')} | {_fmt(rate, '.0f')} |")
  return '\n'.join(lines) + '\n'


def _write(stem: str, document: dict[str, Any], table: str) -> None:
  """benchmark.json/.md (or layers.*) under --out, replaced whole (a reader never sees half a file)."""
  for ext, text in (('json', json.dumps(document, indent=1)), ('md', table)):
    path = os.path.join(_OUT.value, f'{stem}.{ext}')
    with open(path + '.tmp', 'w') as f:
      f.write(text)
    os.replace(path + '.tmp', path)


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
    elif framework == 'peak':
      result = _peak_case()
    elif framework == 'pipeline':
      result = _pipeline_case(quick, steps)
    elif framework == 'latency':
      result = _latency_case(list(_MODELS.value), quick, steps)
    else:
      result = _torch_case(name, shapes, batch_size, steps, quick, channels_last=framework == 'torch_channels_last')
    print(json.dumps(result))
    return

  unknown = set(_MODELS.value) - set(MODELS)
  if unknown:
    raise app.UsageError(f'Unknown models {sorted(unknown)}; expected among {MODELS}.')
  settings = [parse_setting(s) for s in _SETTINGS.value] or [(_CONV_IMPL.value, _POOL_IMPL.value, _DTYPE.value)]
  torch_device = None
  try:
    import torch  # pylint: disable=import-outside-toplevel
    have_torch = _TORCH.value
    if have_torch:
      torch_device = _torch_device()
      if torch_device == 'cuda' and not torch.cuda.is_available():
        raise app.UsageError('--torch_device=cuda, but torch sees no GPU.')
  except ImportError:
    have_torch = False
    print('torch is not installed: timing emojax only (pip install torch==2.13.0 for the CPU build).')
  peak = _run_worker('peak:', quick)
  info = {**machine(), 'batch_size': batch_size, 'steps': steps, 'shapes': shapes, 'models': list(_MODELS.value),
          'dtype': _DTYPE.value, 'xla_flags': _XLA_FLAGS.value, 'conv_impl': _CONV_IMPL.value or 'model default',
          'pool_impl': _POOL_IMPL.value or 'model default',
          'settings': [setting_name(*s) for s in settings], 'torch_device': torch_device,
          **{k: v for k, v in peak.items() if k in ('measured_peak_flops', 'jax_device', 'jax_version', 'error')}}
  os.makedirs(_OUT.value, exist_ok=True)
  if _LAYERS.value:
    results = _run_worker('layers:', quick).get('cases', [])
    if have_torch and _DTYPE.value == 'float32':
      results += _run_worker('torch_layers:', quick).get('cases', [])
    table = layers_markdown(results, info)
    _write('layers', {'machine': info, 'results': results}, table)
    print(table)
    return

  # Most wanted first (an interrupted run keeps them): every model's first setting and torch, then the
  # other settings, then the input pipeline and the latency.
  cases = []
  for name in _MODELS.value if _MODEL_CASES.value else ():
    cases.append(('emojax', name, settings[0], _FLOPS.value))
    cases += [(f, name, None, False) for f in ('torch', 'torch_channels_last') if have_torch]
  for setting in settings[1:] if _MODEL_CASES.value else ():
    cases += [('emojax', name, setting, False) for name in _MODELS.value]  # FLOPs: the first setting's
  results, document = [], {'machine': info, 'results': []}

  def tables() -> str:
    parts = [markdown(results, info)] if _MODEL_CASES.value else []
    parts += [pipeline_markdown(document['pipeline'])] if 'pipeline' in document else []
    parts += [latency_markdown(document['latency'])] if 'latency' in document else []
    return '\n'.join(parts)

  for framework, name, setting, flops in cases:
    results.append(_run_worker(f'{framework}:{name}', quick, setting=setting, flops=flops))
    if framework == 'emojax':
      results[-1].setdefault('setting', setting_name(*setting))
    document['results'] = results
    print(json.dumps({k: v for k, v in results[-1].items() if k not in ('step_times_s', 'stderr_tail')}), flush=True)
    _write('benchmark', document, tables())
  # The pipeline's training step and the latency's model run with the first setting.
  if _PIPELINE.value:
    document['pipeline'] = _run_worker('pipeline:', quick, setting=settings[0])
    print(pipeline_markdown(document['pipeline']), flush=True)
    _write('benchmark', document, tables())
  if _LATENCY.value:
    document['latency'] = _run_worker('latency:', quick, setting=settings[0])
    print(latency_markdown(document['latency']), flush=True)
    _write('benchmark', document, tables())
  print(tables())


if __name__ == '__main__':
  host.reexec_with_hugepages()
  app.run(main)
