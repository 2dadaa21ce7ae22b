"""The markdown tables of the results, and writing them with the JSON."""
from __future__ import annotations

import json
import os
from typing import Any

from emojax import files


def _fmt(value, spec):
  return format(value, spec) if isinstance(value, (int, float)) else '-'


def best_emojax(results: list[dict[str, Any]], name: str) -> dict[str, Any]:
  """The fastest emojax setting of a model (an error row when none ran)."""
  rows = [r for r in results if r.get('framework') == 'emojax' and r.get('model') == name]
  timed = [r for r in rows if r.get('samples_per_s')]
  return max(timed, key=lambda r: r['samples_per_s']) if timed else (rows[0] if rows else {})


def markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
  """One row per model: emojax (its fastest setting) against torch eager and torch channels_last."""
  peak = info.get('measured_peak_flops')
  accelerator = not str(info.get('jax_device', 'cpu')).startswith('cpu')
  lines = [
      f"Machine: {info['cpu']}, {info['cores']} cores; JAX device {info.get('jax_device', '-')} "
      f"(jax {info.get('jax_version', '-')}), torch device {info.get('torch_device') or '-'}; batch "
      f"{info['batch_size']}, shapes {info['shapes']}; XLA float32 matmul peak {_fmt(peak and peak / 1e9, '.0f')} "
      f"GFLOP/s" + ('' if accelerator else ', theoretical at nominal clock '
                    f"{_fmt(info.get('theoretical_peak_flops') and info['theoretical_peak_flops'] / 1e9, '.0f')} "
                    'GFLOP/s') + f"; GLIBC_TUNABLES={info.get('glibc_tunables') or 'none'} (both frameworks).",
      '',
      f"CPU vector extensions: {' '.join(info.get('cpu_vector_flags') or ['-'])}.",
      '',
      '| model | emojax samples/s | torch | torch channels_last | ratio vs torch | ratio vs channels_last | '
      'emojax setting (conv_impl/pool_impl:dtype) | compile s | compilations (total / in timed steps) | '
      'GFLOP/step (direct conv) | % of matmul peak | peak RSS MB (emojax / torch) | '
      + ('device peak MB (emojax / torch) | ' if accelerator else '') + 'batch-1 latency ms (emojax / torch) |',
      '|' + '---|' * (13 + accelerator)]
  by = {(r['framework'], r['model']): r for r in results if r.get('framework') != 'emojax'}
  for name in info['models']:
    jx = best_emojax(results, name)
    pt, cl = (by.get((f, name), {}) for f in ('torch', 'torch_channels_last'))
    ratio = lambda other: (jx.get('samples_per_s', 0) / other['samples_per_s']  # noqa: E731
                           if other.get('samples_per_s') and jx.get('samples_per_s') else None)
    # The step's FLOPs do not depend on the setting; they are counted with the first one.
    flops = next((r['flops_per_step'] for r in [jx, *results] if r.get('framework') == 'emojax'
                  and r.get('model') == name and r.get('flops_per_step')), None)
    fraction = flops / jx['step_s'] / peak * 100 if peak and flops and jx.get('step_s') else None
    device_cell = (f"{_fmt(jx.get('device_peak_mb'), '.0f')} / {_fmt(pt.get('device_peak_mb'), '.0f')} | "
                   if accelerator else '')
    lines.append(
        f"| {name}{' (error: ' + jx['error'] + ')' if 'error' in jx else ''} | {_fmt(jx.get('samples_per_s'), '.1f')} "
        f"| {_fmt(pt.get('samples_per_s'), '.1f')} | {_fmt(cl.get('samples_per_s'), '.1f')} "
        f"| {_fmt(ratio(pt), '.2f')} | {_fmt(ratio(cl), '.2f')} | {jx.get('setting', '-')} "
        f"| {_fmt(jx.get('compile_s'), '.1f')} "
        f"| {jx.get('compilations_total', '-')} / {jx.get('compilations_timed_steps', '-')} "
        f"| {_fmt(flops and flops / 1e9, '.0f')} | {_fmt(fraction, '.1f')} "
        f"| {_fmt(jx.get('peak_rss_mb'), '.0f')} / {_fmt(pt.get('peak_rss_mb'), '.0f')} | {device_cell}"
        f"{_fmt(jx.get('latency_ms'), '.1f')} / {_fmt(pt.get('latency_ms'), '.1f')} |")
  plans = [(name, best_emojax(results, name)) for name in info['models']]
  plans = [(name, jx) for name, jx in plans if jx.get('kernel_plan')]
  tuning = {r['model']: r for r in results if r.get('framework') == 'emojax_tune'}

  def tuned(name: str) -> str:
    row = tuning.get(name)
    if not row:
      return ''
    return (f" (autotuning, in a process of its own before the timed one: {row['autotune_s']:.0f} s training, "
            f"{row['autotune_batch1_s']:.0f} s batch 1, peak RSS {row['peak_rss_mb']:.0f} MB)")

  if plans:
    lines += ['', 'Kernel plans (training step; batch-1 forward of the latency column), as the run printed them:', '']
    lines += [f"- {name}: {jx['kernel_plan']}; batch 1: {jx.get('latency_kernel_plan', '-')}{tuned(name)}"
              for name, jx in plans]
  settings = list(dict.fromkeys(r['setting'] for r in results if r.get('framework') == 'emojax' and 'setting' in r))
  if len(settings) > 1:
    lines += ['', 'emojax training samples/s per setting (conv_impl/pool_impl:dtype):', '',
              '| model | ' + ' | '.join(settings) + ' |', '|' + '---|' * (len(settings) + 1)]
    rows = {(r['model'], r.get('setting')): r for r in results if r.get('framework') == 'emojax'}
    for name in info['models']:
      cells = []
      for s in settings:
        row = rows.get((name, s), {})
        cells.append('error' if 'error' in row else _fmt(row.get('samples_per_s'), '.1f'))
      lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  errors = [r for r in results if 'error' in r]
  if errors:
    lines += ['', 'Errors: ' + '; '.join(f"{r['framework']}:{r['model']}: {r['error']}" for r in errors)]
  return '\n'.join(lines) + '\n'


def pipeline_markdown(pipeline: dict[str, Any]) -> str:
  if 'error' in pipeline:
    return f"Input pipeline: error: {pipeline['error']}\n"
  step = pipeline['train_step']
  lines = [
      f"Input pipeline (Grain `train_batches` over the ArrayRecord arrays) of {pipeline['config']}: "
      f"{pipeline['train_examples']} training examples, batch {pipeline['batch_size']}, shapes "
      f"{pipeline['shapes']}; {pipeline['cpu_count']} CPU cores. Its training step ({step['model']}, "
      f"{step['model_options'].get('conv_impl')}/{step['model_options'].get('pool_impl')}:"
      f"{step['model_options'].get('dtype')}, on {step['device']}) "
      f"consumes {step['samples_per_s']:.1f} samples/s. An epoch starts a new iterator (and new workers), "
      'as training does.', '',
      '| workers | augment | samples/s (whole epoch) | after the first batch | first batch s | '
      'training step samples/s | pipeline / step | pipeline the bottleneck? |',
      '|' + '---|' * 8]
  for row in pipeline['rows']:
    lines.append(
        f"| {row['num_workers']} | {'on' if row['augment'] else 'off'} | {_fmt(row['samples_per_s'], '.1f')} "
        f"| {_fmt(row['steady_samples_per_s'], '.1f')} | {_fmt(row['first_batch_s'], '.2f')} "
        f"| {step['samples_per_s']:.1f} | {_fmt(row['pipeline_over_step'], '.2f')} "
        f"| {'yes' if row['bottleneck'] else 'no'} |")
  return '\n'.join(lines) + '\n'


def latency_markdown(latency: dict[str, Any]) -> str:
  if 'skipped' in latency:
    return f"Single-clip latency: skipped: {latency['skipped']}\n"
  if 'error' in latency:
    return f"Single-clip latency: error: {latency['error']}\n"
  spec = latency['spec']
  lines = [f"Single-clip inference (median of {latency['models'][0]['repeats'] if latency['models'] else '-'}): "
           f"decode one real file, features as the arrays build makes them ({spec['variant']}, {spec['frontend']} "
           f"audio {spec['audio_size']}, {spec['video_frames']} frames of {spec['video_size']}, "
           f"{spec['video_crop']} crop), then the jitted model at batch 1 on {latency['device']}.", '',
           '| model | file | decode ms | features ms | model ms | total ms |', '|' + '---|' * 6]
  for row in latency['models']:
    lines.append(f"| {row['model']} | {row['source']} | {row['decode_ms']:.1f} | {row['features_ms']:.1f} "
                 f"| {row['model_ms']:.1f} | {row['total_ms']:.1f} |")
  return '\n'.join(lines) + '\n'


def layers_markdown(results: list[dict[str, Any]], info: dict[str, Any]) -> str:
  impls = list(dict.fromkeys(r['impl'] for r in results))
  lines = [f"Conv layer forward + backward, batch {info['batch_size']}, {info['dtype']}, ms per step "
           f"(XLA_FLAGS={info['xla_flags'] or 'none'}, GLIBC_TUNABLES={info.get('glibc_tunables') or 'none'}); "
           f"{info['cpu']}, {info['cores']} cores.", '',
           '| layer | ' + ' | '.join(impls) + ' | fastest emojax | its GFLOP/s (direct-conv FLOPs) |',
           '|' + '---|' * (len(impls) + 3)]
  for layer in dict.fromkeys(r['layer'] for r in results):
    row = {r['impl']: r for r in results if r['layer'] == layer}
    ours = [r for r in row.values() if not r['impl'].startswith('torch') and r.get('ms')]
    best = min(ours, key=lambda r: r['ms']) if ours else {}
    direct = row.get('xla', {}).get('flops')
    rate = direct / best['ms'] * 1e3 / 1e9 if direct and best else None
    lines.append(f'| {layer} | ' + ' | '.join(_fmt(row.get(i, {}).get('ms'), '.1f') for i in impls)
                 + f" | {best.get('impl', '-')} | {_fmt(rate, '.0f')} |")
  return '\n'.join(lines) + '\n'


def write(out: str, stem: str, document: dict[str, Any], table: str) -> None:
  """<stem>.json and <stem>.md under `out`, each replaced whole (a reader never sees half a file)."""
  for ext, text in (('json', json.dumps(document, indent=1)), ('md', table)):
    files.write_text(os.path.join(out, f'{stem}.{ext}'), text)
