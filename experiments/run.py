r"""Trains and evaluates one model on one corpus; the main entry point.

  python -m experiments.run --config=configs/fusion.py
  python -m experiments.run --config=configs/cnn_rnn.py:smoke --config.train.num_epochs=3
  python -m experiments.run --config=configs/fusion.py --config.eval_only=True
  python -m experiments.run --config=configs/emodb.py --config.corpus.root=... --config.model.name=egemaps_svm

`configs/x.py` is looked up in experiments/configs/ when it is not a path
from the current directory. Rerunning a command whose workdir holds a
checkpoint resumes it. The baselines (emojax.baselines: eGeMAPS or MFCC statistics with
logistic regression or an RBF SVM) are models by name too; they fit in seconds, with no epochs.
"""
import contextlib
import json
import os
import sys

from emojax import host

if __name__ == '__main__':
  host.reexec_with_hugepages()  # before the imports below (6 s), which would otherwise run in both processes

# pylint: disable=wrong-import-position
import jax
from absl import app, flags, logging
from ml_collections import config_flags

from emojax import arrays, baselines, checkpoints, loader, models, schema, train, workdirs
from experiments import fail
from experiments.configs import resolve_config_path

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Run config: configs/<model>.py[:preset].',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Overrides config.workdir.')
_DISTRIBUTED = flags.DEFINE_bool('distributed', False, 'Multi-process: call jax.distributed.initialize() first '
                                 '(TPU pods and SLURM/Kubernetes clusters configure themselves).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'Multi-process by hand: host:port of process 0 '
                                   '(implies --distributed; with --num_processes and --process_id).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-process by hand: how many processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-process by hand: this process, 0 .. num_processes-1.')


def start_processes() -> None:
  """Joins a multi-process run when asked: from the cluster's environment, or from the flags."""
  by_hand = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in by_hand) and any(v is None for v in by_hand):
    fail('--coordinator_address, --num_processes and --process_id go together.')
  if _DISTRIBUTED.value or by_hand[0] is not None:
    # Collectives between the processes' CPU devices (the parameters' all-reduce on a CPU-only cluster).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(coordinator_address=by_hand[0], num_processes=by_hand[1], process_id=by_hand[2])


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax and TFDS log every checkpoint at INFO
  start_processes()
  config = _CONFIG.value
  try:  # every field, before anything is built or written
    schema.validate(config)
  except schema.InvalidConfig as e:
    fail(e)
  workdir = _WORKDIR.value or config.workdir
  os.makedirs(workdir, exist_ok=True)
  if config.eval_only:  # reads the workdir only: no lock
    evaluate_only(config, workdir)
    return
  # One process at a time per workdir (process 0 of a multi-host run holds it for all).
  try:
    with workdirs.Lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext():
      train_or_fit(config, workdir)
  except (workdirs.WorkdirBusy, workdirs.ConfigChanged, train.Diverged,
          checkpoints.DamagedCheckpoint, arrays.UnusableCorpus) as e:
    fail(e)


def evaluate_only(config, workdir: str) -> None:
  data = loader.load_data(config, workdir)
  model = models.get_model(config.model.name, num_classes=len(data.class_names), **models.options(config.model),
                           tune_for=train.device_inputs(data.test, config.train.batch_size), training=False)
  result = train.evaluate_checkpoint(config.init_from or workdir, data, model, config)
  print(json.dumps({k: result[k] for k in ('checkpoint', 'accuracy', 'unweighted_accuracy', 'count')}))
  if result['recorded'] is not None:
    same = all(result[k] == v for k, v in result['recorded'].items())
    print('matches the metrics recorded with the checkpoint' if same else
          f"DIFFERS from the metrics recorded with the checkpoint: {result['recorded']}")


def train_or_fit(config, workdir: str) -> None:
  if baselines.is_baseline(config.model.name):  # features + scikit-learn: no epochs, no checkpoints
    workdirs.write_config(workdir, config)
    summary = baselines.train_and_evaluate(config, workdir)
    print(f"\nBaseline {config.model.name} ({summary['mode']}): {summary['description']}.")
    if 'best' in summary:
      print(f"  {summary['best']['description']}.")
    print(f'  summary:     {os.path.abspath(os.path.join(workdir, "summary.json"))}')
    return
  # A resumed run keeps its identity: a changed field stops here, before any work, unless allowed.
  for change in workdirs.check_config(workdir, config):
    print(f'Resuming with a changed config: {change}')
  data = loader.load_data(config, workdir)
  model = models.get_model(config.model.name, num_classes=len(data.class_names), **models.options(config.model),
                           tune_for=train.device_inputs(data.train, config.train.batch_size))
  print(f'Kernels ({jax.default_backend()}, {jax.device_count()} device(s) in {jax.process_count()} process(es)): '
        f'{model.plan.describe()}')
  if jax.process_index() == 0:
    workdirs.write_config(workdir, config)
  summary = train.train_and_evaluate(config, workdir, data=data, model=model)
  print(f"\nDone after {summary['final']['epoch']} epochs: {summary['description']}.")
  if 'best' in summary:
    print(f"  {summary['best']['description']} (checkpoints/best).")
  print(f'  checkpoints: {summary["checkpoints"]}')
  print(f'  metrics:     {os.path.abspath(os.path.join(workdir, "metrics.jsonl"))}')
  print(f'  summary:     {os.path.abspath(os.path.join(workdir, "summary.json"))}')
  for plot in summary['plots']:
    print(f'  plot:        {os.path.abspath(plot)}')


if __name__ == '__main__':
  sys.argv = resolve_config_path(sys.argv)
  flags.mark_flag_as_required('config')
  app.run(main)
