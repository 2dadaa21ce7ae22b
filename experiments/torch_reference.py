"""The paper's networks in PyTorch, layer for layer those of `emojax.models`: the speed baseline.

Inputs are the emojax batch arrays (audio (B, H, W, C) float, video
(B, T, H, W, 3) uint8) moved to NCHW / NCDHW by `model_inputs`. Every place
where a layout reaches a fully connected or recurrent layer (flatten, the
time sequence) goes through the channels-last order the Flax models use, so
`load_flax_params` copies weights over with transposes only and the two
networks compute the same function.

torch is an optional extra: `pip install -e '.[torch]'` (the 'test' extra includes it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

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
    self.convs = nn.ModuleList()
    for features, kernel, padding in AUDIO_CONVS:
      self.convs.append(nn.Conv2d(in_channels, _width(features, width), kernel, padding=padding))
      in_channels = _width(features, width)
    self.out_channels = in_channels

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for conv in self.convs:
      x = F.relu(F.max_pool2d(conv(x), 2))  # floor mode, as Flax's VALID max_pool; pooled before the ReLU, as emojax
    return x


def audio_feature_shape(height: int, width: int) -> tuple[int, int]:
  """(H', W') of the audio conv stack's output."""
  for _, kernel, padding in AUDIO_CONVS:
    height = (height + 2 * padding[0] - kernel[0] + 1) // 2
    width = (width + 2 * padding[1] - kernel[1] + 1) // 2
  return height, width


class CNN(nn.Module):
  """Audio CNN: convs, flatten, FC 64 (the embedding), ReLU Dropout FC classes."""

  def __init__(self, num_classes: int, audio_shape=(200, 300, 3), width: float = 1.0, embed_dim: int = 64,
               dropout: float = 0.2):
    super().__init__()
    self.convs = AudioConvs(audio_shape[-1], width)
    h, w = audio_feature_shape(*audio_shape[:2])
    self.fc = nn.Linear(h * w * self.convs.out_channels, embed_dim)
    self.drop = nn.Dropout(dropout)
    self.head = nn.Linear(embed_dim, num_classes)

  def embed(self, audio: torch.Tensor) -> torch.Tensor:
    return self.fc(_flatten_channels_last(self.convs(audio)))

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return self.head(self.drop(F.relu(self.embed(inputs['audio']))))


class CNNRecurrent(nn.Module):
  """Audio convs, a bidirectional RNN/LSTM over the W' time columns, FC 2H->64 (embedding), ReLU Dropout FC classes.

  The recurrent summary is, as in emojax, the forward direction's output at the
  last column and the backward direction's at the first, concatenated.
  """

  def __init__(self, num_classes: int, cell: str, audio_shape=(200, 300, 3), width: float = 1.0,
               rnn_hidden: int = 128, rnn_layers: int = 2, rnn_dropout: float = 0.1, embed_dim: int = 64,
               dropout: float = 0.2, time_scan: bool = True):
    super().__init__()
    self.convs = AudioConvs(audio_shape[-1], width)
    self.time_scan = time_scan
    h, w = audio_feature_shape(*audio_shape[:2])
    features = h * self.convs.out_channels if time_scan else h * w * self.convs.out_channels
    hidden = _width(rnn_hidden, width)
    rnn_cls = {'rnn': nn.RNN, 'lstm': nn.LSTM}[cell]
    self.rnn = rnn_cls(features, hidden, num_layers=rnn_layers, bidirectional=True, batch_first=True,
                       dropout=rnn_dropout if rnn_layers > 1 else 0.0)
    # Flax cells have one bias per gate where torch has two (input and hidden side): the
    # redundant one is a frozen zero, so both networks have the same trainable parameters.
    for name, value in self.rnn.named_parameters():
      if name.startswith('bias_hh' if cell == 'rnn' else 'bias_ih'):
        nn.init.zeros_(value)
        value.requires_grad_(False)
    self.fc = nn.Linear(2 * hidden, embed_dim)
    self.drop = nn.Dropout(dropout)
    self.head = nn.Linear(embed_dim, num_classes)

  def embed(self, audio: torch.Tensor) -> torch.Tensor:
    x = self.convs(audio)  # (B, C, H', W')
    if self.time_scan:  # sequence of W' columns, each the (H', C) column flattened channels-last
      sequence = x.permute(0, 3, 2, 1).flatten(2)
    else:  # the authors' length-one "sequence"
      sequence = _flatten_channels_last(x)[:, None]
    outputs, _ = self.rnn(sequence)
    hidden = outputs.shape[-1] // 2
    summary = torch.cat([outputs[:, -1, :hidden], outputs[:, 0, hidden:]], dim=-1)
    return self.fc(summary)

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return self.head(self.drop(F.relu(self.embed(inputs['audio']))))


class Video3D(nn.Module):
  """Conv3d 3->16->32->64->128 (k3, VALID) ReLU, max-pools after the first three; FC 256 ReLU Dropout,
  FC 64 (the embedding); the classifier adds ReLU Dropout FC classes."""

  def __init__(self, num_classes: int, video_shape=(20, 60, 100, 3), width: float = 1.0, embed_dim: int = 64,
               dropout: float = 0.2):
    super().__init__()
    self.convs = nn.ModuleList()
    in_channels, (t, h, w) = video_shape[-1], video_shape[:3]
    for i, features in enumerate(VIDEO_CONVS):
      self.convs.append(nn.Conv3d(in_channels, _width(features, width), 3))
      t, h, w = t - 2, h - 2, w - 2
      if i < 3:
        h, w = (h - 3) // 2 + 1, (w - 3) // 2 + 1
      in_channels = _width(features, width)
    self.fc = nn.Linear(t * h * w * in_channels, _width(256, width))
    self.fc_embed = nn.Linear(_width(256, width), embed_dim)
    self.drop = nn.Dropout(dropout)
    self.head = nn.Linear(embed_dim, num_classes)

  def embed(self, video: torch.Tensor) -> torch.Tensor:
    x = video
    for i, conv in enumerate(self.convs):
      x = conv(x)
      if i < 3:  # max-pool then ReLU, as emojax: the same values as the paper's ReLU then pool, less work
        x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2))
      x = F.relu(x)
    x = F.relu(self.fc(_flatten_channels_last(x)))
    return self.fc_embed(self.drop(x))

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return self.head(self.drop(F.relu(self.embed(inputs['video']))))


class Fusion(nn.Module):
  """concat(audio embedding 64, video embedding 64) -> FC 64 -> ReLU -> Dropout -> FC classes."""

  def __init__(self, num_classes: int, audio_model: str = 'cnn_rnn', width: float = 1.0, embed_dim: int = 64,
               dropout: float = 0.2, audio_shape=(200, 300, 3), video_shape=(20, 60, 100, 3), **recurrent):
    super().__init__()
    common = dict(width=width, embed_dim=embed_dim, dropout=dropout)
    if audio_model == 'cnn':
      self.audio_encoder = CNN(num_classes, audio_shape, **common)
    else:
      self.audio_encoder = CNNRecurrent(num_classes, {'cnn_rnn': 'rnn', 'cnn_lstm': 'lstm'}[audio_model],
                                        audio_shape, **common, **recurrent)
    self.video_encoder = Video3D(num_classes, video_shape, **common)
    del self.audio_encoder.head, self.video_encoder.head  # the encoders' own classifiers are unused
    self.fc = nn.Linear(2 * embed_dim, embed_dim)
    self.drop = nn.Dropout(dropout)
    self.head = nn.Linear(embed_dim, num_classes)

  def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    both = F.relu(torch.cat([self.audio_encoder.embed(inputs['audio']), self.video_encoder.embed(inputs['video'])], -1))
    return self.head(self.drop(F.relu(self.fc(both))))


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


def _tensor(array, transpose: tuple[int, ...] | None = None) -> torch.Tensor:
  array = np.asarray(array, np.float32)
  return torch.from_numpy(np.array(array.transpose(transpose) if transpose else array, copy=True))


def _load_conv(conv: nn.Module, params: dict[str, Any]) -> None:
  rank = params['kernel'].ndim - 2  # (*window, C_in, C_out) -> (C_out, C_in, *window)
  conv.weight.copy_(_tensor(params['kernel'], (rank + 1, rank, *range(rank))))
  conv.bias.copy_(_tensor(params['bias']))


def _load_dense(linear: nn.Linear, params: dict[str, Any]) -> None:
  linear.weight.copy_(_tensor(params['kernel']).T)
  linear.bias.copy_(_tensor(params['bias']))


def _load_recurrent(rnn: nn.RNNBase, layers: list[dict[str, Any]]) -> None:
  """Flax SimpleCell ('i' with bias, 'h') / LSTM cells ('ii'..'io', 'hi'..'ho' with bias) -> torch RNN/LSTM."""
  gates = ('i', 'f', 'g', 'o')  # torch's order of the stacked LSTM gates
  for k, layer in enumerate(layers):
    for direction, suffix in (('forward_rnn', ''), ('backward_rnn', '_reverse')):
      cell = layer[direction]['cell']
      get = lambda name: getattr(rnn, f'{name}_l{k}{suffix}')  # noqa: E731
      if isinstance(rnn, nn.LSTM):
        get('weight_ih').copy_(torch.cat([_tensor(cell['i' + g]['kernel']).T for g in gates]))
        get('weight_hh').copy_(torch.cat([_tensor(cell['h' + g]['kernel']).T for g in gates]))
        get('bias_hh').copy_(torch.cat([_tensor(cell['h' + g]['bias']) for g in gates]))
      else:
        get('weight_ih').copy_(_tensor(cell['i']['kernel']).T)
        get('weight_hh').copy_(_tensor(cell['h']['kernel']).T)
        get('bias_ih').copy_(_tensor(cell['i']['bias']))


@torch.no_grad()
def load_flax_params(model: nn.Module, params: dict[str, Any]) -> nn.Module:
  """Copies an emojax model's parameters (the 'params' collection) into its torch counterpart, in place.

  Raises:
    ValueError: when the trees do not correspond (a different model or size).
  """
  try:
    if isinstance(model, Fusion):
      load_flax_params(model.audio_encoder, params['audio_encoder'])
      load_flax_params(model.video_encoder, params['video_encoder'])
    elif isinstance(model, Video3D):
      for i, conv in enumerate(model.convs):
        _load_conv(conv, params[f'convs_{i}'])
      _load_dense(model.fc_embed, params['fc_embed'])
    else:
      for i, conv in enumerate(model.convs.convs):
        _load_conv(conv, params['convs'][f'Conv_{i}'])
      if isinstance(model, CNNRecurrent):
        _load_recurrent(model.rnn, [params[f'layers_{k}'] for k in range(model.rnn.num_layers)])
    _load_dense(model.fc, params['fc'])
    if 'head' in params:
      _load_dense(model.head, params['head'])
  except (KeyError, RuntimeError) as error:
    raise ValueError(f'The Flax parameters do not fit {type(model).__name__}: {error!r}') from error
  return model
