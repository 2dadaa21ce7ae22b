"""Grain pipelines over precomputed ArrayRecord examples.

Training order is a pure function of (seed, epoch): a resumed run asks for the
batches of an epoch from position `start` and gets exactly the batches an
uninterrupted run would have seen.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterator, Sequence

import cv2
import grain
import jax
import numpy as np

from emojax import arrays, audio, baselines, corpora, features, files, models, splits, visual_features
from emojax.corpora.base import Utterance

# The arrays a step consumes; the text fields stay on the host.
ARRAY_KEYS = ('audio', 'video', 'label')
# How spectrograms are standardised, per frequency row (and channel), before the model sees them:
#   none       as built (a fixed dB scale, the same for every clip)
#   utterance  on the clip's own columns (speaker-blind, but it erases loudness and the average spectral
#              envelope: on Emo-DB folds it cost about 20 points against 'none')
#   speaker    on every column of every clip of the clip's speaker, test speakers included, labels unused
#              (speaker-normalised: transductive, needs the speaker's identity and several of their clips)
NORMALIZE = ('none', 'utterance', 'speaker')
# Per-utterance functionals a hybrid network reads beside its spectrogram (`data.functionals`): the baselines'
# eGeMAPS or MFCC statistics, standardised per speaker in the speaker-normalised mode, else by the training
# side's mean and std (written to the workdir's FUNCTIONALS_FILE, so a predictor applies the same scale).
FUNCTIONALS = ('', 'egemaps', 'mfcc', 'byols', 'byols_egemaps')  # audio feature sets of emojax.baselines
FUNCTIONALS_FILE = 'functionals.json'
VISUAL_FILE = 'visual.json'  # the visual features' training-side scale, as FUNCTIONALS_FILE
_MIN_STD = 1e-3  # a row that never changes (silence clipped at the floor) stays finite


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def speaker_statistics(source: Any, examples: Sequence[dict[str, Any]]) -> dict[str, np.ndarray]:
  """{speaker: (2, H, 1, C) mean and std of each spectrogram row} over the speaker's original clips
  (augmented copies left out); reads every record once."""
  sums: dict[str, list] = {}
  for index, example in enumerate(examples):
    if example.get('copy', 0):
      continue
    image = np.asarray(source[index]['audio'], np.float64)
    total = sums.setdefault(example['speaker'], [0.0, 0.0, 0])
    total[0] = total[0] + image.sum(axis=1, keepdims=True)
    total[1] = total[1] + np.square(image).sum(axis=1, keepdims=True)
    total[2] += image.shape[1]
  stats = {}
  for speaker, (total, squares, count) in sums.items():
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    stats[speaker] = np.stack([mean, np.maximum(std, _MIN_STD)]).astype(np.float32)
  return stats


def standardize(image: np.ndarray, normalize: str, speaker_stats: np.ndarray | None = None) -> np.ndarray:
  """A spectrogram (H, W, C) standardised per row as `normalize` says (speaker: by its speaker's
  (2, H, 1, C) mean and std from `speaker_statistics`)."""
  if normalize == 'none':
    return image
  if normalize == 'utterance':
    mean, std = image.mean(axis=1, keepdims=True), np.maximum(image.std(axis=1, keepdims=True), _MIN_STD)
  elif normalize == 'speaker':
    mean, std = speaker_stats
  else:
    raise ValueError(f'Unknown normalisation {normalize!r}; expected one of {list(NORMALIZE)}.')
  return ((image - mean) / std).astype(np.float32)


def utterance_functionals(config, corpus, examples: Sequence[dict[str, Any]],
                          train_indices: Sequence[int]) -> tuple[np.ndarray, dict[str, Any]]:
  """((records, F) standardised functionals of each record's utterance, how they were standardised)."""
  dc = config.data
  wanted = {e['utterance'] for e in examples}
  items = [u for u in corpus.utterances() if isinstance(u, Utterance) and u.id in wanted]
  x, _, errors = baselines.feature_set(config, corpus, items, dc.functionals)
  if errors:
    raise ValueError(f'data.functionals={dc.functionals!r}: no features for {len(errors)} utterance(s) the arrays '
                     f'hold, e.g. {dict(list(errors.items())[:3])}')
  x, scale = _standardised(x, [item.id for item in items], [item.speaker for item in items], examples,
                           train_indices, dc.normalize)
  return x, {'kind': dc.functionals, 'variant': dc.variant, **scale}


def _standardised(x: np.ndarray, ids: Sequence[str], speakers: Sequence[str], examples: Sequence[dict[str, Any]],
                  train_indices: Sequence[int], normalize: str) -> tuple[np.ndarray, dict[str, Any]]:
  """(records, F) rows of per-utterance vectors `x` (one row per utterance id), standardised per speaker
  (normalize='speaker') or by the training side's utterances' mean and std; and how (the scale to save)."""
  row_of = {utterance: i for i, utterance in enumerate(ids)}
  scale: dict[str, Any] = {'normalize': normalize}
  if normalize == 'speaker':
    x = baselines.standardise_per_speaker(x, list(speakers))
  else:
    train_rows = sorted({row_of[examples[i]['utterance']] for i in train_indices})
    mean, std = baselines.feature_scale(x[train_rows])
    x = (x - mean) / std
    scale.update(mean=mean.tolist(), std=std.tolist())
  return x[[row_of[e['utterance']] for e in examples]].astype(np.float32), scale


def utterance_visual(config, examples: Sequence[dict[str, Any]],
                     train_indices: Sequence[int]) -> tuple[np.ndarray, dict[str, Any]]:
  """((records, D) standardised visual features of each record's utterance, how they were standardised): the
  rows of `corpus.visual_features` (sequences summarised per clip), paired with the corpus's utterances."""
  path = config.corpus.visual_features
  table = visual_features.to_vectors(visual_features.load(path))
  by_utterance = {}
  for e in examples:
    by_utterance.setdefault(e['utterance'], e['speaker'])
  rows, missing = [], []
  for utterance in by_utterance:
    row = visual_features.lookup(table, config.corpus.name, utterance)
    if row is None:
      missing.append(utterance)
    rows.append(row)
  if missing:
    reasons = {u: table.errors.get(visual_features.key_for(config.corpus.name, u), 'no row') for u in missing[:3]}
    raise ValueError(f'corpus.visual_features={path!r}: {len(missing)} of the {len(by_utterance)} utterances the '
                     f'arrays hold have no visual features, e.g. {reasons}')
  x, scale = _standardised(np.stack(rows).astype(np.float64), list(by_utterance), list(by_utterance.values()),
                           examples, train_indices, config.data.normalize)
  return x, {'source': os.path.abspath(path), 'names': list(table.names), **scale}


def time_windows(batch: dict[str, Any], crop_frames: int, count: int) -> Iterator[dict[str, Any]]:
  """The batch itself (crop_frames 0), or its `count` windows of crop_frames audio columns, evenly spaced
  from the first column to the last (numpy or sharded jax arrays: slicing keeps the batch sharding)."""
  if not crop_frames:
    yield batch
    return
  width = batch['audio'].shape[2]
  if crop_frames > width:
    raise ValueError(f'data.crop_frames={crop_frames} is wider than the spectrograms ({width} columns).')
  for start in np.linspace(0, width - crop_frames, max(1, count)).round().astype(int):
    yield {**batch, 'audio': batch['audio'][:, :, start:start + crop_frames]}


IN_MEMORY_BYTES = 1 << 30  # builds up to this size are decoded once and held in memory


def in_memory(source: Any, limit: int = IN_MEMORY_BYTES) -> Any:
  """The records of `source` decoded into a list when their arrays fit in `limit` bytes, else `source`.

  A small corpus (Emo-DB: 10 MB) is read many times per run, once per epoch and evaluation: decoding
  each record from ArrayRecord every time was a quarter of a cross-validation fold's wall time.
  """
  if not len(source):
    return source
  first = source[0]
  size = sum(np.asarray(v).nbytes for v in first.values() if isinstance(v, np.ndarray)) * len(source)
  return [source[i] for i in range(len(source))] if size <= limit else source


class _Lookup:
  """Maps a record index to the arrays of that record, the audio standardised as `normalize` says, and its
  speaker's number when `speakers` numbers them (contrastive mining can then tell speakers apart).
  Picklable for Grain workers."""

  def __init__(self, source: Any, speakers: dict[str, int] | None = None, normalize: str = 'none',
               speaker_stats: dict[str, np.ndarray] | None = None, functionals: np.ndarray | None = None,
               visual: np.ndarray | None = None):
    if normalize not in NORMALIZE:
      raise ValueError(f'Unknown normalisation {normalize!r}; expected one of {list(NORMALIZE)}.')
    if normalize == 'speaker' and speaker_stats is None:
      raise ValueError("normalize='speaker' needs the speakers' statistics (speaker_statistics).")
    self.source = source
    self.speakers = speakers
    self.normalize = normalize
    self.speaker_stats = speaker_stats
    self.functionals = functionals
    self.visual = visual

  def __call__(self, index: int) -> dict[str, np.ndarray]:
    record = self.source[int(index)]
    element = {k: np.asarray(record[k]) for k in ARRAY_KEYS if k in record}
    if 'audio' in element and self.normalize != 'none':
      stats = self.speaker_stats[_text(record['speaker'])] if self.normalize == 'speaker' else None
      element['audio'] = standardize(element['audio'], self.normalize, stats)
    if self.functionals is not None:
      element['functionals'] = self.functionals[int(index)]
    if self.visual is not None:
      element['visual'] = self.visual[int(index)]
    if self.speakers is not None:
      element['speaker'] = np.int32(self.speakers[_text(record['speaker'])])
    return element


class _Pick:
  """Element `position` of a (lazy, random-access) dataset: a process's rows of the global order. Picklable."""

  def __init__(self, dataset: grain.MapDataset):
    self.dataset = dataset

  def __call__(self, position: int) -> dict[str, np.ndarray]:
    return self.dataset[int(position)]


@dataclasses.dataclass(frozen=True)
class Augment:
  """Training-time spectrogram augmentation (all off by default: none helped in the paper).

  top_crop_px: the paper's frequency shift: cut up to this many rows off the top
    (highest frequencies) and resize back.
  rotate_degrees: the paper's rotation by a random angle in +-this.
  freq_masks, time_masks, mask_width: SpecAugment-style bands set to the image
    mean (Park et al. 2019), each at most `mask_width` rows/columns wide.
  freq_warp: log-mel spectrograms of `mel_bands` bands only: every frequency scaled by a random
    factor in 1 +- freq_warp, as another vocal tract length would (VTLP, Jaitly & Hinton 2013).
  Never a horizontal flip: it reverses time.
  """

  top_crop_px: int = 0
  rotate_degrees: float = 0.0
  freq_masks: int = 0
  time_masks: int = 0
  mask_width: int = 8
  freq_warp: float = 0.0
  mel_bands: int = 64

  @property
  def active(self) -> bool:
    return bool(self.top_crop_px or self.rotate_degrees or self.freq_masks or self.time_masks or self.freq_warp)

  def __call__(self, element: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    if 'audio' not in element:
      return element
    image = element['audio']
    height, width = image.shape[:2]
    if self.freq_warp:
      rows = audio.logmel_warp_rows(height, float(rng.uniform(1 - self.freq_warp, 1 + self.freq_warp)),
                                    n_mels=self.mel_bands)
      low = np.floor(rows).astype(int)
      weight = (rows - low)[:, None, None]
      image = image[low] * (1 - weight) + image[np.minimum(low + 1, height - 1)] * weight
    if self.top_crop_px:
      crop = int(rng.integers(0, self.top_crop_px + 1))
      if crop:
        image = cv2.resize(image[crop:], (width, height), interpolation=cv2.INTER_LINEAR).reshape(image.shape)
    if self.rotate_degrees:
      angle = float(rng.uniform(-self.rotate_degrees, self.rotate_degrees))
      matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
      image = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT).reshape(image.shape)
    if self.freq_masks or self.time_masks:
      image = image.copy()
      fill = image.mean(axis=(0, 1))
      for axis, count in ((0, self.freq_masks), (1, self.time_masks)):
        for _ in range(count):
          size = int(rng.integers(0, self.mask_width + 1))
          start = int(rng.integers(0, max(1, image.shape[axis] - size)))
          index = [slice(None)] * image.ndim
          index[axis] = slice(start, start + size)
          image[tuple(index)] = fill
    return {**element, 'audio': image.astype(np.float32)}


def _random_crop(element: dict[str, np.ndarray], rng: np.random.Generator, frames: int) -> dict[str, np.ndarray]:
  """A random window of `frames` time columns of the audio spectrogram (H, W, C)."""
  width = element['audio'].shape[1]
  if frames > width:
    raise ValueError(f'data.crop_frames={frames} is wider than the spectrograms ({width} columns).')
  start = int(rng.integers(0, width - frames + 1))
  return {**element, 'audio': element['audio'][:, start:start + frames]}


@dataclasses.dataclass
class Split:
  """Some records of a build (by index) and how to batch them."""

  source: Any
  indices: Sequence[int]
  num_workers: int = 0
  augment: Augment = Augment()  # applied to training batches only
  # Multi-process: this process reads block shard_index of shard_count of each global batch.
  shard_index: int = 0
  shard_count: int = 1
  speakers: dict[str, int] | None = None  # speaker name -> number, added to each example when set
  normalize: str = 'none'  # one of NORMALIZE
  speaker_stats: dict[str, np.ndarray] | None = None  # for normalize='speaker'
  functionals: np.ndarray | None = None  # (records, F): each record's standardised functionals (data.functionals)
  visual: np.ndarray | None = None  # (records, D): each record's standardised visual features (corpus.visual_features)
  # Time crops of the audio spectrogram (0: the whole image): training reads one random window of
  # crop_frames columns per example, evaluation averages `test_crops` evenly spaced windows (`windows`).
  crop_frames: int = 0
  test_crops: int = 1

  def __len__(self) -> int:
    return len(self.indices)

  def _lookup(self) -> _Lookup:
    return _Lookup(self.source, self.speakers, self.normalize, self.speaker_stats, self.functionals, self.visual)

  def _iterate(self, dataset: grain.MapDataset) -> Iterator[dict[str, np.ndarray]]:
    iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=2))
    if self.num_workers:
      iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    return iter(iterable)

  def _local_positions(self, length: int, batch_size: int) -> np.ndarray:
    """The positions of this process's rows: a contiguous block of every whole global batch (process p
    takes rows p*L..(p+1)*L-1, L = batch_size / processes), so assembling the processes' blocks gives
    the global batch in the order one process would read it."""
    if batch_size % self.shard_count:
      raise ValueError(f'Batch size {batch_size} does not split over {self.shard_count} processes.')
    local = batch_size // self.shard_count
    blocks = np.arange(length // batch_size * batch_size).reshape(-1, batch_size)
    return blocks[:, self.shard_index * local:(self.shard_index + 1) * local].ravel()

  def _local(self, dataset: grain.MapDataset, batch_size: int, augment_seed: int | None = None) -> grain.MapDataset:
    """This process's part of each global batch of `batch_size`, augmented when a seed is given."""
    dataset = dataset.map(self._lookup())
    if augment_seed is not None and self.crop_frames:
      dataset = dataset.random_map(functools.partial(_random_crop, frames=self.crop_frames), seed=augment_seed + 7)
    if augment_seed is not None and self.augment.active:
      # Per-element random streams derive from (seed, global position): a resumed epoch augments
      # identically, and so does a run over any number of processes.
      dataset = dataset.random_map(self.augment, seed=augment_seed)
    positions = self._local_positions(len(dataset), batch_size)
    local = grain.MapDataset.source(positions).map(_Pick(dataset))
    return local.batch(batch_size // self.shard_count, drop_remainder=True)

  def train_batches(self, batch_size: int, *, seed: int, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Full global batches of one epoch in a (seed, epoch)-determined order, from batch `start` on."""
    epoch_seed = seed * 100_003 + epoch
    dataset = grain.MapDataset.source(np.asarray(self.indices, np.int64)).shuffle(seed=epoch_seed)
    return self._iterate(self._local(dataset, batch_size, augment_seed=epoch_seed + 1)[start:])

  def eval_batches(self, batch_size: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """Every example once, in order; the last batch is padded to full size (one compiled shape)
    and comes with a mask of its real rows."""
    indices = np.asarray(self.indices, np.int64)
    padded = -(-len(indices) // batch_size) * batch_size
    valid = np.arange(padded) < len(indices)
    indices = np.concatenate([indices, np.full(padded - len(indices), indices[0])])
    local_valid = valid[self._local_positions(padded, batch_size)]
    local_size = batch_size // self.shard_count
    for i, batch in enumerate(self._iterate(self._local(grain.MapDataset.source(indices), batch_size))):
      yield batch, local_valid[i * local_size:(i + 1) * local_size]

  def example_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """A batch of the right shapes (for initialising parameters)."""
    record = self._lookup()(self.indices[0])
    return next(self.windows({k: np.repeat(v[None], batch_size, axis=0) for k, v in record.items()}))

  def windows(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """What evaluation averages over: `time_windows` with this split's crop settings."""
    return time_windows(batch, self.crop_frames, self.test_crops)


@dataclasses.dataclass
class Data:
  """What training needs: class names and the sides of a split (validation None when there is none)."""

  class_names: tuple[str, ...]
  train: Split
  test: Split
  validation: Split | None = None
  test_utterances: tuple[str, ...] = ()  # of each test example, in order (predictions name them)
  test_labels: tuple[int, ...] = ()


def load_data(config, workdir: str | None = None) -> Data:
  """Corpus -> features -> arrays -> split -> Grain splits, as `config` says.

  The split (with utterance ids) is written to `<workdir>/split.json`.
  """
  dc = config.data
  corpus = corpora.get_corpus(config.corpus)
  spec = features.spec_from_config(config)
  built = arrays.build(corpus, spec, dc.data_dir, corpus_key=corpora.corpus_key(config.corpus))
  split = splits.split_examples(built.examples, dc.split, test_speakers=tuple(dc.test_speakers),
                                num_test_speakers=dc.num_test_speakers, fold=dc.fold, num_folds=dc.num_folds,
                                test_fraction=dc.test_fraction, num_val_speakers=dc.num_val_speakers,
                                seed=config.seed)
  train_indices = split['train']
  if dc.balance_per_class:
    train_indices = splits.balance(train_indices, [e['label'] for e in built.examples], dc.balance_per_class,
                                   seed=config.seed)
  print(splits.describe({**split, 'train': train_indices}, built.examples, built.class_names))
  if workdir and jax.process_index() == 0:
    splits.write({**split, 'train': train_indices}, os.path.join(workdir, 'split.json'), built.examples)
  shard = {'num_workers': dc.num_workers, 'shard_index': jax.process_index(), 'shard_count': jax.process_count()}
  speakers = None  # numbered only where contrastive mining needs them
  if config.objective == 'contrastive' and config.contrastive.super_hard_same_speaker:
    speakers = {name: i for i, name in enumerate(sorted({e['speaker'] for e in built.examples}))}
  augment = Augment(**dc.augment.to_dict(), mel_bands=dc.mel_bands)
  source = in_memory(built.source)
  functionals = visual = None
  if dc.functionals:
    functionals, scale = utterance_functionals(config, corpus, built.examples, train_indices)
    if workdir and jax.process_index() == 0:
      files.write_json(os.path.join(workdir, FUNCTIONALS_FILE), scale)
  if 'visual' in models.inputs_of(config.model):
    visual, scale = utterance_visual(config, built.examples, train_indices)
    if workdir and jax.process_index() == 0:
      files.write_json(os.path.join(workdir, VISUAL_FILE), scale)
  common = {'speakers': speakers, 'normalize': dc.normalize, 'crop_frames': dc.crop_frames,
            'test_crops': dc.test_crops, 'functionals': functionals, 'visual': visual, **shard,
            'speaker_stats': speaker_statistics(source, built.examples) if dc.normalize == 'speaker' else None}
  validation = Split(source, split['validation'], **common) if split['validation'] else None
  return Data(class_names=built.class_names, train=Split(source, train_indices, augment=augment, **common),
              test=Split(source, split['test'], **common), validation=validation,
              test_utterances=tuple(built.examples[i]['utterance'] for i in split['test']),
              test_labels=tuple(built.examples[i]['label'] for i in split['test']))
