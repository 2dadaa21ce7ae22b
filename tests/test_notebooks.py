"""Every colab/ notebook runs end to end on a tiny setting: its parameters cell is replaced, nothing else.
The cross-validation notebook is also the tiny cross-validation end to end (folds, baselines, a rerun)."""
import json
import os
import subprocess
import sys

import nbclient
import nbformat
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import miniature_emodb  # noqa: E402  (a helper next to this file)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, 'colab')
SHARED = os.path.abspath(os.path.join(ROOT, '..', 'shared', 'data'))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('arrays'))


def test_every_notebook_is_tested():
  assert sorted(os.listdir(COLAB)) == sorted(f'{name}.ipynb' for name in PARAMETERS)


PARAMETERS = {
    'av_fusion_ravdess': ("RAVDESS_ROOT = {ravdess!r}\nVISUAL_FEATURES = {au!r}\nMODE = 'speaker'\nPRESET = 'smoke'\n"
                          "FLAGS = ['--config.data.split=folds', '--config.data.fold=0', '--config.data.audio_size=(32, 48)', "
                          "'--config.train.num_epochs=1']"),
    'quickstart': "PRESET = 'smoke'",
    'real_corpus_crossval': "CORPUS = 'emodb'\nCORPUS_ROOT = {emodb!r}\nPRESET = 'smoke,blind,nopaper'",
    'pretrain_finetune': "PRESET = 'smoke'",
    'sweep': "SWEEP = 'faithful'\nPRESET = 'smoke'",
    'predict': "WORKDIR = ''\nRECORDINGS = []\nPRESET = 'smoke'",
}


@pytest.mark.e2e
@pytest.mark.parametrize('name', sorted(PARAMETERS))
def test_notebook_runs_end_to_end(name, tmp_path, data_dir):
  notebook = nbformat.read(os.path.join(COLAB, f'{name}.ipynb'), as_version=4)
  [cell] = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  emodb = str(miniature_emodb.make_miniature_emodb(tmp_path / 'emodb')) if 'CORPUS_ROOT' in PARAMETERS[name] else ''
  ravdess = _ravdess_actors(tmp_path) if 'RAVDESS_ROOT' in PARAMETERS[name] else ''
  cell.source = (PARAMETERS[name].format(emodb=emodb, ravdess=ravdess, au=os.path.join(SHARED, 'ravdess-au', 'au.csv'))
                 + f'\nOUT = {str(tmp_path / "out")!r}\nDATA_DIR = {data_dir!r}')
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': COLAB}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  assert any('image/png' in o.get('data', {}) for o in outputs)  # every notebook shows its plots
  if name == 'real_corpus_crossval':
    _check_cross_validation(tmp_path / 'out' / 'crossval_emodb', emodb, data_dir)


def _ravdess_actors(tmp_path, actors=('01', '02', '03', '04')):
  """Four RAVDESS actors (linked, not copied) for the audio-visual notebook; it needs the real recordings."""
  if not all(os.path.isdir(os.path.join(SHARED, 'ravdess', f'Actor_{a}')) for a in actors) or not os.path.exists(
      os.path.join(SHARED, 'ravdess-au', 'au.csv')):
    pytest.skip(f'RAVDESS speech or its action units absent under {SHARED} (shared/data)')
  root = tmp_path / 'ravdess'
  root.mkdir()
  for actor in actors:
    os.symlink(os.path.join(SHARED, 'ravdess', f'Actor_{actor}'), root / f'Actor_{actor}')
  return str(root)


def _check_cross_validation(workdir, corpus_root, data_dir):
  """The notebook's smoke cross-validation (2 folds, speaker-blind, network and one baseline): every fold
  holds out its own speaker for both, and a rerun skips every point and writes the same table."""
  report = json.load(open(workdir / 'report.json'))
  rows = {tuple(map(tuple, r['row'])): r for r in report['rows']}
  assert set(rows) == {(('model', 'recipe'), ('mode', 'speaker-blind')),
                       (('model', 'mfcc_logreg'), ('mode', 'speaker-blind'))}
  for row in rows.values():
    assert row['n'] == 2 and row['stats']['final.accuracy']['n'] == 2 and row['stats']['best.accuracy']['n'] == 2
    assert len(row['per_class_recall']['final']) == 7
  tested = [json.load(open(workdir / p['name'] / 'split.json'))['test_units'] for p in report['points']]
  assert tested == [['03'], ['08'], ['03'], ['08']]  # fold k holds out the k-th speaker, networks and baselines
  again = subprocess.run([sys.executable, '-m', 'experiments.sweep', '--config=configs/sweeps/crossval.py:emodb,smoke,'
                          'blind,nopaper', f'--workdir={workdir}', f'--config.corpus.root={corpus_root}',
                          f'--config.data.data_dir={data_dir}'], cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and again.stdout.count('] skipped ') == 4, again.stderr[-2000:]
  assert json.load(open(workdir / 'report.json'))['rows'] == report['rows']
