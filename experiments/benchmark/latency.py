"""Single-clip inference, end to end: one real file (an Emo-DB wav for the audio models, a CREMA-D .flv,
video and audio track, for the video-reading ones) decoded, turned into features by the functions the
arrays build uses (`emojax.features`), and classified by the jitted model at batch 1."""
from __future__ import annotations

from collections.abc import Sequence
import functools
import glob
import os
import time
from typing import Any

import jax
import numpy as np
import threadpoolctl

from emojax import audio, features, models, train, video
from experiments.benchmark import cases, common, machine


def sources(root: str) -> dict[str, str] | str:
  """The real files the latency part reads ({'wav': ..., 'flv': ...}), or why there are none."""
  wavs = sorted(glob.glob(os.path.join(root, 'emodb', 'wav', '*.wav')))
  flvs = sorted(glob.glob(os.path.join(root, 'crema-d-sample', 'VideoFlash', '*.flv')))
  if not wavs or not flvs:
    return (f'no real recordings at {os.path.abspath(root)} (needs emodb/wav/*.wav and '
            'crema-d-sample/VideoFlash/*.flv; see ../shared/data/README.md): latency not measured')
  return {'wav': wavs[0], 'flv': flvs[0]}


def latency_case(names: Sequence[str], setting: tuple[str, str, str], shapes: dict[str, tuple[int, ...]], *,
                 quick: bool, steps: int, shared_data: str) -> dict[str, Any]:
  """Decode, features and model times (median of max(steps, 5)) of each model on the first 3-s clip of
  its file, as variant ds2 makes it, at the benchmark's shapes (the paper's 3-channel front end)."""
  found = sources(shared_data)
  if isinstance(found, str):
    return {'skipped': found}
  spec = features.FeatureSpec(variant='ds2', frontend='faithful', audio_size=tuple(shapes['audio'][:2]),
                              video_frames=shapes['video'][0], video_size=tuple(shapes['video'][1:3]),
                              video_crop='fixed')
  repeats = max(steps, 5)
  results = []
  for name in names:
    inputs = models.INPUTS[name]
    path = found['flv' if 'video' in inputs else 'wav']

    def decode(inputs=inputs, path=path):
      """As the corpus readers load: soundfile for a wav, the container's audio track for a .flv."""
      decoded = {}
      if 'audio' in inputs:
        decoded['audio'] = video.decode_audio_track(path) if path.endswith('.flv') else audio.load_waveform(path)
      if 'video' in inputs:
        decoded['video'] = video.decode_video(path)
      return decoded

    def clip_features(decoded):
      """As `features.utterance_examples` makes clip 0 (one BLAS thread, as `arrays.build`)."""
      out = {}
      with threadpoolctl.threadpool_limits(limits=1, user_api='blas'):
        if 'audio' in decoded:
          wave, sr = decoded['audio']
          clip = audio.clip_waveform(wave, sr, seconds=spec.clip_seconds, rng=np.random.default_rng(0))[0]
          out['audio'] = features.audio_features(clip, sr, spec)
        if 'video' in decoded:
          frames, fps = decoded['video']
          out['video'], _ = video.video_clip(features.clip_frames(frames, fps, 0, spec.clip_seconds),
                                             n_frames=spec.video_frames, size=spec.video_size, crop=spec.video_crop)
      return {k: v[None] for k, v in out.items()}

    kwargs = cases.model_kwargs(name, setting, quick)
    example = clip_features(decode())
    model = models.get_model(name, num_classes=common.NUM_CLASSES, **kwargs, tune_for=train.input_structs(example),
                             training=False)
    variables = jax.jit(functools.partial(model.init, train=False))(
        {'params': jax.random.key(0), 'dropout': jax.random.key(0)}, train.model_inputs(example))
    forward = jax.jit(lambda v, x, model=model: model.apply(v, train.model_inputs(x), train=False))
    classify = lambda x, forward=forward, variables=variables: int(np.argmax(forward(variables, x)))  # noqa: E731
    classify(example)  # compile
    times = []
    for _ in range(repeats):
      t0 = time.perf_counter()
      decoded = decode()
      t1 = time.perf_counter()
      batch = clip_features(decoded)
      t2 = time.perf_counter()
      classify(batch)
      t3 = time.perf_counter()
      times.append({'decode_ms': (t1 - t0) * 1e3, 'features_ms': (t2 - t1) * 1e3, 'model_ms': (t3 - t2) * 1e3,
                    'total_ms': (t3 - t0) * 1e3})
    results.append({'model': name, 'source': os.path.relpath(path, shared_data),
                    **{k: common.median_of(times, k) for k in times[0]},
                    'feature_shapes': {k: list(v.shape[1:]) for k, v in batch.items()},
                    'setting': common.setting_name(*setting), 'model_kwargs': kwargs,
                    'kernel_plan': model.plan.describe(), 'repeats': repeats})
  return {'spec': {'variant': spec.variant, 'frontend': spec.frontend, 'audio_size': list(spec.audio_size),
                   'video_frames': spec.video_frames, 'video_size': list(spec.video_size),
                   'video_crop': spec.video_crop},
          'device': machine.jax_device(), 'models': results}
