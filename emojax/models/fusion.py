"""`fusion`: the two-stream model: concat(audio embedding 64, face embedding 64) -> FC 64 ReLU Dropout FC.

The face stream is the 3D CNN over frames (`visual='frames'`, the paper's) or the MLP over per-clip visual
features (`visual='features'`: facial action units). The audio encoder reads the utterance's functionals too
when the inputs hold them (a hybrid audio stream)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from emojax import kernels
from emojax.models.cnn import AudioCNN
from emojax.models.recurrent import AudioRecurrent
from emojax.models.video3d import Video3D
from emojax.models.visual import VisualMLP


class Fusion(nn.Module):
  """The encoders are submodules `audio_encoder` and `video_encoder`, so contrastive
  pre-training checkpoints restore into them by name."""

  num_classes: int
  audio_model: str = 'cnn_rnn'
  width: float = 1.0
  batchnorm: bool = False
  dropout: float = 0.2
  rnn_dropout: float = 0.1
  rnn_hidden: int = 128
  rnn_layers: int = 2
  embed_dim: int = 64
  time_scan: bool = True
  rnn_unroll: int = 1
  pooling: str = 'last'  # the recurrent audio branch's pooling over time
  visual: str = 'frames'  # the face stream: frames (3D CNN) | features (MLP over visual feature vectors)
  visual_hidden: int = 128  # visual='features': the MLP's hidden width
  dtype: Any = jnp.float32
  plan: kernels.Plan = kernels.Plan()

  def setup(self):
    common = dict(num_classes=self.num_classes, width=self.width, batchnorm=self.batchnorm, dropout=self.dropout,
                  embed_dim=self.embed_dim, dtype=self.dtype, plan=self.plan)
    if self.audio_model == 'cnn':
      self.audio_encoder = AudioCNN(**common)
    elif self.audio_model in ('cnn_rnn', 'cnn_lstm'):
      self.audio_encoder = AudioRecurrent(
          cell=self.audio_model[4:], rnn_dropout=self.rnn_dropout, rnn_hidden=self.rnn_hidden,
          rnn_layers=self.rnn_layers, time_scan=self.time_scan,
          rnn_unroll=self.rnn_unroll, pooling=self.pooling, **common)
    else:
      raise ValueError(f"Unknown audio model {self.audio_model!r}; expected 'cnn', 'cnn_rnn' or 'cnn_lstm'.")
    if self.visual == 'frames':
      self.video_encoder = Video3D(**common)
    elif self.visual == 'features':
      self.video_encoder = VisualMLP(visual_hidden=self.visual_hidden, **{k: v for k, v in common.items()
                                                                          if k not in ('width', 'batchnorm')})
    else:
      raise ValueError(f"Unknown visual stream {self.visual!r}; expected 'frames' or 'features'.")
    self.fc = nn.Dense(self.embed_dim, dtype=self.dtype)
    self.drop = nn.Dropout(self.dropout)
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def embed(self, inputs: dict[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
    """f_a(a) and f_v(v), the embeddings the contrastive objective compares."""
    return {'audio': self.audio_encoder.embed(inputs, train=train),
            'video': self.video_encoder.embed(inputs, train=train)}

  def __call__(self, inputs: dict[str, jax.Array], *, train: bool) -> jax.Array:
    emb = self.embed(inputs, train=train)
    x = nn.relu(self.fc(nn.relu(jnp.concatenate([emb['audio'], emb['video']], axis=-1))))
    return self.head(self.drop(x, deterministic=not train)).astype(jnp.float32)
