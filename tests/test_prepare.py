"""The prepare command on a generated miniature IEMOCAP: build, manifest, split files, reuse by prepare and run."""
import json
import os
import subprocess
import sys

import pytest

from emojax import arrays, loader
from experiments.configs import cnn

sys.path.insert(0, os.path.dirname(__file__))
import miniature_iemocap  # noqa: E402  (a helper next to this file)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _prepare(*flags: str) -> tuple[str, str]:
  result = subprocess.run([sys.executable, '-m', 'experiments.prepare', *flags], cwd=_ROOT, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout, result.stderr


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  corpus_dir = str(tmp_path_factory.mktemp('iemocap'))
  data_dir = str(tmp_path_factory.mktemp('data'))
  truth = miniature_iemocap.make_miniature_iemocap(corpus_dir, defects=True)
  overrides = {'corpus.name': 'iemocap', 'corpus.root': corpus_dir, 'data.data_dir': data_dir,
               'data.variant': 'ds2', 'data.clip_seconds': 1.0, 'data.audio_size': (16, 24)}
  flags = ('--config=configs/cnn.py:smoke', *(f'--config.{k}={v}' for k, v in overrides.items()),
           '--utterances_per_shard=8')
  return truth, overrides, flags, _prepare(*flags)


@pytest.mark.e2e
def test_prepare_builds_prints_the_manifest_and_writes_every_fold(prepared):
  truth, _, _, (stdout, stderr) = prepared
  assert 'features iemocap ds2' in stderr  # the progress bar
  summary = json.loads(stdout.strip().splitlines()[-1])
  kept = [u for u, t in truth['utterances'].items() if t['label'] in ('hap', 'sad', 'ang', 'neu')]
  assert f"from {len(kept)} of {len(truth['utterances']) + 2} utterances" in stdout
  assert "'malformed label line': 1" in stdout and "'missing audio': 1" in stdout
  split_dir = os.path.join(summary['directory'], 'splits')
  names = sorted(os.listdir(split_dir))
  assert names == [f'leave_out_Session{s}.json' for s in range(1, 6)] + ['random_80_20.json']
  examples = [json.loads(line) for line in open(os.path.join(summary['directory'], 'examples.jsonl'))]
  assert summary['records'] == len(examples)
  for session in range(1, 6):
    split = json.load(open(os.path.join(split_dir, f'leave_out_Session{session}.json')))
    assert split['test_units'] == [f'Session{session}']
    assert {truth['utterances'][u]['group'] for u in split['test_utterances']} == {f'Session{session}'}
    assert not set(split['train_utterances']) & set(split['test_utterances'])
    assert len(split['train']) + len(split['test']) == len(examples)
  random_split = json.load(open(os.path.join(split_dir, 'random_80_20.json')))
  assert len(random_split['test']) == round(0.2 * len(examples))


@pytest.mark.e2e
def test_prepare_again_reuses_the_build(prepared):
  _, _, flags, (stdout, _) = prepared
  again, progress = _prepare(*flags)
  assert 'features iemocap' not in progress  # no progress bar: nothing recomputed
  assert json.loads(again.strip().splitlines()[-1]) == json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.e2e
def test_a_run_of_the_same_config_reads_the_prepared_arrays(prepared, tmp_path, monkeypatch):
  _, overrides, _, (stdout, _) = prepared
  summary = json.loads(stdout.strip().splitlines()[-1])
  config = cnn.get_config('smoke')
  for key, value in overrides.items():
    section, field = key.split('.')
    config[section][field] = value
  monkeypatch.setattr(arrays, '_build', lambda *args: pytest.fail('load_data built the arrays again'))
  data = loader.load_data(config, str(tmp_path))
  assert len(data.train) + len(data.validation) + len(data.test) == summary['records']  # three sides, every record once
  assert data.train.example_batch(2)['audio'].shape == (2, 16, 24, 1)
  corpus_builds = os.path.dirname(summary['directory'])  # the one build there is the prepared one
  assert os.listdir(overrides['data.data_dir']) == [os.path.basename(corpus_builds)]
  assert os.listdir(corpus_builds) == [os.path.basename(summary['directory'])]
