r"""Predicts the emotion of recordings with a trained workdir's model.

  python -m experiments.predict --workdir=workdirs/emodb_cnn_rnn my_recording.wav more/ --output=predictions.csv
  python -m experiments.predict --workdir=W clip.mp4 --plot=timelines/        # probabilities over time, one PNG per file
  python -m experiments.predict --workdir=W --fuse_with=B recordings/       # averaged with a baseline run B's model

The workdir's config.json gives the model, the front end and the clip length; its best checkpoint
(picked on validation speakers; --checkpoint=latest for the last one) gives the weights. Files: wav,
flac, ogg, mp3 and the audio tracks of mp4, avi, flv, mov, mkv, webm (face video too for video3d and
fusion); folders are walked. Each recording is treated as the run's training treated an utterance
(the same code, emojax.features.recording_examples): whole for full-utterance models (data.variant ds1,
ds3), else cut into the run's clips; its probabilities are the mean over its clips (--window_seconds cuts
long recordings into half-overlapping windows first). A file that cannot be used gets its error in the output; the
others go on. Speaker-normalised models (data.normalize=speaker) compute each speaker's statistics
from every file of that speaker: --speakers=folder (each folder one speaker, the default) or one (all
files one speaker), or --speaker_stats=FILE.npz (saved earlier with --save_speaker_stats).
--fuse_with names the workdir of a baseline run (e.g. model.name=egemaps_svm on the same corpus, classes
and mode): each file's probabilities are then the mean of the network's and the baseline's, the late
fusion the cross-validation reports measure (docs/results.md).
"""
import csv
import json
import os
import sys

from absl import app, flags, logging
import numpy as np

from emojax import baselines, checkpoints, inference
from experiments import fail

_WORKDIR = flags.DEFINE_string('workdir', None, 'Workdir of a finished experiments.run training run.', required=True)
_CHECKPOINT = flags.DEFINE_enum('checkpoint', 'best', ['best', 'latest'], 'Which checkpoint of the workdir.')
_OUTPUT = flags.DEFINE_string('output', None, 'Write the results here: .csv (one row per file) or .json (with '
                              'every window).')
_VISUAL = flags.DEFINE_string('visual_features', None, 'Models of visual features (configs/ravdess_av.py): the '
                               'recordings\' rows, a clip table (.csv) or a folder of OpenFace CSVs, found by file name '
                               'as in training (emojax.visual_features).')
_PLOT = flags.DEFINE_string('plot', None, 'Folder for one PNG per file: class probabilities over time.')
_WINDOW = flags.DEFINE_float('window_seconds', None, 'Cut recordings longer than this into half-overlapping '
                             'windows, each treated as training treated an utterance (default: no windows, each '
                             'recording whole or in the run\'s clips, as in training).')
_SPEAKERS = flags.DEFINE_enum('speakers', 'folder', ['folder', 'one'], 'Speaker-normalised models: which files '
                              'share a speaker (their statistics are computed together).')
_SPEAKER_STATS = flags.DEFINE_string('speaker_stats', None, 'Speaker-normalised models: a .npz of one speaker\'s '
                                     'statistics (--save_speaker_stats) used for every file.')
_FUSE_WITH = flags.DEFINE_string('fuse_with', None, 'Workdir of a baseline run (experiments.run with a baseline '
                                 'model.name): average its probabilities with the network\'s, equal weights.')
_SAVE_SPEAKER_STATS = flags.DEFINE_string('save_speaker_stats', None, 'Compute one speaker\'s statistics from all '
                                          'the files given, save them to this .npz, and predict with them.')


def write_csv(path: str, results: list[inference.Prediction], class_names) -> None:
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['source', 'emotion', *class_names, 'windows', 'duration_s', 'error', 'notes'])
    for r in results:
      probs = [f'{p:.6f}' for p in r.probabilities] if r.probabilities is not None else [''] * len(class_names)
      writer.writerow([r.source, r.emotion or '', *probs, 0 if r.window_starts is None else len(r.window_starts),
                       f'{r.duration:.3f}', r.error or '', '; '.join(r.notes)])


def plot_timeline(result: inference.Prediction, path: str) -> None:
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  centres = result.window_starts + min(result.window_seconds, result.duration) / 2
  fig, ax = plt.subplots(figsize=(8, 3.2))
  for k, name in enumerate(result.class_names):
    ax.plot(centres, result.window_probabilities[:, k], marker='o', label=name)
  ax.set(xlabel='time (s, window centre)', ylabel='probability', ylim=(0, 1), xlim=(0, max(result.duration, 1e-3)),
         title=f'{os.path.basename(result.source)}: {result.emotion}')
  ax.legend(loc='upper right', ncol=min(4, len(result.class_names)), fontsize='small')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def print_table(results: list[inference.Prediction], class_names) -> None:
  width = max([len(os.path.basename(r.source)) for r in results] + [4])
  print(f'{"file":<{width}}  {"emotion":<8}' + ''.join(f'{name:>7}' for name in class_names) + '  windows')
  for r in results:
    name = os.path.basename(r.source)
    if r.error:
      print(f'{name:<{width}}  ERROR    {r.error}')
      continue
    print(f'{name:<{width}}  {r.emotion:<8}' + ''.join(f'{p:7.3f}' for p in r.probabilities)
          + f'  {len(r.window_starts):7d}' + (f'  ({"; ".join(r.notes)})' if r.notes else ''))


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO
  paths = inference.find_recordings(argv[1:])
  if not paths:
    fail('Name at least one recording or folder after the flags.')
  if _OUTPUT.value and not _OUTPUT.value.endswith(('.csv', '.json')):
    fail(f'--output must end in .csv or .json, got {_OUTPUT.value!r}.')
  try:
    predictor = inference.Predictor.from_workdir(_WORKDIR.value, _CHECKPOINT.value, _WINDOW.value,
                                                 visual=_VISUAL.value)
    scorer = predictor
    if _FUSE_WITH.value:
      scorer = inference.FusedPredictor(predictor, baselines.Baseline(_FUSE_WITH.value))
  except (FileNotFoundError, ValueError, checkpoints.DamagedCheckpoint) as e:
    fail(e)
  print(f'Model {predictor.config.model.name} from {predictor.checkpoint}; classes {", ".join(predictor.class_names)}; '
        f'{predictor.describe_windows()}; normalisation {predictor.config.data.normalize}'
        + (f'; averaged with the baseline {scorer.baseline.name} of {_FUSE_WITH.value}.' if _FUSE_WITH.value else '.'))
  stats = None
  if _SPEAKER_STATS.value:
    with np.load(_SPEAKER_STATS.value) as saved:
      stats = dict(saved)
  elif _SAVE_SPEAKER_STATS.value:
    stats = predictor.speaker_statistics(paths)
    np.savez(_SAVE_SPEAKER_STATS.value, **stats)
    print(f'Speaker statistics of {len(paths)} file(s) saved to {_SAVE_SPEAKER_STATS.value}.')
  speakers = {p: os.path.dirname(os.path.abspath(p)) for p in paths} if _SPEAKERS.value == 'folder' else None
  try:
    results = scorer.predict_files(paths, speakers=speakers, speaker_stats=stats)
  except ValueError as e:
    fail(e)
  print_table(results, predictor.class_names)
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    if _OUTPUT.value.endswith('.json'):
      with open(_OUTPUT.value, 'w') as f:
        json.dump({'workdir': os.path.abspath(_WORKDIR.value), 'checkpoint': predictor.checkpoint,
                   'class_names': list(predictor.class_names), 'files': [r.as_dict() for r in results]}, f, indent=1)
    else:
      write_csv(_OUTPUT.value, results, predictor.class_names)
    print(f'Wrote {_OUTPUT.value}.')
  if _PLOT.value:
    os.makedirs(_PLOT.value, exist_ok=True)
    for r in results:
      if r.error is None:
        plot_timeline(r, os.path.join(_PLOT.value, os.path.splitext(os.path.basename(r.source))[0] + '.png'))
    print(f'Timelines in {_PLOT.value}/.')
  failed = sum(r.error is not None for r in results)
  if failed:
    print(f'{failed} of {len(results)} file(s) could not be used (see ERROR lines).', file=sys.stderr)


if __name__ == '__main__':
  app.run(main)
