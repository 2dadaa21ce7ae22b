"""The benchmark's flags and its parent process.

Each part (an emojax or torch model case, the layers, the peak, the pipeline, the latency) runs in its
own child process, this command again with `--worker=<part>` and the parent's flags: its peak memory
is its own (the child's RSS high-water mark, `ru_maxrss`, which covers parameters, optimizer state,
activations and the compiler; on a GPU also the device allocator's peak) and XLA_FLAGS can differ per
run. The parent writes benchmark.json and benchmark.md (--layers: layers.*) under --out after every
part, so an interrupted run keeps what it measured, and prints the tables.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from absl import app, flags

from experiments.benchmark import common, report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FLAGS = flags.FLAGS

_MODELS = flags.DEFINE_list('models', [], 'Models to time (default: every model of emojax.models).')
_BATCH = flags.DEFINE_integer('batch_size', 64, 'Training batch size.')
_STEPS = flags.DEFINE_integer('steps', 5, 'Timed training steps (after one warm-up step).')
_OUT = flags.DEFINE_string('out', 'benchmarks', 'Folder for benchmark.json and benchmark.md.')
_QUICK = flags.DEFINE_bool('quick', False, 'Tiny shapes and batch: checks the harness, times nothing useful.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also time the PyTorch twin (skipped when torch is absent).')
_LAYERS = flags.DEFINE_bool('layers', False, 'Time each paper conv layer (forward + backward) instead.')
_LAYER_NAMES = flags.DEFINE_list('layer_names', list(common.PAPER_LAYERS), 'With --layers: the layers to time.')
_LAYER_IMPLS = flags.DEFINE_list(
    'layer_impls', ['xla', 'patches', 'patches:2', 'fft', 'fold2d', 'fold2d+patches', 'fold2d+patches:2', 'native'],
    "With --layers: the emojax.kernels convolution impls to time ('A+B': output and input gradient by A, "
    'kernel gradient by B; fold2d only for the 3D layers).')
# The defaults of the run configs and of get_model.
_CONV_IMPL = flags.DEFINE_string('conv_impl', 'fast', "Passed to get_model as conv_impl ('fast', 'native', "
                                 "'fft', 'fold2d', 'patches', 'patches:<fold>', 'xla' or 'A+B').")
_POOL_IMPL = flags.DEFINE_string('pool_impl', 'fast', "Passed to get_model as pool_impl ('fast', 'native', "
                                 "'slices' or 'xla').")
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'Compute dtype, a name of emojax.models.DTYPES (layers; '
                             'models: passed to get_model as dtype when not float32).')
_XLA_FLAGS = flags.DEFINE_string('xla_flags', '', 'XLA_FLAGS for the JAX children.')
_SETTINGS = flags.DEFINE_list(
    'settings', [], "emojax settings to time, each conv_impl[/pool_impl][:dtype] (e.g. 'fast', 'xla/xla', "
    "'patches/xla', 'fast:bfloat16'; pool_impl default 'fast'); the table shows the fastest per model and lists "
    'them all. Empty: the one of --conv_impl, --pool_impl and --dtype.')
_TORCH_DEVICE = flags.DEFINE_enum('torch_device', 'auto', ['auto', 'cpu', 'cuda'],
                                  "Device of the torch twin; 'auto': cuda when torch sees a GPU.")
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
_WORKER = flags.DEFINE_string('worker', '', 'Internal: run one part (tune:<model>, emojax:<model>, torch:<model>, '
                              'torch_channels_last:<model>, layers, torch_layers, peak, pipeline or latency) '
                              'and print its JSON.')
_TORCH_NETWORK = flags.DEFINE_string('torch_network', '{}', 'Internal: the network of a torch child, JSON '
                                     '{"inputs": [...], "kwargs": {...}} as emojax.models says (the torch '
                                     'children import no JAX).')


def sizes() -> tuple[dict[str, tuple[int, ...]], int, int]:
  """Shapes, batch size and timed steps (--quick: tiny)."""
  if _QUICK.value:
    return common.QUICK_SHAPES, min(_BATCH.value, 4), min(_STEPS.value, 2)
  return common.PAPER_SHAPES, _BATCH.value, _STEPS.value


def model_names() -> list[str]:
  from emojax import models

  return _MODELS.value or list(models.MODELS)


def parse_setting(text: str) -> tuple[str, str, str]:
  """'fast' -> ('fast', 'fast', 'float32'); 'xla/xla:bfloat16' -> ('xla', 'xla', 'bfloat16');
  'fold2d+patches:2' -> ('fold2d+patches:2', 'fast', 'float32') (a ':' that names no dtype is the impl's)."""
  from emojax import kernels, models

  impls, dtype = text, 'float32'
  for name in models.DTYPES:
    if text.endswith(':' + name):
      impls, dtype = text[:-len(name) - 1], name
  conv_impl, _, pool_impl = impls.partition('/')
  pool_impl = pool_impl or 'fast'
  try:
    kernels.check(conv_impl, pool_impl)
  except ValueError as error:
    raise app.UsageError(f'Setting {text!r} is not conv_impl[/pool_impl][:dtype] (dtype among '
                         f'{tuple(models.DTYPES)}): {error}') from None
  return conv_impl, pool_impl, dtype


def run_worker(part: str, **overrides: Any) -> dict[str, Any]:
  """Runs one part in a child process: this command with every flag of this module as the parent has it,
  `--worker=part` and `overrides` replacing some. Returns the child's JSON (or the error it printed)."""
  overrides = {'worker': part, **overrides}
  forwarded = [flag.serialize() for flag in FLAGS.get_flags_for_module(__name__) if flag.name not in overrides]
  argv = [sys.executable, '-m', 'experiments.benchmark', *forwarded, *(f'--{k}={v}' for k, v in overrides.items())]
  env = dict(os.environ)
  if _XLA_FLAGS.value:
    env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' ' + _XLA_FLAGS.value).strip()
  proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith('{'):
      return json.loads(line)
  framework, _, model = part.partition(':')
  errors = [line for line in proc.stderr.splitlines() if 'Error' in line] or ['no traceback']
  return {'framework': framework, 'model': model, 'stderr_tail': proc.stderr[-3000:],
          'error': f'exit status {proc.returncode} (-9: killed, e.g. out of memory): {errors[-1][:300]}'}


def work(part: str) -> dict[str, Any]:
  """One part, in this child process. Each imports only what it runs: a torch child imports no JAX."""
  shapes, batch_size, steps = sizes()
  setting = (_CONV_IMPL.value, _POOL_IMPL.value, _DTYPE.value)
  kind, _, name = part.partition(':')
  if kind == 'tune':
    from experiments.benchmark import cases
    return cases.tune_case(name, setting, shapes, batch_size, quick=_QUICK.value)
  if kind == 'emojax':
    from experiments.benchmark import cases
    return cases.model_case(name, setting, shapes, batch_size, steps, quick=_QUICK.value, count_flops=_FLOPS.value)
  if kind in ('torch', 'torch_channels_last'):
    from experiments.benchmark import torch_cases
    network = json.loads(_TORCH_NETWORK.value)
    return torch_cases.model_case(name, network['inputs'], network['kwargs'], shapes, batch_size, steps,
                                  channels_last=kind == 'torch_channels_last',
                                  device=torch_cases.device(_TORCH_DEVICE.value))
  if kind == 'layers':
    from experiments.benchmark import layers
    return {'cases': layers.layer_cases(_LAYER_NAMES.value, _LAYER_IMPLS.value, batch_size, steps, _DTYPE.value),
            'xla_flags': os.environ.get('XLA_FLAGS', '')}
  if kind == 'torch_layers':
    from experiments.benchmark import torch_cases
    return {'cases': torch_cases.layer_cases(_LAYER_NAMES.value, batch_size, steps)}
  if kind == 'peak':
    from experiments.benchmark import machine
    return machine.peak_case()
  if kind == 'pipeline':
    from experiments.benchmark import pipeline
    return pipeline.pipeline_case(setting, quick=_QUICK.value, steps=steps, data_dir=_DATA_DIR.value,
                                  workers=_PIPELINE_WORKERS.value, epochs=_PIPELINE_EPOCHS.value)
  if kind == 'latency':
    from experiments.benchmark import latency
    return latency.latency_case(model_names(), setting, shapes, quick=_QUICK.value, steps=steps,
                                shared_data=_SHARED_DATA.value)
  raise app.UsageError(f'Unknown --worker part {part!r}.')


def _setting_flags(setting: tuple[str, str, str]) -> dict[str, str]:
  """The child flags of an emojax setting."""
  return dict(zip(('conv_impl', 'pool_impl', 'dtype'), setting))


def _torch_device() -> str | None:
  """The torch children's device, None when they do not run (the reason printed)."""
  if not _TORCH.value:
    return None
  try:
    import torch
  except ImportError:
    print("torch is not installed: timing emojax only (pip install -e '.[torch]').")
    return None
  from experiments.benchmark import torch_cases

  device = torch_cases.device(_TORCH_DEVICE.value)
  if device == 'cuda' and not torch.cuda.is_available():
    raise app.UsageError('--torch_device=cuda, but torch sees no GPU.')
  return device


def main(argv):
  del argv
  if _WORKER.value:
    print(json.dumps(work(_WORKER.value)))
    return
  # The parent imports JAX but never starts a backend: the children take the devices.
  from emojax import models
  from experiments.benchmark import machine

  names = model_names()
  unknown = set(names) - set(models.MODELS)
  if unknown:
    raise app.UsageError(f'Unknown models {sorted(unknown)}; expected among {tuple(models.MODELS)}.')
  if _DTYPE.value not in models.DTYPES:
    raise app.UsageError(f'--dtype={_DTYPE.value}: expected one of {tuple(models.DTYPES)}.')
  settings = [parse_setting(s) for s in _SETTINGS.value] or [(_CONV_IMPL.value, _POOL_IMPL.value, _DTYPE.value)]
  torch_device = _torch_device()
  shapes, batch_size, steps = sizes()
  peak = run_worker('peak')
  info = {**machine.describe(), 'batch_size': batch_size, 'steps': steps, 'shapes': shapes, 'models': names,
          'dtype': _DTYPE.value, 'xla_flags': _XLA_FLAGS.value, 'conv_impl': _CONV_IMPL.value or 'model default',
          'pool_impl': _POOL_IMPL.value or 'model default',
          'settings': [common.setting_name(*s) for s in settings], 'torch_device': torch_device,
          **{k: v for k, v in peak.items() if k in ('measured_peak_flops', 'jax_device', 'jax_version', 'error')}}
  os.makedirs(_OUT.value, exist_ok=True)
  if _LAYERS.value:
    results = run_worker('layers').get('cases', [])
    if torch_device and _DTYPE.value == 'float32':
      results += run_worker('torch_layers').get('cases', [])
    table = report.layers_markdown(results, info)
    report.write(_OUT.value, 'layers', {'machine': info, 'results': results}, table)
    print(table)
    return

  # Most wanted first (an interrupted run keeps them): every model's first setting and torch, then the
  # other settings (FLOPs: the first setting's), then the input pipeline and the latency.
  parts = []
  for name in names if _MODEL_CASES.value else ():
    if settings[0][0] == 'fast':  # autotuned: tuning (or reading the cache) in a process of its own
      parts.append(('tune', name, _setting_flags(settings[0])))
    parts.append(('emojax', name, {**_setting_flags(settings[0]), 'flops': _FLOPS.value}))
    network = json.dumps({'inputs': list(models.INPUTS[name]),
                          'kwargs': common.quick_kwargs(models.FIELDS[name]) if _QUICK.value else {}})
    parts += [(f, name, {'torch_network': network}) for f in ('torch', 'torch_channels_last') if torch_device]
  for setting in settings[1:] if _MODEL_CASES.value else ():
    parts += [('emojax', name, {**_setting_flags(setting), 'flops': False}) for name in names]
  results, document = [], {'machine': info, 'results': []}

  def tables() -> str:
    out = [report.markdown(results, info)] if _MODEL_CASES.value else []
    out += [report.pipeline_markdown(document['pipeline'])] if 'pipeline' in document else []
    out += [report.latency_markdown(document['latency'])] if 'latency' in document else []
    return '\n'.join(out)

  for framework, name, overrides in parts:
    results.append(run_worker(f'{framework}:{name}', **overrides))
    if framework in ('tune', 'emojax'):  # an error row names its setting too
      results[-1].setdefault('setting', common.setting_name(
          overrides['conv_impl'], overrides['pool_impl'], overrides['dtype']))
    document['results'] = results
    print(json.dumps({k: v for k, v in results[-1].items() if k not in ('step_times_s', 'stderr_tail')}), flush=True)
    report.write(_OUT.value, 'benchmark', document, tables())
  # The pipeline's training step and the latency's models run in the first setting.
  if _PIPELINE.value:
    document['pipeline'] = run_worker('pipeline', **_setting_flags(settings[0]))
    print(report.pipeline_markdown(document['pipeline']), flush=True)
    report.write(_OUT.value, 'benchmark', document, tables())
  if _LATENCY.value:
    document['latency'] = run_worker('latency', **_setting_flags(settings[0]))
    print(report.latency_markdown(document['latency']), flush=True)
    report.write(_OUT.value, 'benchmark', document, tables())
  print(tables())
