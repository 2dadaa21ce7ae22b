"""Precompute: corpus -> features -> ArrayRecord files, through one TFDS builder.

Every corpus, the embedded synthetic one included, goes through `build`: it
walks the corpus utterance by utterance (memory does not grow with corpus
size), computes the configured features, and writes them with TFDS as
ArrayRecord (readable without TensorFlow). A build is cached: the same corpus
and feature spec reuse the files on disk.

Next to the records the build writes
  examples.jsonl  one line per record, in record order: utterance, speaker, group, label, clip
  manifest.json   every utterance of the corpus, kept or skipped with the reason, and counts
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import shutil
import zlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds
from tqdm.auto import tqdm

from emojax import audio, video
from emojax.corpora import labels as label_sets
from emojax.corpora.base import Corpus, Skipped, Utterance

# The paper's four dataset variants (Table 1): (3-second clips?, noise cleanup?).
VARIANTS = {'ds1': (False, False), 'ds2': (True, False), 'ds3': (False, True), 'ds4': (True, True)}


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

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise ValueError(f'Unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}.')
    if self.frontend not in ('faithful', 'native'):
      raise ValueError(f"Unknown front end {self.frontend!r}; expected 'faithful' or 'native'.")
    if self.video_crop not in ('fixed', 'face'):
      raise ValueError(f"Unknown video crop {self.video_crop!r}; expected 'fixed' or 'face'.")

  @property
  def audio_channels(self) -> int:
    return 3 if self.frontend == 'faithful' else 1

  def key(self) -> str:
    """A readable, unique directory name for this spec."""
    text = json.dumps(dataclasses.asdict(self), sort_keys=True)
    return f'{self.variant}_{self.frontend}_{hashlib.sha1(text.encode()).hexdigest()[:10]}'


@dataclasses.dataclass(frozen=True)
class Built:
  """A finished build: random-access records plus their metadata."""

  source: Any                         # TFDS ArrayRecord data source: source[i] -> dict of arrays
  examples: list[dict[str, Any]]      # record i's utterance, speaker, group, label, clip
  class_names: tuple[str, ...]
  manifest: dict[str, Any]
  directory: str


def audio_features(wave: np.ndarray, sr: int, spec: FeatureSpec) -> np.ndarray:
  if spec.frontend == 'faithful':
    return audio.faithful_spectrogram(wave, sr, size=spec.audio_size)
  return audio.native_spectrogram(wave, sr, size=spec.audio_size)


def utterance_examples(corpus: Corpus, utt: Utterance, spec: FeatureSpec,
                       stats: collections.Counter) -> Iterator[dict[str, Any]]:
  """The feature arrays of one utterance: one example per clip (one for full-utterance variants)."""
  clips_wanted, cleanup = VARIANTS[spec.variant]
  wave, sr = corpus.load_audio(utt)
  if wave.size == 0 or not np.any(wave):
    raise ValueError('empty or silent audio')
  if cleanup:
    wave = audio.denoise(wave, sr)
  if clips_wanted:
    rng = np.random.default_rng(zlib.crc32(utt.id.encode()))  # noise padding repeats across builds
    clips = audio.clip_waveform(wave, sr, seconds=spec.clip_seconds, rng=rng)
  else:
    clips = [wave]
  frames = fps = None
  if spec.with_video:
    loaded = corpus.load_video(utt)
    if loaded is None:
      raise ValueError('no video')
    frames, fps = loaded
  for index, clip in enumerate(clips):
    features = audio_features(clip, sr, spec)
    if not np.all(np.isfinite(features)):
      raise ValueError(f'non-finite audio features in clip {index}')
    example = {'audio': features.astype(np.float32), 'clip': index}
    if spec.with_video:
      if clips_wanted:  # the frames under this clip's time window
        first = int(round(index * spec.clip_seconds * fps))
        window = frames[first:first + max(1, int(round(spec.clip_seconds * fps)))]
        window = window if len(window) else frames[-1:]
      else:
        window = frames
      example['video'], found = video.video_clip(
          window, n_frames=spec.video_frames, size=spec.video_size, crop=spec.video_crop)
      if spec.video_crop == 'face':
        stats['face_found' if found else 'face_fallback_fixed_crop'] += 1
    yield example


class EmojaxArrays(tfds.core.GeneratorBasedBuilder):
  """TFDS builder of one (corpus, feature spec): a single split of all usable examples.

  Splits (speaker-independent, random, leave-one-group-out) are index lists over
  this split (see `emojax.splits`), so one build serves every split scheme.
  """

  VERSION = tfds.core.Version('1.0.0')

  def __init__(self, *, corpus: Corpus, spec: FeatureSpec, cache_dir: str, **kwargs):
    self._corpus = corpus
    self._spec = spec
    self._cache = UtteranceCache(cache_dir)
    self.class_names = label_sets.class_names(spec.class_set, tuple(corpus.canonical[l] for l in corpus.labels),
                                              merge_exc=spec.merge_exc)
    self.manifest_rows: list[dict[str, Any]] = []
    self.example_rows: list[dict[str, Any]] = []
    self.stats: collections.Counter = collections.Counter()
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    spec = self._spec
    features = {
        'audio': tfds.features.Tensor(shape=(*spec.audio_size, spec.audio_channels), dtype=np.float32),
        'label': tfds.features.Tensor(shape=(), dtype=np.int64),
        'clip': tfds.features.Tensor(shape=(), dtype=np.int64),
        'utterance': tfds.features.Text(),
        'speaker': tfds.features.Text(),
    }
    if spec.with_video:
      features['video'] = tfds.features.Tensor(shape=(spec.video_frames, *spec.video_size, 3), dtype=np.uint8)
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 disable_shuffling=True,  # record i is the i-th generated example
                                 description=f'{self._corpus.name} {spec}')

  def _split_generators(self, dl_manager):
    return {'examples': self._generate_examples()}

  def _generate_examples(self):
    listed = list(self._corpus.utterances())
    for item in tqdm(listed, desc=f'features {self._corpus.name} {self._spec.variant}', unit='utt'):
      if isinstance(item, Skipped):
        self.manifest_rows.append({'id': item.id, 'kept': False, 'reason': item.reason, 'source': item.source})
        continue
      canonical = self._corpus.canonical.get(item.label)
      label = label_sets.class_index(canonical, self.class_names, merge_exc=self._spec.merge_exc)
      row = {'id': item.id, 'speaker': item.speaker, 'group': item.group, 'label': item.label}
      if label is None:
        self.manifest_rows.append({**row, 'kept': False, 'reason': 'label not in class map'})
        continue
      cached = self._cache.get(item.id)
      if cached is None:
        stats = collections.Counter()
        try:
          examples = list(utterance_examples(self._corpus, item, self._spec, stats))
          row = {**row, 'kept': True, 'clips': len(examples)}
        except (ValueError, OSError, RuntimeError) as error:
          examples = []
          row = {**row, 'kept': False, 'reason': f'{type(error).__name__}: {error}',
                 'source': item.audio_path or item.video_path or ''}
        self._cache.put(item.id, row, examples, stats)
      else:
        row, examples, stats = cached
      self.manifest_rows.append(row)
      self.stats.update(stats)
      for example in examples:
        self.example_rows.append({'utterance': item.id, 'speaker': item.speaker, 'group': item.group,
                                  'label': label, 'clip': int(example['clip'])})
        yield f"{item.id}#{int(example['clip'])}", {**example, 'label': label, 'utterance': item.id,
                                                      'speaker': item.speaker}


class UtteranceCache:
  """Per-utterance results of an unfinished build: a rerun after a crash or kill resumes.

  TFDS writes a dataset in one go; this cache (one .npz of arrays plus one .json
  of manifest row and counters per utterance, no pickle) makes the work done
  before an interruption reusable. Files are written atomically (temp name, then
  rename), so a kill never leaves a half-written entry. Deleted after a build.
  """

  def __init__(self, directory: str):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)

  def _path(self, utterance_id: str) -> str:
    return os.path.join(self.directory, hashlib.sha1(utterance_id.encode()).hexdigest()[:20])

  def get(self, utterance_id: str):
    base = self._path(utterance_id)
    if not os.path.exists(base + '.json'):
      return None
    with open(base + '.json') as f:
      entry = json.load(f)
    examples = []
    if entry['clips']:
      with np.load(base + '.npz', allow_pickle=False) as arrays_file:
        examples = [{key: arrays_file[f'{i}/{key}'] for key in entry['keys']} for i in range(entry['clips'])]
    return entry['row'], examples, collections.Counter(entry['stats'])

  def put(self, utterance_id: str, row, examples, stats) -> None:
    base = self._path(utterance_id)
    if examples:
      with open(base + '.tmp.npz', 'wb') as f:
        np.savez(f, **{f'{i}/{key}': np.asarray(value) for i, ex in enumerate(examples) for key, value in ex.items()})
      os.replace(base + '.tmp.npz', base + '.npz')
    entry = {'row': row, 'clips': len(examples), 'keys': sorted(examples[0]) if examples else [], 'stats': stats}
    with open(base + '.tmp.json', 'w') as f:
      json.dump(entry, f)
    os.replace(base + '.tmp.json', base + '.json')  # the .json marks the entry complete


def build(corpus: Corpus, spec: FeatureSpec, data_dir: str, *, corpus_key: str | None = None) -> Built:
  """Builds (or reuses) the arrays of `corpus` under `spec` below `data_dir`.

  Args:
    corpus: any corpus reader (synthetic or real).
    spec: the features to compute.
    data_dir: root of all builds; this one goes to `<data_dir>/<corpus_key>/<spec.key()>`.
    corpus_key: distinguishes corpora of the same name built with different
      parameters (e.g. synthetic seeds); defaults to `corpus.name`.
  """
  directory = os.path.join(os.path.abspath(data_dir), corpus_key or corpus.name, spec.key())
  cache_dir = os.path.join(directory, 'unfinished')
  new_builder = lambda: EmojaxArrays(corpus=corpus, spec=spec, cache_dir=cache_dir, data_dir=directory,
                                     file_format='array_record')
  builder = new_builder()
  meta_dir = builder.data_dir
  if not os.path.exists(os.path.join(meta_dir, 'examples.jsonl')):
    if os.path.isdir(meta_dir):  # records written but the run died before the metadata: write them again
      shutil.rmtree(meta_dir)
      builder = new_builder()
    builder.download_and_prepare()
    manifest = summarise(builder.manifest_rows, builder.example_rows, builder.class_names, builder.stats)
    if not builder.example_rows:
      raise ValueError(f'No usable utterance in corpus {corpus.name!r}: see {meta_dir}/manifest.json.')
    _write_json(os.path.join(meta_dir, 'manifest.json'), manifest)
    with open(os.path.join(meta_dir, 'examples.jsonl'), 'w') as f:
      f.writelines(json.dumps(row) + '\n' for row in builder.example_rows)
    print_manifest(manifest, meta_dir)
    shutil.rmtree(cache_dir)
  with open(os.path.join(meta_dir, 'examples.jsonl')) as f:
    examples = [json.loads(line) for line in f]
  with open(os.path.join(meta_dir, 'manifest.json')) as f:
    manifest = json.load(f)
  source = builder.as_data_source()['examples']
  if len(source) != len(examples):
    raise RuntimeError(f'{meta_dir}: {len(source)} records but {len(examples)} example rows; delete it to rebuild.')
  return Built(source=source, examples=examples, class_names=tuple(builder.class_names),
               manifest=manifest, directory=meta_dir)


def summarise(rows, example_rows, class_names, stats) -> dict[str, Any]:
  kept = [r for r in rows if r['kept']]
  return {
      'utterances': len(rows),
      'kept': len(kept),
      'skipped': len(rows) - len(kept),
      'examples': len(example_rows),
      'skipped_by_reason': dict(collections.Counter(r['reason'].split(':')[0] for r in rows if not r['kept'])),
      'examples_per_class': {class_names[k]: v for k, v in
                             sorted(collections.Counter(r['label'] for r in example_rows).items())},
      'examples_per_speaker': dict(sorted(collections.Counter(r['speaker'] for r in example_rows).items())),
      'video': dict(stats),
      'rows': rows,
  }


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
  with open(path, 'w') as f:
    json.dump(obj, f, indent=1)
