r"""Runs a sweep (a grid of experiments.run configs), resumably, and writes its report.

  python -m experiments.sweep --config=configs/sweeps/table3.py:smoke            # run, then report
  python -m experiments.sweep --config=configs/sweeps/table3.py --jobs=2         # two points at once
  python -m experiments.sweep --config=configs/sweeps/table3.py --report_only    # report from the workdirs
  python -m experiments.sweep --config=configs/sweeps/table3.py --list           # one command per point
  python -m experiments.sweep --config=configs/sweeps/faithful.py --config.train.num_epochs=20

A sweep file (experiments/configs/sweeps/) has get_config(arg), the base run config, and
get_sweep(arg), the points (emojax/sweeps.py). Each point runs as its own process,

  python -m experiments.run --config=<sweep file>[:arg] --workdir=<sweep dir>/<point> --config.a.b=v ...

logging to <sweep dir>/<point>/run.log, so any point can be rerun alone with the command the
report prints. The sweep dir defaults to workdirs/sweeps/<file>[_<presets>]. Rerunning the sweep
skips finished points (a summary.json at the configured epoch count) and resumes killed ones
from their checkpoints. A failed point leaves <point>/sweep_error.txt (exit status, last log
lines); the others go on, and the exit status is 1 if any failed. `--config.x=y` flags apply to
every point (they may not set a swept field). Before anything runs: an unknown field, a value
of the wrong type, two points sharing a workdir, or a point dir holding a run of another config
stop the sweep with an error naming them (exit status 2).

--jobs=N runs N points at once (points that would build the same arrays wait for the first).
On 2 CPU cores the default of 1 suits the embedded corpus's runs, which use both cores: two at
once take about twice as long each (same results). Small real-corpus runs are half overhead
(start-up, evaluation, checkpoints): an Emo-DB fold took 88 s alone and 2 min 15 s two at a
time, so --jobs=2 gives 1.3x the throughput there. More jobs pay on a machine with cores to spare.

Many machines: `--list` prints the points' commands, one per line
and nothing else, to run anywhere that shares the sweep dir (the same paths, run from the
repository root), e.g. as a SLURM array:

  python -m experiments.sweep --config=configs/sweeps/table3.py --list > points.txt
  sbatch --array=1-$(wc -l < points.txt) --wrap 'sed -n "${SLURM_ARRAY_TASK_ID}p" points.txt | bash'

(add `> <point dir>/run.log 2>&1` to keep each log). Then `--report_only` on any machine that
sees the sweep dir gathers every point directory found there, including ones no runner
launched; a point with no sweep_point.json gets its wall time from its files' times (marked ~).
"""
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from emojax import reports, sweeps
from experiments import fail
from experiments.configs import resolve_config_path

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Sweep file: configs/sweeps/<name>.py[:presets].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory (default workdirs/sweeps/<name>[_<presets>]).')
_JOBS = flags.DEFINE_integer('jobs', 1, 'Points run at once, each its own process.', lower_bound=1)
_LIST = flags.DEFINE_bool('list', False, "Print each point's command, one per line, and exit.")
_REPORT_ONLY = flags.DEFINE_bool('report_only', False, 'Write the report from the workdirs; run nothing.')
_HEARTBEAT = flags.DEFINE_float('heartbeat_s', 60.0, 'Seconds between progress lines of a running point (0: none).')

_TYPED = {}  # --config as typed (configs/sweeps/x.py:arg): the form the point commands use


def main(argv):
  del argv
  flag = flags.FLAGS['config']
  path = config_flags.get_config_filename(flag).partition(':')[0]
  overrides = config_flags.get_override_values(flag)
  global_flags = [f'--config.{k}={sweeps.format_value(v)}' for k, v in overrides.items()]
  try:
    typed = _TYPED.get('config') or config_flags.get_config_filename(flag)
    sweep = sweeps.load(typed, path, base=_CONFIG.value, global_flags=global_flags, workdir=_WORKDIR.value)
    if _LIST.value:
      try:
        print('\n'.join(sweep.shell_command(p) for p in sweep.points), flush=True)
      except BrokenPipeError:  # | head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
      return 0
    status = {} if _REPORT_ONLY.value else sweeps.run(sweep, jobs=_JOBS.value, heartbeat_s=_HEARTBEAT.value)
  except sweeps.SweepError as e:
    fail(e)
  except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the running points were stopped
    print('Interrupted: the same command resumes the sweep.', file=sys.stderr)
    return 130
  paths = reports.write(sweep.workdir, sweep)
  print('Report: ' + ', '.join(paths.values()))
  return 1 if 'failed' in status.values() else 0


if __name__ == '__main__':
  _TYPED['config'] = next((a[len('--config='):] for a in sys.argv if a.startswith('--config=')), '')
  sys.argv = resolve_config_path(sys.argv)
  flags.mark_flag_as_required('config')
  app.run(lambda argv: sys.exit(main(argv)))
