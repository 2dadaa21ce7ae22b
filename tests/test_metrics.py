import os

import numpy as np
import pytest

from emojax import metrics


def test_confusion_and_unweighted_accuracy():
  labels = np.array([0, 0, 0, 0, 1, 1, 2])
  preds = np.array([0, 0, 0, 1, 1, 0, 2])
  confusion = metrics.confusion_matrix(labels, preds, 4)
  assert confusion.tolist() == [[3, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
  result = metrics.classification_metrics(confusion)
  assert result['accuracy'] == pytest.approx(5 / 7)
  # class 3 has no examples and is left out of the unweighted mean
  assert result['unweighted_accuracy'] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
  assert result['per_class_recall'] == [0.75, 0.5, 1.0, None]


def test_metrics_log_truncates_records_past_a_step(tmp_path):
  log = metrics.MetricsLog(str(tmp_path / 'm.jsonl'))
  for step in range(1, 6):
    log.write({'split': 'train', 'step': step, 'epoch': 0, 'loss': 1.0 / step})
  log.truncate_after(3)
  assert [r['step'] for r in log.read()] == [1, 2, 3]


def test_plots_are_written(tmp_path):
  records = [{'split': 'train', 'step': s, 'epoch': 0, 'loss': 2.0 / s, 'loss_ce': 2.0 / s} for s in range(1, 20)]
  records.append({'split': 'eval', 'step': 19, 'epoch': 1, 'accuracy': 0.5, 'unweighted_accuracy': 0.4,
                  'train_accuracy': 0.6, 'confusion': [[3, 1], [2, 2]]})
  written = metrics.plot_run(records, ['a', 'b'], str(tmp_path))
  assert sorted(os.path.basename(p) for p in written) == ['accuracy.png', 'confusion.png', 'loss.png']
  for path in written:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
