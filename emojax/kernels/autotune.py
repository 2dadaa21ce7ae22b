"""The kernel plan chosen for the machine at hand: each convolution of a network is timed in its candidate
impls at the run's shapes, the fastest is kept, and the choice is cached per machine.

`tune(model, inputs)` finds the network's convolutions by tracing it (their shapes, padding and dtype),
then for each one not in the cache compiles every candidate (forward + backward for training, forward
for inference) and keeps the fastest at the run's batch (best of `REPEATS` calls). A big layer first runs
each candidate once at probe batches of 2 and 4 and times at the run's batch only those whose time there,
predicted from the two, is among the two best or close to the best (an XLA 3D convolution can take seconds
a step on a CPU). A layer stops trying candidates once its share of the budget is spent (its fastest so far
is kept), but a big layer always times its two best predictions at the run's batch.

The cache is a JSON file (`cache_path()`, under $EMOJAX_CACHE, default ~/.cache/emojax), keyed by the CPU
model and instruction-set flags, the usable cores, jax/jaxlib, XLA_FLAGS, whether the native kernels
run and the kernels' source code, then by each layer's shapes: a later run with the same shapes reads its plan without timing anything,
so the plan, and the run's bits, stay fixed. Every candidate is an impl of `plans.conv_function`, all
tested equal to lax.conv (tests/test_kernels.py): the choice changes speed, never the function.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import json
import math
import os
from pathlib import Path
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np

from emojax import host
from emojax.kernels import native, plans

# The impls tried per convolution rank (native only where it runs): each family's best formulations
# (benchmarks/layers*.md measured the rest, never faster).
CANDIDATES = {2: ('native', 'fft', 'xla', 'patches'),
              3: ('native', 'fold2d+patches:2', 'fold2d+patches', 'patches:2', 'xla')}
BUDGET_S = 60.0       # per network, over the layers not in the cache
MIN_FLOPS = 1e8       # layers costing less a step (about a millisecond) keep the untuned plan's impl
PROBE_FLOPS = 2e9     # layers costing more a step (direct-conv FLOPs) are probed at PROBE_BATCHES first
# Two small batches: a straight line through them predicts the run's batch. One batch alone takes a cost
# that does not grow with the batch (the FFT's transforms of the kernel, a call's set-up) for a per-sample
# one and dropped the FFT where it wins at batch 64.
PROBE_BATCHES = (2, 4)
PROBE_MARGIN = 2.0    # candidates predicted slower than this x the best are not timed at the run's batch
REPEATS = 3           # the best of these: the least disturbed by other work on the machine


@dataclasses.dataclass(frozen=True)
class Conv:
  """One convolution of a network as the run computes it."""

  stream: str          # 'audio' (2D) or 'video' (3D)
  index: int           # its place in the stream's plan
  lhs: tuple[int, ...]  # input shape, batch first
  rhs: tuple[int, ...]  # kernel shape
  dtype: str
  padding: tuple[tuple[int, int], ...]
  dimension_numbers: Any

  @property
  def needs_input_gradient(self) -> bool:
    return self.index > 0  # the first conv of a stream reads data

  def key(self, training: bool) -> str:
    mode = ('train' if self.needs_input_gradient else 'train-kernel-only') if training else 'forward'
    return f'{mode} {self.dtype} lhs={list(self.lhs)} rhs={list(self.rhs)} pad={[list(p) for p in self.padding]}'


def cache_path() -> Path:
  return native.cache_dir().parent / 'autotune.json'


def machine() -> dict[str, Any]:
  """What the timings depend on besides the shapes: two machines with equal entries share a plan."""
  cpu = host.cpu_fields()
  # the implementations' own code: a changed kernel is timed again
  sources = hashlib.sha256(b''.join(p.read_bytes() for p in sorted(Path(__file__).parent.glob('*.[pc]*'))))
  return {'cpu': cpu['model name'], 'flags_sha': hashlib.sha256(cpu.get('flags', '').encode()).hexdigest()[:12],
          'kernels_sha': sources.hexdigest()[:12],
          'cores': len(os.sched_getaffinity(0)), 'jax': jax.__version__, 'jaxlib': jax.lib.__version__,
          'xla_flags': os.environ.get('XLA_FLAGS', ''), 'native': native.available()}


def machine_key(info: dict[str, Any]) -> str:
  return hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]


def _conv_eqns(jaxpr) -> Iterator[Any]:
  """The conv_general_dilated equations of a jaxpr in program order, nested calls included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'conv_general_dilated':
      yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, 'jaxpr', sub)
        if hasattr(inner, 'eqns'):
          yield from _conv_eqns(inner)


def network_convs(model: nn.Module, inputs: dict[str, jax.ShapeDtypeStruct]) -> list[Conv]:
  """The convolutions `model` computes on `inputs` (shapes with the batch), in each stream's plan order."""
  plain = model.clone(plan=plans.Plan(pool=model.plan.pool))  # lax.conv everywhere: visible in the jaxpr
  variables = jax.eval_shape(lambda x: plain.init(jax.random.key(0), x, train=False), inputs)
  jaxpr = jax.make_jaxpr(lambda v, x: plain.apply(v, x, train=False))(variables, inputs).jaxpr
  convs, counts = [], {'audio': 0, 'video': 0}
  for eqn in _conv_eqns(jaxpr):
    lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
    stream = {4: 'audio', 5: 'video'}[lhs.ndim]
    convs.append(Conv(stream, counts[stream], tuple(lhs.shape), tuple(rhs.shape), str(lhs.dtype),
                      tuple(map(tuple, eqn.params['padding'])), eqn.params['dimension_numbers']))
    counts[stream] += 1
  for stream in counts:
    if counts[stream] and counts[stream] != len(getattr(model.plan, stream)):
      raise ValueError(f'The network computes {counts[stream]} {stream} convolutions; its plan names '
                       f'{len(getattr(model.plan, stream))}.')
  return convs


def candidates(conv: Conv, native_runs: bool) -> tuple[str, ...]:
  return tuple(i for i in CANDIDATES[len(conv.rhs) - 2] if native_runs or i != 'native')


def _compiled_step(impl: str, conv: Conv, batch: int, training: bool) -> Callable[[], Any]:
  """A compiled forward (+ backward) of `conv` in `impl` at `batch`, ready to call."""
  function = plans.conv_function(impl)
  x = jax.random.normal(jax.random.key(0), (batch, *conv.lhs[1:]), conv.dtype)
  w = jax.random.normal(jax.random.key(1), conv.rhs, conv.dtype) * 0.05
  strides = (1,) * (len(conv.rhs) - 2)

  def output(x, w):
    return function(x, w, strides, conv.padding, dimension_numbers=conv.dimension_numbers)

  if training:
    def loss(x, w):
      return jnp.sum(jnp.square(output(x, w).astype(jnp.float32)))
    step = jax.grad(loss, argnums=(0, 1) if conv.needs_input_gradient else 1)
  else:
    step = output
  compiled = jax.jit(step).lower(x, w).compile()
  return lambda: jax.block_until_ready(compiled(x, w))


def _seconds(run: Callable[[], Any]) -> float:
  start = time.perf_counter()
  run()
  return time.perf_counter() - start


def step_flops(conv: Conv, training: bool) -> float:
  """Direct-convolution FLOPs of one step at the run's batch (the backward pass counted as twice the forward)."""
  rank = len(conv.rhs) - 2
  window, (c_in, c_out) = conv.rhs[:rank], conv.rhs[rank:]
  out = [n + sum(p) - k + 1 for n, p, k in zip(conv.lhs[1:1 + rank], conv.padding, window)]
  forward = 2.0 * conv.lhs[0] * c_in * c_out * math.prod(out + list(window))
  return forward * ((3 if conv.needs_input_gradient else 2) if training else 1)


def _fastest(conv: Conv, impls: tuple[str, ...], batch: int, training: bool, repeats: int, deadline: float,
             errors: dict[str, str], at_least: int = 1) -> dict[str, float]:
  """Seconds per step of each impl at `batch` (best of `repeats` after a warm-up call), until `deadline`
  once `at_least` have been timed."""
  seconds = {}
  for impl in impls:
    if len(seconds) >= at_least and time.perf_counter() > deadline:
      break
    try:
      run = _compiled_step(impl, conv, batch, training)
    except (ValueError, TypeError, native.NativeUnavailable) as error:  # an impl that cannot take this conv
      errors[impl] = f'{type(error).__name__}: {error}'.splitlines()[0]
      continue
    run()  # the first call allocates
    seconds[impl] = min(_seconds(run) for _ in range(repeats))
  return seconds


def time_layer(conv: Conv, impls: tuple[str, ...], *, training: bool, budget_s: float) -> dict[str, Any]:
  """Times `impls` on `conv`: {'impl': the fastest, 'ms': per step at the run's batch, ...}.

  A big layer is first run once per impl at each probe batch, and only its two best predictions at the
  run's batch, and any other within PROBE_MARGIN of the best, are timed there (an XLA 3D convolution can
  take seconds a step)."""
  deadline = time.perf_counter() + budget_s
  errors, probe = {}, {}
  batch = conv.lhs[0]
  small, large = PROBE_BATCHES
  if batch > large and step_flops(conv, training) > PROBE_FLOPS:
    at_small = _fastest(conv, impls, small, training, 1, deadline, errors)
    at_large = _fastest(conv, tuple(at_small), large, training, 1, deadline, errors)
    probe = {i: [at_small[i], at_large[i]] for i in at_large}
    predicted = {i: b + (batch - large) * max(b - a, 0.0) / (large - small) for i, (a, b) in probe.items()}
    if predicted:
      # A prediction is no measurement: a step slower per sample at the run's batch (its arrays out of
      # cache), or two noisy probes, bend the line (on the AVX2 EPYC the FFT and the native kernels swapped
      # places between runs). So the two best predictions are always timed at the run's batch, even when
      # the probes spent the budget, and the others only when close to the best.
      ranked = sorted(predicted, key=predicted.get)
      impls = tuple(i for n, i in enumerate(ranked) if n < 2 or predicted[i] <= PROBE_MARGIN * predicted[ranked[0]])
  timed = _fastest(conv, impls, batch, training, REPEATS, deadline, errors, at_least=2 if probe else 1)
  if not timed:
    raise RuntimeError(f'No convolution impl runs the {conv.stream} conv {conv.key(training)}: {errors}')
  best = min(timed, key=timed.get)
  return {'impl': best, 'ms': {i: round(s * 1e3, 3) for i, s in timed.items()},
          'probe_ms': {i: [round(s * 1e3, 3) for s in pair] for i, pair in probe.items()}, 'errors': errors,
          'tuned': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}


def _agree(chosen: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
  """Process 0's impls for every process (one process: `chosen` itself)."""
  if jax.process_count() == 1:
    return chosen
  names = sorted({*CANDIDATES[2], *CANDIDATES[3], *(i for p in plans.CPU_PLANS.values() for plan in p for i in plan)})
  order = [(s, i) for s in ('audio', 'video') for i in range(len(chosen[s]))]
  codes = np.array([names.index(chosen[s][i]) for s, i in order], np.int32)
  codes = multihost_utils.broadcast_one_to_all(codes)
  agreed = {'audio': [], 'video': []}
  for (stream, _), code in zip(order, codes):
    agreed[stream].append(names[int(code)])
  return {s: tuple(v) for s, v in agreed.items()}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
  """One tuner at a time per cache (concurrent runs would time each other's load)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path.with_suffix('.lock'), 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
  try:
    cache = json.loads(path.read_text())
  except FileNotFoundError:
    return {}
  except (OSError, ValueError):
    return {}  # a damaged cache is only lost timings: it is timed again and rewritten
  return cache if isinstance(cache, dict) else {}


def _write(path: Path, cache: dict[str, Any]) -> None:
  temporary = path.with_suffix(f'.tmp{os.getpid()}')
  temporary.write_text(json.dumps(cache, indent=1, sort_keys=True))
  os.replace(temporary, path)


def tune(model: nn.Module, inputs: dict[str, jax.ShapeDtypeStruct], *, training: bool = True,
         budget_s: float | None = None, min_flops: float | None = None, path: Path | None = None) -> plans.Plan:
  """The fastest impl of each of `model`'s convolutions on `inputs` (one device's batch), from the cache
  or timed now (within `budget_s`, default BUDGET_S) and cached; a convolution under `min_flops` (default
  MIN_FLOPS) a step keeps `model.plan`'s impl (timing it
  would cost more than it could save). The pools keep `model.plan.pool`. The plan's `origin` says which."""
  path = path or cache_path()
  budget_s = BUDGET_S if budget_s is None else budget_s
  min_flops = MIN_FLOPS if min_flops is None else min_flops
  info = machine()
  key = machine_key(info)
  native_runs = plans.native_runs_here(jax.default_backend())
  convs = network_convs(model, inputs)
  start = time.perf_counter()
  # Every process of a multi-process run must compile the same program: process 0 times, the others
  # take its choice (`_agree`).
  timing = jax.process_index() == 0
  with _locked(path):
    cache = _read(path)
    layers = cache.setdefault(key, {'machine': info, 'layers': {}})['layers']
    small = [c for c in convs if c.key(training) not in layers and step_flops(c, training) < min_flops]
    missing = [c for c in convs if c.key(training) not in layers and c not in small] if timing else []
    for n, conv in enumerate(missing, 1):
      print(f'Autotuning the convolutions for this machine, once ({n}/{len(missing)}: {conv.stream} conv '
            f'{conv.index}, {conv.key(training)})', file=sys.stderr)
      layers[conv.key(training)] = time_layer(conv, candidates(conv, native_runs), training=training,
                                              budget_s=budget_s / len(missing))
    if missing:
      _write(path, cache)

  def impl(conv: Conv) -> str:
    entry = layers.get(conv.key(training))
    return entry['impl'] if entry else getattr(model.plan, conv.stream)[conv.index]

  chosen = _agree({s: tuple(impl(c) for c in convs if c.stream == s) for s in ('audio', 'video')})
  cached = len(convs) - len(missing) - len(small)
  if not timing:
    return dataclasses.replace(model.plan, **chosen, origin="autotuned: process 0's plan")
  origin = ', '.join(filter(None, (
      f'{len(missing)} conv(s) timed now in {time.perf_counter() - start:.0f} s' if missing else '',
      f'{cached} from the cache' if cached else '', f'{len(small)} too small to time' if small else '')))
  # A stream the network lacks keeps no impls (the plan describes only what runs).
  return dataclasses.replace(model.plan, **chosen, origin=f'autotuned: {origin}; cache {path}')
