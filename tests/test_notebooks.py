"""Every colab/ notebook runs end to end on a tiny setting: its parameters cell is replaced, nothing else."""
import glob
import os

import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLAB = os.path.join(ROOT, 'colab')
EMODB = os.path.abspath(os.path.join(ROOT, '..', 'shared', 'data', 'emodb', 'wav'))


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('arrays'))


def _miniature_emodb(root):
  """Two real Emo-DB speakers' files, linked (the smoke cross-validation's 2 folds need no more)."""
  files = [f for f in sorted(glob.glob(os.path.join(EMODB, '*.wav'))) if os.path.basename(f)[:2] in ('03', '08', '09')]
  if not files:
    pytest.skip(f'no real recordings at {EMODB} (shared/data absent)')
  os.makedirs(root / 'wav')
  for f in files:
    os.symlink(f, root / 'wav' / os.path.basename(f))
  return str(root)


def test_every_notebook_is_tested():
  assert sorted(os.listdir(COLAB)) == sorted(f'{name}.ipynb' for name in PARAMETERS)


PARAMETERS = {
    'quickstart': "PRESET = 'smoke'",
    'real_corpus_crossval': "CORPUS = 'emodb'\nCORPUS_ROOT = {emodb!r}\nPRESET = 'smoke,blind'",
    'pretrain_finetune': "PRESET = 'smoke'",
    'sweep': "SWEEP = 'table3'\nPRESET = 'smoke'",
    'predict': "WORKDIR = ''\nRECORDINGS = []\nPRESET = 'smoke'",
}


@pytest.mark.e2e
@pytest.mark.parametrize('name', sorted(PARAMETERS))
def test_notebook_runs_end_to_end(name, tmp_path, data_dir):
  notebook = nbformat.read(os.path.join(COLAB, f'{name}.ipynb'), as_version=4)
  [cell] = [c for c in notebook.cells if 'parameters' in c.metadata.get('tags', [])]
  emodb = _miniature_emodb(tmp_path / 'emodb') if 'CORPUS_ROOT' in PARAMETERS[name] else ''
  cell.source = PARAMETERS[name].format(emodb=emodb) + f'\nOUT = {str(tmp_path / "out")!r}\nDATA_DIR = {data_dir!r}'
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': COLAB}}).execute()
  outputs = [o for c in notebook.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  assert any('image/png' in o.get('data', {}) for o in outputs)  # every notebook shows its plots
