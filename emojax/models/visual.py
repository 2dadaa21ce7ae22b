"""`visual_mlp`: an encoder of per-clip visual feature vectors (facial action units), and its classifier.

The face stream when the corpus gives features measured on the face video (OpenFace action units, summarised
per clip: emojax.visual_features) instead of its frames. `inputs['visual']` (B, D), standardised as the loader
standardises it: FC hidden ReLU Dropout -> FC embed_dim (the embedding, before a ReLU as in every emojax
encoder); the classifier adds ReLU Dropout FC classes. Fusion uses the encoder as its `video_encoder`, so
contrastive pre-training pairs the voice with these features as it pairs it with frames.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emojax import kernels


class VisualMLP(nn.Module):
  num_classes: int
  visual_hidden: int = 128
  dropout: float = 0.2
  embed_dim: int = 64
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()  # unused (no convolution); every model takes one

  def setup(self):
    self.hidden = nn.Dense(self.visual_hidden, dtype=self.dtype)
    self.fc_embed = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def embed(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = inputs['visual'].astype(self.dtype)
    if x.ndim != 2:
      raise ValueError(f'visual features must be (batch, features), got shape {x.shape}.')
    x = self.drop(nn.relu(self.hidden(x)), deterministic=not train)
    return self.fc_embed(x)

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    x = self.drop(nn.relu(self.embed(inputs, train=train)), deterministic=not train)
    return self.head(x).astype(jnp.float32)
