"""Training objectives as pure functions of arrays.

Cross-entropy trains the classifiers; the margin contrastive loss pre-trains the
audio and video encoders (Singh & Fang 2020, eq. 2). They are separate
objectives, each wrapped in its own jitted step by `emojax.train`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of integer `labels` (B,) under `logits` (B, K)."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


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


def contrastive(distance: jax.Array, same_clip: jax.Array, margin: float,
                weight: jax.Array | None = None) -> jax.Array:
  """Margin contrastive loss  mean[y d^2 + (1 - y) max(margin - d, 0)^2].

  This is the paper's formula. The authors' code clamped with max=0 instead of
  min=0, which pulls negatives together; this does not.

  Args:
    distance: (N,) pair distances d_n.
    same_clip: (N,) 1 for positive pairs (audio and video of the same clip), 0 else.
    margin: the hinge margin eta.
    weight: optional (N,) mask/weights; pairs of weight 0 do not count, and the
      mean is over the total weight (so a batch that lacks a pair type stays finite).
  """
  y = same_clip.astype(distance.dtype)
  per_pair = y * jnp.square(distance) + (1 - y) * jnp.square(jnp.maximum(margin - distance, 0.0))
  if weight is None:
    return per_pair.mean()
  weight = weight.astype(distance.dtype)
  return jnp.sum(weight * per_pair) / jnp.maximum(jnp.sum(weight), 1.0)
