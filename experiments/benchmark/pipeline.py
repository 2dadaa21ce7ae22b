"""The Grain input pipeline (`emojax.loader`) against the training step it feeds: samples/s of the
training iterator over the default config's ArrayRecord arrays (experiments/configs/fusion.py; --quick:
its smoke preset), with 0 and N worker processes, augmentation off and on, next to the samples/s that
config's training step consumes. The pipeline is the bottleneck where it delivers fewer."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from typing import Any

from emojax import loader, models, train
from experiments.benchmark import cases, common, machine
from experiments.configs import fusion

# The augmented rows' augmentation: every loader.Augment transform on.
AUGMENT = {'top_crop_px': 4, 'rotate_degrees': 5.0, 'freq_masks': 2, 'time_masks': 2, 'mask_width': 6}


def pipeline_case(setting: tuple[str, str, str], *, quick: bool, steps: int, data_dir: str, workers: int,
                  epochs: int) -> dict[str, Any]:
  """Each row reads `epochs` epochs (median reported); the training step has the config's model, batch and
  shapes, in `setting`, with the batch already on the device."""
  config = fusion.get_config('smoke' if quick else None)
  if data_dir:
    config.data.data_dir = data_dir
  config.model.update(cases.setting_kwargs(setting))
  start = time.perf_counter()
  data = loader.load_data(config)  # builds the arrays on first use (minutes at the default size)
  load_s = time.perf_counter() - start
  batch_size = config.train.batch_size
  rows = []
  for num_workers, augment in dict.fromkeys([(0, False), (workers, False), (0, True), (workers, True)]):
    split = dataclasses.replace(data.train, num_workers=num_workers,
                                augment=loader.Augment(**(AUGMENT if augment else {})))
    per_epoch = []
    for epoch in range(epochs):
      # A new iterator per epoch, as the training loop makes: worker processes start afresh each time.
      start = time.perf_counter()
      iterator = split.train_batches(batch_size, seed=config.seed, epoch=epoch)
      first = next(iterator)
      first_s = time.perf_counter() - start
      rest = 0
      for batch in iterator:
        rest += len(batch['label'])
      epoch_s = time.perf_counter() - start
      del iterator
      count = len(first['label']) + rest
      per_epoch.append({'samples': count, 'epoch_s': epoch_s, 'first_batch_s': first_s,
                        'samples_per_s': count / epoch_s,
                        'steady_samples_per_s': rest / (epoch_s - first_s) if rest else None})
    rows.append({'num_workers': num_workers, 'augment': augment,
                 'samples_per_s': common.median_of(per_epoch, 'samples_per_s'),
                 'steady_samples_per_s': common.median_of(per_epoch, 'steady_samples_per_s'),
                 'first_batch_s': common.median_of(per_epoch, 'first_batch_s'), 'epochs': per_epoch})
    print(json.dumps({k: v for k, v in rows[-1].items() if k != 'epochs'}), file=sys.stderr, flush=True)

  example = data.train.example_batch(batch_size)
  model = models.get_model(config.model.name, num_classes=len(data.class_names), **models.options(config.model),
                           tune_for=train.input_structs(example))
  step, *_ = cases.time_train_step(model, example, steps)
  for row in rows:
    row['pipeline_over_step'] = row['samples_per_s'] / step['samples_per_s']
    row['bottleneck'] = row['samples_per_s'] < step['samples_per_s']
  shapes = {k: list(v.shape[1:]) for k, v in data.train.example_batch(1).items() if k != 'label'}
  return {'config': 'configs/fusion.py' + (':smoke' if quick else ''), 'train_examples': len(data.train),
          'batch_size': batch_size, 'shapes': shapes, 'load_data_s': load_s, 'augment': AUGMENT, 'rows': rows,
          'train_step': {**step, 'model': config.model.name, 'model_options': dict(models.options(config.model)),
                         'kernel_plan': model.plan.describe(), 'device': machine.jax_device(),
                         'device_peak_mb': machine.device_peak_mb()},
          'cpu_count': common.usable_cores()}
