"""Training objectives as pure functions of arrays.

Cross-entropy trains the classifiers; the margin contrastive loss pre-trains the
audio and video encoders (Singh & Fang 2020, eq. 2). They are separate
objectives, each wrapped in its own jitted step by `emojax.train`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0,
                  mix: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """Mean softmax cross-entropy of integer `labels` (B,) under `logits` (B, K).

  label_smoothing: the targets put 1 - s on the label and s / K on every class (Szegedy et al. 2016).
  mix: (weight, partner) of `mixup`: the target is weight x row's target + (1 - weight) x its partner's.
  """
  if not label_smoothing and mix is None:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  if mix is not None:
    targets = mix_rows(targets, mix)
  return optax.softmax_cross_entropy(logits, targets).mean()


def mixup(rng: jax.Array, batch_size: int, alpha: float) -> tuple[jax.Array, jax.Array]:
  """(weight, partner): one Beta(alpha, alpha) weight for the batch and a random partner row for each row."""
  weight_rng, partner_rng = jax.random.split(rng)
  return jax.random.beta(weight_rng, alpha, alpha), jax.random.permutation(partner_rng, batch_size)


def mix_rows(x: jax.Array, mix: tuple[jax.Array, jax.Array]) -> jax.Array:
  """weight * x + (1 - weight) * x[partner], along the leading (batch) axis."""
  weight, partner = mix
  return weight * x + (1.0 - weight) * x[partner]


def l1_penalty(params) -> jax.Array:
  """Sum of |w| over the kernels (biases and norms are not penalised)."""
  kernels = [
      leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
      if getattr(path[-1], 'key', None) == 'kernel'
  ]
  return sum((jnp.abs(k).sum() for k in kernels), jnp.zeros((), jnp.float32))


def pair_distance(audio_emb: jax.Array, video_emb: jax.Array) -> jax.Array:
  """d_n = ||f_v(v_n) - f_a(a_n)||_2 per row, with a safe gradient at d = 0."""
  squared = jnp.sum(jnp.square(video_emb - audio_emb), axis=-1)
  # sqrt'(0) is infinite; the epsilon keeps the gradient finite for identical pairs.
  return jnp.sqrt(squared + 1e-12)


def contrastive_per_pair(distance: jax.Array, same_clip: jax.Array, margin: float) -> jax.Array:
  """y d^2 + (1 - y) max(margin - d, 0)^2 for each pair (any shape)."""
  y = same_clip.astype(distance.dtype)
  return y * jnp.square(distance) + (1 - y) * jnp.square(jnp.maximum(margin - distance, 0.0))


def contrastive(distance: jax.Array, same_clip: jax.Array, margin: float,
                weight: jax.Array | None = None) -> jax.Array:
  """Margin contrastive loss  mean[y d^2 + (1 - y) max(margin - d, 0)^2].

  This is the paper's formula. The authors' code clamped with max=0 instead of
  min=0, which pulls negatives together; this does not.

  Args:
    distance: pair distances d_n, (N,) or any shape.
    same_clip: 1 for positive pairs (audio and video of the same clip), 0 else; distance's shape.
    margin: the hinge margin eta.
    weight: optional mask/weights of distance's shape; pairs of weight 0 do not count, and the
      mean is over the total weight (so a batch that lacks a pair type stays finite).
  """
  per_pair = contrastive_per_pair(distance, same_clip, margin)
  if weight is None:
    return per_pair.mean()
  weight = weight.astype(distance.dtype)
  return jnp.sum(weight * per_pair) / jnp.maximum(jnp.sum(weight), 1.0)


def _negative_masks(labels: jax.Array, speakers: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """(hard, super_hard) (B, B) masks: other clips of another emotion; other clips of the same
  emotion, and of the same speaker too when `speakers` is given (then a voice-to-face identity
  match cannot tell the pair apart: only the clip's own synchrony can)."""
  n = labels.shape[0]
  same_label = labels[:, None] == labels[None, :]
  other_clip = ~jnp.eye(n, dtype=bool)
  super_hard = other_clip & same_label
  if speakers is not None:
    super_hard &= speakers[:, None] == speakers[None, :]
  return other_clip & ~same_label, super_hard


def mine_pairs(labels: jax.Array, rng: jax.Array, *, hard_fraction: float = 0.75,
               speakers: jax.Array | None = None) -> dict[str, jax.Array]:
  """Chooses, for every clip of a batch, one negative partner by emotion label.

  Each clip i gives a positive pair (its own audio and video) and a negative
  pair (its audio, another clip's video). A `hard_fraction` of the clips, picked
  at random, take a hard negative (a different clip of a DIFFERENT emotion); the
  rest take a super-hard negative (a different clip of the SAME emotion). The
  defaults follow the authors' 3/4 and 1/4; unlike their code, which shifted the
  batch and never looked at the labels, the emotion is checked here.

  When a batch cannot supply the wanted partner (e.g. one emotion only: no hard
  negative) that pair gets weight 0. Masks, not branches: one compiled program.

  Returns:
    partner: (B,) index of each clip's negative partner.
    hard: (B,) bool, True where the negative is a hard one, False for super-hard.
    valid: (B,) bool, whether the wanted partner exists.
  """
  n = labels.shape[0]
  order_rng, pick_rng = jax.random.split(rng)
  num_hard = int(round(hard_fraction * n))
  hard = jax.random.permutation(order_rng, jnp.arange(n) < num_hard)
  hard_mask, super_hard_mask = _negative_masks(labels, speakers)
  allowed = jnp.where(hard[:, None], hard_mask, super_hard_mask)
  # Uniform choice among allowed partners: the largest random score among them.
  scores = jnp.where(allowed, jax.random.uniform(pick_rng, (n, n)), -1.0)
  return {'partner': jnp.argmax(scores, axis=1), 'hard': hard, 'valid': allowed.any(axis=1)}


def prepare_embeddings(emb: jax.Array, *, center: bool, normalize: bool) -> jax.Array:
  """Optionally removes the batch mean (the part shared by every clip) and scales rows to unit length.

  Centring matters at the start of training: an encoder's output is then mostly
  a constant offset, and unit-normalising that leaves every distance alike.
  """
  if center:
    emb = emb - emb.mean(axis=0, keepdims=True)
  if normalize:
    emb = emb / (jnp.linalg.norm(emb, axis=-1, keepdims=True) + 1e-6)
  return emb


def all_pairs(labels: jax.Array, *, hard_fraction: float = 0.75,
              speakers: jax.Array | None = None) -> dict[str, jax.Array]:
  """Every other clip of the batch as a negative partner, weighted so each type keeps its share.

  For each clip's audio, the videos of all clips of a different emotion (hard
  negatives) share the weight `hard_fraction` and those of the other clips of the
  same emotion (super-hard) share the rest. This is `mine_pairs` in expectation -
  the same objective - with every pair of the batch in it instead of one drawn at
  random, so the gradient is far less noisy. A type the batch lacks weighs 0.

  Returns:
    weight: (B, B) weight of the negative pair (audio i, video j); 0 on the diagonal.
    hard: (B, B) bool, True where the pair is a hard one (different emotions).
  """
  hard, super_hard = _negative_masks(labels, speakers)
  per_row = lambda mask, share: jnp.where(mask, share / jnp.maximum(mask.sum(1, keepdims=True), 1), 0.0)
  return {'weight': per_row(hard, hard_fraction) + per_row(super_hard, 1.0 - hard_fraction), 'hard': hard}


def pair_matrix(pairs: dict[str, jax.Array]) -> dict[str, jax.Array]:
  """`mine_pairs`' one partner per clip as the (B, B) weight and hard-pair matrices of `all_pairs`."""
  chosen = jax.nn.one_hot(pairs['partner'], pairs['partner'].shape[0]) * pairs['valid'][:, None]
  return {'weight': chosen, 'hard': pairs['hard'][:, None] & (chosen > 0)}


def _weighted_mean(x: jax.Array, weight: jax.Array) -> jax.Array:
  """sum(w x) / sum(w), and 0 where the weights sum to 0 (a pair type the batch lacks)."""
  total = jnp.sum(weight)
  return jnp.where(total > 0, jnp.sum(weight * x) / jnp.where(total > 0, total, 1.0), 0.0)


def info_nce(distance: jax.Array, temperature: float) -> jax.Array:
  """Symmetric InfoNCE over a (B, B) distance matrix (audio i, video j): each clip's audio must pick
  its own video out of the batch's, and each video its own audio, with logits -d^2 / temperature.

  Not the paper's loss: an option that weighs each negative by how close it is
  (softmax), so the few negatives that are still confused carry the gradient.
  """
  logits = -jnp.square(distance) / temperature
  own = jnp.arange(distance.shape[0])
  return 0.5 * (optax.softmax_cross_entropy_with_integer_labels(logits, own).mean()
                + optax.softmax_cross_entropy_with_integer_labels(logits.T, own).mean())


LOSSES = ('margin', 'infonce')


def contrastive_pairs(audio_emb: jax.Array, video_emb: jax.Array, pairs: dict[str, jax.Array], margin: float,
                      *, normalize: bool = True, center: bool = False, loss: str = 'margin',
                      temperature: float = 0.1) -> dict[str, jax.Array]:
  """The contrastive loss over a batch's positive pairs and weighted negative pairs, split by pair type.

  `pairs` is `all_pairs`' weight matrix or `mine_pairs`' partners. With
  loss='margin' (the paper's) the loss is the mean over pairs, each positive pair
  (audio and video of one clip) weighing 1 and each negative (audio i, video j)
  its weight; loss='infonce' is `info_nce` over every pair of the batch (the
  weights then only shape the diagnostics). Returns the loss, the margin loss's
  parts ('positive', 'hard', 'super_hard': the mean per-pair margin loss of each
  type, 0 when absent; diagnostics whichever loss trains) and the mean distances.
  """
  if loss not in LOSSES:
    raise ValueError(f'Unknown contrastive loss {loss!r}; expected one of {LOSSES}.')
  if 'partner' in pairs:
    pairs = pair_matrix(pairs)
  audio_emb = prepare_embeddings(audio_emb, center=center, normalize=normalize)
  video_emb = prepare_embeddings(video_emb, center=center, normalize=normalize)
  distance = pair_distance(audio_emb[:, None, :], video_emb[None, :, :])  # (B, B): audio i, video j
  positive_d = jnp.diagonal(distance)
  same_clip = jnp.eye(positive_d.shape[0])
  weight, hard = pairs['weight'], pairs['hard']
  per_pair = contrastive_per_pair(distance, same_clip, margin)
  return {
      'loss': (contrastive(distance, same_clip, margin, same_clip + weight) if loss == 'margin'
               else info_nce(distance, temperature)),
      'positive': jnp.diagonal(per_pair).mean(),
      'hard': _weighted_mean(per_pair, weight * hard),
      'super_hard': _weighted_mean(per_pair, weight * ~hard),
      'distance_positive': positive_d.mean(),
      'distance_negative': _weighted_mean(distance, weight),
  }
