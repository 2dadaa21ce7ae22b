"""A trained workdir's model on new recordings: the decoding and front end of its training run.

  predictor = Predictor.from_workdir('workdirs/emodb_cnn_rnn')
  result = predictor.predict('my_recording.wav')   # or predict((waveform, sample_rate))
  result.emotion, dict(zip(result.class_names, result.probabilities))

A recording is scored in windows of the run's clip length (`data.clip_seconds`, or `window_seconds`),
overlapping by half: each window goes through the run's front end and model, and the recording's probabilities are
the windows' mean. A recording no longer than one window is one window, treated exactly as in
training (the whole utterance for the full-utterance variants ds1/ds3; padded with noise to a clip
for ds2/ds4). Models trained with speaker normalisation need each speaker's statistics
(`speaker_statistics` over several recordings of that speaker, or a saved .npz of them). Hybrid models
(`data.functionals`) also read each window's eGeMAPS or MFCC statistics, standardised as in training: by
the training side's scale (the workdir's functionals.json) or by the speaker's statistics.
"""
from __future__ import annotations

import dataclasses
import json
import os
import zlib
from typing import Any, Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from emojax import (audio, baselines, checkpoints, features, loader, metrics, models, schema, train, video,
                    visual_features)
from emojax import progress as progress_bar
from emojax.corpora import labels
from emojax.corpora.base import Utterance

AUDIO_EXTENSIONS = audio.SOUNDFILE_EXTENSIONS
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.flv', '.mov', '.mkv', '.webm')
WINDOW_OVERLAP = 0.5  # of consecutive windows of a long recording
BATCH = 8             # windows per model call (padded: one compiled shape)


@dataclasses.dataclass
class Prediction:
  """One recording's result: the mean class probabilities and each window's, or the error that stopped it."""

  source: str
  class_names: tuple[str, ...]
  probabilities: np.ndarray | None = None         # (K,), the windows' mean
  window_probabilities: np.ndarray | None = None  # (windows, K)
  window_starts: np.ndarray | None = None         # seconds
  window_seconds: float = 0.0
  duration: float = 0.0                           # seconds of audio
  error: str | None = None
  notes: tuple[str, ...] = ()
  parts: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # a fusion's members' probabilities

  @property
  def emotion(self) -> str | None:
    return None if self.probabilities is None else self.class_names[int(np.argmax(self.probabilities))]

  def as_dict(self) -> dict[str, Any]:
    out = {'source': self.source, 'emotion': self.emotion, 'error': self.error, 'duration_s': round(self.duration, 3),
           'notes': list(self.notes)}
    if self.probabilities is not None:
      out['probabilities'] = dict(zip(self.class_names, map(float, self.probabilities)))
      out['windows'] = [{'start_s': float(t), **dict(zip(self.class_names, map(float, p)))}
                        for t, p in zip(self.window_starts, self.window_probabilities)]
    for name, probabilities in self.parts.items():
      out.setdefault('parts', {})[name] = dict(zip(self.class_names, map(float, probabilities)))
    return out


class Predictor:
  """A restored model with its run's config: `predict` scores recordings or waveforms."""

  def __init__(self, config: ml_collections.ConfigDict, variables: dict[str, Any], class_names: Sequence[str],
               checkpoint: str = '', window_seconds: float | None = None,
               functionals_scale: dict[str, Any] | None = None, visual_scale: dict[str, Any] | None = None,
               visual_table: visual_features.VisualFeatures | None = None):
    if config.objective != 'cross_entropy':
      raise ValueError(f'{checkpoint or "this run"} was trained with objective {config.objective!r}: it has no '
                       'classifier to predict with (fine-tune it with cross_entropy first).')
    self.config = config
    self.class_names = tuple(class_names)
    self.checkpoint = checkpoint
    self.spec = dataclasses.replace(features.spec_from_config(config), augment_copies=0)
    self.reads_video = models.reads_video(config.model)
    self.model = None  # built on the first batch, its kernels tuned to that batch's shapes (forward only)
    self.variables = variables
    # None: each recording is treated as training treated an utterance; else longer ones are cut into windows.
    self.window_seconds = window_seconds
    self._probabilities = None
    # A hybrid's functionals: their kind, and in the speaker-blind mode the training side's (mean, std).
    self.functionals = config.data.functionals
    self.functionals_scale = None
    self._extractors = baselines.audio_extractors(self.functionals, config.model.pretrained)
    if self.functionals and config.data.normalize != 'speaker':
      if functionals_scale is None:
        raise ValueError(f'{checkpoint or "this model"} reads {self.functionals} functionals standardised on its '
                         f'training side: pass that scale ({loader.FUNCTIONALS_FILE} of its workdir).')
      self.functionals_scale = (np.asarray(functionals_scale['mean']), np.asarray(functionals_scale['std']))
    # A model of the face's visual features (facial action units) reads each recording's row of a table.
    self.reads_visual = 'visual' in models.inputs_of(config.model)
    self.visual_table = visual_features.to_vectors(visual_table) if visual_table is not None else None
    self.visual_scale = None
    if self.reads_visual and config.data.normalize != 'speaker':
      if visual_scale is None:
        raise ValueError(f'{checkpoint or "this model"} reads visual features standardised on its training side: '
                         f'pass that scale ({loader.VISUAL_FILE} of its workdir).')
      self.visual_scale = (np.asarray(visual_scale['mean']), np.asarray(visual_scale['std']))

  def window_length(self, duration: float) -> float:
    """Seconds of recording each model input covers: the window, else a clip or (whole-utterance models) all."""
    clips_wanted, _ = features.VARIANTS[self.spec.variant]
    whole = min(self.window_seconds, duration) if self.window_seconds else duration
    return min(self.spec.clip_seconds, whole) if clips_wanted else whole

  def describe_windows(self) -> str:
    """How a recording is cut, in words (for the commands' headers)."""
    clips_wanted, _ = features.VARIANTS[self.spec.variant]
    treated = f'clips of {self.spec.clip_seconds:g} s' if clips_wanted else 'whole'
    if self.window_seconds:
      return f'half-overlapping windows of {self.window_seconds:g} s, each {treated}'
    return f'each recording {treated}, as in training'

  def _forward(self, batch: dict[str, np.ndarray]) -> np.ndarray:
    """(BATCH, K) probabilities of one batch of windows (every call has BATCH windows: one compiled shape)."""
    if self._probabilities is None:
      self.model = models.get_model(self.config.model.name, num_classes=len(self.class_names),
                                    **models.options(self.config.model), tune_for=train.input_structs(batch),
                                    training=False)
      model = self.model
      self._probabilities = jax.jit(lambda variables, batch: jax.nn.softmax(
          model.apply(variables, train.model_inputs(batch), train=False).astype(jnp.float32)))
    return np.asarray(self._probabilities(self.variables, batch))

  @classmethod
  def from_workdir(cls, workdir: str, checkpoint: str = 'best', window_seconds: float | None = None,
                   visual: str | None = None) -> Predictor:
    """The run in `workdir`: its config.json, its class names (summary.json) and its best checkpoint (picked
    on the validation speakers), or its latest one (`checkpoint='latest'`, or when there is no best)."""
    paths = {name: os.path.join(workdir, name) for name in ('config.json', 'summary.json')}
    missing = [name for name, path in paths.items() if not os.path.exists(path)]
    if missing:
      raise FileNotFoundError(f'{workdir}: no {" or ".join(missing)}; is it the workdir of a finished '
                              'experiments.run training run?')
    with open(paths['config.json']) as f:
      config = schema.upgrade(json.load(f))
    with open(paths['summary.json']) as f:
      class_names = json.load(f)['class_names']
    if checkpoint not in ('best', 'latest'):
      raise ValueError(f"checkpoint must be 'best' or 'latest', got {checkpoint!r}.")
    # A workdir resolves to its best checkpoint, else its latest.
    step_dir = checkpoints.find_step_dir(workdir if checkpoint == 'best' else
                                         os.path.join(workdir, 'checkpoints', 'latest'))
    state = checkpoints.restore_subtree(step_dir, ())
    variables = {'params': state['params']}
    if state.get('batch_stats') is not None:
      variables['batch_stats'] = state['batch_stats']
    scales = {}
    for name in (loader.FUNCTIONALS_FILE, loader.VISUAL_FILE):
      if os.path.exists(os.path.join(workdir, name)):
        with open(os.path.join(workdir, name)) as f:
          scales[name] = json.load(f)
    return cls(config, variables, class_names, checkpoint=step_dir, window_seconds=window_seconds,
               functionals_scale=scales.get(loader.FUNCTIONALS_FILE), visual_scale=scales.get(loader.VISUAL_FILE),
               visual_table=visual_features.load(visual) if visual else None)

  # -------------------------------------------------------------------------------------------
  # Recording -> windows of model inputs.

  def _load(self, source: str | tuple[np.ndarray, int]) -> tuple[np.ndarray, int, tuple[np.ndarray, float] | None]:
    """(waveform, rate, (frames, fps) or None) of a path or a (waveform, rate) pair."""
    if not isinstance(source, str):
      wave, sr = source
      if self.reads_video:
        raise ValueError(f'{self.config.model.name} reads face video: give it a video file, not a waveform.')
      return np.asarray(wave, np.float32), int(sr), None
    extension = os.path.splitext(source)[1].lower()
    if extension not in AUDIO_EXTENSIONS + VIDEO_EXTENSIONS:
      raise ValueError(f'unsupported file type {extension!r}; expected one of {AUDIO_EXTENSIONS + VIDEO_EXTENSIONS}')
    if self.reads_video and extension not in VIDEO_EXTENSIONS:
      raise ValueError(f'{self.config.model.name} reads face video, and {extension} is audio only: give it a video '
                       'file (or use an audio model)')
    wave, sr = audio.load_waveform(source)
    return wave, sr, video.decode_video(source) if self.reads_video else None

  def windows(self, source: str | tuple[np.ndarray, int]) -> tuple[list[dict[str, np.ndarray]], np.ndarray, float]:
    """(one un-normalised model input per window, window starts in seconds, duration in seconds).

    By default the recording is treated as training treated an utterance (`features.recording_examples`):
    whole for the full-utterance variants, else cut into clips back to back. With `window_seconds`, a longer
    recording is first cut into half-overlapping windows of that length, each then treated so.
    """
    visual = self._visual_row(source) if self.reads_visual else None
    wave, sr, video = self._load(source)
    features.check_waveform(wave, sr)  # as the array build checks every utterance
    duration = len(wave) / sr
    length = int(round(self.window_seconds * sr)) if self.window_seconds else len(wave)
    first = [0]
    if len(wave) > length:
      hop = max(1, int(round(length * (1 - WINDOW_OVERLAP))))
      first = list(range(0, len(wave) - length + 1, hop))
      if first[-1] + length < len(wave):
        first.append(len(wave) - length)  # the end of the recording gets a window too
    clips_wanted, _ = features.VARIANTS[self.spec.variant]
    inputs, starts = [], []
    for offset in first:
      piece = wave[offset:offset + length]
      part = None
      if video is not None:
        frames, fps = video
        part = frames[int(offset / sr * fps):int(round((offset + length) / sr * fps))]
        part = (part if len(part) else frames[-1:], fps)
      # Padding noise seeded by the samples, not by how the path is written.
      seed = zlib.crc32(np.ascontiguousarray(piece).tobytes())
      for example in features.recording_examples(piece, sr, self.spec, seed=seed, video=part):
        inputs.append({k: example[k] for k in ('audio', 'video') if k in example})
        starts.append(offset / sr + (example['clip'] * self.spec.clip_seconds if clips_wanted else 0.0))
      if self.functionals:  # whole-utterance variants only: one input per window, its functionals as training's
        inputs[-1]['functionals'] = baselines.recording_features(
            piece, sr, self.functionals, self._extractors, denoise=baselines.WHOLE_UTTERANCE[self.spec.variant])
    if visual is not None:  # one row per recording, the same for each of its inputs
      for example in inputs:
        example['visual'] = visual
    return inputs, np.asarray(starts), duration

  def _visual_row(self, source: str | tuple[np.ndarray, int]) -> np.ndarray:
    """The recording's row of the visual features, found by its file name as training paired its utterances."""
    if self.visual_table is None:
      raise ValueError(f'{self.config.model.name} reads visual features: name their table or OpenFace folder '
                       '(--visual_features)')
    if not isinstance(source, str):
      raise ValueError(f'{self.config.model.name} reads visual features, found by file name: give a file, not a '
                       'waveform')
    row = visual_features.lookup(self.visual_table, self.config.corpus.name, source)
    if row is None:
      key = visual_features.key_for(self.config.corpus.name, source)
      raise ValueError(self.visual_table.errors.get(key, f'no visual features for {key} in {self.visual_table.source}'))
    return row

  def speaker_statistics(self, sources: Iterable[str | tuple[np.ndarray, int]]) -> dict[str, np.ndarray]:
    """One speaker's statistics over every window of `sources` (their recordings), what a speaker-normalised
    model needs: 'audio', the (2, H, 1, C) mean and std of each spectrogram row, and for a hybrid
    'functionals', the (2, F) mean and std of each functional. An unusable recording raises."""
    return _statistics([example for source in sources for example in self.windows(source)[0]])

  # -------------------------------------------------------------------------------------------
  # Windows -> probabilities.

  def _score(self, inputs: list[dict[str, np.ndarray]]) -> np.ndarray:
    """(windows, K) probabilities, averaged over the run's test-time crops when it trained on crops."""
    out = []
    for first in range(0, len(inputs), BATCH):
      chunk = inputs[first:first + BATCH]
      batch = {k: np.stack([x[k] for x in chunk] + [chunk[0][k]] * (BATCH - len(chunk))) for k in chunk[0]}
      crops = loader.time_windows(batch, self.config.data.crop_frames, self.config.data.test_crops)
      probs = np.mean([self._forward(crop) for crop in crops], axis=0)
      out.append(probs[:len(chunk)])
    return np.concatenate(out)

  def predict(self, source: str | tuple[np.ndarray, int], *,
              speaker_stats: dict[str, np.ndarray] | None = None) -> Prediction:
    """Scores one recording (a path, or a (waveform, sample rate) pair). Raises on an unusable
    recording (`predict_files` turns errors into per-file results)."""
    return self._predict(source, self.windows(source), speaker_stats)

  def _standardize(self, example: dict[str, np.ndarray], speaker_stats: dict[str, np.ndarray] | None):
    """A window's inputs standardised as training's were."""
    normalize = self.config.data.normalize
    out = {**example, 'audio': loader.standardize(example['audio'], normalize,
                                                  speaker_stats['audio'] if normalize == 'speaker' else None)}
    for key, scale in (('functionals', self.functionals_scale), ('visual', self.visual_scale)):
      if key in example:
        mean, std = speaker_stats[key] if normalize == 'speaker' else scale
        out[key] = ((example[key] - mean) / std).astype(np.float32)
    return out

  def _predict(self, source, windows, speaker_stats: dict[str, np.ndarray] | None,
               notes: Sequence[str] = ()) -> Prediction:
    if self.config.data.normalize == 'speaker' and speaker_stats is None:
      raise ValueError('this model was trained with speaker normalisation (data.normalize=speaker): pass the '
                       "speaker's statistics (Predictor.speaker_statistics over several of their recordings)")
    inputs, starts, duration = windows
    inputs = [self._standardize(x, speaker_stats) for x in inputs]
    window_probabilities = self._score(inputs)
    return Prediction(source=source if isinstance(source, str) else '<waveform>', class_names=self.class_names,
                      probabilities=window_probabilities.mean(axis=0), window_probabilities=window_probabilities,
                      window_starts=starts, window_seconds=self.window_length(duration), duration=duration,
                      notes=tuple(notes))

  def predict_files(self, paths: Sequence[str], *, speakers: dict[str, str] | None = None,
                    speaker_stats: dict[str, np.ndarray] | None = None, progress: bool = True) -> list[Prediction]:
    """Scores every file, each error kept as that file's result. A speaker-normalised model takes its
    statistics from `speaker_stats` when given, else per speaker (`speakers`: path -> name; unnamed files
    form one speaker) from all of that speaker's usable files; a speaker with one file gets a note saying so."""
    iterator = paths
    if progress and len(paths) > 1:
      iterator = progress_bar.bar(paths, desc='decode', unit='file')
    windows: dict[str, Any] = {}
    for path in iterator:  # each file decoded once; the statistics need every file before any prediction
      try:
        windows[path] = self.windows(path)
      except (OSError, ValueError, RuntimeError) as error:
        windows[path] = f'{type(error).__name__}: {error}'
    stats_of: dict[str, dict[str, np.ndarray] | None] = {p: speaker_stats for p in paths}
    notes: dict[str, tuple[str, ...]] = {}
    if self.config.data.normalize == 'speaker' and speaker_stats is None:
      groups: dict[str, list[str]] = {}
      for path in paths:
        groups.setdefault((speakers or {}).get(path, ''), []).append(path)
      for name, members in groups.items():
        usable = [p for p in members if not isinstance(windows[p], str)]
        stats = _statistics([x for p in usable for x in windows[p][0]]) if usable else None
        note = (f'speaker statistics from {len(usable)} recording(s) of speaker {name or "(unnamed)"}'
                + (': one recording only, so its own average spectrum is normalised away (less reliable)'
                   if len(usable) == 1 else ''))
        stats_of.update({p: stats for p in members})
        notes.update({p: (note,) for p in members})
    results = []
    for path in paths:
      if isinstance(windows[path], str):
        results.append(Prediction(source=path, class_names=self.class_names, error=windows[path],
                                  notes=notes.get(path, ())))
      else:
        results.append(self._predict(path, windows[path], stats_of[path], notes.get(path, ())))
    return results


class FusedPredictor:
  """A network's predictions averaged with a fitted baseline's, equal weights fixed beforehand: the late
  fusion the cross-validation reports compute. Per recording, the mean of the network's windows and the
  baseline's probabilities of the whole recording (its features describe whole utterances). Both
  members must be of one mode: speaker-blind, or speaker-normalised over each speaker's files."""

  def __init__(self, predictor: Predictor, baseline: baselines.Baseline):
    if baseline.class_names != predictor.class_names:
      raise ValueError(f'The baseline {baseline.name} has classes {baseline.class_names}, the network '
                       f'{predictor.class_names}: fuse models of one class set.')
    if baseline.normalize != (predictor.config.data.normalize == 'speaker'):
      raise ValueError(f'One of the network (data.normalize={predictor.config.data.normalize}) and the baseline '
                       f'{baseline.name} is speaker-normalised and the other is not: fuse models of one mode.')
    self.predictor, self.baseline = predictor, baseline
    self.class_names = predictor.class_names

  def predict_files(self, paths: Sequence[str], *, speakers: dict[str, str] | None = None,
                    speaker_stats: dict[str, np.ndarray] | None = None, progress: bool = True) -> list[Prediction]:
    """As `Predictor.predict_files`; a file either member cannot use gets that member's error."""
    if speaker_stats is not None and self.baseline.normalize:
      raise ValueError(f'{self.baseline.name} standardises its features over every file of a speaker: name the '
                       'speakers of the files instead of passing saved spectrogram statistics.')
    results = self.predictor.predict_files(paths, speakers=speakers, speaker_stats=speaker_stats, progress=progress)
    rows = {}
    for result in results:
      if result.error is None:
        try:
          rows[result.source] = self.baseline.features_of(*audio.load_waveform(result.source))
        except (OSError, ValueError, RuntimeError) as error:
          result.error, result.probabilities = f'{self.baseline.name}: {type(error).__name__}: {error}', None
    usable = [r for r in results if r.error is None]
    if usable:
      groups = [(speakers or {}).get(r.source, '') for r in usable]
      probabilities = self.baseline.probabilities(np.stack([rows[r.source] for r in usable]), groups)
      for result, baseline_probabilities in zip(usable, probabilities):
        result.parts = {'network': result.probabilities, self.baseline.name: baseline_probabilities}
        result.probabilities = (result.probabilities + baseline_probabilities) / 2
    return results


def score_corpus(predictor: Predictor, corpus, *, progress: bool = True) -> dict[str, Any]:
  """A trained model on every recording of a labelled `corpus` whose emotion is one of its classes
  (cross-corpus testing: e.g. a model trained on Emo-DB, scored on RAVDESS). Each recording is scored from
  its file as `predict_files` does (speaker-normalised models over each speaker's recordings, speakers as
  the corpus names them); its answer is the most probable of the classes this corpus labels, so a class the
  corpus lacks (Emo-DB's boredom for RAVDESS) is never counted as a wrong answer.

  Returns `metrics.classification_metrics` over the model's classes, plus `classes` (the model's),
  `scored_classes` (those this corpus has), `left_out` (the corpus's other emotions: counts) and `errors`
  (recordings that could not be used: id -> error).
  """
  names, merge_exc = predictor.class_names, predictor.config.data.merge_exc
  kept, left_out = [], {}
  for u in corpus.utterances():
    if not isinstance(u, Utterance):  # a reader's Skipped entry: not a recording
      continue
    emotion = corpus.canonical.get(u.label, u.label)
    index = labels.class_index(emotion, names, merge_exc=merge_exc)
    if index is None:
      left_out[emotion] = left_out.get(emotion, 0) + 1
      continue
    if u.audio_path is None or u.start is not None:
      raise ValueError(f'{u.id}: scoring a corpus needs one recording per utterance (a whole file); this corpus '
                       'gives generated signals or segments of longer files.')
    kept.append((u, index))
  if not kept:
    raise ValueError(f'The corpus labels none of the model\'s classes {list(names)} (it has {sorted(left_out)}).')
  scored = sorted({index for _, index in kept})
  paths = [u.audio_path for u, _ in kept]
  results = predictor.predict_files(paths, speakers={u.audio_path: u.speaker for u, _ in kept}, progress=progress)
  usable = [(r, index) for r, (_, index) in zip(results, kept) if r.error is None]
  errors = {u.id: r.error for r, (u, _) in zip(results, kept) if r.error is not None}
  if not usable:
    raise ValueError(f'None of the {len(kept)} recordings could be used; the first error: {next(iter(errors.values()))}')
  probabilities = np.stack([r.probabilities for r, _ in usable])
  answers = np.asarray(scored)[probabilities[:, scored].argmax(axis=1)]
  confusion = metrics.confusion_matrix(np.asarray([index for _, index in usable]), answers, len(names))
  return {**metrics.classification_metrics(confusion), 'classes': list(names),
          'scored_classes': [names[i] for i in scored], 'left_out': dict(sorted(left_out.items())), 'errors': errors}


def _statistics(windows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """One speaker's statistics over their windows, as training computes them: each spectrogram row's mean and
  std over every column (loader.speaker_statistics), and each functional's (baselines.feature_scale, as standardise_per_speaker)."""
  if not windows:
    raise ValueError('no recording to compute speaker statistics from')
  stats = {'audio': loader.speaker_statistics(windows, [{'speaker': ''}] * len(windows))['']}
  for key in ('functionals', 'visual'):
    if key in windows[0]:
      stats[key] = np.stack(baselines.feature_scale(np.stack([x[key] for x in windows]).astype(np.float64)))
  return stats


def find_recordings(paths: Sequence[str]) -> list[str]:
  """Files named, and every file under folders named (hidden ones aside), sorted within each folder: none
  is dropped silently, so a file of an unsupported type gets its own error row."""
  found = []
  for path in paths:
    if os.path.isdir(path):
      for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
        found += [os.path.join(root, n) for n in sorted(names) if not n.startswith('.')]
    else:
      found.append(path)
  return found
