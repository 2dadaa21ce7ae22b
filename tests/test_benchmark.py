"""The benchmark harness end to end at tiny shapes (--quick): the figures it writes.

It runs as the README says, in a child process (each case in a grandchild), and
is checked for what it reports, never for how fast anything was.
"""
import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, '..', 'shared', 'data')  # the harness's default --shared_data
MODELS = ('cnn', 'video3d')
QUICK_FEATURES = {'cnn': {'audio': [24, 32, 3]}, 'video3d': {'video': [10, 46, 50, 3]}}

try:
  import torch  # noqa: F401  pylint: disable=unused-import
  HAVE_TORCH = True
except ImportError:
  HAVE_TORCH = False


def _benchmark(*args):
  return subprocess.run([sys.executable, '-m', 'experiments.benchmark', *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=1200)


@pytest.fixture(scope='module')
def report(tmp_path_factory):
  out = tmp_path_factory.mktemp('benchmark')
  result = _benchmark('--quick', f'--models={",".join(MODELS)}', f'--out={out}',
                      f'--data_dir={out / "arrays"}', '--pipeline_workers=1', '--pipeline_epochs=1')
  assert result.returncode == 0, result.stderr[-3000:]
  document = json.loads((out / 'benchmark.json').read_text())
  return document, (out / 'benchmark.md').read_text(), result.stdout


def _rows(document, framework):
  return {(r['model'], r.get('setting')): r for r in document['results'] if r['framework'] == framework}


@pytest.mark.e2e
def test_every_model_is_timed_without_recompiling(report):
  document, table, stdout = report
  assert not [r for r in document['results'] if 'error' in r]
  emojax = _rows(document, 'emojax')
  assert set(emojax) == {(m, 'fast/fast:float32') for m in MODELS}
  for row in emojax.values():
    assert row['samples_per_s'] > 0 and row['step_s'] > 0 and len(row['step_times_s']) == 2
    assert row['compile_s'] > 0 and row['latency_ms'] > 0 and row['peak_rss_mb'] > 0
    assert row['flops_per_step'] > 0 and row['model_kwargs']['conv_impl'] == 'fast'
    # The step compiles once, before timing; the timed steps reuse it.
    assert row['compilations_total'] >= 1 and row['compilations_timed_steps'] == 0
  # The autotuned plan is tuned (or read) in a process of its own before each model case.
  tuning = _rows(document, 'emojax_tune')
  assert set(tuning) == set(emojax)
  for row in tuning.values():
    assert row['autotune_s'] >= 0 and row['autotune_batch1_s'] >= 0 and row['peak_rss_mb'] > 0
    assert row['kernel_plan'].split(' (')[0] == emojax[row['model'], row['setting']]['kernel_plan'].split(' (')[0]
    assert f"- {row['model']}: " in table and 'autotuning, in a process of its own' in table
  assert document['machine']['measured_peak_flops'] > 0
  assert document['machine']['settings'] == ['fast/fast:float32']
  for model in MODELS:
    assert f'| {model} |' in table
  assert table in stdout


@pytest.mark.e2e
@pytest.mark.skipif(not HAVE_TORCH, reason='torch is not installed (an optional extra): no reference rows')
def test_torch_reference_rows_and_ratios(report):
  document, table, _ = report
  for framework in ('torch', 'torch_channels_last'):
    rows = _rows(document, framework)
    assert {model for model, _ in rows} == set(MODELS)
    for row in rows.values():
      assert row['samples_per_s'] > 0 and row['latency_ms'] > 0 and row['device'].startswith(('cpu', 'cuda'))
  line = next(l for l in table.splitlines() if l.startswith('| cnn |'))
  ratio = line.split('|')[5].strip()
  assert float(ratio) > 0  # ratio vs torch


@pytest.mark.e2e
def test_input_pipeline_against_the_training_step(report):
  document, table, _ = report
  pipeline = document['pipeline']
  assert 'error' not in pipeline, pipeline.get('stderr_tail')
  assert pipeline['config'] == 'configs/fusion.py:smoke'
  step = pipeline['train_step']
  assert step['samples_per_s'] > 0 and step['compilations_timed_steps'] == 0 and step['model'] == 'fusion'
  rows = pipeline['rows']
  assert {(r['num_workers'], r['augment']) for r in rows} == {(0, False), (1, False), (0, True), (1, True)}
  full_batches = pipeline['train_examples'] // pipeline['batch_size'] * pipeline['batch_size']
  for row in rows:
    assert row['samples_per_s'] > 0 and row['first_batch_s'] > 0
    assert [e['samples'] for e in row['epochs']] == [full_batches]  # every full batch of the epoch
    assert row['pipeline_over_step'] == pytest.approx(row['samples_per_s'] / step['samples_per_s'])
    assert row['bottleneck'] == (row['samples_per_s'] < step['samples_per_s'])
  assert 'Input pipeline' in table and 'pipeline the bottleneck?' in table


@pytest.mark.e2e
def test_single_clip_latency(report):
  document, table, _ = report
  latency = document['latency']
  have_files = (glob.glob(os.path.join(SHARED, 'emodb', 'wav', '*.wav'))
                and glob.glob(os.path.join(SHARED, 'crema-d-sample', 'VideoFlash', '*.flv')))
  if not have_files:
    assert 'skipped' in latency and 'no real recordings' in latency['skipped']
    assert 'Single-clip latency: skipped' in table
    pytest.skip(f'no real recordings at {os.path.abspath(SHARED)} (shared/data absent): latency not measured')
  assert 'error' not in latency, latency.get('stderr_tail')
  rows = {r['model']: r for r in latency['models']}
  assert set(rows) == set(MODELS)
  for model, row in rows.items():
    assert row['decode_ms'] > 0 and row['features_ms'] > 0 and row['model_ms'] > 0 and row['total_ms'] > 0
    assert row['feature_shapes'] == QUICK_FEATURES[model]
  assert rows['cnn']['source'].endswith('.wav') and rows['video3d']['source'].endswith('.flv')
  assert 'Single-clip inference' in table


def test_bad_setting_is_a_usage_error():
  for bad in ('winograd', 'fft/avg', 'fast:float16', 'fold2d+patches:x'):
    result = _benchmark('--quick', f'--settings={bad}', '--out=/nonexistent')
    assert result.returncode != 0 and f"Setting '{bad}'" in result.stderr


def test_settings_parse_split_impls_folds_and_dtypes():
  from experiments.benchmark import main as benchmark

  assert benchmark.parse_setting('fast') == ('fast', 'fast', 'float32')
  assert benchmark.parse_setting('xla/xla:bfloat16') == ('xla', 'xla', 'bfloat16')
  assert benchmark.parse_setting('fold2d+patches:2') == ('fold2d+patches:2', 'fast', 'float32')
  assert benchmark.parse_setting('patches:2/xla:bfloat16') == ('patches:2', 'xla', 'bfloat16')
