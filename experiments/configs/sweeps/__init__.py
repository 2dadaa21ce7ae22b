"""Sweep files for `python -m experiments.sweep --config=configs/sweeps/<name>.py[:presets]`.

Each has get_config(arg), the base run config (also the --config of every point's
experiments.run command), and get_sweep(arg), the points (see emojax/sweeps.py):
  table3    the paper's Table 3 grid: 4 architectures x augmentation off/on x 4/3 classes x 3 seeds
  datasets  the paper's dataset variants DS I-IV (full/3-s clips, raw/denoised) for cnn_rnn
  faithful  the paper's recipe against emojax's corrections, one at a time
  crossval  every speaker of a real corpus in turn: the networks and the baselines, both modes
  recipe    what each ingredient of the real-speech recipe is worth, cross-validated
  changes   other changes tried on the real-speech recipe (128-row spectrograms, eGeMAPS beside the spectrogram, ...)
"""

from experiments.configs import common, emodb


def base_config(name: str, chosen: set[str], synthetic):
  """The base run config of sweep `name` under the presets `chosen`: configs/emodb.py's spectrogram-only
  recipe (preset `spectrogram`) under `emodb` or `ravdess` (real speech: pass --config.corpus.root), else
  `synthetic()` (the embedded corpus); one epoch under `smoke`."""
  if len(chosen & {'emodb', 'ravdess'}) > 1:
    raise ValueError(f'Choose one of emodb, ravdess; got {sorted(chosen)}.')
  if chosen & {'emodb', 'ravdess'}:
    c = emodb.get_config(','.join(sorted((chosen & {'ravdess', 'smoke'}) | {'spectrogram'})))
  else:
    c = synthetic()
  c.workdir = common.workdir(f'sweeps/{name}', chosen)
  if 'smoke' in chosen:
    c.train.num_epochs = 1
  return c
