"""Sweep reports: every point directory under a sweep's directory, aggregated over seeds and folds.

`write(sweep_dir, sweep)` reads each point's summary.json (and sweep_point.json,
sweep_error.txt) and writes report.md, report.json and report.png next to them.
It trains nothing and reads no arrays: it takes seconds.

Rows are the swept axes other than the replicates (seed, data.fold); each metric is the
mean and the POPULATION standard deviation (numpy's std, ddof=0) over the row's finished
points, with n. Columns: test accuracy and unweighted accuracy at the final epoch and, where
summary.json has a `best` entry (`summary['best']['test']`: the test split at the epoch chosen
on validation speakers), at that checkpoint; the validation speakers' accuracy at the final epoch
(what a recipe may be chosen on: the test speakers choose nothing); the seed ensemble where a row
has several seeds per fold; retrieval metrics for contrastive runs. A sweep's FUSIONS add
late-fusion rows (`a + b`: rows a and b's test probabilities averaged, equal weights), scored in
the ensemble columns.

Every directory under the sweep dir counts, so runs written there by other machines (the
commands of `experiments.sweep --list`) are included: points of the sweep's definition by name,
others with the axes read from their sweep_point.json or their directory name (a=b,c=d).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Sequence

import numpy as np

from emojax import files, metrics, sweeps

METRICS = ('accuracy', 'unweighted_accuracy', 'recall_at_1', 'recall_at_5')
_LABELS = {'accuracy': 'test acc', 'unweighted_accuracy': 'test UA', 'recall_at_1': 'recall@1',
           'recall_at_5': 'recall@5'}
_POINT_FILES = ('summary.json', 'config.json', sweeps.POINT_FILE, sweeps.ERROR_FILE, sweeps.LOG_FILE)


_KINDS = {'final': 'final', 'best': 'best by val.', 'validation': 'validation speakers, final',
          'ensemble_final': 'seed ensemble, final',
          'ensemble_best': 'seed ensemble, best by val.'}


def column_label(column: str) -> str:
  kind, metric = column.split('.', 1)
  if kind == 'validation':
    return 'val. acc (final)'
  return f"{_LABELS.get(metric, metric)} ({_KINDS[kind]})"


def axes_from_name(name: str) -> list[list[str]]:
  """'model.name=cnn,seed=1' -> [['model.name', 'cnn'], ['seed', '1']] (a name without '=' is one axis)."""
  axes = []
  for part in name.split(','):
    key, eq, label = part.partition('=')
    axes.append([key, label] if eq else ['point', part])
  return axes


def _metrics(entry: Any) -> dict[str, float]:
  if not isinstance(entry, dict):
    return {}
  if isinstance(entry.get('test'), dict):  # a summary that splits final metrics by side
    entry = entry['test']
  return {k: float(entry[k]) for k in METRICS if isinstance(entry.get(k), (int, float))}


def _recalls(entry: Any, class_names: Sequence[str]) -> dict[str, float]:
  """{class: recall} from an entry's per_class_recall (classes absent from the test side left out)."""
  if not isinstance(entry, dict):
    return {}
  if isinstance(entry.get('test'), dict):
    entry = entry['test']
  recall = entry.get('per_class_recall') or []
  return {str(c): float(r) for c, r in zip(class_names, recall) if isinstance(r, (int, float))}


def read_point(point_dir: str, *, name: str | None = None, axes: Sequence[Sequence[str]] | None = None,
               command: str | None = None, num_epochs: int | None = None) -> dict[str, Any]:
  """One point's row: status, final (and best) metrics, wall time, command, error."""
  name = name or os.path.basename(point_dir)
  record = sweeps.read_json(os.path.join(point_dir, sweeps.POINT_FILE)) or {}
  summary = sweeps.read_json(os.path.join(point_dir, 'summary.json'))
  axes = axes or record.get('axes') or axes_from_name(name)
  entry = {'name': name, 'dir': point_dir, 'axes': [list(a) for a in axes],
           'command': command or record.get('command'), 'epoch': None, 'final': {}, 'best': {}, 'validation': {},
           'wall_s': None,
           'wall_estimated': False, 'error': None, 'recall': {'final': {}, 'best': {}}}
  if isinstance(summary, dict) and 'final' in summary:
    entry['epoch'] = summary['final'].get('epoch')
    entry['final'] = _metrics(summary['final'])
    entry['best'] = _metrics(summary.get('best'))
    validation = summary['final'].get('validation')  # the validation speakers at the final epoch
    entry['validation'] = {k: v for k, v in _metrics(validation).items() if k == 'accuracy'}
    predictions = sweeps.read_json(os.path.join(point_dir, metrics.PREDICTIONS_FILE))
    if isinstance(predictions, dict) and predictions.get('utterances'):
      entry['_predictions'] = predictions  # left out of report.json
    classes = summary.get('class_names') or []
    entry['recall'] = {'final': _recalls(summary['final'], classes), 'best': _recalls(summary.get('best'), classes)}
    entry['status'] = 'finished' if sweeps.complete(summary, num_epochs) else 'incomplete'
  elif os.path.exists(os.path.join(point_dir, sweeps.ERROR_FILE)):
    entry['status'] = 'failed'
    with open(os.path.join(point_dir, sweeps.ERROR_FILE)) as f:
      lines = f.read().strip().splitlines()
    entry['error'] = (lines[0] + ': ' + lines[-1]) if lines else 'failed'
  elif os.path.isdir(point_dir):
    entry['status'] = 'incomplete'  # running now, or killed: rerunning the sweep resumes it
  else:
    entry['status'] = 'pending'
  if record.get('wall_s'):
    entry['wall_s'] = float(record['wall_s'])
  elif entry['status'] == 'finished':  # run elsewhere: the last attempt's span, from file times
    try:
      span = os.path.getmtime(os.path.join(point_dir, 'summary.json')) - os.path.getmtime(
          os.path.join(point_dir, 'config.json'))
      entry['wall_s'], entry['wall_estimated'] = max(span, 0.0), True
    except OSError:
      pass
  return entry


def gather(sweep_dir: str, sweep: sweeps.Sweep | None = None) -> list[dict[str, Any]]:
  """The sweep's points in definition order (pending ones too), then every other point dir found."""
  entries, seen = [], set()
  if sweep is not None:
    for point, config in zip(sweep.points, sweep.configs):
      entries.append(read_point(os.path.join(sweep_dir, point.name), name=point.name,
                                axes=[[a.name, sweeps.label_text(a.label)] for a in point.axes],
                                command=sweep.shell_command(point), num_epochs=config.train.num_epochs))
      seen.add(point.name)
  found = sorted(d for d in (os.listdir(sweep_dir) if os.path.isdir(sweep_dir) else ())
                 if d not in seen and any(os.path.exists(os.path.join(sweep_dir, d, f)) for f in _POINT_FILES))
  entries.extend(read_point(os.path.join(sweep_dir, d)) for d in found)
  return entries


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and population standard deviation (ddof=0); (nan, nan) for no values."""
  if not values:
    return math.nan, math.nan
  array = np.asarray(values, np.float64)
  return float(array.mean()), float(array.std(ddof=0))


def _mean_probabilities(members: Sequence[dict[str, Any]], kind: str) -> tuple[list, np.ndarray, np.ndarray] | None:
  """(test utterances, their labels, class probabilities averaged over the members) at `kind` ('final' or
  'best'); None unless every member has them for one common set of test utterances."""
  tables = [m.get('_predictions') for m in members]
  if not tables or any(t is None or t.get(kind) is None for t in tables):
    return None
  utterances = tables[0]['utterances']
  if any(t['utterances'] != utterances or t['labels'] != tables[0]['labels'] for t in tables):
    return None  # different test sides (e.g. seed-chosen test speakers): nothing to average
  mean = np.mean([np.asarray(t[kind], np.float64) for t in tables], axis=0)
  return utterances, np.asarray(tables[0]['labels']), mean


def _score(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
  result = metrics.classification_metrics(
      metrics.confusion_matrix(labels, probabilities.argmax(-1), probabilities.shape[-1]))
  return {k: result[k] for k in ('accuracy', 'unweighted_accuracy')}


def _stat(values: Sequence[float]) -> dict[str, Any]:
  mean, std = mean_std(values)
  return {'mean': mean, 'std': std, 'n': len(values), 'values': list(values)}


def ensemble(members: Sequence[dict[str, Any]], kind: str) -> dict[str, float] | None:
  """Accuracy and unweighted accuracy of the members' class probabilities averaged per utterance
  (`kind` 'final' or 'best'); None unless every member has them for one common set of test utterances."""
  averaged = _mean_probabilities(members, kind) if len(members) >= 2 else None
  return _score(*averaged[1:]) if averaged else None


def _ensembles(done: Sequence[dict[str, Any]], replicates: Sequence[str]) -> dict[str, list[dict[str, float]]]:
  """Per kind, the seed ensemble of each group of points that differ only in their seed (a fold)."""
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for e in done:
    groups.setdefault(tuple((n, l) for n, l in e['axes'] if n in replicates and n != 'seed'), []).append(e)
  out = {}
  for kind in ('final', 'best'):
    results = [ensemble(members, kind) for members in groups.values()]
    if results and all(r is not None for r in results):
      out[f'ensemble_{kind}'] = results
  return out


def fused_rows(entries: Sequence[dict[str, Any]], fusions: Sequence[tuple[str, Sequence[str]]],
               replicates: Sequence[str] = sweeps.REPLICATES) -> list[dict[str, Any]]:
  """Late fusion: for each (axis, labels), the rows that differ only in `axis`, one per label, have
  their test probabilities averaged per utterance, each row weighing the same (a row's seeds are
  averaged first), then scored per fold: mean/std over the folds all of them finished. Fixed equal
  weights: nothing is chosen, on test speakers or others."""
  finished = [e for e in entries if e['status'] == 'finished']
  rows = []
  for axis, labels in fusions:
    by_context: dict[tuple, dict[str, dict[tuple, list]]] = {}
    for e in finished:
      label = dict((n, l) for n, l in e['axes']).get(axis)
      if label not in labels:
        continue
      context = tuple((n, l) for n, l in e['axes'] if n != axis and n not in replicates)
      fold = tuple((n, l) for n, l in e['axes'] if n in replicates and n != 'seed')
      by_context.setdefault(context, {}).setdefault(label, {}).setdefault(fold, []).append(e)
    for context, by_label in by_context.items():
      if set(by_label) != set(labels):
        continue
      folds = sorted(set.intersection(*(set(f) for f in by_label.values())))
      stats = {}
      for kind in ('final', 'best'):
        results = []
        for fold in folds:
          parts = [_mean_probabilities(by_label[label][fold], kind) for label in labels]
          if any(p is None for p in parts) or any(set(p[0]) != set(parts[0][0]) for p in parts):
            results = []
            break
          utterances, truth, _ = parts[0]
          # Each row's probabilities in the first row's utterance order (rows may list them differently).
          aligned = [dict(zip(p[0], p[2])) for p in parts]
          results.append(_score(truth, np.mean([[a[u] for u in utterances] for a in aligned], axis=0)))
        for metric in ('accuracy', 'unweighted_accuracy') if results else ():
          stats[f'ensemble_{kind}.{metric}'] = _stat([r[metric] for r in results])
      if stats:
        rows.append({'row': [[axis, ' + '.join(labels)], *[list(c) for c in context]], 'n': len(folds),
                     'points': len(folds), 'stats': stats, 'per_class_recall': {'final': {}, 'best': {}},
                     'replicates': [[list(f) for f in fold] for fold in folds], 'fused': [axis, list(labels)],
                     'wall_s_mean': None, 'wall_s_total': None})
  return rows


def aggregate(entries: Sequence[dict[str, Any]], replicates: Sequence[str] = sweeps.REPLICATES,
              fusions: Sequence[tuple[str, Sequence[str]]] = ()) -> dict[str, Any]:
  """Rows (axes other than the replicates, in order of first appearance) with mean/std/n per column.

  Rows whose points include several seeds of each fold (or of the one split) also get the seed
  ensemble: the seeds' test probabilities averaged per utterance, scored, then mean/std over folds.
  `fusions` adds late-fusion rows (fused_rows), scored in the ensemble columns.
  """
  finished = [e for e in entries if e['status'] == 'finished']
  columns = [f'{kind}.{m}' for kind in ('final', 'best', 'validation') for m in METRICS
             if any(m in e[kind] for e in finished)]
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for e in entries:
    key = tuple((name, label) for name, label in e['axes'] if name not in replicates)
    groups.setdefault(key, []).append(e)
  rows = []
  for key, members in groups.items():
    done = [e for e in members if e['status'] == 'finished']
    stats = {}
    for column in columns:
      kind, metric = column.split('.', 1)
      stats[column] = _stat([e[kind][metric] for e in done if metric in e[kind]])
    recall = {}
    for kind in ('final', 'best'):
      classes = list(dict.fromkeys(c for e in done for c in e['recall'][kind]))
      recall[kind] = {}
      for c in classes:
        values = [e['recall'][kind][c] for e in done if c in e['recall'][kind]]
        mean, std = mean_std(values)
        recall[kind][c] = {'mean': mean, 'std': std, 'n': len(values)}
    for kind, results in _ensembles(done, replicates).items():
      for metric in ('accuracy', 'unweighted_accuracy'):
        stats[f'{kind}.{metric}'] = _stat([r[metric] for r in results])
    walls = [e['wall_s'] for e in done if e['wall_s'] is not None]
    rows.append({'row': [list(k) for k in key], 'n': len(done), 'points': len(members), 'stats': stats,
                 'per_class_recall': recall,
                 'replicates': [[[n, l] for n, l in e['axes'] if n in replicates] for e in done],
                 'wall_s_mean': float(np.mean(walls)) if walls else None,
                 'wall_s_total': float(np.sum(walls)) if walls else None})
  rows += fused_rows(entries, fusions, replicates)
  ensembled = {c for r in rows for c in r['stats'] if c.startswith('ensemble_')}
  columns += [c for c in (f'ensemble_{k}.{m}' for k in ('final', 'best') for m in ('accuracy', 'unweighted_accuracy'))
              if c in ensembled]
  counts = {s: sum(e['status'] == s for e in entries) for s in ('finished', 'failed', 'incomplete', 'pending')}
  return {'columns': columns, 'rows': rows, 'counts': counts,
          'std': 'population standard deviation (ddof=0) over the finished points of a row'}


def _cell(stat: dict[str, Any], row_n: int | None = None) -> str:
  """mean ± std, with its n where it differs from the row's (points lacking that metric)."""
  if not stat['n']:
    return '-'
  return f"{stat['mean']:.3f} ± {stat['std']:.3f}" + (f" (n={stat['n']})" if row_n and stat['n'] != row_n else '')


def _wall(seconds: float | None, estimated: bool = False) -> str:
  return '-' if seconds is None else ('~' if estimated else '') + sweeps.duration(seconds)


def _md(text: Any) -> str:
  return str(text).replace('|', '\\|')


def markdown(title: str, table: dict[str, Any], entries: Sequence[dict[str, Any]], *,
             regenerate: str | None = None, rerun: str | None = None, plot: str | None = None) -> str:
  columns, rows = table['columns'], table['rows']
  axis_names = list(dict.fromkeys(name for r in rows for name, _ in r['row']))
  counts = table['counts']
  out = [f'# {title}', '']
  if rerun:
    out += [f'Run (finished points are skipped, killed ones resume): `{rerun}`  ']
  if regenerate:
    out += [f'Regenerate this report from the workdirs (no training): `{regenerate}`', '']
  out += [f"Points: {counts['finished']} finished, {counts['failed']} failed, {counts['incomplete']} incomplete, "
          f"{counts['pending']} not started, of {len(entries)}. Cells: mean ± {table['std']}; "
          'n = finished points (seeds/folds) in the row. Wall: per point (mean) and the row in total.', '']
  header = [*axis_names, 'n', *(column_label(c) for c in columns), 'wall per point', 'wall, row']
  out += ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(axis_names) + '---:|' * (len(header) - len(axis_names))]
  for r in rows:
    labels = dict((n, l) for n, l in r['row'])
    cells = [_md(labels.get(a, '')) for a in axis_names]
    cells += [f"{r['n']}" + (f"/{r['points']}" if r['points'] != r['n'] else '')]
    cells += [_cell(r['stats'].get(c, {'n': 0}), r['n']) for c in columns]
    cells += [_wall(r['wall_s_mean']), _wall(r['wall_s_total'])]
    out.append('| ' + ' | '.join(cells) + ' |')
  if any(r.get('fused') for r in rows):
    out += ['', 'Rows `a + b` are late fusions: per fold, the test-class probabilities of rows a and b (each a '
            'row\'s seeds averaged first) averaged with equal weights, fixed beforehand; in the ensemble columns.']
  if plot:
    out += ['', f'![mean and population std per row]({plot})']
  classes = list(dict.fromkeys(c for r in rows for c in r['per_class_recall']['final']))
  if classes:
    out += ['', '## Per-class recall (final epoch)', '', '| ' + ' | '.join([*axis_names, 'n', *classes]) + ' |',
            '|' + '---|' * len(axis_names) + '---:|' * (len(classes) + 1)]
    for r in rows:
      if r.get('fused'):
        continue  # scored from probabilities only: no per-class figures
      labels = dict((n, l) for n, l in r['row'])
      recall = r['per_class_recall']['final']
      out.append('| ' + ' | '.join([*(_md(labels.get(a, '')) for a in axis_names), str(r['n']),
                                    *(_cell(recall[c], r['n']) if c in recall else '-' for c in classes)]) + ' |')
  columns = [c for c in columns if not c.startswith('ensemble_')]  # a point has no ensemble of its own
  out += ['', '## Points', '', '| # | point | status | epochs | ' + ' | '.join(column_label(c) for c in columns)
          + ' | wall | command |', '|---:|---|---|---:|' + '---:|' * len(columns) + '---:|---|']
  for i, e in enumerate(entries, 1):
    values = []
    for c in columns:
      kind, metric = c.split('.', 1)
      values.append(f'{e[kind][metric]:.4f}' if metric in e[kind] else '-')
    out.append(f"| {i} | {_md(e['name'])} | {e['status']} | {e['epoch'] if e['epoch'] is not None else '-'} | "
               + ' | '.join(values) + f" | {_wall(e['wall_s'], e['wall_estimated'])} | "
               + (f"`{_md(e['command'])}`" if e['command'] else '-') + ' |')
  failed = [e for e in entries if e['status'] == 'failed']
  if failed:
    out += ['', '## Failed points', '']
    out += [f"- `{_md(e['name'])}`: {_md(e['error'])} (log: `{e['dir']}/{sweeps.LOG_FILE}`, "
            f"error: `{e['dir']}/{sweeps.ERROR_FILE}`)" for e in failed]
  return '\n'.join(out) + '\n'


def plot(table: dict[str, Any], path: str, title: str = '') -> str | None:
  """Horizontal bars, one group per row, one bar per accuracy column (test accuracy: final, best by
  validation, ensembles; every column where there is none), population std as error bars; None if
  nothing finished. Horizontal, so a sweep of many rows stays readable."""
  rows = [r for r in table['rows'] if r['n']]
  columns = [c for c in table['columns'] if c.endswith('.accuracy') and not c.startswith('validation')]
  columns = columns or table['columns']
  if not rows or not columns:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  height = 0.8 / len(columns)
  fig, ax = plt.subplots(figsize=(10.0, max(3.0, 0.22 * len(rows) * len(columns) + 1.6)))
  y = np.arange(len(rows))[::-1]  # the first row on top
  for i, column in enumerate(columns):
    means = [r['stats'].get(column, {}).get('mean', math.nan) for r in rows]
    stds = [r['stats'].get(column, {}).get('std', math.nan) for r in rows]
    ax.barh(y - (i - (len(columns) - 1) / 2) * height, np.nan_to_num(means), height, xerr=np.nan_to_num(stds),
            capsize=2, label=column_label(column))
  labels = [', '.join(f'{l}' if n in ('model.name', 'model', 'point') else f'{n.rsplit(".", 1)[-1]}={l}'
                      for n, l in r['row']) + f" (n={r['n']})" for r in rows]
  ax.set_yticks(y, labels, fontsize=7)
  ax.set_xlim(0, 1)
  ax.set_xlabel('mean ± population std')
  ax.grid(axis='x', alpha=0.3)
  ax.legend(fontsize=7, loc='lower right')
  ax.set_title(title.replace('`', ''), fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write(sweep_dir: str, sweep: sweeps.Sweep | None = None, *, title: str | None = None) -> dict[str, str]:
  """Writes report.md, report.json and (if any point finished) report.png in `sweep_dir`; returns their paths."""
  os.makedirs(sweep_dir, exist_ok=True)
  entries = gather(sweep_dir, sweep)
  replicates = sweep.replicates if sweep else sweeps.REPLICATES
  table = aggregate(entries, replicates, sweep.fusions if sweep else ())
  title = title or f"Sweep {sweep.name if sweep else os.path.basename(os.path.normpath(sweep_dir))}"
  if sweep is not None:
    title += f' (`{sweep.config_ref}`)'
  regenerate = sweep.rerun_command('--report_only') if sweep else None
  paths = {'md': os.path.join(sweep_dir, 'report.md'), 'json': os.path.join(sweep_dir, 'report.json')}
  png = plot(table, os.path.join(sweep_dir, 'report.png'), title=title)
  if png:
    paths['png'] = png
  elif os.path.exists(os.path.join(sweep_dir, 'report.png')):
    os.remove(os.path.join(sweep_dir, 'report.png'))  # from an earlier report: no longer true
  with open(paths['md'], 'w') as f:
    f.write(markdown(title, table, entries, regenerate=regenerate,
                     rerun=sweep.rerun_command() if sweep else None,
                     plot='report.png' if png else None))
  report = {'title': title, 'sweep_dir': sweep_dir, 'config': sweep.config_ref if sweep else None,
            'regenerate': regenerate, 'replicates': list(replicates), **table,
            'points': [{k: v for k, v in e.items() if not k.startswith('_')} for e in entries],
            'failed': [{'name': e['name'], 'error': e['error'], 'dir': e['dir']} for e in entries
                       if e['status'] == 'failed']}
  files.write_json(paths['json'], _finite(json.loads(json.dumps(report, default=str))))
  return paths


def _finite(obj: Any) -> Any:
  """NaN -> None, so report.json is strict JSON."""
  if isinstance(obj, float):
    return None if math.isnan(obj) else obj
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_finite(v) for v in obj]
  return obj
