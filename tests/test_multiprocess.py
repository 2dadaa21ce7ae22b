"""Two processes on this machine (local coordinator, CPU collectives) train as one process does."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _losses(workdir):
  records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
  return [r['step'] for r in records], [r['loss'] for r in records if r['split'] == 'train'], records


@pytest.mark.e2e
def test_two_processes_build_once_and_train_as_one(tmp_path):
  common = ['--config=configs/cnn_rnn.py:smoke', '--config.train.num_epochs=2']
  env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=1'}
  one = subprocess.run([sys.executable, '-m', 'experiments.run', *common, f'--workdir={tmp_path / "one"}',
                        f'--config.data.data_dir={tmp_path / "arrays_one"}'], cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env=env)
  assert one.returncode == 0, one.stderr[-3000:]
  # The pair starts with no arrays built: one process builds them, the other waits for that build.
  port = _free_port()
  pair = [subprocess.Popen([sys.executable, '-m', 'experiments.run', *common, f'--workdir={tmp_path / "two"}',
                            f'--config.data.data_dir={tmp_path / "arrays_two"}',
                            f'--coordinator_address=localhost:{port}', '--num_processes=2', f'--process_id={i}'],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
          for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in pair]
  for p, (_, err) in zip(pair, outputs):
    assert p.returncode == 0, err[-3000:]
  assert '2 device(s) in 2 process(es)' in outputs[0][0]
  assert sum('Built ' in out for out, _ in outputs) == 1  # one build, read by both
  steps_one, losses_one, records_one = _losses(tmp_path / 'one')
  steps_two, losses_two, records_two = _losses(tmp_path / 'two')
  assert steps_two == steps_one  # one log line per step, written by process 0 alone
  np.testing.assert_allclose(losses_two, losses_one, rtol=1e-4, atol=1e-5)  # up to summation order
  final_one, final_two = records_one[-1], records_two[-1]
  assert final_two['confusion'] == final_one['confusion']
  predictions = [json.load(open(tmp_path / w / 'predictions.json')) for w in ('one', 'two')]
  assert predictions[0]['utterances'] == predictions[1]['utterances']
  np.testing.assert_allclose(predictions[1]['final'], predictions[0]['final'], atol=1e-4)
