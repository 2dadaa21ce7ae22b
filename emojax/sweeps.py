"""Sweeps: grids of run configs, expanded, validated, named, and run one process per point.

A sweep file (experiments/configs/sweeps/*.py) has `get_config(arg)`, the base run
config, and `get_sweep(arg)`, its points, written with the helpers here (`get_sweep(arg, config)`
also gets the base config, command-line overrides applied: e.g. to count a corpus's speaker folds):

  product(values('model.name', ['cnn', 'fusion']),
          options('augment', off={'data.augment.top_crop_px': 0}, on={'data.augment.top_crop_px': 4}),
          seeds(3))

A point is a tuple of axes; an axis is one swept choice, shown as `name=label`, that
sets one field (`values`) or several under a label (`options`). Plain dicts
`{'field.path': value}` are points too. A point's run is an ordinary
`python -m experiments.run --config=<sweep file>[:arg] --workdir=<sweep dir>/<point name>
--config.a.b=value ...`: the sweep file is the run config. Seeds and folds are ordinary
fields (`seed`, `data.fold`, the REPLICATES; a sweep file may set its own REPLICATES): the
report averages over them. A field given on the sweep's command line cannot be set by a point
too, unless the sweep file lists it in POINT_WINS (then the point's value wins: its flag comes last).
FUSIONS, e.g. `[('model', ('recipe', 'egemaps_svm'))]`, asks the report for late-fusion rows: the
rows with those labels of that axis, probabilities averaged per test utterance (emojax.reports).

Listing a sweep imports no JAX; validating its points imports the schema (and the models), and `run` the
feature code for --jobs > 1.
"""
from __future__ import annotations

import builtins
import copy
import dataclasses
import hashlib
import importlib.util
import inspect
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterable, Sequence

import ml_collections

from emojax import files

REPLICATES = ('seed', 'data.fold')   # averaged over in reports; every other axis makes a row
RUNNER = ('python', '-m', 'experiments.run')   # how commands name the run; `run` starts sys.executable
LAUNCH: list[str] | None = None  # what `run` starts in place of experiments.run (tests put a stand-in here)
# In a point's text values, the sweep's directory: a point can start from another's checkpoint
# (`init_from`: SWEEP_DIR + '/<point name>/checkpoints/latest'); `run` starts it after that point.
SWEEP_DIR = '{sweep_dir}'
POINT_FILE = 'sweep_point.json'      # in each point dir: its axes, command, status, wall time
ERROR_FILE = 'sweep_error.txt'       # in a failed point's dir: exit status, command, last log lines
LOG_FILE = 'run.log'
_MAX_NAME = 200                      # bytes of a point dir's name (filesystems allow 255)


class SweepError(ValueError):
  """A sweep that cannot run: unknown fields, wrong types, shared workdirs, ..."""


# ---------------------------------------------------------------------------------------------
# Points and the helpers that build them.

@dataclasses.dataclass(frozen=True)
class Axis:
  name: str                                 # a field path ('model.name') or a label ('augment')
  label: Any                                # shown as name=label
  overrides: tuple[tuple[str, Any], ...]    # the fields it sets


@dataclasses.dataclass(frozen=True)
class Point:
  axes: tuple[Axis, ...]

  @property
  def overrides(self) -> dict[str, Any]:
    merged = {}
    for axis in self.axes:
      for path, value in axis.overrides:
        if path in merged:
          raise SweepError(f'Point {self.name}: field {path!r} is set twice.')
        merged[path] = value
    return merged

  @property
  def name(self) -> str:
    """`name=label` of each axis, comma-joined and filesystem-safe: the point's directory."""
    return safe_name(','.join(f'{a.name}={label_text(a.label)}' for a in self.axes))

  def row(self, replicates: Sequence[str] = REPLICATES) -> tuple[tuple[str, str], ...]:
    """The report row this point belongs to: its axes other than the replicates."""
    return tuple((a.name, label_text(a.label)) for a in self.axes if a.name not in replicates)


def label_text(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '-'.join(label_text(v) for v in value) or 'none'
  return str(value)


def safe_name(text: str) -> str:
  """Keeps letters, digits and . _ - + = , ; anything else becomes '_'. Long names end in a hash."""
  safe = re.sub(r'[^A-Za-z0-9._+=,-]', '_', text).lstrip('.') or '_'
  if len(safe) > _MAX_NAME:
    safe = safe[:_MAX_NAME - 9] + '~' + hashlib.sha1(text.encode()).hexdigest()[:8]
  return safe


def as_points(factor: Any) -> list[Point]:
  """A list of Points or of `{'field.path': value}` dicts (one axis per field), or a single one."""
  if isinstance(factor, (Point, dict)):
    factor = [factor]
  points = []
  for item in factor:
    if isinstance(item, Point):
      points.append(item)
    elif isinstance(item, dict):
      points.append(Point(tuple(Axis(path, value, ((path, value),)) for path, value in item.items())))
    else:
      raise SweepError(f'A sweep point is a dict of overrides or a sweeps.Point, not {item!r}.')
  return points


def values(path: str, choices: Iterable[Any]) -> list[Point]:
  """One point per value of the field `path`."""
  return [Point((Axis(path, v, ((path, v),)),)) for v in choices]


def options(name: str, choices: dict[Any, dict[str, Any]] | None = None, **by_label: dict[str, Any]) -> list[Point]:
  """One point per labelled group of overrides, shown as `name=label`: options('augment', off={...}, on={...})."""
  choices = {**(choices or {}), **by_label}
  return [Point((Axis(name, label, tuple(overrides.items())),)) for label, overrides in choices.items()]


def seeds(n_or_values: int | Iterable[int]) -> list[Point]:
  """seeds(3): seed 0, 1, 2; seeds([5, 7]): those."""
  return values('seed', range(n_or_values) if isinstance(n_or_values, int) else n_or_values)


def folds(n_or_values: int | Iterable[int]) -> list[Point]:
  return values('data.fold', range(n_or_values) if isinstance(n_or_values, int) else n_or_values)


def product(*factors: Any) -> list[Point]:
  """Every combination, the first factor varying slowest."""
  return [Point(tuple(a for p in combo for a in p.axes)) for combo in itertools.product(*map(as_points, factors))]


def zip(*factors: Any) -> list[Point]:  # pylint: disable=redefined-builtin
  """Point i of each factor, joined; the factors must have one length."""
  lists = [as_points(f) for f in factors]
  if len({len(l) for l in lists}) > 1:
    raise SweepError(f'sweeps.zip of factors of different lengths {[len(l) for l in lists]}.')
  return [Point(tuple(a for p in group for a in p.axes)) for group in builtins.zip(*lists)]


def concat(*factors: Any) -> list[Point]:
  """The points of each factor, one list after the other (a union of grids)."""
  return [p for f in factors for p in as_points(f)]


# ---------------------------------------------------------------------------------------------
# A loaded sweep: its base config, points, their configs and commands.

def load_module(path: str):
  spec = importlib.util.spec_from_file_location(f'emojax_sweep_{abs(hash(os.path.abspath(path)))}', path)
  if spec is None or spec.loader is None:
    raise SweepError(f'Cannot load sweep file {path}.')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def default_workdir(config_path: str, arg: str | None) -> str:
  """workdirs/sweeps/<file name>[_<presets sorted>], e.g. workdirs/sweeps/table3_smoke."""
  stem = os.path.splitext(os.path.basename(config_path))[0]
  presets = sorted({a.strip() for a in (arg or '').split(',') if a.strip()})
  return 'workdirs/sweeps/' + '_'.join([stem, *presets])


def format_value(value: Any) -> str:
  """The text of `--config.x=<text>` that ml_collections' flag parsers read back as `value`."""
  if isinstance(value, bool):
    return 'True' if value else 'False'
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  if isinstance(value, float):
    return repr(value)
  return str(value)


@dataclasses.dataclass
class Sweep:
  """A sweep ready to run: base config, points (in definition order), their configs and dirs."""

  name: str                          # the sweep file's stem
  config_ref: str                    # --config as typed (configs/sweeps/x.py[:arg]): used in commands
  base: ml_collections.ConfigDict    # get_config(arg) with the global overrides applied
  points: list[Point]
  configs: list[ml_collections.ConfigDict]   # each point's full run config
  workdir: str
  global_flags: tuple[str, ...] = ()         # --config.x=y given to the runner, passed to every point
  replicates: tuple[str, ...] = REPLICATES
  point_wins: tuple[str, ...] = ()           # fields a point may set though the command line sets them too
  fusions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (axis, labels): report rows fused late (reports.py)

  def point_dir(self, point: Point) -> str:
    return os.path.join(self.workdir, point.name)

  def overrides(self, point: Point) -> dict[str, Any]:
    """The point's fields, SWEEP_DIR in text values replaced by this sweep's directory."""
    return {path: v.replace(SWEEP_DIR, self.workdir) if isinstance(v, str) else v
            for path, v in point.overrides.items()}

  def command(self, point: Point, runner: Sequence[str] = RUNNER) -> list[str]:
    return [*runner, f'--config={self.config_ref}', f'--workdir={self.point_dir(point)}', *self.global_flags,
            *(f'--config.{path}={format_value(v)}' for path, v in self.overrides(point).items())]

  def shell_command(self, point: Point) -> str:
    return shlex.join(self.command(point))

  def rerun_command(self, *extra: str) -> str:
    """The experiments.sweep command of this sweep (its --workdir unless the default)."""
    path, _, arg = self.config_ref.partition(':')
    workdir = [] if self.workdir == default_workdir(path, arg) else [f'--workdir={self.workdir}']
    return shlex.join(['python', '-m', 'experiments.sweep', f'--config={self.config_ref}', *self.global_flags,
                       *workdir, *extra])


def load(config_ref: str, config_path: str, *, base: ml_collections.ConfigDict | None = None,
         global_flags: Sequence[str] = (), workdir: str | None = None) -> Sweep:
  """Loads the sweep file `config_path` (`config_ref` is how commands name it, with its :arg),
  expands and validates its points: raises SweepError naming every bad point before any runs.

  `base` is get_config(arg) with `global_flags` applied (experiments.sweep parses them with
  ml_collections' config flags); without it, get_config(arg) as is.
  """
  _, _, arg = config_ref.partition(':')
  arg = arg or None
  module = load_module(config_path)
  if not hasattr(module, 'get_sweep'):
    raise SweepError(f'{config_path} has no get_sweep(arg): it is a run config, not a sweep.')
  if base is None:
    base = module.get_config(arg)
  wants_config = len(inspect.signature(module.get_sweep).parameters) > 1
  try:
    points = as_points(module.get_sweep(arg, base) if wants_config else module.get_sweep(arg))
  except ValueError as e:  # e.g. a corpus root missing, too few speakers for the folds
    raise SweepError(f'{config_path}: {e}') from None
  replicates = tuple(getattr(module, 'REPLICATES', REPLICATES))
  point_wins = tuple(getattr(module, 'POINT_WINS', ()))
  fusions = tuple((axis, tuple(labels)) for axis, labels in getattr(module, 'FUSIONS', ()))
  sweep = Sweep(name=os.path.splitext(os.path.basename(config_path))[0], config_ref=config_ref, base=base,
                points=points, configs=[], workdir=workdir or default_workdir(config_path, arg),
                global_flags=tuple(global_flags), replicates=replicates, point_wins=point_wins, fusions=fusions)
  sweep.configs = validate(sweep)
  return sweep


def apply_overrides(base: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A locked copy of `base` with `overrides` set; raises SweepError for an unknown field or a wrong type."""
  config = copy.deepcopy(base)
  config.unlock()
  config.lock()
  for path, value in overrides.items():
    *parents, leaf = path.split('.')
    node = config
    for i, part in enumerate(parents):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise SweepError(f'unknown field {".".join(parents[:i + 1])!r} (in {path!r})')
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      hint = f'; fields there: {sorted(node.keys())}' if isinstance(node, ml_collections.ConfigDict) else ''
      raise SweepError(f'unknown field {path!r}{hint}')
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
      raise SweepError(f'{path!r} is a group of fields; set its fields ({path}.x) instead')
    if isinstance(value, bool) and not isinstance(current, bool) and current is not None:
      raise SweepError(f'{path!r}: {value!r} is a bool, the field is {type(current).__name__} ({current!r})')
    try:
      setattr(node, leaf, value)
    except (TypeError, ValueError) as e:
      raise SweepError(f'{path!r}: {value!r} ({type(value).__name__}) does not fit the field, '
                       f'which is {type(current).__name__} ({current!r}): {e}') from None
  return config


def _flag_path(flag: str) -> str:
  return flag[len('--config.'):].partition('=')[0]


def validate(sweep: Sweep) -> list[ml_collections.ConfigDict]:
  """Each point's config; SweepError listing every unknown field, wrong type and shared workdir."""
  errors, configs, owners = [], [], {}
  global_paths = {_flag_path(f) for f in sweep.global_flags}
  if not sweep.points:
    raise SweepError(f'Sweep {sweep.name} has no points.')
  for index, point in enumerate(sweep.points):
    where = f'point {index + 1} ({point.name})'
    try:
      overrides = sweep.overrides(point)
      reserved = {'workdir'} & set(overrides)
      if reserved:
        raise SweepError('the runner sets the workdir of each point; a sweep cannot set `workdir`')
      clash = global_paths & set(overrides) - set(sweep.point_wins)
      if clash:
        raise SweepError(f'{sorted(clash)} set both by the sweep and on the command line')
      config = apply_overrides(sweep.base, overrides)
      try:
        _schema().validate(config, check_paths=False)  # the runs check the paths, where they run
      except ValueError as e:  # schema.InvalidConfig
        raise SweepError(str(e)) from None
      configs.append(config)
    except SweepError as e:
      errors.append(f'{where}: {e}')
      configs.append(None)
    key = point.name.lower()  # case-insensitive file systems would share the directory too
    if key in owners:
      errors.append(f'{where} and point {owners[key][0] + 1} ({owners[key][1]}) share the workdir '
                    f'{sweep.point_dir(point)}')
    else:
      owners[key] = (index, point.name)
  if errors:
    raise SweepError(f'Sweep {sweep.name} ({len(sweep.points)} points) cannot run:\n  ' + '\n  '.join(errors))
  return configs


def _schema():
  """emojax.schema, imported on first use: it imports the models (JAX), which listing a sweep does not need."""
  from emojax import schema as module  # pylint: disable=import-outside-toplevel
  return module


def _fields_read(model_name: str) -> tuple[str, ...] | None:
  """The only fields a baseline's run reads (a network's: None, all of them)."""
  from emojax import baselines  # pylint: disable=import-outside-toplevel
  return baselines.READS if baselines.is_baseline(model_name) else None


def stale_points(sweep: Sweep) -> list[str]:
  """Points whose workdir holds a run of another config: its config.json differs in a field that changes the
  result (the rule a resumed run follows, `schema.result_changes`)."""
  stale = []
  for point, config in builtins.zip(sweep.points, sweep.configs):
    path = os.path.join(sweep.point_dir(point), 'config.json')
    if not os.path.exists(path):
      continue
    with open(path) as f:
      recorded = _schema().flatten(_schema().upgrade(json.load(f)))
    expected = _schema().flatten(json.loads(config.to_json()))
    read = _fields_read(config.model.name)
    differ = [k for k in _schema().result_changes(recorded, expected)
              if read is None or k in read or k.startswith('corpus.')]
    if differ:
      stale.append(f'{point.name}: ' + ', '.join(f'{k} {recorded[k]!r} there, {expected[k]!r} now' for k in differ[:4])
                   + (' ...' if len(differ) > 4 else ''))
  return stale


# ---------------------------------------------------------------------------------------------
# Point state on disk.

def read_json(path: str) -> Any:
  """The JSON at `path`, or None if it is missing or half-written."""
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def complete(summary: Any, num_epochs: int | None = None) -> bool:
  """Whether a summary.json is of a finished run: its final epoch reaches num_epochs, it stopped early,
  or it trains without epochs (a baseline: `complete`). A run asked for more epochs resumes."""
  if not isinstance(summary, dict) or 'final' not in summary:
    return False
  return (num_epochs is None or summary.get('complete', False) or summary.get('stopped_early', False)
          or summary['final'].get('epoch', 0) >= num_epochs)


def finished(point_dir: str, num_epochs: int | None = None) -> bool:
  """A complete summary.json in the point dir."""
  return complete(read_json(os.path.join(point_dir, 'summary.json')), num_epochs)


def progress(point_dir: str, num_epochs: int | None = None) -> str:
  """How far a running point is, from its metrics log: 'in epoch 3/10, step 40' or 'epoch 3/10 done, step 45'."""
  path = os.path.join(point_dir, 'metrics.jsonl')
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - 4096))
      last = json.loads(f.read().decode(errors='replace').strip().splitlines()[-1])
  except (OSError, ValueError, IndexError):
    return 'starting'
  total = f'/{num_epochs}' if num_epochs else ''
  if last.get('split') == 'eval':  # eval records count finished epochs
    return f"epoch {last.get('epoch')}{total} done, step {last.get('step')}"
  return f"in epoch {last.get('epoch', 0) + 1}{total}, step {last.get('step')}"  # train: the 0-based epoch


def tail(path: str, lines: int = 30) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(max(0, os.path.getsize(path) - 64 * 1024))
      text = f.read().decode(errors='replace')
  except OSError:
    return ''
  # tqdm redraws with carriage returns: keep the last state of each line.
  return '\n'.join(line.rsplit('\r', 1)[-1] for line in text.splitlines()[-lines:])


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds < 60:
    return f'{seconds} s'
  if seconds < 3600:
    return f'{seconds // 60} min {seconds % 60:02d} s'
  return f'{seconds // 3600} h {seconds % 3600 // 60:02d} min'


# ---------------------------------------------------------------------------------------------
# Running.

@dataclasses.dataclass
class _Job:
  index: int
  point: Point
  config: ml_collections.ConfigDict
  data_key: Any = None
  process: subprocess.Popen | None = None
  log: Any = None
  started: float = 0.0
  last_beat: float = 0.0


def data_key(config: ml_collections.ConfigDict) -> str:
  """The directory of the array build a run of `config` reads (two runs must not build one at once)."""
  from emojax import arrays, corpora, features  # pylint: disable=import-outside-toplevel
  return os.path.join(os.path.abspath(config.data.data_dir), corpora.corpus_key(config.corpus),
                      arrays.build_key(features.spec_from_config(config)))


def run(sweep: Sweep, *, jobs: int = 1, runner: Sequence[str] | None = None, heartbeat_s: float = 60.0,
        poll_s: float = 0.2, out: Callable[[str], None] = print) -> dict[str, str]:
  """Runs every unfinished point, `jobs` at a time, each as its own process; returns name -> status.

  status: 'skipped' (finished before), 'done' or 'failed'. A failed point leaves
  <point>/sweep_error.txt and the others go on. With jobs > 1, two points that read the same
  not yet built arrays never start together: the first builds them, the others wait for it; a
  point whose init_from lies in another point's directory starts after that point ends.
  """
  runner = list(runner or LAUNCH or [sys.executable, '-m', 'experiments.run'])
  stale = stale_points(sweep)
  if stale:
    raise SweepError(f'Sweep {sweep.name}: {len(stale)} point workdir(s) under {sweep.workdir} hold runs of another '
                     'config (delete them or choose another --workdir):\n  ' + '\n  '.join(stale))
  total, width = len(sweep.points), len(str(len(sweep.points)))
  os.makedirs(sweep.workdir, exist_ok=True)
  start = time.time()
  status: dict[str, str] = {}
  counts = {'done': 0, 'failed': 0, 'skipped': 0}

  def line(job: _Job, what: str, extra: str = '') -> None:
    left = total - sum(counts.values())
    out(f'[{job.index + 1:>{width}}/{total}] {what:<8} {job.point.name}{extra}  '
        f'(sweep {duration(time.time() - start)}: {counts["done"]} done, {counts["skipped"]} skipped, '
        f'{counts["failed"]} failed, {left} left)')

  pending = []
  for index, (point, config) in enumerate(builtins.zip(sweep.points, sweep.configs)):
    job = _Job(index, point, config)
    point_dir = sweep.point_dir(point)
    if finished(point_dir, config.train.num_epochs):
      counts['skipped'] += 1
      status[point.name] = 'skipped'
      if os.path.exists(os.path.join(point_dir, POINT_FILE)):  # else run elsewhere, from --list
        _record(sweep, point, point_dir, state='finished')
      line(job, 'skipped', ' (finished before)')
    else:
      pending.append(job)
  if jobs > 1 and pending:
    for job in pending:
      try:
        job.data_key = data_key(job.config)
      except Exception:  # pylint: disable=broad-except
        job.data_key = None  # a config the feature code rejects: its run fails and says why

  running: list[_Job] = []
  # SIGTERM (kill, a scheduler's time limit) stops the points' processes too, as Ctrl-C does.
  previous = None
  if threading.current_thread() is threading.main_thread():
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)

  def waits_for_another(job: _Job) -> bool:
    """Whether the job starts from the checkpoint of a point still pending or running."""
    source = os.path.abspath(job.config.get('init_from') or os.sep)
    return any(source.startswith(os.path.abspath(sweep.point_dir(other.point)) + os.sep)
               for other in pending + running if other is not job)

  def can_start(job: _Job) -> bool:
    if waits_for_another(job):
      return False
    if job.data_key is None or os.path.exists(os.path.join(job.data_key, 'examples.jsonl')):
      return True
    return all(other.data_key != job.data_key for other in running)

  try:
    while pending or running:
      for job in list(pending):
        if len(running) >= jobs:
          break
        if can_start(job):
          pending.remove(job)
          _launch(sweep, job, runner)
          running.append(job)
          line(job, 'running', f'  [{sweep.point_dir(job.point)}/{LOG_FILE}]')
      time.sleep(poll_s)
      now = time.time()
      for job in list(running):
        rc = job.process.poll()
        if rc is None:
          if heartbeat_s and now - job.last_beat >= heartbeat_s:
            job.last_beat = now
            how_far = progress(sweep.point_dir(job.point), job.config.train.num_epochs)
            line(job, 'running', f'  {how_far}, {duration(now - job.started)}')
          continue
        running.remove(job)
        job.log.close()
        wall = now - job.started
        point_dir = sweep.point_dir(job.point)
        ok = rc == 0 and finished(point_dir, job.config.train.num_epochs)
        if ok:
          counts['done'] += 1
          status[job.point.name] = 'done'
          _record(sweep, job.point, point_dir, state='finished', wall_s=wall, rc=rc)
          line(job, 'done', f'  {duration(wall)}')
        else:
          counts['failed'] += 1
          status[job.point.name] = 'failed'
          log_tail = tail(os.path.join(point_dir, LOG_FILE))
          reason = f'exit status {rc}' if rc else 'exited 0 without a finished summary.json'
          with open(os.path.join(point_dir, ERROR_FILE), 'w') as f:
            f.write(f'{reason}\ncommand: {sweep.shell_command(job.point)}\n'
                    f'last lines of {LOG_FILE}:\n{log_tail}\n')
          _record(sweep, job.point, point_dir, state='failed', wall_s=wall, rc=rc,
                  error=log_tail.splitlines()[-1] if log_tail else reason)
          last = log_tail.splitlines()[-1][:160] if log_tail else ''
          line(job, 'FAILED', f'  {duration(wall)}, {reason}: {last}  [{point_dir}/{ERROR_FILE}]')
  except BaseException:  # Ctrl-C or an error here: stop the points' processes; a rerun resumes them
    for job in running:
      job.process.terminate()
    for job in running:
      try:
        job.process.wait(timeout=30)
      except subprocess.TimeoutExpired:
        job.process.kill()
      job.log.close()
      _record(sweep, job.point, sweep.point_dir(job.point), state='interrupted', wall_s=time.time() - job.started)
    raise
  finally:
    if previous is not None:
      signal.signal(signal.SIGTERM, previous)
  out(f'Sweep {sweep.name}: {counts["done"]} done, {counts["skipped"]} skipped (finished before), '
      f'{counts["failed"]} failed of {total}, in {duration(time.time() - start)}.')
  return status


def _raise_interrupt(signum, frame):
  del frame
  raise KeyboardInterrupt(f'signal {signum}')


def _launch(sweep: Sweep, job: _Job, runner: Sequence[str]) -> None:
  point_dir = sweep.point_dir(job.point)
  os.makedirs(point_dir, exist_ok=True)
  if os.path.exists(os.path.join(point_dir, ERROR_FILE)):
    os.remove(os.path.join(point_dir, ERROR_FILE))
  _record(sweep, job.point, point_dir, state='running')
  job.log = open(os.path.join(point_dir, LOG_FILE), 'a')  # pylint: disable=consider-using-with
  job.log.write(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} {sweep.shell_command(job.point)}\n')
  job.log.flush()
  env = {**os.environ, 'PYTHONUNBUFFERED': '1'}
  job.process = subprocess.Popen(sweep.command(job.point, runner), stdout=job.log, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env)
  job.started = job.last_beat = time.time()


def _record(sweep: Sweep, point: Point, point_dir: str, *, state: str, wall_s: float = 0.0,
            **extra: Any) -> None:
  """Updates <point>/sweep_point.json: axes, command, state, attempts, wall time summed over attempts."""
  path = os.path.join(point_dir, POINT_FILE)
  old = read_json(path) or {}
  record = {
      'name': point.name,
      'axes': [[a.name, label_text(a.label)] for a in point.axes],
      'overrides': dict(point.overrides),
      'command': sweep.shell_command(point),
      'state': state,
      'wall_s': float(old.get('wall_s', 0.0)) + wall_s,
      'attempts': int(old.get('attempts', 0)) + (state == 'running'),
      **extra,
  }
  os.makedirs(point_dir, exist_ok=True)
  files.write_json(path, json.loads(json.dumps(record, default=str)))
