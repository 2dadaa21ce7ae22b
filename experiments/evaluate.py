r"""Scores a trained workdir's model on every labelled recording of a corpus: cross-corpus testing.

  python -m experiments.evaluate --workdir=workdirs/emodb_cnn_rnn --corpus=ravdess --root=/path/to/ravdess
  python -m experiments.evaluate --workdir=W --corpus=emodb --root=/path/to/emodb --out=results/cross

Only the recordings whose emotion is one of the model's classes are scored, each from its file as
experiments.predict scores it (windows of the run's clip length, --window_seconds to change), and the
answer is the most probable of the classes the corpus has: a model trained on Emo-DB's 7 emotions is
scored on RAVDESS's angry, disgust, fearful, happy, neutral and sad clips, and boredom is never an answer.
A speaker-normalised model takes each speaker's statistics from that speaker's scored recordings.
Prints accuracy, unweighted accuracy and per-class recall; --out writes evaluation.json and a confusion
matrix (confusion.png) there.
"""
import json
import os
import sys

from absl import app, flags, logging
import numpy as np

from emojax import checkpoints, corpora, inference, metrics
from emojax.corpora import labels

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a finished experiments.run training run.', required=True)
_CORPUS = flags.DEFINE_enum('corpus', None, sorted(set(corpora.READERS) - {'synthetic'}), 'The corpus to score '
                            'the model on.', required=True)
_ROOT = flags.DEFINE_string('root', None, 'Folder of that corpus (docs/corpora.md).', required=True)
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint of the workdir.')
_WINDOW = flags.DEFINE_float('window_seconds', None, 'Window length for recordings longer than one (default: the '
                             'run\'s data.clip_seconds).')
_OUT = flags.DEFINE_string('out', None, 'Folder for evaluation.json and confusion.png.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  try:
    predictor = inference.Predictor.from_workdir(_WORKDIR.value, _CHECKPOINT.value, _WINDOW.value)
    corpus_config = predictor.config.corpus.copy_and_resolve_references()  # the reader's options as trained
    corpus_config.name, corpus_config.root = _CORPUS.value, _ROOT.value
    corpus = corpora.get_corpus(corpus_config)
    trained_on = f'{predictor.config.corpus.name} ({predictor.config.corpus.root})'
    print(f'Model {predictor.config.model.name} trained on {trained_on}, from {predictor.checkpoint}; '
          f'normalisation {predictor.config.data.normalize}; scored on {_CORPUS.value} ({_ROOT.value}).')
    result = inference.score_corpus(predictor, corpus)
  except (FileNotFoundError, ValueError, checkpoints.DamagedCheckpoint) as e:
    sys.exit(f'Error: {e}')
  scored = result['scored_classes']
  print(f"\n{result['count']} recordings of the classes {', '.join(scored)} (answers among these; chance "
        f"{1 / len(scored):.3f}); left out: {result['left_out'] or 'none'}.")
  print(f"accuracy {result['accuracy']:.4f}, unweighted accuracy {result['unweighted_accuracy']:.4f}")
  for name, recall in zip(result['classes'], result['per_class_recall']):
    if recall is not None:
      print(f'  recall {name} ({labels.DESCRIPTIONS.get(name, name)}): {recall:.3f}')
  if result['errors']:
    print(f"{len(result['errors'])} recording(s) could not be used, e.g. {next(iter(result['errors'].items()))}",
          file=sys.stderr)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    with open(os.path.join(_OUT.value, 'evaluation.json'), 'w') as f:
      json.dump({'workdir': os.path.abspath(_WORKDIR.value), 'checkpoint': predictor.checkpoint,
                 'trained_on': predictor.config.corpus.name, 'scored_on': _CORPUS.value,
                 'normalize': predictor.config.data.normalize, **result}, f, indent=1)
    rows = [result['classes'].index(name) for name in scored]  # the other classes are never answers
    metrics.plot_confusion(
        np.asarray(result['confusion'])[np.ix_(rows, rows)], scored, os.path.join(_OUT.value, 'confusion.png'),
        title=f'{predictor.config.corpus.name} model on {_CORPUS.value}: accuracy {result["accuracy"]:.3f}')
    print(f'Wrote {_OUT.value}/evaluation.json and confusion.png.')


if __name__ == '__main__':
  app.run(main)
