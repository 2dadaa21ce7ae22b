"""Train state, the jitted cross-entropy and eval steps, and the epoch loop.

Steps are pure: `train_step(state, batch, rng) -> (state, metrics)`. The loop
owns everything impure (data iteration, logging, checkpoints) and is built so
that a killed run, rerun with the same command, continues where the last
checkpoint left it and ends with exactly the metrics of an uninterrupted run.
"""
from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state
from tqdm.auto import tqdm

from emojax import checkpoints, metrics, objectives

if TYPE_CHECKING:
  from emojax import loader


class TrainState(train_state.TrainState):
  batch_stats: Any = None


def make_optimizer(optim: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW (the paper's Adam lr 1e-4 with weight decay 0.01), optional global-norm clipping."""
  steps = [optax.clip_by_global_norm(optim.max_grad_norm)] if optim.max_grad_norm else []
  steps.append(optax.adamw(optim.learning_rate, weight_decay=optim.weight_decay))
  return optax.chain(*steps)


def model_inputs(batch: dict[str, Any]) -> dict[str, jax.Array]:
  """The arrays a model reads; video arrives as uint8 and is scaled on device."""
  inputs = {}
  if 'audio' in batch:
    inputs['audio'] = jnp.asarray(batch['audio'], jnp.float32)
  if 'video' in batch:
    inputs['video'] = jnp.asarray(batch['video'], jnp.float32) / 127.5 - 1.0
  return inputs


def create_state(model: nn.Module, example_batch: dict[str, Any], tx: optax.GradientTransformation,
                 rng: jax.Array) -> TrainState:
  """Initialises parameters from one example batch (only its shapes matter)."""
  variables = jax.jit(functools.partial(model.init, train=False))(
      {'params': rng, 'dropout': rng}, model_inputs(example_batch))
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx,
                           batch_stats=variables.get('batch_stats'))


def _variables(state: TrainState, params) -> dict[str, Any]:
  if state.batch_stats is None:
    return {'params': params}
  return {'params': params, 'batch_stats': state.batch_stats}


def apply_if_finite(state: TrainState, new_state: TrainState, finite: jax.Array) -> TrainState:
  """Keeps the old state when the step produced a non-finite loss or gradient."""
  return jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)


def make_train_step(l1: float = 0.0) -> Callable:
  """The jitted cross-entropy step `(state, batch, rng) -> (state, metrics)`."""

  def train_step(state: TrainState, batch: dict[str, Any], rng: jax.Array):
    inputs, labels = model_inputs(batch), batch['label']

    def loss_fn(params):
      out = state.apply_fn(_variables(state, params), inputs, train=True, rngs={'dropout': rng},
                           mutable=['batch_stats'] if state.batch_stats is not None else False)
      logits, updates = out if state.batch_stats is not None else (out, {})
      ce = objectives.cross_entropy(logits, labels)
      loss = ce + l1 * objectives.l1_penalty(params) if l1 else ce
      return loss, (logits, ce, updates)

    (loss, (logits, ce, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_state = state.apply_gradients(grads=grads)
    if state.batch_stats is not None:
      new_state = new_state.replace(batch_stats=updates['batch_stats'])
    step_metrics = {
        'loss': loss, 'loss_ce': ce, 'grad_norm': grad_norm, 'finite': finite,
        'accuracy': jnp.mean(jnp.argmax(logits, -1) == labels),
    }
    return apply_if_finite(state, new_state, finite), step_metrics

  return jax.jit(train_step, donate_argnums=0)


@jax.jit
def eval_step(state: TrainState, batch: dict[str, Any]) -> jax.Array:
  """Predicted class per example (eval mode: no dropout, running batch statistics)."""
  logits = state.apply_fn(_variables(state, state.params), model_inputs(batch), train=False)
  return jnp.argmax(logits, -1)


def evaluate(state: TrainState, data: loader.Split, batch_size: int, num_classes: int) -> dict[str, Any]:
  """Accuracy, unweighted accuracy and confusion matrix over a whole split."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  for batch, valid in data.eval_batches(batch_size):
    predictions = np.asarray(eval_step(state, batch))[valid]
    confusion += metrics.confusion_matrix(batch['label'][valid], predictions, num_classes)
  return metrics.classification_metrics(confusion)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: loader.Data, model: nn.Module) -> dict[str, Any]:
  """Runs (or resumes) training, evaluating on the held-out split each epoch.

  Returns the final held-out metrics; the workdir holds checkpoints, the
  metrics log and the plots.
  """
  os.makedirs(workdir, exist_ok=True)
  tc = config.train
  num_classes = len(data.class_names)
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)
  state = create_state(model, data.train.example_batch(tc.batch_size), make_optimizer(config.optim), init_rng)
  log = metrics.MetricsLog(os.path.join(workdir, 'metrics.jsonl'))
  ckpts = checkpoints.RunCheckpoints(workdir)
  steps_per_epoch = len(data.train) // tc.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'The training split has {len(data.train)} examples, fewer than one batch of {tc.batch_size}.')

  epoch, position = 0, 0
  if ckpts.latest.latest_step() is not None:
    step_dir = os.path.join(ckpts.latest.directory, str(ckpts.latest.latest_step()))
    state, meta = checkpoints.restore(step_dir, state)
    epoch, position = meta['epoch'], meta['position']
    print(f'Resuming from {step_dir}: epoch {epoch}, batch {position} of {steps_per_epoch}.')
  elif config.init_from:
    state = state.replace(params=init_params_from(config.init_from, state.params))
  log.truncate_after(int(state.step))

  train_step = make_train_step(config.optim.l1)
  final = None
  while epoch < tc.num_epochs:
    batches = data.train.train_batches(tc.batch_size, seed=config.seed, epoch=epoch, start=position)
    bar = tqdm(batches, total=steps_per_epoch - position, desc=f'epoch {epoch + 1}/{tc.num_epochs}',
               unit='batch', leave=False, dynamic_ncols=True)
    running = []
    for batch in bar:
      step = int(state.step)
      state, m = train_step(state, batch, jax.random.fold_in(train_rng, step))
      m = jax.device_get(m)
      if not m['finite']:
        print(f'step {step}: non-finite loss or gradient ({m["loss"]}); update skipped.')
      running.append(float(m['accuracy']))
      log.write({'split': 'train', 'step': step + 1, 'epoch': epoch,
                 **{k: float(v) for k, v in m.items()}})
      bar.set_postfix(loss=f'{float(m["loss"]):.3f}')
      position += 1
      if tc.checkpoint_every_steps and (step + 1) % tc.checkpoint_every_steps == 0:
        ckpts.save_latest(step + 1, state, {'epoch': epoch, 'position': position})
    epoch, position = epoch + 1, 0
    result = evaluate(state, data.test, tc.batch_size, num_classes)
    step = int(state.step)
    record = {'split': 'eval', 'step': step, 'epoch': epoch, 'train_accuracy': float(np.mean(running or [np.nan])),
              **result}
    log.write(record)
    print(f"epoch {epoch}: held-out accuracy {result['accuracy']:.4f}, "
          f"unweighted {result['unweighted_accuracy']:.4f} ({result['count']} examples)")
    ckpts.save_latest(step, state, {'epoch': epoch, 'position': 0})
    ckpts.save_best(step, state, {'epoch': epoch, 'position': 0},
                    {'accuracy': result['accuracy'], 'unweighted_accuracy': result['unweighted_accuracy']})
    final = record

  if final is None:  # Nothing left to train: the run was already complete.
    final = [r for r in log.read() if r['split'] == 'eval'][-1]
  ckpts.close()
  plots = metrics.plot_run(log.read(), data.class_names, os.path.join(workdir, 'plots'))
  summary = {'final': final, 'class_names': list(data.class_names), 'plots': plots,
             'checkpoints': os.path.join(os.path.abspath(workdir), 'checkpoints')}
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def init_params_from(path: str, params: Any) -> Any:
  """Parameters restored from another run's checkpoint, in this model's structure."""
  step_dir = checkpoints.find_step_dir(path)
  restored = checkpoints.restore_subtree(step_dir, ('params',))
  expected = jax.tree_util.tree_structure(params)
  if jax.tree_util.tree_structure(restored) != expected:
    raise ValueError(f'Checkpoint {step_dir} does not hold parameters of this model.')
  print(f'Initialised parameters from {step_dir}.')
  return jax.tree_util.tree_map(lambda p, r: jnp.asarray(r, p.dtype), params, restored)


def evaluate_checkpoint(path: str, data: loader.Data, model: nn.Module, config) -> dict[str, Any]:
  """Eval-only mode: restores a checkpoint and evaluates it on the held-out split."""
  step_dir = checkpoints.find_step_dir(path)
  template = create_state(model, data.test.example_batch(config.train.batch_size),
                          make_optimizer(config.optim), jax.random.key(0))
  state, meta = checkpoints.restore(step_dir, template)
  result = evaluate(state, data.test, config.train.batch_size, len(data.class_names))
  return {'checkpoint': step_dir, 'recorded': meta.get('metrics'), **result}
