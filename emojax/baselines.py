"""The baselines every cross-validation table shows beside the networks.

Per utterance, one feature vector: openSMILE's eGeMAPS v02 functionals (88 values, from the
`opensmile` package, which ships its extractor), MFCC statistics (40 MFCCs and their deltas,
mean and standard deviation over frames: 160 values), the frozen BYOL-S speech encoder's embedding
(512 values, weights at model.pretrained), the clip's facial action units (corpus.visual_features),
or several of these side by side (early fusion). Then a classifier from scikit-learn: logistic
regression or an RBF SVM. Chosen by name, as the networks are (`config.model.name`): <features>_<classifier>
for the FEATURE_SETS below and logreg | svm, e.g. egemaps_svm, egemaps_au_logreg.

The split is the networks' (`splits.make_split` with the run's data fields), over the same
utterances (those in the class set whose audio decodes). The mode follows `data.normalize`:
'speaker' standardises each feature per speaker over all of that speaker's clips (test speakers'
too, labels unused: transductive); 'none' and 'utterance' are speaker-blind (per-utterance
functionals are already per clip). Either way a scaler fitted on the training side follows.
Regularisation: 'final' is C = 1, no choice made; 'best' is the C of C_GRID with the best
validation accuracy (validation speakers, never test ones), trained on the training side only,
as the networks' best checkpoint is.

Features are cached per corpus and variant under data_dir as .npz (no pickle). The fitted C = 1 model
is saved as `model.skops` (skops' format: no pickle), which `Baseline` loads to score new recordings,
alone or averaged with a network (`inference.FusedPredictor`).
"""
from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
from typing import Any, Sequence

import librosa
import numpy as np

from emojax import audio, corpora, features, files, metrics, progress, splits
from emojax.corpora import labels as label_sets
from emojax.corpora.base import Utterance

# Feature sets: an audio extractor's vector (mfcc, egemaps; byols: the frozen BYOL-S encoder's 512-d embedding of
# the clip, weights at model.pretrained), the clip's visual features (au: corpus.visual_features), or several
# of them side by side ('egemaps_au': early fusion).
FEATURE_SETS = ('mfcc', 'egemaps', 'au', 'byols', 'egemaps_au', 'byols_au', 'byols_egemaps', 'byols_egemaps_au')
MODELS = {f'{features}_{kind}': (features, kind) for features in FEATURE_SETS for kind in ('logreg', 'svm')}
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
SAMPLE_RATE = 16000
WHOLE_UTTERANCE = {'ds1': False, 'ds3': True}  # variant -> denoised; clip variants have no per-utterance vector


# The config fields a baseline reads (corpus.* too): a sweep point's other fields may change freely.
READS = ('seed', 'model.name', 'model.pretrained', 'data.data_dir', 'data.variant', 'data.class_set',
         'data.merge_exc', 'data.split', 'data.test_speakers', 'data.num_test_speakers', 'data.num_val_speakers',
         'data.fold', 'data.num_folds', 'data.test_fraction', 'data.normalize')


def is_baseline(name: str) -> bool:
  return name in MODELS


def mfcc_statistics(wave: np.ndarray, sr: int, *, n_mfcc: int = 40) -> np.ndarray:
  """Mean and std over frames of 40 MFCCs and their deltas (25 ms windows, 10 ms hop at 16 kHz): (160,)."""
  wave = librosa.resample(np.asarray(wave, np.float32), orig_sr=sr, target_sr=SAMPLE_RATE) if sr != SAMPLE_RATE else wave
  mfcc = librosa.feature.mfcc(y=wave, sr=SAMPLE_RATE, n_mfcc=n_mfcc, n_fft=400, hop_length=160)
  frames = np.concatenate([mfcc, librosa.feature.delta(mfcc)])
  return np.concatenate([frames.mean(axis=1), frames.std(axis=1)]).astype(np.float32)


_SMILE = {}  # one extractor per process: building it parses its config files


def egemaps_functionals(wave: np.ndarray, sr: int) -> np.ndarray:
  """openSMILE eGeMAPS v02 functionals of the waveform: (88,)."""
  import opensmile  # pylint: disable=import-outside-toplevel
  if 'egemaps' not in _SMILE:
    _SMILE['egemaps'] = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                        feature_level=opensmile.FeatureLevel.Functionals)
  return _SMILE['egemaps'].process_signal(np.asarray(wave, np.float32), sr).to_numpy()[0].astype(np.float32)


def byols_embedding(wave: np.ndarray, sr: int, *, variables: dict) -> np.ndarray:
  """The frozen BYOL-S embedding of a recording (512,): its front end (16 kHz log-mel), each clip standardised on
  its own mean and std (nothing from other clips: speaker-blind), mean + max over time of the frame features."""
  from emojax.models import byol_a  # pylint: disable=import-outside-toplevel
  logmel = byol_a.frontend(wave, sr)
  logmel = byol_a.standardise(logmel, float(logmel.mean()), float(max(logmel.std(), 1e-3)))
  return np.asarray(byol_a.embed(variables, logmel[None]))[0].astype(np.float32)


EXTRACTORS = {'mfcc': mfcc_statistics, 'egemaps': egemaps_functionals}


def functionals_of(wave: np.ndarray, sr: int, kind: str, *, denoise: bool = False, extractor=None) -> np.ndarray:
  """The `kind` functionals of one recording (denoised first for ds3), as the baselines and hybrid networks read
  them in training and prediction alike; raises ValueError for a recording the networks' build refuses too."""
  features.check_waveform(wave, sr)
  if denoise:
    wave = audio.denoise(wave, sr)
  vector = (extractor or EXTRACTORS[kind])(wave, sr)
  if not np.all(np.isfinite(vector)):
    raise ValueError(f'non-finite {kind} features')
  return vector


def utterances(corpus, class_set: str, merge_exc: bool = False) -> tuple[list[Utterance], tuple[str, ...], list[int]]:
  """The corpus's utterances in the class set, the class names and each utterance's class index."""
  names = label_sets.class_names(class_set, [corpus.canonical[l] for l in corpus.labels], merge_exc=merge_exc)
  kept, labels = [], []
  for item in corpus.utterances():
    if not isinstance(item, Utterance):
      continue
    label = label_sets.class_index(corpus.canonical.get(item.label), names, merge_exc=merge_exc)
    if label is not None:
      kept.append(item)
      labels.append(label)
  return kept, names, labels


def feature_matrix(corpus, items: Sequence[Utterance], kind: str, *, denoise: bool = False,
                   cache: str | None = None, extractor=None) -> tuple[np.ndarray, list[bool], dict[str, str]]:
  """(features of the usable utterances, usable flag per item, {id: why not} for the others).

  Computed features are cached in `cache` (an .npz of ids and rows), extended as new utterances come.
  """
  if kind not in EXTRACTORS and extractor is None:
    raise ValueError(f'Unknown baseline features {kind!r}; expected one of {sorted(EXTRACTORS)}.')
  known: dict[str, np.ndarray] = {}
  if cache and os.path.exists(cache):
    with np.load(cache, allow_pickle=False) as stored:
      known = dict(zip(stored['ids'].tolist(), stored['features']))
  errors, rows, usable = {}, [], []
  missing = [item for item in items if item.id not in known]
  for item in progress.bar(missing, desc=f'{kind} features', unit='utt', disable=not missing, leave=False):
    try:
      known[item.id] = functionals_of(*corpus.load_audio(item), kind, denoise=denoise, extractor=extractor)
    except (ValueError, OSError, RuntimeError, EOFError, librosa.util.exceptions.ParameterError) as error:
      errors[item.id] = f'{type(error).__name__}: {error}'
  if cache and missing and len(known) > len(errors):
    ids = sorted(known)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    tmp = cache + '.tmp.npz'
    np.savez(tmp, ids=np.array(ids), features=np.stack([known[i] for i in ids]))
    os.replace(tmp, cache)
  for item in items:
    usable.append(item.id in known)
    if item.id in known:
      rows.append(known[item.id])
  if not rows:
    raise ValueError(f'No utterance gave {kind} features; first errors: {dict(list(errors.items())[:3])}')
  return np.stack(rows), usable, errors


def feature_set(config, corpus, items: Sequence[Utterance],
                kinds: str) -> tuple[np.ndarray, list[bool], dict[str, str]]:
  """`feature_matrix` of a feature set (FEATURE_SETS): its parts side by side, for the items every part has."""
  parts, usable, errors = [], [True] * len(items), {}
  extractors = audio_extractors(kinds, config.model.pretrained)
  for kind in kinds.split('_'):
    if kind == 'au':
      x, ok, missing = visual_matrix(config, items)
    else:
      x, ok, missing = feature_matrix(corpus, items, kind, denoise=WHOLE_UTTERANCE[config.data.variant],
                                      cache=feature_cache(config, kind), extractor=extractors[kind])
    full = np.full((len(items), x.shape[1]), np.nan, np.float32)
    full[np.asarray(ok)] = x
    parts.append(full)
    usable = [a and b for a, b in zip(usable, ok)]
    errors.update(missing)
  x = np.concatenate(parts, axis=1)[np.asarray(usable)]
  if not len(x):
    raise ValueError(f'No utterance has every part of {kinds}; first errors: {dict(list(errors.items())[:3])}')
  return x, usable, errors


def audio_extractors(kinds: str, pretrained: str = '') -> dict:
  """{kind: extractor(wave, sr)} of the audio parts of a feature set (byols: the encoder at `pretrained`)."""
  extractors = {}
  for kind in kinds.split('_'):
    if kind == 'byols':
      from emojax.models import byol_a  # pylint: disable=import-outside-toplevel
      extractors[kind] = functools.partial(byols_embedding, variables=byol_a.load_variables(pretrained))
    elif kind in EXTRACTORS:
      extractors[kind] = EXTRACTORS[kind]
  return extractors


def recording_features(wave: np.ndarray, sr: int, kinds: str, extractors: dict, *,
                       denoise: bool = False) -> np.ndarray:
  """The audio feature set `kinds` of one recording, its parts side by side (as `feature_set` gives them)."""
  return np.concatenate([functionals_of(wave, sr, kind, denoise=denoise, extractor=extractors[kind])
                         for kind in kinds.split('_')])


def visual_matrix(config, items: Sequence[Utterance]) -> tuple[np.ndarray, list[bool], dict[str, str]]:
  """(the clips' visual feature vectors, usable flag per item, {id: why not}) from corpus.visual_features."""
  from emojax import visual_features  # pylint: disable=import-outside-toplevel
  table = visual_features.to_vectors(visual_features.load(config.corpus.visual_features))
  rows, usable, errors = [], [], {}
  for item in items:
    row = visual_features.lookup(table, config.corpus.name, item)
    usable.append(row is not None)
    if row is None:
      errors[item.id] = table.errors.get(visual_features.key_for(config.corpus.name, item.id),
                                         f'no visual features in {config.corpus.visual_features}')
    else:
      rows.append(row)
  if not rows:
    raise ValueError(f'No utterance has a row in {config.corpus.visual_features}; '
                     f'e.g. {dict(list(errors.items())[:3])}')
  return np.stack(rows), usable, errors


def feature_cache(config, kind: str) -> str:
  """Where the `kind` features of the run's corpus and variant are cached (shared by baselines and hybrid networks)."""
  if kind == 'byols':  # the weights name the features
    with open(config.model.pretrained, 'rb') as f:
      kind += '-' + hashlib.sha1(f.read()).hexdigest()[:8]
  return os.path.join(config.data.data_dir, corpora.corpus_key(config.corpus), f'baseline_{kind}_{config.data.variant}.npz')


def feature_scale(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each feature's mean and std over `rows`, a constant feature's std taken as 1 (it standardises to 0)."""
  std = rows.std(axis=0)
  return rows.mean(axis=0), np.where(std > 0, std, 1.0)


def standardise_per_speaker(x: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
  """Each feature standardised over each speaker's own rows (a constant feature becomes 0)."""
  out = np.empty_like(x, dtype=np.float64)
  speakers = np.asarray(speakers)
  for speaker in np.unique(speakers):
    rows = speakers == speaker
    mean, std = feature_scale(x[rows])
    out[rows] = (x[rows] - mean) / std
  return out


def classifier(kind: str, c: float, seed: int):
  """A scikit-learn pipeline: standardisation fitted on the training rows, then the classifier."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  from sklearn.svm import SVC  # pylint: disable=import-outside-toplevel
  if kind == 'logreg':
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
  elif kind == 'svm':
    # probability=True adds Platt scaling for predict_proba (late fusion); predict keeps the decision function.
    model = SVC(C=c, kernel='rbf', gamma='scale', probability=True, random_state=seed)
  else:
    raise ValueError(f"Unknown baseline classifier {kind!r}; expected 'logreg' or 'svm'.")
  return make_pipeline(StandardScaler(), model)


def _evaluate(model, x: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, Any]:
  return metrics.classification_metrics(metrics.confusion_matrix(y, model.predict(x), num_classes))


def _probabilities(model, x: np.ndarray, num_classes: int) -> list[list[float]]:
  """Class probabilities per row over all classes (a class absent from training gets 0)."""
  out = np.zeros((len(x), num_classes))
  out[:, model.classes_] = model.predict_proba(x)
  return np.round(out, 6).tolist()


def _describe(result: dict[str, Any], side: str = 'test') -> str:
  return (f"{side} accuracy {result['accuracy']:.4f}, unweighted {result['unweighted_accuracy']:.4f} "
          f"({result['count']} examples)")


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Fits the baseline `config.model.name` on the run's split and writes summary.json and split.json."""
  features_kind, classifier_kind = MODELS[config.model.name]
  dc = config.data
  for part, (field, value) in {'au': ('corpus.visual_features', config.corpus.visual_features),
                                'byols': ('model.pretrained', config.model.pretrained)}.items():
    if part in features_kind.split('_') and not value:
      raise ValueError(f'Baseline {config.model.name} reads {part} features: set {field}.')
  if dc.variant not in WHOLE_UTTERANCE:
    raise ValueError(f'Baselines describe whole utterances: use data.variant ds1 or ds3 (denoised), '
                     f'not {dc.variant!r}.')
  if dc.normalize not in ('none', 'utterance', 'speaker'):
    raise ValueError(f"Unknown data.normalize {dc.normalize!r}; expected 'none', 'utterance' or 'speaker'.")
  corpus = corpora.get_corpus(config.corpus)
  items, class_names, labels = utterances(corpus, dc.class_set, dc.merge_exc)
  x, usable, errors = feature_set(config, corpus, items, features_kind)
  items = [item for item, ok in zip(items, usable) if ok]
  y = np.array([label for label, ok in zip(labels, usable) if ok])
  examples = [{'utterance': i.id, 'speaker': i.speaker, 'group': i.group, 'label': int(l), 'clip': 0, 'copy': 0}
              for i, l in zip(items, y)]
  split = splits.make_split(examples, dc.split, test_speakers=tuple(dc.test_speakers),
                            num_test_speakers=dc.num_test_speakers, fold=dc.fold, num_folds=dc.num_folds,
                            test_fraction=dc.test_fraction, num_val_speakers=dc.num_val_speakers, seed=config.seed)
  print(splits.describe(split, examples, class_names))
  os.makedirs(workdir, exist_ok=True)
  splits.write(split, os.path.join(workdir, 'split.json'), examples)
  if dc.normalize == 'speaker':
    x = standardise_per_speaker(x, [e['speaker'] for e in examples])
  train, validation, test = (np.asarray(split[side], np.int64) for side in ('train', 'validation', 'test'))
  fitted = {}

  def fit(c):
    if c not in fitted:
      fitted[c] = classifier(classifier_kind, c, config.seed).fit(x[train], y[train])
    return fitted[c]

  final = {'epoch': 0, **_evaluate(fit(1.0), x[test], y[test], len(class_names))}
  summary = {'final': final, 'complete': True, 'objective': 'baseline', 'baseline': config.model.name,
             'features': features_kind, 'classifier': classifier_kind, 'class_names': list(class_names),
             'mode': 'speaker-normalised' if dc.normalize == 'speaker' else 'speaker-blind',
             'description': f'C=1: {_describe(final)}', 'stopped_early': False,
             'skipped': errors, 'counts': dict(collections.Counter(class_names[l] for l in y))}
  if len(validation):
    scores = {c: _evaluate(fit(c), x[validation], y[validation], len(class_names))['accuracy'] for c in C_GRID}
    chosen = max(C_GRID, key=lambda c: (scores[c], -abs(np.log10(c))))  # ties: the C nearest 1
    best_test = _evaluate(fit(chosen), x[test], y[test], len(class_names))
    summary['best'] = {'epoch': 0, 'C': chosen, 'validation_by_C': {str(c): s for c, s in scores.items()},
                       'validation': {'accuracy': scores[chosen]}, 'test': best_test,
                       'description': f'at C={chosen} (best on validation): {_describe(best_test)}'}
  # The test probabilities in the networks' format, so reports can fuse a baseline with a network.
  files.write_json(os.path.join(workdir, metrics.PREDICTIONS_FILE), {
      'class_names': list(class_names), 'utterances': [items[i].id for i in test], 'labels': y[test].tolist(),
      'final': _probabilities(fit(1.0), x[test], len(class_names)),
      'best': _probabilities(fit(summary['best']['C']), x[test], len(class_names)) if 'best' in summary else None})
  files.write_json(os.path.join(workdir, 'summary.json'), summary)
  save_model(fit(1.0), workdir)
  return summary


MODEL_FILE = 'model.skops'


def save_model(model, workdir: str) -> None:
  import skops.io  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, MODEL_FILE)
  skops.io.dump(model, path + '.tmp')
  os.replace(path + '.tmp', path)


def _load_model(path: str):
  """The fitted pipeline, loading only scikit-learn and numpy types (skops refuses any other)."""
  import skops.io  # pylint: disable=import-outside-toplevel
  untrusted = skops.io.get_untrusted_types(file=path)
  foreign = [t for t in untrusted if not t.startswith(('sklearn.', 'numpy.'))]
  if foreign:
    raise ValueError(f'{path} holds types other than scikit-learn and numpy ones: {foreign}')
  return skops.io.load(path, trusted=untrusted)


class Baseline:
  """A fitted baseline run (its workdir): features of whole recordings -> class probabilities."""

  def __init__(self, workdir: str):
    paths = {name: os.path.join(workdir, name) for name in ('config.json', 'summary.json', MODEL_FILE)}
    missing = [name for name, path in paths.items() if not os.path.exists(path)]
    if missing:
      raise FileNotFoundError(f'{workdir}: no {" or ".join(missing)}; is it the workdir of a finished baseline run '
                              '(experiments.run with model.name one of ' + ', '.join(MODELS) + ')?')
    with open(paths['config.json']) as f:
      config = json.load(f)
    with open(paths['summary.json']) as f:
      summary = json.load(f)
    self.name = config['model']['name']
    self.features, _ = MODELS[self.name]
    self.denoise = WHOLE_UTTERANCE[config['data']['variant']]
    self.normalize = config['data']['normalize'] == 'speaker'
    self.class_names = tuple(summary['class_names'])
    self.model = _load_model(paths[MODEL_FILE])

  def features_of(self, wave: np.ndarray, sr: int) -> np.ndarray:
    """The baseline's feature vector of one recording, as training computed it."""
    if self.features not in EXTRACTORS:
      raise ValueError(f'{self.name} reads {self.features} features; scoring files is done for the '
                       f'{" and ".join(EXTRACTORS)} baselines only')
    return functionals_of(wave, sr, self.features, denoise=self.denoise)

  def probabilities(self, rows: np.ndarray, speakers: Sequence[str] | None = None) -> np.ndarray:
    """(N, K) class probabilities of feature rows; a speaker-normalised baseline standardises them per
    speaker first (`speakers`, one name per row), as in training."""
    rows = np.asarray(rows, np.float64)
    if self.normalize:
      if speakers is None:
        raise ValueError(f'{self.name} is speaker-normalised: name each recording\'s speaker')
      rows = standardise_per_speaker(rows, speakers)
    return np.asarray(_probabilities(self.model, rows, len(self.class_names)))
