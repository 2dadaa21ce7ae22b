"""Sweep files for `python -m experiments.sweep --config=configs/sweeps/<name>.py[:presets]`.

Each has get_config(arg), the base run config (also the --config of every point's
experiments.run command), and get_sweep(arg), the points (see emojax/sweeps.py):
  table3    the paper's Table 3 grid: 4 architectures x augmentation off/on x 4/3 classes x 3 seeds
  datasets  the paper's dataset variants DS I-IV (full/3-s clips, raw/denoised) for cnn_rnn
  faithful  the paper's recipe against emojax's corrections, one at a time
"""
