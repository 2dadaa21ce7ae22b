r"""Scores trained workdirs' models on every labelled recording of a corpus: cross-corpus testing.

  python -m experiments.evaluate --workdir=workdirs/emodb_cnn_rnn --corpus=ravdess --root=/path/to/ravdess
  python -m experiments.evaluate --workdir=W1 --workdir=W2 --corpus=emodb --root=/path/to/emodb --out=results/cross

Only the recordings whose emotion is one of a model's classes are scored, each from its file as
experiments.predict scores it (as its training run treated an utterance, --window_seconds to cut windows), and the
answer is the most probable of the classes the corpus has: a model trained on Emo-DB's 7 emotions is
scored on RAVDESS's angry, disgust, fearful, happy, neutral and sad clips, and boredom is never an answer.
A speaker-normalised model takes each speaker's statistics from that speaker's scored recordings.
Prints accuracy, unweighted accuracy and per-class recall of each workdir (several: e.g. the seeds or
folds of one recipe, then their mean ± population std); --out writes report.md, report.json (every
figure, the confusion matrices) and one confusion matrix PNG per workdir there.
"""
import json
import os
import sys

from absl import app, flags, logging
import numpy as np

from emojax import checkpoints, corpora, inference, metrics, reports
from emojax.corpora import labels
from experiments import fail

_WORKDIRS = flags.DEFINE_multi_string('workdir', None, 'Workdir of a finished experiments.run training run '
                                      '(repeat the flag for several).', required=True)
_CORPUS = flags.DEFINE_enum('corpus', None, sorted(set(corpora.READERS) - {'synthetic'}), 'The corpus to score '
                            'the models on.', required=True)
_ROOT = flags.DEFINE_string('root', None, 'Folder of that corpus (docs/corpora.md).', required=True)
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint of each workdir.')
_WINDOW = flags.DEFINE_float('window_seconds', None, 'Cut recordings longer than this into half-overlapping '
                             'windows (default: each recording as its run\'s training treated an utterance).')
_OUT = flags.DEFINE_string('out', None, 'Folder for report.md, report.json and the confusion matrices.')


def score(workdir: str) -> dict:
  predictor = inference.Predictor.from_workdir(workdir, _CHECKPOINT.value, _WINDOW.value)
  corpus_config = predictor.config.corpus.copy_and_resolve_references()  # the reader's options as trained
  corpus_config.name, corpus_config.root = _CORPUS.value, _ROOT.value
  print(f'\n{workdir}: {predictor.config.model.name} trained on {predictor.config.corpus.name}, '
        f'{predictor.checkpoint}; normalisation {predictor.config.data.normalize}; '
        f'{predictor.describe_windows()}.')
  result = inference.score_corpus(predictor, corpora.get_corpus(corpus_config))
  print(f"  {result['count']} recordings of {', '.join(result['scored_classes'])} (left out: "
        f"{result['left_out'] or 'none'}): accuracy {result['accuracy']:.4f}, unweighted "
        f"{result['unweighted_accuracy']:.4f}; recall " + ', '.join(
            f'{n} {r:.3f}' for n, r in zip(result['classes'], result['per_class_recall']) if r is not None))
  if result['errors']:
    print(f"  {len(result['errors'])} recording(s) could not be used, e.g. {next(iter(result['errors'].items()))}",
          file=sys.stderr)
  return {'workdir': os.path.abspath(workdir), 'checkpoint': predictor.checkpoint,
          'trained_on': predictor.config.corpus.name, 'normalize': predictor.config.data.normalize,
          'window_seconds': predictor.window_seconds, **result}


def write_report(out: str, runs: list[dict]) -> None:
  os.makedirs(out, exist_ok=True)
  summary = {k: dict(zip(('mean', 'std'), reports.mean_std([r[k] for r in runs])))
             for k in ('accuracy', 'unweighted_accuracy')}
  with open(os.path.join(out, 'report.json'), 'w') as f:
    json.dump({'scored_on': _CORPUS.value, 'checkpoint': _CHECKPOINT.value, 'summary': summary, 'runs': runs}, f,
              indent=1)
  scored = runs[0]['scored_classes']
  lines = [f'# {", ".join(sorted({r["trained_on"] for r in runs}))} models scored on {_CORPUS.value}', '',
           f'Regenerate: `python -m experiments.evaluate {" ".join("--workdir=" + w for w in _WORKDIRS.value)} '
           f'--corpus={_CORPUS.value} --root=/path/to/{_CORPUS.value} --checkpoint={_CHECKPOINT.value}'
           + (f' --window_seconds={_WINDOW.value:g}' if _WINDOW.value else '') + f' --out={out}`', '',
           f'Scored: the recordings of {", ".join(scored)} (chance {1 / len(scored):.3f}); the answer is the most '
           f'probable of these. Left out: {runs[0]["left_out"] or "none"}.', '',
           '| workdir | recordings | accuracy | unweighted accuracy | ' + ' | '.join(f'recall {n}' for n in scored) + ' |',
           '|---|---:|---:|---:|' + '---:|' * len(scored)]
  for r in runs:
    recall = dict(zip(r['classes'], r['per_class_recall']))
    lines.append(f"| {os.path.basename(r['workdir'])} | {r['count']} | {r['accuracy']:.3f} | "
                 f"{r['unweighted_accuracy']:.3f} | " + ' | '.join(f'{recall[n]:.3f}' for n in scored) + ' |')
  if len(runs) > 1:
    lines.append(f"| mean ± std ({len(runs)} runs) | | {summary['accuracy']['mean']:.3f} ± "
                 f"{summary['accuracy']['std']:.3f} | {summary['unweighted_accuracy']['mean']:.3f} ± "
                 f"{summary['unweighted_accuracy']['std']:.3f} |" + ' |' * len(scored))
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')
  for i, r in enumerate(runs):
    rows = [r['classes'].index(name) for name in r['scored_classes']]  # the other classes are never answers
    metrics.plot_confusion(np.asarray(r['confusion'])[np.ix_(rows, rows)], r['scored_classes'],
                           os.path.join(out, f'confusion_{i}.png'),
                           title=f"{os.path.basename(r['workdir'])} on {_CORPUS.value}: accuracy {r['accuracy']:.3f}")
  print(f'\nWrote {out}/report.md, report.json and {len(runs)} confusion matrices.')


def main(argv):
  if len(argv) > 1:
    fail(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  try:
    runs = [score(w) for w in _WORKDIRS.value]
  except (FileNotFoundError, ValueError, checkpoints.DamagedCheckpoint) as e:
    fail(e)
  if len({tuple(r['classes']) for r in runs}) > 1:
    fail('the workdirs were trained on different class sets; score one class set at a time.')
  if len(runs) > 1:
    summary = {k: reports.mean_std([r[k] for r in runs]) for k in ('accuracy', 'unweighted_accuracy')}
    print(f"\n{len(runs)} runs: accuracy {summary['accuracy'][0]:.4f} ± {summary['accuracy'][1]:.4f}, unweighted "
          f"{summary['unweighted_accuracy'][0]:.4f} ± {summary['unweighted_accuracy'][1]:.4f} (mean ± population std)")
  if _OUT.value:
    write_report(_OUT.value, runs)


if __name__ == '__main__':
  app.run(main)
