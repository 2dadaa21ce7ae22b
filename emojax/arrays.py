"""Precompute: corpus -> features -> ArrayRecord files in the TFDS format.

Every corpus, the embedded synthetic one included, goes through `build`: it
walks the corpus utterance by utterance, computes the configured features and
streams them into ArrayRecord shards, which it then describes with TFDS
metadata, so `tfds.builder_from_directory(...).as_data_source()` reads them
(no TensorFlow needed). A build is cached: the same corpus and feature spec
reuse the files on disk.

Why not `tfds.core.GeneratorBasedBuilder`: its writer keeps every serialized
example in memory (up to 1 GB) and then spills them into one temporary bucket
that it reads back whole to sort, so its peak memory grows with the corpus
(the original code crashed at 12 GB). Here each shard of
`utterances_per_shard` utterances is written as it is computed and the peak
memory is that of one utterance. A finished shard is kept on disk: an
interrupted build resumes at the first unfinished one.

Next to the records the build writes
  examples.jsonl  one line per record, in record order: utterance, speaker, group, label, clip, copy
  manifest.json   every utterance of the corpus, kept or skipped with the reason, and counts
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import shutil
import zlib
from typing import Any, Iterator, Sequence

import av
import librosa
import numpy as np
import scipy.signal
import tensorflow_datasets as tfds
import threadpoolctl
from array_record.python import array_record_module
from tqdm.auto import tqdm

from emojax import audio, splits, video
from emojax.corpora import labels as label_sets
from emojax.corpora.base import Corpus, Skipped, Utterance

# The paper's four dataset variants (Table 1): (3-second clips?, noise cleanup?).
VARIANTS = {'ds1': (False, False), 'ds2': (True, False), 'ds3': (False, True), 'ds4': (True, True)}
# Part of every build's directory name: bump it when the build computes different arrays for
# the same spec, so stale caches are not reused (2: video windows hold their last frame).
BUILD_VERSION = 2
DATASET_NAME = 'emojax_arrays'
SPLIT_NAME = 'examples'
# Errors that mean "this utterance's data is unusable" (unreadable, truncated, empty, non-finite):
# the utterance lands in the manifest with the message and the build goes on.
DATA_ERRORS = (ValueError, OSError, RuntimeError, EOFError, av.error.FFmpegError,
               librosa.util.exceptions.ParameterError)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  """Which features a build computes (everything that changes the arrays)."""

  variant: str = 'ds2'
  frontend: str = 'native'            # 'faithful' (paper: RGB colormap, 200x300) or 'native' (log-mel)
  audio_size: tuple[int, int] = (64, 96)
  clip_seconds: float = 3.0
  class_set: str = '4class'
  merge_exc: bool = False
  with_video: bool = True
  video_frames: int = 20              # per clip (the paper: 20 frames per 3 s)
  video_size: tuple[int, int] = (60, 100)
  video_crop: str = 'fixed'           # 'fixed' (paper) or 'face' (detector, fixed-crop fallback)
  # The paper's future-work augmentation: extra copies of every clip with a faint tone sweep
  # mixed into the waveform (see `mix_tone_sweep`); training splits use them, held-out sets never.
  augment_copies: int = 0
  augment_level_db: float = -20.0     # RMS of the sweep relative to the clip's RMS

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'Unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}.')
    if self.frontend not in ('faithful', 'native'):
      raise ValueError(f"Unknown front end {self.frontend!r}; expected 'faithful' or 'native'.")
    if self.video_crop not in ('fixed', 'face'):
      raise ValueError(f"Unknown video crop {self.video_crop!r}; expected 'fixed' or 'face'.")
    if self.augment_copies < 0:
      raise ValueError(f'augment_copies must be >= 0, got {self.augment_copies}.')

  @property
  def audio_channels(self) -> int:
    return 3 if self.frontend == 'faithful' else 1

  def key(self) -> str:
    """A readable, unique directory name for this spec (and this version of the build)."""
    text = json.dumps({**dataclasses.asdict(self), 'build_version': BUILD_VERSION}, sort_keys=True)
    return f'{self.variant}_{self.frontend}_{hashlib.sha1(text.encode()).hexdigest()[:10]}'


@dataclasses.dataclass(frozen=True)
class Built:
  """A finished build: random-access records plus their metadata."""

  source: Any                         # TFDS ArrayRecord data source: source[i] -> dict of arrays
  examples: list[dict[str, Any]]      # record i's utterance, speaker, group, label, clip, copy
  class_names: tuple[str, ...]
  manifest: dict[str, Any]
  directory: str


def audio_features(wave: np.ndarray, sr: int, spec: FeatureSpec) -> np.ndarray:
  if spec.frontend == 'faithful':
    return audio.faithful_spectrogram(wave, sr, size=spec.audio_size)
  return audio.native_spectrogram(wave, sr, size=spec.audio_size)


def mix_tone_sweep(wave: np.ndarray, sr: int, *, level_db: float, rng: np.random.Generator) -> np.ndarray:
  """Mixes a faint linear sine sweep between two random frequencies (100 Hz .. 4 kHz) into `wave`.

  The paper's future work: "mixing a low-amplitude signal of varying frequency
  into the waveform" before the spectrogram. The sweep's RMS is `level_db`
  relative to the waveform's RMS, so it stays faint on loud and quiet clips.
  """
  seconds = np.arange(len(wave)) / sr
  low, high = 100.0, min(4000.0, 0.45 * sr)
  start_hz, end_hz = rng.uniform(low, high, size=2)
  sweep = scipy.signal.chirp(seconds, f0=start_hz, t1=max(seconds[-1], 1 / sr), f1=end_hz,
                             phi=rng.uniform(0, 360))
  amplitude = np.sqrt(2 * np.mean(np.square(wave, dtype=np.float64))) * 10 ** (level_db / 20)
  return np.clip(wave + amplitude * sweep, -1.0, 1.0).astype(np.float32)


def clip_frames(frames: np.ndarray, fps: float, index: int, seconds: float) -> np.ndarray:
  """The frames under the time window of clip `index` (clips of `seconds` back to back).

  A video that ends inside the window (a short utterance or the last clip, whose audio is
  padded with noise) holds its last frame to the window's end, so frame time maps to the
  same clip time as the audio's columns in every clip. Stretching the short window over the
  whole clip instead made that map differ clip by clip: on the synthetic corpus a loudness
  vs mouth probe matched a clip's own video at recall@1 0.01 stretched, 0.46 aligned (96 clips).
  """
  length = max(1, int(round(seconds * fps)))
  first = int(round(index * seconds * fps))
  window = frames[first:first + length]
  if not len(window):
    window = frames[-1:]
  return np.concatenate([window, np.repeat(window[-1:], length - len(window), axis=0)])


def utterance_examples(corpus: Corpus, utt: Utterance, spec: FeatureSpec,
                       stats: collections.Counter) -> Iterator[dict[str, Any]]:
  """The feature arrays of one utterance: per clip (one for full-utterance variants) the
  original, then `spec.augment_copies` augmented copies."""
  clips_wanted, cleanup = VARIANTS[spec.variant]
  wave, sr = corpus.load_audio(utt)
  if wave.size == 0:
    raise ValueError('empty audio (0 samples)')
  if not np.all(np.isfinite(wave)):
    raise ValueError('non-finite samples (NaN or inf) in the waveform')
  if not np.any(wave):
    raise ValueError('silent audio (every sample is 0)')
  if cleanup:
    wave = audio.denoise(wave, sr)
  seed = zlib.crc32(utt.id.encode())  # padding noise and augmentation repeat across builds
  if clips_wanted:
    clips = audio.clip_waveform(wave, sr, seconds=spec.clip_seconds, rng=np.random.default_rng(seed))
  else:
    clips = [wave]
  frames = fps = None
  if spec.with_video:
    loaded = corpus.load_video(utt)
    if loaded is None:
      raise ValueError('no video')
    frames, fps = loaded
  for index, clip in enumerate(clips):
    example = {'clip': index}
    if spec.with_video:
      window = clip_frames(frames, fps, index, spec.clip_seconds) if clips_wanted else frames
      example['video'], found = video.video_clip(
          window, n_frames=spec.video_frames, size=spec.video_size, crop=spec.video_crop)
      if spec.video_crop == 'face':
        stats['face_found' if found else 'face_fallback_fixed_crop'] += 1
    for copy in range(spec.augment_copies + 1):
      signal = clip if copy == 0 else mix_tone_sweep(
          clip, sr, level_db=spec.augment_level_db, rng=np.random.default_rng([seed, index, copy]))
      features = audio_features(signal, sr, spec)
      if not np.all(np.isfinite(features)):
        raise ValueError(f'non-finite audio features in clip {index}')
      yield {**example, 'audio': features.astype(np.float32), 'copy': copy}


def features_dict(spec: FeatureSpec) -> tfds.features.FeaturesDict:
  """The TFDS features of one record (plain tensors and text: readable without TensorFlow)."""
  features = {
      'audio': tfds.features.Tensor(shape=(*spec.audio_size, spec.audio_channels), dtype=np.float32),
      'label': tfds.features.Tensor(shape=(), dtype=np.int64),
      'clip': tfds.features.Tensor(shape=(), dtype=np.int64),
      'copy': tfds.features.Tensor(shape=(), dtype=np.int64),
      'utterance': tfds.features.Text(),
      'speaker': tfds.features.Text(),
  }
  if spec.with_video:
    features['video'] = tfds.features.Tensor(shape=(spec.video_frames, *spec.video_size, 3), dtype=np.uint8)
  return tfds.features.FeaturesDict(features)


def _shard_name(index: int, count: int) -> str:
  """TFDS's default file name template: {DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}."""
  return f'{DATASET_NAME}-{SPLIT_NAME}.array_record-{index:05d}-of-{count:05d}'


def _write_part(corpus: Corpus, spec: FeatureSpec, class_names: tuple[str, ...], items: Sequence[Any],
                base: str, features: tfds.features.FeaturesDict, progress) -> None:
  """Computes and writes one shard's utterances: `base`.array_record (if any example) and `base`.json.

  The .json (manifest rows, example rows, counters) is written last, atomically:
  it marks the part complete.
  """
  rows, example_rows, stats = [], [], collections.Counter()
  writer = None
  for item in items:
    progress.update(1)
    if isinstance(item, Skipped):
      rows.append({'id': item.id, 'kept': False, 'reason': item.reason, 'source': item.source})
      continue
    canonical = corpus.canonical.get(item.label)
    label = label_sets.class_index(canonical, class_names, merge_exc=spec.merge_exc)
    row = {'id': item.id, 'speaker': item.speaker, 'group': item.group, 'label': item.label}
    if label is None:
      rows.append({**row, 'kept': False, 'reason': 'label not in class map'})
      continue
    found = collections.Counter()
    try:  # all of an utterance's clips, or none of them
      examples = list(utterance_examples(corpus, item, spec, found))
    except DATA_ERRORS as error:
      rows.append({**row, 'kept': False, 'reason': f'{type(error).__name__}: {error}',
                   'source': item.audio_path or item.video_path or ''})
      continue
    rows.append({**row, 'kept': True, 'clips': len({e['clip'] for e in examples})})
    stats.update(found)
    if writer is None:
      writer = array_record_module.ArrayRecordWriter(base + '.tmp', 'group_size:1')  # random access
    for example in examples:
      record = {**example, 'label': label, 'utterance': item.id, 'speaker': item.speaker}
      writer.write(features.serialize_example(record))
      example_rows.append({'utterance': item.id, 'speaker': item.speaker, 'group': item.group,
                           'label': label, 'clip': example['clip'], 'copy': example['copy']})
  if writer is not None:
    writer.close()
    os.replace(base + '.tmp', base + '.array_record')
  part = {'ids': [item.id for item in items], 'rows': rows, 'examples': example_rows, 'stats': dict(stats)}
  _write_json(base + '.json', part)


def build(corpus: Corpus, spec: FeatureSpec, data_dir: str, *, corpus_key: str | None = None,
          utterances_per_shard: int = 256) -> Built:
  """Builds (or reuses) the arrays of `corpus` under `spec` below `data_dir`.

  Args:
    corpus: any corpus reader (synthetic or real).
    spec: the features to compute.
    data_dir: root of all builds; this one goes to `<data_dir>/<corpus_key>/<spec.key()>`.
    corpus_key: distinguishes corpora of the same name built with different
      parameters (e.g. synthetic seeds); defaults to `corpus.name`.
    utterances_per_shard: utterances per ArrayRecord shard, the unit of resumption.

  Raises:
    ValueError: no utterance of the corpus is usable (the manifest says why).
  """
  directory = os.path.join(os.path.abspath(data_dir), corpus_key or corpus.name, spec.key())
  if not os.path.exists(os.path.join(directory, 'examples.jsonl')):
    # One BLAS thread: the spectrograms' small matrix products ran 20x slower with
    # BLAS threads contending for the cores (24 vs 1.2 ms per utterance measured).
    with threadpoolctl.threadpool_limits(limits=1, user_api='blas'):
      _build(corpus, spec, directory, utterances_per_shard)
  with open(os.path.join(directory, 'examples.jsonl')) as f:
    examples = [json.loads(line) for line in f]
  with open(os.path.join(directory, 'manifest.json')) as f:
    manifest = json.load(f)
  source = tfds.builder_from_directory(directory).as_data_source()[SPLIT_NAME]
  if len(source) != len(examples):
    raise RuntimeError(f'{directory}: {len(source)} records but {len(examples)} example rows; delete it to rebuild.')
  return Built(source=source, examples=examples, class_names=tuple(manifest['class_names']),
               manifest=manifest, directory=directory)


def _build(corpus: Corpus, spec: FeatureSpec, directory: str, utterances_per_shard: int) -> None:
  work = os.path.join(directory, 'unfinished')
  os.makedirs(work, exist_ok=True)
  class_names = label_sets.class_names(spec.class_set, [corpus.canonical[l] for l in corpus.labels],
                                       merge_exc=spec.merge_exc)
  listed = list(corpus.utterances())  # records only (ids, paths, labels): small
  features = features_dict(spec)
  parts = []
  with tqdm(total=len(listed), desc=f'features {corpus.name} {spec.variant}', unit='utt') as progress:
    for start in range(0, len(listed), utterances_per_shard):
      items = listed[start:start + utterances_per_shard]
      base = os.path.join(work, f'part-{start // utterances_per_shard:05d}')
      if not os.path.exists(base + '.json'):
        _write_part(corpus, spec, class_names, items, base, features, progress)
      else:
        progress.update(len(items))
      with open(base + '.json') as f:
        part = json.load(f)
      if part['ids'] != [item.id for item in items]:
        raise RuntimeError(f'{base}.json was built from other utterances than the corpus lists now; '
                           f'delete {work} to start the build afresh.')
      parts.append((base, part))
  rows = [row for _, part in parts for row in part['rows']]
  example_rows = [row for _, part in parts for row in part['examples']]
  stats = sum((collections.Counter(part['stats']) for _, part in parts), collections.Counter())
  manifest = summarise(rows, example_rows, class_names, stats)
  _write_json(os.path.join(directory, 'manifest.json'), manifest)
  if not example_rows:
    raise ValueError(f'No usable utterance in corpus {corpus.name!r} ({len(rows)} listed, reasons '
                     f"{manifest['skipped_by_reason']}): see {directory}/manifest.json.")
  written = [(base, part) for base, part in parts if part['examples']]
  for index, (base, _) in enumerate(written):
    final = os.path.join(directory, _shard_name(index, len(written)))
    if not os.path.exists(final):  # else moved by a run interrupted while finishing
      os.replace(base + '.array_record', final)
  split = tfds.core.SplitInfo(name=SPLIT_NAME, shard_lengths=[len(part['examples']) for _, part in written],
                              num_bytes=0, filename_template=None)
  tfds.folder_dataset.write_metadata(data_dir=directory, features=features, split_infos=[split],
                                     check_data=False,  # the check reads through TensorFlow
                                     description=f'{corpus.name} {spec}')
  with open(os.path.join(directory, 'examples.tmp.jsonl'), 'w') as f:
    f.writelines(json.dumps(row) + '\n' for row in example_rows)
  os.replace(os.path.join(directory, 'examples.tmp.jsonl'), os.path.join(directory, 'examples.jsonl'))
  shutil.rmtree(work)
  print_manifest(manifest, directory)


def split_examples(examples: Sequence[dict[str, Any]], scheme: str, **kwargs) -> dict[str, Any]:
  """`splits.make_split` over the original records; augmented copies join their original in training.

  A copy never lands on the held-out side, nor on the training side when its
  original is held out (same utterance and clip), so no held-out sound leaks
  into training.
  """
  originals = [i for i, e in enumerate(examples) if not e.get('copy', 0)]
  split = splits.make_split([examples[i] for i in originals], scheme, **kwargs)
  train = [originals[i] for i in split['train']]
  trained = {(examples[i]['utterance'], examples[i]['clip']) for i in train}
  copies = [i for i, e in enumerate(examples) if e.get('copy', 0) and (e['utterance'], e['clip']) in trained]
  return {**split, 'train': sorted(train + copies), 'test': [originals[i] for i in split['test']]}


def summarise(rows, example_rows, class_names, stats) -> dict[str, Any]:
  kept = [r for r in rows if r['kept']]
  return {
      'utterances': len(rows),
      'kept': len(kept),
      'skipped': len(rows) - len(kept),
      'examples': len(example_rows),
      'class_names': list(class_names),
      'skipped_by_reason': dict(collections.Counter(_reason_kind(r['reason']) for r in rows if not r['kept'])),
      'examples_per_class': {class_names[k]: v for k, v in
                             sorted(collections.Counter(r['label'] for r in example_rows).items())},
      'examples_per_speaker': dict(sorted(collections.Counter(r['speaker'] for r in example_rows).items())),
      'video': dict(stats),
      'rows': rows,
  }


def _reason_kind(reason: str) -> str:
  """The reason without its particulars (file, line, values): 'malformed label line', 'ValueError', ..."""
  return re.split(r'[:\'"(\[{]', reason, maxsplit=1)[0].strip()


def print_manifest(manifest: dict[str, Any], directory: str) -> None:
  print(f"Built {manifest['examples']} examples from {manifest['kept']} of {manifest['utterances']} utterances "
        f"({manifest['skipped']} skipped) in {directory}")
  print(f"  per class:   {manifest['examples_per_class']}")
  print(f"  per speaker: {manifest['examples_per_speaker']}")
  if manifest['skipped_by_reason']:
    print(f"  skipped:     {manifest['skipped_by_reason']} (details in manifest.json)")
  if manifest['video']:
    print(f"  video:       {manifest['video']}")


def _write_json(path: str, obj: Any) -> None:
  """Writes atomically (temp name, then rename): a kill never leaves half a file."""
  with open(path + '.tmp', 'w') as f:
    json.dump(obj, f, indent=1)
  os.replace(path + '.tmp', path)
