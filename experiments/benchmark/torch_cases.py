"""The torch twin's cases (networks in experiments/torch_reference.py): the training step and batch-1
latency of a network, eager or channels_last, and each paper convolution alone. Torch uses as many
threads as XLA's CPU client (every usable core). No JAX is imported here: the peak memory is torch's."""
from __future__ import annotations

from collections.abc import Sequence
import time
from typing import Any

import torch

from experiments import torch_reference
from experiments.benchmark import common


def device(choice: str) -> str:
  """The device of --torch_device: 'auto' is cuda when torch sees a GPU."""
  if choice == 'auto':
    return 'cuda' if torch.cuda.is_available() else 'cpu'
  return choice


def model_case(name: str, inputs: Sequence[str], kwargs: dict[str, Any], shapes: dict[str, tuple[int, ...]],
               batch_size: int, steps: int, *, channels_last: bool, device: str) -> dict[str, Any]:
  """The emojax case's figures for the torch network `name` (reading `inputs`, built with `kwargs`)."""
  torch.set_num_threads(common.usable_cores())
  torch.manual_seed(0)
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  kwargs = {**kwargs, **{f'{key}_shape': shapes[key] for key in inputs}}
  model = torch_reference.get_model(name, num_classes=common.NUM_CLASSES, **kwargs).to(device)
  batch = {k: torch.from_numpy(v) for k, v in common.numpy_batch(shapes, inputs, batch_size).items()}
  # .to keeps the memory format (channels_last strides survive the move).
  inputs = {k: v.to(device) for k, v in torch_reference.model_inputs(batch, channels_last=channels_last).items()}
  if channels_last:
    model = torch_reference.to_channels_last(model)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
  labels = batch['label'].long().to(device)

  def one_step():
    optimizer.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(inputs), labels)
    loss.backward()
    optimizer.step()
    sync()

  model.train()
  start = time.perf_counter()
  one_step()  # warm-up: allocator and oneDNN/cuDNN primitive caches
  warmup_s = time.perf_counter() - start
  step_s, times = common.median_time(one_step, steps)
  model.eval()
  one = {k: v[:1] for k, v in inputs.items()}

  def forward():
    model(one)
    sync()

  with torch.inference_mode():
    forward()
    latency_s, _ = common.median_time(forward, max(steps, 5))
  device_peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device == 'cuda' else None
  return {
      'framework': 'torch_channels_last' if channels_last else 'torch', 'model': name,
      'samples_per_s': batch_size / step_s, 'step_s': step_s, 'step_times_s': times, 'warmup_s': warmup_s,
      'latency_ms': latency_s * 1e3, 'peak_rss_mb': common.peak_rss_mb(), 'device_peak_mb': device_peak,
      'device': device + (f': {torch.cuda.get_device_name()}' if device == 'cuda' else ''),
      'cudnn_tf32': torch.backends.cudnn.allow_tf32, 'matmul_tf32': torch.backends.cuda.matmul.allow_tf32,
      'torch_version': torch.__version__, 'threads': torch.get_num_threads()}


def layer_cases(names: Sequence[str], batch_size: int, steps: int) -> list[dict[str, Any]]:
  """Forward + backward of each paper convolution (common.PAPER_LAYERS) in torch, NCHW and channels_last."""
  torch.set_num_threads(common.usable_cores())
  results = []
  for layer in names:
    shape, kernel, features, pads = common.PAPER_LAYERS[layer]
    conv_cls = torch.nn.Conv2d if len(kernel) == 2 else torch.nn.Conv3d
    for channels_last in (False, True):
      conv = conv_cls(shape[-1], features, kernel, padding=tuple(lo for lo, _ in pads))
      x = torch.randn(batch_size, shape[-1], *shape[:-1])
      if channels_last:
        fmt = torch.channels_last if len(kernel) == 2 else torch.channels_last_3d
        x, conv = x.contiguous(memory_format=fmt), conv.to(memory_format=fmt)
      x.requires_grad_(shape[-1] != 3)  # the first layer needs no input gradient

      def step(conv=conv, x=x):
        conv.zero_grad()
        torch.square(torch.relu(conv(x))).sum().backward()

      step()
      step_s, _ = common.median_time(step, steps)
      results.append({'layer': layer, 'impl': 'torch_channels_last' if channels_last else 'torch',
                      'dtype': 'float32', 'batch': batch_size, 'ms': step_s * 1e3,
                      'samples_per_s': batch_size / step_s})
  return results
