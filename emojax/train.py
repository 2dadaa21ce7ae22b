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
from jax.experimental import multihost_utils

from emojax import checkpoints, files, metrics, objectives, progress

if TYPE_CHECKING:
  from emojax import loader


class TrainState(train_state.TrainState):
  batch_stats: Any = None


SCHEDULES = ('constant', 'cosine')


def learning_rate(optim: ml_collections.ConfigDict, total_steps: int, steps_per_epoch: int) -> float | optax.Schedule:
  """The constant rate, or (schedule='cosine') a linear warmup over `warmup_epochs` to the rate, then a
  cosine decay to zero at `total_steps`."""
  schedule = optim.schedule
  if schedule not in SCHEDULES:
    raise ValueError(f'Unknown optim.schedule {schedule!r}; expected one of {list(SCHEDULES)}.')
  if schedule == 'constant':
    return optim.learning_rate
  warmup = int(round(optim.warmup_epochs * steps_per_epoch))
  return optax.warmup_cosine_decay_schedule(0.0, optim.learning_rate, warmup_steps=warmup,
                                            decay_steps=max(total_steps, warmup + 1))


def make_optimizer(optim: ml_collections.ConfigDict, total_steps: int = 0,
                   steps_per_epoch: int = 0) -> optax.GradientTransformation:
  """AdamW (the paper's Adam lr 1e-4 with weight decay 0.01), optional global-norm clipping and schedule."""
  steps = [optax.clip_by_global_norm(optim.max_grad_norm)] if optim.max_grad_norm else []
  steps.append(optax.adamw(learning_rate(optim, total_steps, steps_per_epoch), weight_decay=optim.weight_decay))
  return optax.chain(*steps)


def data_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over every device of every process: the batch is split along 'data'."""
  # Auto axes: the compiler propagates the batch sharding through every op (GSPMD), so
  # the model and objectives need no sharding annotations of their own.
  return jax.make_mesh((jax.device_count(),), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Places parameters and optimizer state on every device (data parallelism)."""
  return jax.device_put(tree, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def shard_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """This process's slice of the global batch, split along the leading axis over the mesh.

  On one host this is the whole batch; with several hosts each passes its own
  slice (Grain shards the records by process) and the global array is assembled.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def model_inputs(batch: dict[str, Any]) -> dict[str, jax.Array]:
  """The arrays a model reads; video arrives as uint8 and is scaled on device."""
  inputs = {}
  if 'audio' in batch:
    inputs['audio'] = jnp.asarray(batch['audio'], jnp.float32)
  if 'video' in batch:
    inputs['video'] = jnp.asarray(batch['video'], jnp.float32) / 127.5 - 1.0
  for key in ('functionals', 'visual'):  # per-utterance vectors, standardised by the loader
    if key in batch:
      inputs[key] = jnp.asarray(batch[key], jnp.float32)
  return inputs


def input_structs(batch: dict[str, Any]) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of what the model reads of `batch` (what its kernels are autotuned for)."""
  return jax.eval_shape(model_inputs, {k: jax.ShapeDtypeStruct(np.shape(v), np.asarray(v).dtype)
                                       for k, v in batch.items() if k in ('audio', 'video', 'functionals', 'visual')})


def device_inputs(split: loader.Split, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
  """`input_structs` of one device's share of a global batch of `batch_size`."""
  return input_structs(split.example_batch(max(1, batch_size // jax.device_count())))


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


class Diverged(RuntimeError):
  """Training produced non-finite numbers for too long, or a non-finite model output."""


def _all_finite(tree: Any) -> jax.Array:
  return jax.tree_util.tree_reduce(jnp.logical_and, jax.tree_util.tree_map(lambda x: jnp.all(jnp.isfinite(x)), tree),
                                   jnp.array(True))


def apply_if_finite(state: TrainState, new_state: TrainState, finite: jax.Array) -> TrainState:
  """Keeps the old parameters, optimizer state and statistics when the step produced a non-finite loss or
  gradient. The step count advances either way: it counts the batches consumed, so the loop can count
  them on the host without asking the device, and no two steps share a number."""
  kept = jax.tree_util.tree_map(lambda new, old: jnp.where(finite, new, old), new_state, state)
  return kept.replace(step=new_state.step)


def _apply_train(state: TrainState, params, inputs, rng, method=None):
  """Training-mode forward pass; returns (output, updated batch_stats or None)."""
  mutable = ['batch_stats'] if state.batch_stats is not None else False
  out = state.apply_fn(_variables(state, params), inputs, train=True, rngs={'dropout': rng},
                       mutable=mutable, method=method)
  return (out[0], out[1]['batch_stats']) if mutable else (out, None)


def _step(loss_fn: Callable, frozen: tuple[str, ...] = (), frozen_steps: int = 0) -> Callable:
  """Wraps `loss_fn(state, params, batch, rng) -> (loss, (metrics, batch_stats))` into a jitted update.

  The loss, the gradient norm and the updated parameters are checked: a non-finite step leaves
  the state as it was and reports finite=False. Parameter subtrees named in `frozen` (e.g. the
  pre-trained encoders) stay fixed for the first `frozen_steps` steps.
  """

  def step(state: TrainState, batch: dict[str, Any], rng: jax.Array):
    (loss, (step_metrics, batch_stats)), grads = jax.value_and_grad(
        functools.partial(loss_fn, state), has_aux=True)(state.params, batch, rng)
    if frozen:
      thawed = state.step >= frozen_steps
      grads = {k: jax.tree_util.tree_map(lambda g: jnp.where(thawed, g, 0.0), v) if k in frozen else v
               for k, v in grads.items()}
    grad_norm = optax.tree.norm(grads)
    new_state = state.apply_gradients(grads=grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & _all_finite(new_state.params)
    if frozen:  # AdamW's weight decay would still move frozen weights: keep them exactly
      new_state = new_state.replace(params={
          k: jax.tree_util.tree_map(lambda new, old: jnp.where(thawed, new, old), v, state.params[k])
          if k in frozen else v for k, v in new_state.params.items()})
    if batch_stats is not None:
      new_state = new_state.replace(batch_stats=batch_stats)
    return apply_if_finite(state, new_state, finite), {
        'loss': loss, 'grad_norm': grad_norm, 'finite': finite, **step_metrics}

  return jax.jit(step, donate_argnums=0)


def make_train_step(l1: float = 0.0, *, label_smoothing: float = 0.0, mixup_alpha: float = 0.0,
                    frozen: tuple[str, ...] = (), frozen_steps: int = 0) -> Callable:
  """The jitted cross-entropy step `(state, batch, rng) -> (state, metrics)`.

  `mixup_alpha` > 0: each input is blended with another of the batch by a Beta(alpha, alpha)
  weight drawn per step, and so are their (smoothed) targets (Zhang et al. 2018).
  """

  def loss_fn(state, params, batch, rng):
    inputs = model_inputs(batch)
    mix = None
    if mixup_alpha:
      mix_rng, rng = jax.random.split(rng)
      mix = objectives.mixup(mix_rng, batch['label'].shape[0], mixup_alpha)
      inputs = {k: objectives.mix_rows(v, mix) for k, v in inputs.items()}
    logits, batch_stats = _apply_train(state, params, inputs, rng)
    ce = objectives.cross_entropy(logits, batch['label'], label_smoothing=label_smoothing, mix=mix)
    loss = ce + l1 * objectives.l1_penalty(params) if l1 else ce
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
    return loss, ({'loss_ce': ce, 'accuracy': accuracy}, batch_stats)

  return _step(loss_fn, frozen, frozen_steps)


def make_contrastive_step(*, margin: float, normalize: bool, center: bool, hard_fraction: float,
                          negatives: str = 'mined', same_speaker: bool = False, loss: str = 'margin',
                          temperature: float = 0.1) -> Callable:
  """The jitted contrastive pre-training step of the audio and video encoders.

  Negative pairs come from the batch by emotion label: one partner per clip drawn
  at random, as in the authors' code (`negatives='mined'`, see `objectives.mine_pairs`),
  or every other clip, weighted (`'all'`, see `objectives.all_pairs`).
  """
  if negatives not in ('all', 'mined'):
    raise ValueError(f"Unknown contrastive.negatives {negatives!r}; expected 'all' or 'mined'.")
  if loss not in objectives.LOSSES:
    raise ValueError(f'Unknown contrastive.loss {loss!r}; expected one of {objectives.LOSSES}.')

  def loss_fn(state, params, batch, rng):
    mine_rng, dropout_rng = jax.random.split(rng)
    speakers = batch['speaker'] if same_speaker else None
    if negatives == 'all':
      pairs = objectives.all_pairs(batch['label'], hard_fraction=hard_fraction, speakers=speakers)
    else:
      pairs = objectives.pair_matrix(objectives.mine_pairs(batch['label'], mine_rng, hard_fraction=hard_fraction,
                                                           speakers=speakers))
    emb, batch_stats = _apply_train(state, params, model_inputs(batch), dropout_rng, method='embed')
    parts = objectives.contrastive_pairs(emb['audio'], emb['video'], pairs, margin, normalize=normalize,
                                         center=center, loss=loss, temperature=temperature)
    used = pairs['weight'] > 0
    step_metrics = {
        'loss_positive': parts['positive'], 'loss_hard': parts['hard'], 'loss_super_hard': parts['super_hard'],
        'distance_positive': parts['distance_positive'], 'distance_negative': parts['distance_negative'],
        'pairs_hard': jnp.sum(used & pairs['hard']), 'pairs_super_hard': jnp.sum(used & ~pairs['hard'])}
    return parts['loss'], (step_metrics, batch_stats)

  return _step(loss_fn)


@jax.jit
def eval_step(state: TrainState, batch: dict[str, Any]) -> jax.Array:
  """Class probabilities per example (eval mode: no dropout, running batch statistics)."""
  logits = state.apply_fn(_variables(state, state.params), model_inputs(batch), train=False)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


def _eval_batches(data: loader.Split, batch_size: int, mesh: jax.sharding.Mesh):
  """Sharded eval batches with their validity mask as one more sharded array."""
  for batch, valid in data.eval_batches(batch_size):
    yield shard_batch({**batch, 'valid': valid}, mesh)


def _gather(x: jax.Array) -> np.ndarray:
  """The whole global array on this host (across processes when there are several)."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(state: TrainState, data: loader.Split, batch_size: int, num_classes: int,
             mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Accuracy, unweighted accuracy and confusion matrix over a whole split, and under 'probabilities'
  each example's class probabilities (N, K), in the split's order (averaged over the split's time
  windows when it crops)."""
  confusion = np.zeros((num_classes, num_classes), np.int64)
  probabilities = []
  for batch in _eval_batches(data, batch_size, mesh):
    valid = _gather(batch['valid'])
    windows = [_gather(eval_step(state, window)) for window in data.windows(batch)]
    probabilities.append(np.mean(windows, axis=0)[valid])
    if not np.all(np.isfinite(probabilities[-1])):
      raise Diverged('Non-finite model outputs at evaluation: the parameters are finite but the model overflows '
                     '(a destructive update, e.g. a learning rate far too high). Nothing was scored or saved.')
    confusion += metrics.confusion_matrix(_gather(batch['label'])[valid], probabilities[-1].argmax(-1), num_classes)
  return {**metrics.classification_metrics(confusion), 'probabilities': np.concatenate(probabilities)}


@jax.jit
def embed_step(state: TrainState, batch: dict[str, Any]) -> dict[str, jax.Array]:
  """Eval-mode audio and video embeddings of a fusion model."""
  return state.apply_fn(_variables(state, state.params), model_inputs(batch), train=False, method='embed')


def evaluate_retrieval(state: TrainState, data: loader.Split, batch_size: int, normalize: bool, center: bool,
                       mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Audio-to-video retrieval over a whole split: given a clip's audio, rank every clip's video.

  recall@k is the fraction of clips whose own video is among the k nearest; chance is k/N.
  """
  audio, video = [], []
  for batch in _eval_batches(data, batch_size, mesh):
    valid = _gather(batch['valid'])
    emb = embed_step(state, batch)
    audio.append(_gather(emb['audio'])[valid])
    video.append(_gather(emb['video'])[valid])
  # Embeddings prepared as in training, centred on the whole evaluated set.
  audio, video = (np.asarray(objectives.prepare_embeddings(jnp.asarray(np.concatenate(e)), center=center,
                                                           normalize=normalize)) for e in (audio, video))
  distance = np.linalg.norm(audio[:, None, :] - video[None, :, :], axis=-1)
  own = np.diag(distance)
  rank = (distance < own[:, None]).sum(axis=1)  # 0 = own video is the nearest
  n = len(own)
  return {
      'recall_at_1': float(np.mean(rank < 1)), 'recall_at_5': float(np.mean(rank < 5)),
      'chance_at_1': 1 / n, 'chance_at_5': min(5, n) / n, 'median_rank': float(np.median(rank) + 1),
      'distance_positive': float(own.mean()),
      'distance_negative': float((distance.sum() - own.sum()) / max(n * n - n, 1)),
      'count': n,
  }


def _objective(config, data: loader.Data, mesh: jax.sharding.Mesh):
  """(step function, evaluator of a split, name of the metric that picks the best checkpoint) for config.objective."""
  tc = config.train
  if config.objective == 'cross_entropy':
    frozen = tuple(config.init_keys) if config.init_from and config.freeze_steps else ()
    step = make_train_step(config.optim.l1, label_smoothing=config.optim.label_smoothing,
                           mixup_alpha=config.train.mixup_alpha, frozen=frozen, frozen_steps=config.freeze_steps)
    return step, lambda state, split: evaluate(state, split, tc.batch_size, len(data.class_names), mesh), 'accuracy'
  if config.objective == 'contrastive':
    cc = config.contrastive
    step = make_contrastive_step(margin=cc.margin, normalize=cc.normalize, center=cc.center,
                                 hard_fraction=cc.hard_fraction, negatives=cc.negatives,
                                 same_speaker=cc.super_hard_same_speaker, loss=cc.loss,
                                 temperature=cc.temperature)
    return step, lambda state, split: evaluate_retrieval(state, split, tc.batch_size, cc.normalize, cc.center,
                                                         mesh), 'recall_at_1'
  raise ValueError(f"Unknown objective {config.objective!r}; expected 'cross_entropy' or 'contrastive'.")


def _describe(result: dict[str, Any], side: str = 'test') -> str:
  if 'accuracy' in result:
    return (f"{side} accuracy {result['accuracy']:.4f}, unweighted {result['unweighted_accuracy']:.4f} "
            f"({result['count']} examples)")
  return (f"{side} audio->video recall@1 {result['recall_at_1']:.4f} (chance {result['chance_at_1']:.4f}), "
          f"recall@5 {result['recall_at_5']:.4f}, distance positive {result['distance_positive']:.3f} "
          f"vs negative {result['distance_negative']:.3f}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: loader.Data, model: nn.Module) -> dict[str, Any]:
  """Runs (or resumes) training, evaluating on the held-out split each epoch.

  Returns a summary with the final held-out metrics; the workdir holds
  checkpoints, the metrics log and the plots.
  """
  mesh = data_mesh()
  if config.train.batch_size % mesh.size:
    raise ValueError(f'Batch size {config.train.batch_size} does not split over {mesh.size} devices.')
  with jax.set_mesh(mesh):  # in context: the native kernels run per device on it (kernels.native)
    return _train_and_evaluate(config, workdir, data, model, mesh)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, data: loader.Data, model: nn.Module,
                        mesh: jax.sharding.Mesh) -> dict[str, Any]:
  os.makedirs(workdir, exist_ok=True)
  tc = config.train
  init_rng, train_rng = jax.random.split(jax.random.key(config.seed))
  steps_per_epoch = len(data.train) // tc.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'The training split has {len(data.train)} examples, fewer than one batch of {tc.batch_size}.')
  tx = make_optimizer(config.optim, tc.num_epochs * steps_per_epoch, steps_per_epoch)
  state = create_state(model, data.train.example_batch(tc.batch_size), tx, init_rng)
  train_step, evaluate_fn, best_metric = _objective(config, data, mesh)
  main_process = jax.process_index() == 0
  log = metrics.MetricsLog(os.path.join(workdir, 'metrics.jsonl'), enabled=main_process)
  ckpts = checkpoints.RunCheckpoints(workdir, best_metric=best_metric, keep_latest=tc.keep_checkpoints)

  epoch, position = 0, 0
  restored = ckpts.restore_newest(state)
  if restored:
    state, meta, step_dir = restored
    epoch, position = meta['epoch'], meta['position']
    print(f'Resuming from {step_dir}: epoch {epoch}, batch {position} of {steps_per_epoch}.')
  elif config.init_from:
    state = state.replace(params=init_params_from(config.init_from, state.params, tuple(config.init_keys)))
  step = int(state.step)  # kept on the host from here: the loop never waits on the device for it
  log.truncate_after(step)
  # The current epoch's training records: those before a mid-epoch resume, then the loop's own.
  epoch_train = [r for r in log.read() if r['split'] == 'train' and r['epoch'] == epoch]
  state = replicate(state, mesh)

  final, stopped_early, bad_steps = None, False, 0
  while epoch < tc.num_epochs:
    if _patience_spent(ckpts, epoch, tc.early_stopping_patience):
      print(f'Stopping early: validation {best_metric} has not improved for {tc.early_stopping_patience} epochs.')
      stopped_early = True
      break
    batches = data.train.train_batches(tc.batch_size, seed=config.seed, epoch=epoch, start=position)
    bar = progress.bar(batches, total=steps_per_epoch - position, desc=f'epoch {epoch + 1}/{tc.num_epochs}',
                       unit='batch', leave=False, disable=not main_process)
    pending = []  # (step, metrics still on the device)

    def flush():
      """Brings the pending steps' metrics to the host (one transfer) and logs them; stops a run whose
      last max_bad_steps steps were all non-finite."""
      nonlocal bad_steps
      for done, m in jax.device_get(pending):
        m = {k: float(v) for k, v in m.items()}
        bad_steps = 0 if m['finite'] else bad_steps + 1
        if not m['finite']:
          print(f'step {done}: non-finite loss, gradient or update (loss {m["loss"]}); update skipped.')
        record = {'split': 'train', 'step': done, 'epoch': epoch, **m}
        log.write(record)
        epoch_train.append(record)
        bar.set_postfix(loss=f'{m["loss"]:.3f}', refresh=False)  # drawn with the bar's next update
        if bad_steps >= tc.max_bad_steps:
          raise Diverged(f'Training diverged: steps {done - bad_steps + 1}-{done} were all non-finite (loss, '
                         f'gradient or update), so the run stopped. Last good checkpoint: '
                         f'{ckpts.describe()}. Lower optim.learning_rate or set optim.max_grad_norm, then '
                         'rerun in a new workdir (or this one: it resumes from the last good checkpoint).')
      pending.clear()

    for batch in bar:
      state, m = train_step(state, shard_batch(batch, mesh), jax.random.fold_in(train_rng, step))
      step, position = step + 1, position + 1
      pending.append((step, m))
      # Mid-epoch checkpoints; the epoch's last batch is saved with the evaluation below. The log is
      # written up to a checkpoint before it is saved, so a resumed run finds every earlier step logged.
      checkpoint = tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0 and position < steps_per_epoch
      if checkpoint or len(pending) >= tc.log_every_steps:
        flush()
      if checkpoint and not bad_steps:  # a state just after skipped steps may be the start of a divergence
        ckpts.save_latest(step, state, {'epoch': epoch, 'position': position})
    flush()
    epoch, position = epoch + 1, 0
    result = evaluate_fn(state, data.test)
    final_probabilities = result.pop('probabilities', None)
    running = {f'train_{k}': float(np.mean([r[k] for r in epoch_train]))
               for k in ('accuracy', 'loss') if epoch_train and k in epoch_train[0]}
    epoch_train = []
    final = {'split': 'eval', 'step': step, 'epoch': epoch, **running, **result}
    validation = evaluate_fn(state, data.validation) if data.validation else None
    if validation:
      validation.pop('probabilities', None)
    if validation:
      final['validation'] = validation
    log.write(final)
    print(f'epoch {epoch}: {_describe(result)}' + (f'; {_describe(validation, "validation")}' if validation else ''))
    ckpts.save_latest(step, state, {'epoch': epoch, 'position': 0})
    if validation:  # the best checkpoint is chosen on the validation speakers, never on the test ones
      test = {**_scalars(result), **{k: result[k] for k in ('per_class_recall',) if k in result}}
      ckpts.save_best(step, state, {'epoch': epoch, 'position': 0, 'test': test,
                                    **_probabilities_meta(final_probabilities)}, _scalars(validation))

  if final is None:  # nothing left to train: the run was already complete
    final = [r for r in log.read() if r['split'] == 'eval'][-1]
  elif final_probabilities is not None:
    # Every process reads the best checkpoint's meta (orbax restores in step across processes).
    best_probabilities = ckpts.best_meta().get('test_probabilities') if ckpts.has_best() else None
    if main_process:
      write_predictions(os.path.join(workdir, metrics.PREDICTIONS_FILE), data, final_probabilities, best_probabilities)
  plots = metrics.plot_run(log.read(), data.class_names, os.path.join(workdir, 'plots')) if main_process else []
  summary = {'final': final, 'objective': config.objective, 'class_names': list(data.class_names),
             'plots': plots, 'checkpoints': os.path.join(os.path.abspath(workdir), 'checkpoints'),
             'description': _describe(final), 'stopped_early': stopped_early,
             # the convolutions' impls (autotuned per machine): the same plan repeats the run bit for bit
             'kernel_plan': {'audio': list(model.plan.audio), 'video': list(model.plan.video), 'pool': model.plan.pool}}
  if ckpts.has_best():
    best = ckpts.best_meta()
    summary['best'] = {'epoch': best['epoch'], 'validation': best['metrics'], 'test': best['test'],
                       'description': f"at the best validation epoch ({best['epoch']}): {_describe(best['test'])}"}
  ckpts.close()
  if main_process:
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(summary, f, indent=1)
  return summary


def _probabilities_meta(probabilities: np.ndarray | None) -> dict[str, Any]:
  """What a best checkpoint records of its test predictions (seed ensembles average them)."""
  return {} if probabilities is None else {'test_probabilities': np.round(probabilities, 6).tolist()}


def write_predictions(path: str, data: loader.Data, final: np.ndarray, best: list | None) -> None:
  """The test split's utterances, labels and class probabilities at the final epoch and at the best
  validation epoch: seed ensembles (emojax.reports) average them per utterance."""
  files.write_json(path, {'class_names': list(data.class_names), 'utterances': list(data.test_utterances),
                          'labels': [int(l) for l in data.test_labels],
                          'final': np.round(final, 6).tolist(), 'best': best})


def _scalars(result: dict[str, Any]) -> dict[str, float]:
  """The numbers of an evaluation (not its confusion matrix or per-class lists)."""
  return {k: v for k, v in result.items() if isinstance(v, (int, float))}


def _patience_spent(ckpts: checkpoints.RunCheckpoints, epoch: int, patience: int) -> bool:
  """Whether `patience` epochs have passed since the best validation epoch (0: never)."""
  return bool(patience) and ckpts.has_best() and epoch - ckpts.best_meta()['epoch'] >= patience


def init_params_from(path: str, params: Any, keys: tuple[str, ...] = ()) -> Any:
  """Parameters restored from another run's checkpoint into this model's structure.

  With `keys` (e.g. ('audio_encoder', 'video_encoder')), only those top-level
  subtrees are restored and the rest keep their fresh initialisation.
  """
  step_dir = checkpoints.find_step_dir(path)
  restored = checkpoints.restore_subtree(step_dir, ('params',))
  params = dict(params)
  for key in keys or tuple(params):
    if key not in restored or key not in params:
      raise ValueError(f'Cannot initialise {key!r} from {step_dir}: the checkpoint has {sorted(restored)}, '
                       f'this model has {sorted(params)}.')
    if jax.tree_util.tree_structure(restored[key]) != jax.tree_util.tree_structure(params[key]) or any(
        np.shape(a) != np.shape(b) for a, b in zip(jax.tree_util.tree_leaves(restored[key]),
                                                   jax.tree_util.tree_leaves(params[key]))):
      raise ValueError(f'{key!r} in {step_dir} does not match this model (different structure or shapes).')
    params[key] = jax.tree_util.tree_map(lambda p, r: jnp.asarray(r, p.dtype), params[key], restored[key])
  print(f'Initialised {", ".join(keys) if keys else "all parameters"} from {step_dir}.')
  return params


def evaluate_checkpoint(path: str, data: loader.Data, model: nn.Module, config) -> dict[str, Any]:
  """Eval-only mode: restores a checkpoint and evaluates it on the held-out split."""
  step_dir = checkpoints.find_step_dir(path)
  template = create_state(model, data.test.example_batch(config.train.batch_size),
                          make_optimizer(config.optim), jax.random.key(0))
  state, meta = checkpoints.restore(step_dir, template)
  mesh = data_mesh()
  _, evaluate_fn, _ = _objective(config, data, mesh)
  state = replicate(state, mesh)
  with jax.set_mesh(mesh):
    result = evaluate_fn(state, data.test)
  # A best checkpoint records the test metrics of its epoch; a latest one records none.
  return {'checkpoint': step_dir, 'recorded': meta.get('test'), **result}
