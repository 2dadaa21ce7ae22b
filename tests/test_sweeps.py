"""Sweeps: expansion, validation, the runner (with a stand-in for experiments.run), reports, and one
tiny real sweep end to end."""
import json
import math
import os
import shlex
import subprocess
import sys
import textwrap
import time

import pytest

from emojax import reports, sweeps
from experiments.configs import common

sys.path.insert(0, os.path.dirname(__file__))
import miniature_emodb  # noqa: E402  (a helper next to this file; the cross-validation e2e is tests/test_notebooks.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_DIR = os.path.join(ROOT, 'experiments', 'configs', 'sweeps')

# Stands in for experiments.run: reads --workdir and --config.* like it, logs its call, and writes
# config.json and a summary.json whose accuracy is 0.5 + seed / 10; seed 13 fails; with
# --config.train.batch_size=3 it exits 0 without a summary.
FAKE_RUN = '''
import json, os, sys, time
args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith('--') and '=' in a)
workdir = args['workdir']
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(os.path.dirname(workdir), 'calls.jsonl'), 'a') as f:
  f.write(json.dumps({'point': os.path.basename(workdir), 'start': time.time(), 'pid': os.getpid()}) + '\\n')
print('fake run', sys.argv[1:])
seed = int(args.get('config.seed', 0))
if seed == 13:
  print('Traceback (most recent call last):')
  print('ValueError: seed 13 is unlucky')
  sys.exit(3)
time.sleep(float(os.environ.get('FAKE_RUN_SLEEP', '0')))
if args.get('config.train.batch_size') == '3':
  sys.exit(0)
with open(os.path.join(workdir, 'summary.json'), 'w') as f:
  json.dump({'final': {'epoch': 2, 'accuracy': 0.5 + seed / 10, 'unweighted_accuracy': 0.4 + seed / 10}}, f)
with open(os.path.join(os.path.dirname(workdir), 'calls.jsonl'), 'a') as f:
  f.write(json.dumps({'point': os.path.basename(workdir), 'end': time.time()}) + '\\n')
'''


def _write_sweep_file(path, sweep_expr, base='common.base_config("cnn", "smoke")', extra=''):
  path.write_text(textwrap.dedent(f'''
      from emojax import sweeps
      from experiments.configs import common

      def get_config(arg=None):
        c = {base}
        {extra}
        return c

      def get_sweep(arg=None):
        return {sweep_expr}
      '''))
  return str(path)


def _load(tmp_path, sweep_expr, **kwargs):
  path = _write_sweep_file(tmp_path / 'mysweep.py', sweep_expr)
  return sweeps.load(path, path, workdir=str(tmp_path / 'sweep'), **kwargs)


@pytest.fixture
def fake_runner(tmp_path):
  script = tmp_path / 'fake_run.py'
  script.write_text(FAKE_RUN)
  return [sys.executable, str(script)]


def _calls(sweep):
  path = os.path.join(sweep.workdir, 'calls.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------------------------
# Expansion and names.

def test_product_values_options_seeds_expand_in_order():
  points = sweeps.product(sweeps.values('model.name', ['cnn', 'fusion']),
                          sweeps.options('augment', off={'data.augment.top_crop_px': 0},
                                         on={'data.augment.top_crop_px': 4, 'data.augment.rotate_degrees': 5.0}),
                          sweeps.seeds(3))
  assert len(points) == 2 * 2 * 3
  assert [p.name for p in points[:4]] == ['model.name=cnn,augment=off,seed=0', 'model.name=cnn,augment=off,seed=1',
                                          'model.name=cnn,augment=off,seed=2', 'model.name=cnn,augment=on,seed=0']
  assert points[3].overrides == {'model.name': 'cnn', 'data.augment.top_crop_px': 4,
                                 'data.augment.rotate_degrees': 5.0, 'seed': 0}
  assert points[-1].name == 'model.name=fusion,augment=on,seed=2'
  assert points[-1].row() == (('model.name', 'fusion'), ('augment', 'on'))  # seed is a replicate


def test_lists_of_dicts_zip_concat_and_folds():
  listed = sweeps.as_points([{'model.name': 'cnn', 'seed': 1}, {'model.name': 'cnn_rnn'}])
  assert [p.overrides for p in listed] == [{'model.name': 'cnn', 'seed': 1}, {'model.name': 'cnn_rnn'}]
  assert listed[0].name == 'model.name=cnn,seed=1'
  zipped = sweeps.zip(sweeps.values('data.variant', ['ds1', 'ds2']), sweeps.values('data.clip_seconds', [2.0, 3.0]))
  assert [p.overrides for p in zipped] == [{'data.variant': 'ds1', 'data.clip_seconds': 2.0},
                                           {'data.variant': 'ds2', 'data.clip_seconds': 3.0}]
  with pytest.raises(sweeps.SweepError, match='different lengths'):
    sweeps.zip(sweeps.seeds(2), sweeps.seeds(3))
  both = sweeps.concat(sweeps.product({'model.name': 'cnn'}, sweeps.folds(2)), [{'model.name': 'fusion'}])
  assert [p.name for p in both] == ['model.name=cnn,data.fold=0', 'model.name=cnn,data.fold=1', 'model.name=fusion']
  assert both[1].row() == (('model.name', 'cnn'),)
  assert [p.overrides['seed'] for p in sweeps.seeds([5, 7])] == [5, 7]


def test_names_are_filesystem_safe_and_bounded():
  point = sweeps.as_points({'data.audio_size': (32, 48), 'corpus.root': '../shared/data/emodb'})[0]
  assert point.name == 'data.audio_size=32-48,corpus.root=.._shared_data_emodb'
  long = sweeps.as_points({'corpus.root': 'x' * 400})[0].name
  assert len(long) <= 200 and long != sweeps.as_points({'corpus.root': 'x' * 401})[0].name


def test_format_value_round_trips_through_literal_syntax():
  assert sweeps.format_value(True) == 'True'
  assert sweeps.format_value((32, 48)) == '(32, 48)'
  assert sweeps.format_value(('03',)) == "('03',)"
  assert sweeps.format_value(5.0) == '5.0' and sweeps.format_value('3class') == '3class'


# ---------------------------------------------------------------------------------------------
# Validation: before anything runs, with errors naming the points.

def test_unknown_field_wrong_type_and_shared_workdir_are_named(tmp_path):
  with pytest.raises(sweeps.SweepError) as error:
    _load(tmp_path, "[{'train.num_epoch': 3}, {'train.num_epochs': 2.5}, {'model.time_scan': 1}, "
                    "{'seed': 1}, {'seed': 1}, {'data.augment': 3}, {'workdir': 'x'}, {'model.name': 'cnn'}]")
  text = str(error.value)
  assert "point 1 (train.num_epoch=3): unknown field 'train.num_epoch'" in text
  assert "point 2 (train.num_epochs=2.5): 'train.num_epochs': 2.5 (float) does not fit the field, which is int" in text
  assert "point 3 (model.time_scan=1)" in text and 'which is bool' in text
  assert 'point 5 (seed=1) and point 4 (seed=1) share the workdir' in text
  assert "'data.augment' is a group of fields" in text
  assert 'point 7 (workdir=x)' in text
  assert 'point 8' not in text


def test_bool_for_int_field_and_clash_with_command_line_overrides(tmp_path):
  with pytest.raises(sweeps.SweepError, match="'seed': True is a bool"):
    _load(tmp_path, "[{'seed': True}]")
  with pytest.raises(sweeps.SweepError, match=r"\['seed'\] set both by the sweep and on the command line"):
    _load(tmp_path, 'sweeps.seeds(2)', global_flags=['--config.seed=4'])


def test_point_configs_hold_the_overrides_and_the_base_is_untouched(tmp_path):
  sweep = _load(tmp_path, "sweeps.product(sweeps.values('data.audio_size', [[16, 24]]), sweeps.seeds(2))")
  assert [tuple(c.data.audio_size) for c in sweep.configs] == [(16, 24), (16, 24)]
  assert [c.seed for c in sweep.configs] == [0, 1]
  assert tuple(sweep.base.data.audio_size) == (32, 48) and sweep.base.seed == 0
  command = sweep.command(sweep.points[1])
  assert command[:3] == ['python', '-m', 'experiments.run']
  assert command[4:] == [f'--workdir={sweep.workdir}/data.audio_size=16-24,seed=1',
                         '--config.data.audio_size=(16, 24)', '--config.seed=1']


@pytest.mark.parametrize('name, arg, count', [
    ('table3', 'smoke', 4), ('table3', None, 48), ('table3', 'emodb', 36), ('table3', 'ravdess', 36),
    ('table3', 'full', 48), ('datasets', None, 12), ('datasets', 'smoke', 2), ('datasets', 'ravdess', 12),
    ('faithful', None, 12), ('faithful', 'smoke', 2), ('faithful', 'emodb', 12), ('faithful', 'pretrain', 9),
    ('faithful', 'pretrain,smoke', 2)])
def test_shipped_sweeps_expand_and_validate(name, arg, count):
  path = os.path.join(SWEEP_DIR, f'{name}.py')
  ref = f'configs/sweeps/{name}.py' + (f':{arg}' if arg else '')
  sweep = sweeps.load(ref, path)
  assert len(sweep.points) == count
  assert sweep.workdir == common.workdir(f'sweeps/{name}', common.presets(arg, ('smoke', 'emodb', 'ravdess',
                                                                                'full', 'pretrain')))
  if arg and 'smoke' in arg:
    assert all(c.train.num_epochs == 1 for c in sweep.configs)


def test_table3_covers_the_papers_grid():
  sweep = sweeps.load('configs/sweeps/table3.py', os.path.join(SWEEP_DIR, 'table3.py'))
  grid = {(c.model.name, c.data.augment.top_crop_px > 0, c.data.class_set) for c in sweep.configs}
  assert grid == {(m, a, k) for m in ('cnn', 'cnn_lstm', 'cnn_rnn', 'fusion') for a in (False, True)
                  for k in ('4class', '3class')}
  assert sorted({c.seed for c in sweep.configs}) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# The runner, with a stand-in for experiments.run.

def test_run_skips_finished_points_and_reruns_unfinished_ones(tmp_path, fake_runner):
  sweep = _load(tmp_path, 'sweeps.seeds(3)')
  assert sweeps.run(sweep, runner=fake_runner, poll_s=0.01, out=lambda s: None) == {
      'seed=0': 'done', 'seed=1': 'done', 'seed=2': 'done'}
  assert len([c for c in _calls(sweep) if 'start' in c]) == 3
  lines = []
  assert set(sweeps.run(sweep, runner=fake_runner, poll_s=0.01, out=lines.append).values()) == {'skipped'}
  assert len([c for c in _calls(sweep) if 'start' in c]) == 3  # nothing started again
  assert lines[0].startswith('[1/3] skipped  seed=0') and 'skipped' in lines[-1]

  # A killed point (no summary) and one asked for more epochs than it ran both run again.
  os.remove(os.path.join(sweep.workdir, 'seed=1', 'summary.json'))
  with open(os.path.join(sweep.workdir, 'seed=2', 'summary.json'), 'w') as f:
    json.dump({'final': {'epoch': 1, 'accuracy': 0.1}}, f)
  status = sweeps.run(sweep, runner=fake_runner, poll_s=0.01, out=lambda s: None)
  assert status == {'seed=0': 'skipped', 'seed=1': 'done', 'seed=2': 'done'}
  record = json.load(open(os.path.join(sweep.workdir, 'seed=1', sweeps.POINT_FILE)))
  assert record['attempts'] == 2 and record['state'] == 'finished'
  assert record['command'] == sweep.shell_command(sweep.points[1])
  assert open(os.path.join(sweep.workdir, 'seed=1', 'run.log')).read().count('fake run') == 2  # appended

  # A run stopped early by its validation speakers is finished, short of its epochs.
  with open(os.path.join(sweep.workdir, 'seed=2', 'summary.json'), 'w') as f:
    json.dump({'final': {'epoch': 1, 'accuracy': 0.1}, 'stopped_early': True}, f)
  assert sweeps.run(sweep, runner=fake_runner, poll_s=0.01, out=lambda s: None)['seed=2'] == 'skipped'


def test_failed_point_is_recorded_and_the_others_go_on(tmp_path, fake_runner):
  sweep = _load(tmp_path, "sweeps.seeds([1, 13, 2]) + [{'train.batch_size': 3}]")
  lines = []
  status = sweeps.run(sweep, runner=fake_runner, poll_s=0.01, out=lines.append)
  assert status == {'seed=1': 'done', 'seed=13': 'failed', 'seed=2': 'done', 'train.batch_size=3': 'failed'}
  error = open(os.path.join(sweep.workdir, 'seed=13', sweeps.ERROR_FILE)).read()
  assert error.startswith('exit status 3\ncommand: python -m experiments.run') and 'seed 13 is unlucky' in error
  assert 'exited 0 without a finished summary.json' in open(
      os.path.join(sweep.workdir, 'train.batch_size=3', sweeps.ERROR_FILE)).read()
  assert any(l.startswith('[2/4] FAILED   seed=13') and 'seed 13 is unlucky' in l for l in lines)

  paths = reports.write(sweep.workdir, sweep)
  report = json.load(open(paths['json']))
  assert [f['name'] for f in report['failed']] == ['seed=13', 'train.batch_size=3']
  assert 'seed 13 is unlucky' in report['failed'][0]['error']
  markdown = open(paths['md']).read()
  assert '## Failed points' in markdown and '`seed=13`: exit status 3: ValueError: seed 13 is unlucky' in markdown


def test_main_exit_status_list_and_report_only(tmp_path, fake_runner):
  path = _write_sweep_file(tmp_path / 'mysweep.py', 'sweeps.seeds([0, 13])')
  workdir = str(tmp_path / 'sweep')
  driver = ('import sys; from emojax import sweeps; sweeps.LAUNCH = sys.argv[1:3]; del sys.argv[1:3]; '
            'from experiments import sweep; from absl import app; app.run(lambda a: sys.exit(sweep.main(a)))')

  def main(*args):
    return subprocess.run([sys.executable, '-c', driver, *fake_runner, f'--config={path}', f'--workdir={workdir}',
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300)

  listed = main('--list')
  assert listed.returncode == 0, listed.stderr
  assert listed.stdout.splitlines() == [
      shlex.join(['python', '-m', 'experiments.run', f'--config={path}', f'--workdir={workdir}/seed={s}',
                  f'--config.seed={s}']) for s in (0, 13)]
  assert not os.path.exists(workdir)  # --list runs nothing
  ran = main('--heartbeat_s=0')
  assert ran.returncode == 1, ran.stderr  # a point failed
  assert '[2/2] FAILED   seed=13' in ran.stdout and 'Report:' in ran.stdout
  os.remove(os.path.join(workdir, 'report.md'))
  again = main('--report_only')
  assert again.returncode == 0 and 'running' not in again.stdout
  assert '| 2 | seed=13 | failed |' in open(os.path.join(workdir, 'report.md')).read()
  bad = main('--config.train.num_epoch=3')
  assert bad.returncode != 0 and 'num_epoch' in bad.stderr


def test_sigterm_stops_the_running_points_and_a_rerun_resumes(tmp_path, fake_runner):
  path = _write_sweep_file(tmp_path / 'mysweep.py', 'sweeps.seeds(2)')
  workdir = tmp_path / 'sweep'
  driver = ('import sys; from emojax import sweeps; sweeps.LAUNCH = sys.argv[1:3]; del sys.argv[1:3]; '
            'from experiments import sweep; from absl import app; app.run(lambda a: sys.exit(sweep.main(a)))')
  command = [sys.executable, '-c', driver, *fake_runner, f'--config={path}', f'--workdir={workdir}']
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, 'FAKE_RUN_SLEEP': '600'})
  assert '[1/2] running' in process.stdout.readline()
  while not os.path.exists(workdir / 'calls.jsonl'):  # the point's process has started
    time.sleep(0.01)
  process.terminate()
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 130 and 'the same command resumes the sweep' in stderr
  pid = json.loads((workdir / 'calls.jsonl').read_text().splitlines()[0])['pid']
  with pytest.raises(ProcessLookupError):
    os.kill(pid, 0)  # the point's process was stopped with the runner
  assert json.loads((workdir / 'seed=0' / sweeps.POINT_FILE).read_text())['state'] == 'interrupted'
  rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0 and '2 done' in rerun.stdout
  assert json.loads((workdir / 'seed=0' / sweeps.POINT_FILE).read_text())['attempts'] == 2


def test_list_of_a_shipped_sweep_prints_one_command_per_point():
  result = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--config=configs/sweeps/table3.py:smoke',
                           '--list'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert len(lines) == 4
  assert lines[0] == ('python -m experiments.run --config=configs/sweeps/table3.py:smoke '
                      '--workdir=workdirs/sweeps/table3_smoke/model.name=cnn,augment=off --config.model.name=cnn '
                      '--config.data.augment.top_crop_px=0 --config.data.augment.rotate_degrees=0.0')


def test_validation_error_stops_the_runner_before_any_point(tmp_path):
  path = _write_sweep_file(tmp_path / 'bad.py', "[{'seed': 0}, {'model.nmae': 'cnn'}]")
  result = subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={path}',
                           f'--workdir={tmp_path / "sweep"}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert "point 2 (model.nmae=cnn): unknown field 'model.nmae'" in result.stderr
  assert not os.path.exists(tmp_path / 'sweep' / 'seed=0')


def test_a_workdir_of_another_config_stops_the_sweep_but_more_epochs_resume(tmp_path, fake_runner):
  sweep = _load(tmp_path, 'sweeps.seeds(1)')
  point_dir = os.path.join(sweep.workdir, 'seed=0')
  os.makedirs(point_dir)
  recorded = json.loads(sweep.configs[0].to_json())
  recorded['train']['num_epochs'] = 1
  recorded['data']['removed_since'] = 1
  with open(os.path.join(point_dir, 'config.json'), 'w') as f:
    json.dump(recorded, f)
  assert sweeps.stale_points(sweep) == []  # more epochs, or fields added since: not another config
  recorded['optim']['learning_rate'] = 0.5
  with open(os.path.join(point_dir, 'config.json'), 'w') as f:
    json.dump(recorded, f)
  with pytest.raises(sweeps.SweepError, match=r'seed=0: optim.learning_rate 0.5 there, 0.0001 now'):
    sweeps.run(sweep, runner=fake_runner, out=lambda s: None)
  assert _calls(sweep) == []


def test_jobs_run_points_at_once_but_never_two_builds_of_one_array_set(tmp_path, fake_runner, monkeypatch):
  monkeypatch.setenv('FAKE_RUN_SLEEP', '1')
  keys = {0: 'a', 1: 'b', 2: 'c', 3: 'c'}  # seeds 2 and 3 would build the same arrays
  monkeypatch.setattr(sweeps, 'data_key', lambda config: str(tmp_path / 'arrays' / keys[config.seed]))
  sweep = _load(tmp_path, 'sweeps.seeds(4)')
  status = sweeps.run(sweep, jobs=2, runner=fake_runner, poll_s=0.01, out=lambda s: None)
  assert set(status.values()) == {'done'}
  calls = _calls(sweep)
  start = {c['point']: c['start'] for c in calls if 'start' in c}
  end = {c['point']: c['end'] for c in calls if 'end' in c}
  assert start['seed=1'] < end['seed=0']  # two at once
  assert start['seed=3'] >= end['seed=2']  # the second waits for the first's arrays
  assert json.load(open(os.path.join(sweep.workdir, 'seed=3', 'summary.json')))['final']['accuracy'] == 0.8


# ---------------------------------------------------------------------------------------------
# Reports, from hand-built point directories.

def _point(root, name, accuracy=None, ua=None, *, epoch=2, best=None, wall=None, error=None):
  point_dir = root / name
  point_dir.mkdir(parents=True)
  if accuracy is not None:
    summary = {'final': {'epoch': epoch, 'accuracy': accuracy, 'unweighted_accuracy': ua}}
    if best:
      summary['best'] = {'epoch': 1, 'test': {'accuracy': best[0], 'unweighted_accuracy': best[1]}}
    (point_dir / 'summary.json').write_text(json.dumps(summary))
  if wall is not None:
    (point_dir / sweeps.POINT_FILE).write_text(json.dumps({'wall_s': wall, 'state': 'finished'}))
  if error:
    (point_dir / sweeps.ERROR_FILE).write_text(f'exit status 1\ncommand: x\n{error}\n')
  if accuracy is None and not error:
    (point_dir / 'config.json').write_text('{}')
  return point_dir


def test_mean_and_population_std_against_hand_computed_numbers():
  assert reports.mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(1.25)))
  assert reports.mean_std([0.5]) == (0.5, 0.0)
  assert all(math.isnan(v) for v in reports.mean_std([]))


def test_report_aggregates_rows_over_seeds_and_folds(tmp_path):
  root = tmp_path / 'sweep'
  _point(root, 'model.name=cnn,seed=0', 0.5, 0.4, wall=10, best=(0.6, 0.5))
  _point(root, 'model.name=cnn,seed=1', 0.6, 0.5, wall=20, best=(0.7, 0.7))
  _point(root, 'model.name=cnn,seed=2', 0.7, 0.9, wall=30)              # no best entry: best n = 2
  _point(root, 'model.name=fusion,data.fold=0', 0.25, 0.25, wall=40)
  _point(root, 'model.name=fusion,data.fold=1', 0.75, 0.5, wall=60)
  _point(root, 'model.name=fusion,data.fold=2', 0.9, 0.9, epoch=1)      # incomplete: fewer epochs than asked
  _point(root, 'model.name=fusion,data.fold=3', error='ValueError: boom')
  _point(root, 'model.name=video3d,seed=0')                             # started, no summary yet
  entries = reports.gather(str(root))
  # Points of no definition: axes from the directory names; the epoch check needs one.
  assert {e['name']: e['status'] for e in entries}['model.name=fusion,data.fold=2'] == 'finished'
  entries = [dict(e, status='incomplete') if e['name'].endswith('fold=2') else e for e in entries]
  table = reports.aggregate(entries)
  assert table['columns'] == ['final.accuracy', 'final.unweighted_accuracy', 'best.accuracy',
                              'best.unweighted_accuracy']
  rows = {tuple(map(tuple, r['row'])): r for r in table['rows']}
  cnn = rows[(('model.name', 'cnn'),)]
  assert cnn['n'] == 3 and cnn['stats']['final.accuracy']['mean'] == pytest.approx(0.6)
  assert cnn['stats']['final.accuracy']['std'] == pytest.approx(math.sqrt((0.01 + 0 + 0.01) / 3))  # ddof=0
  assert cnn['stats']['final.unweighted_accuracy']['mean'] == pytest.approx(0.6)
  assert cnn['stats']['final.unweighted_accuracy']['std'] == pytest.approx(math.sqrt((0.04 + 0.01 + 0.09) / 3))
  assert cnn['stats']['best.accuracy'] == {'mean': pytest.approx(0.65), 'std': pytest.approx(0.05), 'n': 2,
                                           'values': [0.6, 0.7]}
  assert cnn['wall_s_mean'] == 20 and cnn['wall_s_total'] == 60
  fusion = rows[(('model.name', 'fusion'),)]
  assert fusion['n'] == 2 and fusion['points'] == 4
  assert fusion['stats']['final.accuracy']['mean'] == pytest.approx(0.5)
  assert fusion['stats']['final.accuracy']['std'] == pytest.approx(0.25)
  assert fusion['stats']['best.accuracy']['n'] == 0
  assert rows[(('model.name', 'video3d'),)]['n'] == 0
  assert table['counts'] == {'finished': 5, 'failed': 1, 'incomplete': 2, 'pending': 0}

  paths = reports.write(str(root))
  markdown = open(paths['md']).read()
  assert ('| cnn | 3 | 0.600 ± 0.082 | 0.600 ± 0.216 | 0.650 ± 0.050 (n=2) | 0.600 ± 0.100 (n=2) | 20 s | '
          '1 min 00 s |' in markdown)
  assert '| fusion | 3/4 |' in markdown  # without a definition the epoch-1 point counts as finished
  assert '`model.name=fusion,data.fold=3`: exit status 1: ValueError: boom' in markdown
  report = json.load(open(paths['json']))
  assert report['std'].startswith('population standard deviation (ddof=0)')
  assert report['rows'][2]['stats']['final.accuracy'] == {'mean': None, 'std': None, 'n': 0, 'values': []}
  assert os.path.getsize(paths['png']) > 0


def test_report_of_a_definition_includes_pending_points_and_dirs_from_elsewhere(tmp_path):
  sweep = _load(tmp_path, 'sweeps.seeds(3)')
  root = tmp_path / 'sweep'
  _point(root, 'seed=0', 0.5, 0.5, epoch=2, wall=5)
  _point(root, 'seed=1', 0.9, 0.9, epoch=1)   # the smoke base asks for 2 epochs
  other = _point(root, 'seed=7', 0.7, 0.7)    # another machine's point, not in this definition
  os.utime(other / 'summary.json', (1000, 1000))
  (other / 'config.json').write_text('{}')
  os.utime(other / 'config.json', (900, 900))
  entries = reports.gather(str(root), sweep)
  assert [(e['name'], e['status']) for e in entries] == [('seed=0', 'finished'), ('seed=1', 'incomplete'),
                                                         ('seed=2', 'pending'), ('seed=7', 'finished')]
  assert entries[0]['command'] == sweep.shell_command(sweep.points[0])
  assert (entries[3]['wall_s'], entries[3]['wall_estimated']) == (100, True)  # from the files' times
  table = reports.aggregate(entries, sweep.replicates)
  assert len(table['rows']) == 1 and table['rows'][0]['n'] == 2
  assert table['rows'][0]['stats']['final.accuracy']['mean'] == pytest.approx(0.6)
  markdown = open(reports.write(str(root), sweep)['md']).read()
  assert '| 3 | seed=2 | pending | - |' in markdown and '~1 min 40 s' in markdown


# ---------------------------------------------------------------------------------------------
# One tiny real sweep: two smoke points of one epoch, then skip and resume.

@pytest.mark.e2e
def test_real_smoke_sweep_end_to_end(tmp_path):
  path = _write_sweep_file(tmp_path / 'tiny.py', 'sweeps.seeds(2)', extra='c.train.num_epochs = 1')
  workdir, data_dir = tmp_path / 'sweep', tmp_path / 'arrays'

  def sweep(*args, into=workdir):
    return subprocess.run([sys.executable, '-m', 'experiments.sweep', f'--config={path}', f'--workdir={into}',
                           f'--config.data.data_dir={data_dir}', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)

  result = sweep()
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert '[1/2] done' in result.stdout and '[2/2] done' in result.stdout
  loaded = sweeps.load(path, path, workdir=str(workdir), global_flags=[f'--config.data.data_dir={data_dir}'])
  for point, config in zip(loaded.points, loaded.configs):
    recorded = json.load(open(workdir / point.name / 'config.json'))
    expected = json.loads(config.to_json())
    expected['data']['data_dir'] = str(data_dir)  # the command line's override, applied by the run
    assert recorded == expected  # every override reached the run with its type
  report = json.load(open(workdir / 'report.json'))
  assert [p['status'] for p in report['points']] == ['finished', 'finished']
  accuracy = [p['final']['accuracy'] for p in report['points']]
  assert report['rows'][0]['stats']['final.accuracy']['mean'] == pytest.approx(sum(accuracy) / 2)
  command = report['points'][1]['command']
  assert f'--workdir={workdir}/seed=1 --config.data.data_dir={data_dir} --config.seed=1' in command

  again = sweep()
  assert again.returncode == 0 and again.stdout.count('skipped  seed=') == 2

  # The same sweep run again from scratch in another directory gives the same table.
  twin = sweep(into=tmp_path / 'twin')
  assert twin.returncode == 0, twin.stderr[-3000:]
  twin_report = json.load(open(tmp_path / 'twin' / 'report.json'))
  assert [p['final'] for p in twin_report['points']] == [p['final'] for p in report['points']]
  assert twin_report['rows'][0]['stats'] == report['rows'][0]['stats']

  # A point killed after its last checkpoint: the rerun resumes it and ends with the same result.
  os.remove(workdir / 'seed=1' / 'summary.json')
  resumed = sweep()
  assert resumed.returncode == 0 and '[2/2] done' in resumed.stdout
  assert 'Resuming from' in (workdir / 'seed=1' / 'run.log').read_text()
  assert json.load(open(workdir / 'seed=1' / 'summary.json'))['final']['accuracy'] == accuracy[1]


def test_per_class_recall_is_aggregated_over_the_classes_each_point_saw(tmp_path):
  root = tmp_path / 'sweep'
  for seed, recall in ((0, [0.5, None]), (1, [1.0, 0.5])):
    point_dir = _point(root, f'seed={seed}', 0.6, 0.6)
    summary = json.loads((point_dir / 'summary.json').read_text())
    summary.update(class_names=['hap', 'sad'])
    summary['final']['per_class_recall'] = recall
    (point_dir / 'summary.json').write_text(json.dumps(summary))
  table = reports.aggregate(reports.gather(str(root)))
  assert table['rows'][0]['per_class_recall']['final'] == {'hap': {'mean': 0.75, 'std': 0.25, 'n': 2},
                                                           'sad': {'mean': 0.5, 'std': 0.0, 'n': 1}}
  markdown = open(reports.write(str(root))['md']).read()
  assert '## Per-class recall (final epoch)' in markdown and '| 2 | 0.750 ± 0.250 | 0.500 ± 0.000 (n=1) |' in markdown


def test_progress_reads_the_metrics_log(tmp_path):
  assert sweeps.progress(str(tmp_path)) == 'starting'
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write(json.dumps({'split': 'train', 'step': 40, 'epoch': 2}) + '\n')
  assert sweeps.progress(str(tmp_path), 10) == 'in epoch 3/10, step 40'
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write(json.dumps({'split': 'eval', 'step': 45, 'epoch': 3}) + '\n')
  assert sweeps.progress(str(tmp_path), 10) == 'epoch 3/10 done, step 45'


def test_crossval_sweeps_count_the_corpus_speakers_and_need_a_corpus(tmp_path):
  root = miniature_emodb.make_miniature_emodb(tmp_path / 'emodb', speakers=('03', '08', '09', '10', '11'))
  flags = [f'--config.corpus.root={root}']
  for name, arg, count in (('crossval', 'emodb', (3 + 4) * 2 * 5 + 5), ('crossval', 'emodb,normalised', 7 * 5),
                           ('crossval', 'emodb,blind,nopaper', 7 * 5), ('recipe', 'emodb', 7 * 5),
                           ('changes', 'emodb', 11 * 5), ('changes', 'emodb,recipe,egemaps', 2 * 5),
                           ('changes', 'emodb,recipe,seeds3', 3 * 5),
                           ('crossval', 'emodb,hybrid', (3 + 3 + 4) * 2 * 5 + 5)):
    module = sweeps.load_module(os.path.join(SWEEP_DIR, f'{name}.py'))
    base = module.get_config(arg)
    base.corpus.root = str(root)
    sweep = sweeps.load(f'configs/sweeps/{name}.py:{arg}', os.path.join(SWEEP_DIR, f'{name}.py'), base=base,
                        global_flags=flags)
    assert len(sweep.points) == count, (name, arg)
    assert {c.data.split for c in sweep.configs} == {'folds'} and {c.data.class_set for c in sweep.configs} == {'all'}
    assert sorted({c.data.fold for c in sweep.configs}) == list(range(5))
  modes = {(c.model.name, c.data.normalize, c.data.frontend) for c in sweeps.load(
      'configs/sweeps/crossval.py:emodb', os.path.join(SWEEP_DIR, 'crossval.py'), base=base).configs}
  assert ('egemaps_svm', 'speaker', 'logmel') in modes and ('cnn_rnn', 'none', 'logmel') in modes
  assert ('cnn_rnn', 'none', 'faithful') in modes  # the paper's recipe, speaker-blind only
  fusions = sweeps.load('configs/sweeps/crossval.py:emodb', os.path.join(SWEEP_DIR, 'crossval.py'), base=base).fusions
  assert ('model', ('recipe', 'egemaps_svm')) in fusions  # the report's late-fusion rows
  with pytest.raises(sweeps.SweepError, match='needs --config.corpus.root'):
    sweeps.load('configs/sweeps/crossval.py:emodb', os.path.join(SWEEP_DIR, 'crossval.py'))
  with pytest.raises(ValueError, match='Name the corpus'):
    sweeps.load('configs/sweeps/crossval.py', os.path.join(SWEEP_DIR, 'crossval.py'))


def test_seed_ensemble_averages_probabilities_per_fold_hand_computed(tmp_path):
  root = tmp_path / 'sweep'
  labels = [0, 1, 1]
  # fold 0: seed 0 gets utterances a, b right; seed 1 gets b, c right; the average gets all three.
  folds = {0: ([[.6, .4], [.3, .7], [.6, .4]], [[.45, .55], [.4, .6], [.2, .8]]),
           1: ([[.9, .1], [.9, .1], [.9, .1]], [[.8, .2], [.7, .3], [.05, .95]])}  # average: a right, b wrong, c right
  for fold, (first, second) in folds.items():
    for seed, probabilities in enumerate((first, second)):
      name = f'model.name=cnn,data.fold={fold},seed={seed}'
      _point(root, name, 0.5, 0.5, wall=1)
      (root / name / 'predictions.json').write_text(json.dumps(
          {'class_names': ['x', 'y'], 'utterances': ['a', 'b', 'c'], 'labels': labels, 'final': probabilities,
           'best': probabilities}))
  _point(root, 'model.name=rnn,data.fold=0,seed=0', 0.5, 0.5)  # one seed: no ensemble for this row
  table = reports.aggregate(reports.gather(str(root)))
  assert table['columns'][-4:] == ['ensemble_final.accuracy', 'ensemble_final.unweighted_accuracy',
                                   'ensemble_best.accuracy', 'ensemble_best.unweighted_accuracy']
  cnn, rnn = table['rows']
  assert cnn['stats']['ensemble_final.accuracy']['values'] == [pytest.approx(1.0), pytest.approx(2 / 3)]
  assert cnn['stats']['ensemble_final.unweighted_accuracy']['values'] == [pytest.approx(1.0), pytest.approx(0.75)]
  assert cnn['stats']['ensemble_final.accuracy']['n'] == 2  # folds, not points
  assert 'ensemble_final.accuracy' not in rnn['stats']
  markdown = reports.markdown('t', table, reports.gather(str(root)))
  assert 'test acc (seed ensemble, final)' in markdown and '0.833 ± 0.167 (n=2)' in markdown
  paths = reports.write(str(root))
  assert 'predictions' not in json.dumps(json.load(open(paths['json']))['points'])


def test_late_fusion_rows_average_each_row_s_seed_mean_per_fold_hand_computed(tmp_path):
  root = tmp_path / 'sweep'
  labels = [0, 1, 1]

  def point(name, probabilities, utterances=('a', 'b', 'c')):
    _point(root, name, 0.5, 0.5, wall=1)
    ordered = dict(zip(('a', 'b', 'c'), zip(probabilities, labels)))
    (root / name / 'predictions.json').write_text(json.dumps(
        {'class_names': ['x', 'y'], 'utterances': list(utterances), 'labels': [ordered[u][1] for u in utterances],
         'final': [ordered[u][0] for u in utterances], 'best': None}))

  # Fold 0: the network's seeds average to [.5,.5],[.6,.4],[.3,.7]; the baseline [.7,.3],[.3,.7],[.6,.4].
  # Each gets 2 of 3 right; fused (equal weights): [.6,.4],[.45,.55],[.45,.55]: all right. Fold 1: the baseline alone.
  point('model=net,data.fold=0,seed=0', [[.6, .4], [.7, .3], [.2, .8]])
  point('model=net,data.fold=0,seed=1', [[.4, .6], [.5, .5], [.4, .6]])
  point('model=base,data.fold=0', [[.7, .3], [.3, .7], [.6, .4]], utterances=('c', 'b', 'a'))  # written in another order
  point('model=base,data.fold=1', [[.9, .1], [.9, .1], [.9, .1]])
  point('model=other,data.fold=0', [[.9, .1], [.9, .1], [.9, .1]])
  table = reports.aggregate(reports.gather(str(root)), fusions=[('model', ('net', 'base')), ('model', ('net', 'gone'))])
  fused = [r for r in table['rows'] if r.get('fused')]
  assert len(fused) == 1 and fused[0]['row'] == [['model', 'net + base']]
  assert fused[0]['stats']['ensemble_final.accuracy']['values'] == [pytest.approx(1.0)]  # fold 0 only
  assert 'ensemble_best.accuracy' not in fused[0]['stats']  # no member has best-checkpoint probabilities
  markdown = reports.markdown('t', table, reports.gather(str(root)))
  assert '| net + base | 1 |' in markdown and 'late fusions' in markdown


def test_validation_accuracy_at_the_final_epoch_is_a_column(tmp_path):
  root = tmp_path / 'sweep'
  for fold, val in ((0, 0.5), (1, 0.7)):
    _point(root, f'recipe=a,data.fold={fold}', 0.6, 0.6)
    summary = json.loads((root / f'recipe=a,data.fold={fold}' / 'summary.json').read_text())
    summary['final']['validation'] = {'accuracy': val, 'unweighted_accuracy': 0.1}
    (root / f'recipe=a,data.fold={fold}' / 'summary.json').write_text(json.dumps(summary))
  table = reports.aggregate(reports.gather(str(root)))
  assert table['columns'][-1] == 'validation.accuracy'
  assert table['rows'][0]['stats']['validation.accuracy']['mean'] == pytest.approx(0.6)
  assert 'val. acc (final)' in reports.markdown('t', table, reports.gather(str(root)))


def test_a_baseline_point_is_stale_only_on_the_fields_baselines_read(tmp_path):
  sweep = _load(tmp_path, "sweeps.values('model.name', ['mfcc_svm'])")
  point_dir = os.path.join(sweep.workdir, 'model.name=mfcc_svm')
  os.makedirs(point_dir)
  recorded = json.loads(sweep.configs[0].to_json())
  recorded['optim']['learning_rate'] = 0.5  # a network's field: the baseline never read it
  recorded['data']['augment']['freq_masks'] = 3
  (tmp_path / 'sweep' / 'model.name=mfcc_svm' / 'config.json').write_text(json.dumps(recorded))
  assert sweeps.stale_points(sweep) == []
  recorded['data']['normalize'] = 'speaker'
  (tmp_path / 'sweep' / 'model.name=mfcc_svm' / 'config.json').write_text(json.dumps(recorded))
  assert sweeps.stale_points(sweep) == ["model.name=mfcc_svm: data.normalize 'speaker' there, 'none' now"]


def test_a_point_starting_from_another_s_checkpoint_waits_for_it(tmp_path, fake_runner, monkeypatch):
  monkeypatch.setenv('FAKE_RUN_SLEEP', '1')
  monkeypatch.setattr(sweeps, 'data_key', lambda config: None)  # no array build to wait for: only the checkpoint
  expr = ("sweeps.options('run', first={'seed': 0}, "
          "second={'seed': 1, 'init_from': sweeps.SWEEP_DIR + '/run=first/checkpoints/latest'}, third={'seed': 2})")
  sweep = _load(tmp_path, expr)
  assert sweep.configs[1].init_from == os.path.join(sweep.workdir, 'run=first/checkpoints/latest')
  assert f'--config.init_from={sweep.workdir}/run=first/checkpoints/latest' in sweep.command(sweep.points[1])
  status = sweeps.run(sweep, jobs=2, runner=fake_runner, poll_s=0.01, out=lambda s: None)
  assert set(status.values()) == {'done'}
  start = {c['point']: c['start'] for c in _calls(sweep) if 'start' in c}
  end = {c['point']: c['end'] for c in _calls(sweep) if 'end' in c}
  assert start['run=second'] >= end['run=first']  # waited for its checkpoint's point
  assert start['run=third'] < end['run=first']    # meanwhile the free slot went to the next independent point


def test_a_point_may_override_a_command_line_field_only_when_the_sweep_file_allows_it(tmp_path):
  path = _write_sweep_file(tmp_path / 'mysweep.py', "[{'corpus.root': '/other'}]")
  with pytest.raises(sweeps.SweepError, match='set both by the sweep and on the command line'):
    sweeps.load(path, path, workdir=str(tmp_path / 'a'), global_flags=['--config.corpus.root=/mine'])
  with open(path, 'a') as f:
    f.write("\nPOINT_WINS = ('corpus.root',)\n")
  sweep = sweeps.load(path, path, workdir=str(tmp_path / 'b'), global_flags=['--config.corpus.root=/mine'])
  command = sweep.command(sweep.points[0])
  assert command.index('--config.corpus.root=/other') > command.index('--config.corpus.root=/mine')  # last wins


def test_crossval_pretrained_runs_the_other_corpus_first_and_fine_tunes_from_it(tmp_path):
  root = miniature_emodb.make_miniature_emodb(tmp_path / 'emodb', speakers=('03', '08', '09', '10'))
  module = sweeps.load_module(os.path.join(SWEEP_DIR, 'crossval.py'))
  base = module.get_config('emodb,pretrained,nopaper')
  base.corpus.root = str(root)
  with pytest.raises(ValueError, match='pretrain_root'):
    module.get_sweep('emodb,pretrained,nopaper', base)
  base.pretrain_root = '/data/ravdess'
  flags = [f'--config.corpus.root={root}', '--config.pretrain_root=/data/ravdess']
  sweep = sweeps.load('configs/sweeps/crossval.py:emodb,pretrained,nopaper', os.path.join(SWEEP_DIR, 'crossval.py'),
                      base=base, global_flags=flags, workdir=str(tmp_path / 'cv'))
  assert len(sweep.points) == 2 + 2 * 3 * 2 * 4 + 4 * 2 * 4  # pre-training per mode; 2 networks x 3 seeds; baselines
  first = sweep.configs[:2]
  assert [(c.corpus.name, c.corpus.root, c.data.variant, c.data.clip_seconds, c.data.normalize) for c in first] == [
      ('ravdess', '/data/ravdess', 'ds2', 2.0, 'none'), ('ravdess', '/data/ravdess', 'ds2', 2.0, 'speaker')]
  tuned = [(p, c) for p, c in zip(sweep.points, sweep.configs) if c.init_from]
  assert len(tuned) == 2 * 3 * 4
  for point, config in tuned:
    mode = dict((a.name, a.label) for a in point.axes)['mode']
    assert config.init_from == os.path.join(sweep.workdir, f'model=pretrain-ravdess,mode={mode}', 'checkpoints',
                                            'latest')
    assert tuple(config.init_keys) == module.ENCODER and config.corpus.name == 'emodb'
    assert config.corpus.root == str(root) and config.data.normalize == module.MODES[mode]['data.normalize']
