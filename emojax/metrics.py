"""Classification metrics, the JSON-lines metrics log and the plots in a workdir."""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np


# In each workdir: the test clips' class probabilities at the final and best-by-validation epochs
# (written by emojax.train, averaged over seeds by emojax.reports).
PREDICTIONS_FILE = 'predictions.json'


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
  """Counts (true class, predicted class) as an int64 (K, K) matrix."""
  matrix = np.zeros((num_classes, num_classes), np.int64)
  np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
  return matrix


def classification_metrics(confusion: np.ndarray) -> dict[str, Any]:
  """Accuracy, unweighted accuracy (mean per-class recall) and per-class recall.

  Classes absent from the evaluated set are left out of the unweighted mean.
  """
  support = confusion.sum(axis=1)
  correct = np.diag(confusion)
  present = support > 0
  recall = np.where(present, correct / np.maximum(support, 1), np.nan)
  return {
      'accuracy': float(correct.sum() / max(confusion.sum(), 1)),
      'unweighted_accuracy': float(recall[present].mean()) if present.any() else float('nan'),
      'per_class_recall': [None if np.isnan(r) else float(r) for r in recall],
      'confusion': confusion.tolist(),
      'count': int(confusion.sum()),
  }


class MetricsLog:
  """Append-only JSON-lines log (`metrics.jsonl`) of a run's records."""

  def __init__(self, path: str, *, enabled: bool = True):
    self.path = path
    self.enabled = enabled  # multi-host runs: only the first process writes

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')

  def read(self) -> list[dict[str, Any]]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      return [json.loads(line) for line in f if line.strip()]

  def truncate_after(self, step: int) -> None:
    """Drops records past `step`: a resumed run rewrites them, it must not duplicate them."""
    if not self.enabled:
      return
    kept = [r for r in self.read() if r['step'] <= step]
    with open(self.path, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)


def plot_run(records: Iterable[dict[str, Any]], class_names: Sequence[str], out_dir: str) -> list[str]:
  """Writes loss per step, accuracy per epoch and the last confusion matrix as PNGs."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  records = list(records)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  train = [r for r in records if r['split'] == 'train']
  evals = [r for r in records if r['split'] == 'eval']

  loss_keys = sorted({k for r in train for k in r if k.startswith('loss')})
  if train and loss_keys:
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = [r['step'] for r in train]
    for key in loss_keys:
      ax.plot(steps, [r.get(key, np.nan) for r in train], label=key, lw=0.8)
    ax.set_xlabel('step')
    ax.set_ylabel('loss')
    ax.set_yscale('log')
    ax.legend()
    ax.set_title('training loss per step')
    written.append(_save(fig, out_dir, 'loss.png'))

  if evals and 'accuracy' in evals[-1]:
    fig, ax = plt.subplots(figsize=(7, 4))
    epochs = [r['epoch'] for r in evals]
    ax.plot(epochs, [r['accuracy'] for r in evals], marker='o', label='test accuracy')
    ax.plot(epochs, [r['unweighted_accuracy'] for r in evals], marker='o', label='test unweighted accuracy')
    if 'validation' in evals[-1]:
      ax.plot(epochs, [r.get('validation', {}).get('accuracy', np.nan) for r in evals], marker='s',
              label='validation accuracy (picks the best checkpoint)')
    if 'train_accuracy' in evals[-1]:
      ax.plot(epochs, [r['train_accuracy'] for r in evals], marker='.', ls='--', label='train accuracy (epoch mean)')
    ax.axhline(1 / len(class_names), color='gray', lw=0.8, ls=':', label='chance')
    ax.set_xlabel('epoch')
    ax.set_ylabel('accuracy')
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title('accuracy per epoch')
    written.append(_save(fig, out_dir, 'accuracy.png'))
    written.append(plot_confusion(np.array(evals[-1]['confusion']), class_names,
                                  os.path.join(out_dir, 'confusion.png'),
                                  title=f"held-out confusion, epoch {evals[-1]['epoch']}"))

  if evals and 'recall_at_1' in evals[-1]:
    epochs = [r['epoch'] for r in evals]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for k, colour in ((1, 'C0'), (5, 'C1')):
      left.plot(epochs, [r[f'recall_at_{k}'] for r in evals], marker='o', color=colour, label=f'recall@{k}')
      left.axhline(evals[-1][f'chance_at_{k}'], color=colour, lw=0.8, ls=':', label=f'chance @{k}')
    left.set_xlabel('epoch')
    left.set_ylim(0, 1)
    left.legend()
    left.set_title('held-out audio -> video retrieval')
    right.plot(epochs, [r['distance_positive'] for r in evals], marker='o', label='positive pairs (same clip)')
    right.plot(epochs, [r['distance_negative'] for r in evals], marker='o', label='negative pairs (other clips)')
    right.set_xlabel('epoch')
    right.set_ylabel('mean embedding distance')
    right.legend()
    right.set_title('held-out embedding distances')
    written.append(_save(fig, out_dir, 'retrieval.png'))
  return written


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: str, title: str = '') -> str:
  """Row-normalised confusion matrix with counts in the cells."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
  ax.imshow(rates, cmap='Blues', vmin=0, vmax=1)
  ax.set_xticks(range(len(class_names)), class_names)
  ax.set_yticks(range(len(class_names)), class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  for i in range(confusion.shape[0]):
    for j in range(confusion.shape[1]):
      ax.text(j, i, f'{confusion[i, j]}\n{rates[i, j]:.0%}', ha='center', va='center',
              color='white' if rates[i, j] > 0.5 else 'black', fontsize=8)
  ax.set_title(title)
  return _save(fig, os.path.dirname(path), os.path.basename(path))


def _save(fig, out_dir: str, name: str) -> str:
  import matplotlib.pyplot as plt
  path = os.path.join(out_dir, name)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
