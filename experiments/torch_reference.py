"""The paper's networks in PyTorch, layer for layer those of `emojax.models`: the speed baseline.

Inputs are the emojax batch arrays (audio (B, H, W, C) float, video
(B, T, H, W, 3) uint8) moved to NCHW / NCDHW by `model_inputs`. Every place
where a layout reaches a fully connected or recurrent layer (flatten, the
time sequence) goes through the channels-last order the Flax models use, so
`load_flax_params` copies weights over with transposes only and the two
networks compute the same function.

torch is an optional extra (`pip install torch==2.13.0`: the CPU build).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

AUDIO_CONVS = (  # (C_out, kernel, padding) as DESIGN.md; each conv is followed by ReLU and MaxPool 2
    (16, (12, 16), (6, 8)),
    (24, (8, 12), (4, 6)),
    (32, (5, 7), (2, 3)),
)
VIDEO_CONVS = (16, 32, 64, 128)  # Conv3d k3, no padding; MaxPool3d (1,3,3) stride (1,2,2) after the first three


def _flatten_channels_last(x: torch.Tensor) -> torch.Tensor:
  """(B, C, *spatial) -> (B, prod(spatial) * C) in the order of a channels-last flatten."""
  return x.permute(0, *range(2, x.ndim), 1).flatten(1)


def _width(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


class AudioConvs(nn.Module):
  """Three Conv2d + ReLU + MaxPool2 blocks on (B, C, H=frequency, W=time)."""

  def __init__(self, in_channels: int = 3, width: float = 1.0):
    super().__init__()
    layers = []
    for features, kernel, padding in AUDIO_CONVS:
      features = _width(features, width)
      layers += [nn.Conv2d(in_channels, features, kernel, padding=padding), nn.ReLU(), nn.MaxPool2d(2)]
      in_channels = features
    self.body = nn.Sequential(*layers)
    self.out_channels = in_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.body(x)


def audio_feature_shape(height: int, width: int) -> tuple[int, int]:
  """(H', W') of the audio conv stack's output."""
  for _, kernel, padding in AUDIO_CONVS:
    height = (height + 2 * padding[0] - kernel[0] + 1) // 2
    width = (width + 2 * padding[1] - kernel[1] + 1) // 2
  return height, width


class CNN(nn.Module):
  """Audio CNN: convs, flatten, FC hidden, ReLU, Dropout, FC classes."""

  def __init__(self, num_classes: int, audio_shape=(200, 300, 3), width: float = 1.0, hidden: int = 64,
               dropout: float = 0.2):
    super().__init__()
    self.convs = AudioConvs(audio_shape[-1], width)
    h, w = audio_feature_shape(*audio_shape[:2])
    self.head = nn.Sequential(nn.Linear(h * w * self.convs.out_channels, hidden), nn.ReLU(), nn.Dropout(dropout),
                              nn.Linear(hidden, num_classes))

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return self.head(_flatten_channels_last(self.convs(inputs['audio'])))


class CNNRecurrent(nn.Module):
  """Audio convs, then a 2-layer bidirectional RNN/LSTM over the W' time columns, pooled over time."""

  def __init__(self, num_classes: int, cell: str, audio_shape=(200, 300, 3), width: float = 1.0,
               rnn_hidden: int = 128, rnn_layers: int = 2, rnn_dropout: float = 0.1, embed_dim: int = 64,
               dropout: float = 0.2, time_scan: bool = True):
    super().__init__()
    self.convs = AudioConvs(audio_shape[-1], width)
    self.time_scan = time_scan
    h, w = audio_feature_shape(*audio_shape[:2])
    features = h * self.convs.out_channels if time_scan else h * w * self.convs.out_channels
    rnn_cls = {'rnn': nn.RNN, 'lstm': nn.LSTM}[cell]
    self.rnn = rnn_cls(features, rnn_hidden, num_layers=rnn_layers, bidirectional=True, batch_first=True,
                       dropout=rnn_dropout if rnn_layers > 1 else 0.0)
    # Flax cells carry one bias per gate where torch has two (input and hidden side): the
    # redundant one is a frozen zero, so both networks have the same trainable parameters.
    for name, value in self.rnn.named_parameters():
      if name.startswith('bias_hh' if cell == 'rnn' else 'bias_ih'):
        nn.init.zeros_(value)
        value.requires_grad_(False)
    self.embed = nn.Sequential(nn.Linear(2 * rnn_hidden, embed_dim), nn.ReLU(), nn.Dropout(dropout))
    self.classifier = nn.Linear(embed_dim, num_classes)

  def features(self, audio: torch.Tensor) -> torch.Tensor:
    x = self.convs(audio)  # (B, C, H', W')
    if self.time_scan:  # sequence of W' columns, each the (H', C) column flattened channels-last
      sequence = x.permute(0, 3, 2, 1).flatten(2)
    else:  # the authors' length-one "sequence"
      sequence = _flatten_channels_last(x)[:, None]
    outputs, _ = self.rnn(sequence)
    return outputs.mean(dim=1)

  def embed_audio(self, audio: torch.Tensor) -> torch.Tensor:
    return self.embed[:2](self.features(audio))

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return self.classifier(self.embed(self.features(inputs['audio'])))


class Video3D(nn.Module):
  """Conv3d 3->16->32->64->128 (k3, VALID), max-pools after the first three, FC 256, FC embed, FC classes."""

  def __init__(self, num_classes: int, video_shape=(20, 60, 100, 3), width: float = 1.0, hidden: int = 256,
               embed_dim: int = 64, dropout: float = 0.2):
    super().__init__()
    layers, in_channels = [], video_shape[-1]
    t, h, w = video_shape[:3]
    for i, features in enumerate(VIDEO_CONVS):
      features = _width(features, width)
      layers += [nn.Conv3d(in_channels, features, 3), nn.ReLU()]
      t, h, w = t - 2, h - 2, w - 2
      if i < 3:
        layers.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2)))
        h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
      in_channels = features
    self.convs = nn.Sequential(*layers)
    self.embed = nn.Sequential(nn.Linear(t * h * w * in_channels, hidden), nn.ReLU(), nn.Dropout(dropout),
                               nn.Linear(hidden, embed_dim))
    self.classifier = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(embed_dim, num_classes))

  def embed_video(self, video: torch.Tensor) -> torch.Tensor:
    return self.embed(_flatten_channels_last(self.convs(video)))

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return self.classifier(self.embed_video(inputs['video']))


class Fusion(nn.Module):
  """concat(audio embedding 64, video embedding 64) -> FC 64 -> ReLU -> Dropout -> FC classes."""

  def __init__(self, num_classes: int, audio_model: str = 'cnn_rnn', embed_dim: int = 64, dropout: float = 0.2,
               **kwargs):
    super().__init__()
    audio_kwargs = {k: v for k, v in kwargs.items() if k != 'video_shape'}
    self.audio = CNNRecurrent(num_classes, {'cnn_rnn': 'rnn', 'cnn_lstm': 'lstm'}[audio_model],
                              embed_dim=embed_dim, dropout=dropout, **audio_kwargs)
    video_kwargs = {k: v for k, v in kwargs.items() if k in ('video_shape', 'width')}
    self.video = Video3D(num_classes, embed_dim=embed_dim, dropout=dropout, **video_kwargs)
    self.head = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout),
                              nn.Linear(embed_dim, num_classes))

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    both = torch.cat([self.audio.embed_audio(inputs['audio']), self.video.embed_video(inputs['video'])], dim=-1)
    return self.head(both)


def get_model(name: str, *, num_classes: int, **kwargs) -> nn.Module:
  """The torch network named like its emojax counterpart ('cnn', 'cnn_rnn', 'cnn_lstm', 'video3d', 'fusion')."""
  if name == 'cnn':
    return CNN(num_classes, **kwargs)
  if name in ('cnn_rnn', 'cnn_lstm'):
    return CNNRecurrent(num_classes, name[4:], **kwargs)
  if name == 'video3d':
    return Video3D(num_classes, **kwargs)
  if name == 'fusion':
    return Fusion(num_classes, **kwargs)
  raise ValueError(f"Unknown model {name!r}; expected 'cnn', 'cnn_rnn', 'cnn_lstm', 'video3d' or 'fusion'.")


def model_inputs(batch: dict[str, Any], channels_last: bool = False) -> dict[str, torch.Tensor]:
  """emojax batch arrays -> NCHW audio and NCDHW video (scaled to [-1, 1] as `emojax.train.model_inputs`)."""
  inputs = {}
  if 'audio' in batch:
    audio = torch.as_tensor(np.asarray(batch['audio']), dtype=torch.float32).permute(0, 3, 1, 2)
    inputs['audio'] = audio.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
  if 'video' in batch:
    video = torch.as_tensor(np.asarray(batch['video'])).float() / 127.5 - 1.0
    video = video.permute(0, 4, 1, 2, 3)
    inputs['video'] = video.contiguous(
        memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
  return inputs


def to_channels_last(model: nn.Module) -> nn.Module:
  """Conv weights in channels-last memory format (oneDNN's fastest CPU layout); same values."""
  for module in model.modules():
    if isinstance(module, nn.Conv2d):
      module.to(memory_format=torch.channels_last)
    elif isinstance(module, nn.Conv3d):
      module.to(memory_format=torch.channels_last_3d)
  return model


def trainable_parameter_count(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters() if p.requires_grad)
