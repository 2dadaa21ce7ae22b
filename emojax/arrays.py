"""Arrays: a corpus's features, as a `FeatureSpec` says, in ArrayRecord files with TFDS metadata.

`build` walks the corpus utterance by utterance (`features.utterance_examples`)
and streams the examples into ArrayRecord shards of `utterances_per_shard`
utterances, so its peak memory is that of one utterance, not of the corpus
(`tfds.core.GeneratorBasedBuilder` holds and sorts every example in memory).
A finished shard stays on disk: an interrupted build resumes at the first
unfinished one, and a finished build is reused. The TFDS metadata lets
`tfds.builder_from_directory(...).as_data_source()` read the records without TensorFlow.

Next to the records the build writes
  examples.jsonl  one line per record, in record order: utterance, speaker, group, label, clip, copy
  manifest.json   every utterance of the corpus, kept or skipped with the reason, and counts
"""
from __future__ import annotations

import collections
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds
import threadpoolctl
from array_record.python import array_record_module

from emojax import features, files
from emojax import progress as progress_bar
from emojax.corpora import labels as label_sets
from emojax.corpora.base import Corpus, Skipped

# Part of every build's directory name: bump it when the build computes different arrays for
# the same spec, so stale caches are not reused (2: video windows hold their last frame; 3: audio
# shorter than features.MIN_SECONDS is skipped).
BUILD_VERSION = 3
DATASET_NAME = 'emojax_arrays'
SPLIT_NAME = 'examples'


class UnusableCorpus(ValueError):
  """The corpus gives no example under these features (no usable file, or no video where it is needed)."""


@dataclasses.dataclass(frozen=True)
class Built:
  """A finished build: random-access records plus their metadata."""

  source: Any                         # TFDS ArrayRecord data source: source[i] -> dict of arrays
  examples: list[dict[str, Any]]      # record i's utterance, speaker, group, label, clip, copy
  class_names: tuple[str, ...]
  manifest: dict[str, Any]
  directory: str


def build_key(spec: features.FeatureSpec) -> str:
  """A readable, unique directory name for the build of `spec` (and this version of the build): it hashes only
  the fields the features read, so a field that changes nothing (the video's size in an audio-only build) shares
  the build."""
  fields = features.fields_read(spec)
  if fields.get('mel_bands') == features.DEFAULT_MEL_BANDS:  # builds made before the field existed keep their keys
    del fields['mel_bands']
  text = json.dumps({**fields, 'build_version': BUILD_VERSION}, sort_keys=True)
  return f'{spec.variant}_{spec.frontend}_{hashlib.sha1(text.encode()).hexdigest()[:10]}'


def features_dict(spec: features.FeatureSpec) -> tfds.features.FeaturesDict:
  """The TFDS features of one record (plain tensors and text: readable without TensorFlow)."""
  fields = {
      'audio': tfds.features.Tensor(shape=(*spec.audio_size, spec.audio_channels), dtype=np.float32),
      'label': tfds.features.Tensor(shape=(), dtype=np.int64),
      'clip': tfds.features.Tensor(shape=(), dtype=np.int64),
      'copy': tfds.features.Tensor(shape=(), dtype=np.int64),
      'utterance': tfds.features.Text(),
      'speaker': tfds.features.Text(),
  }
  if spec.with_video:
    fields['video'] = tfds.features.Tensor(shape=(spec.video_frames, *spec.video_size, 3), dtype=np.uint8)
  return tfds.features.FeaturesDict(fields)


def _shard_name(index: int, count: int) -> str:
  """TFDS's default file name template: {DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}."""
  return f'{DATASET_NAME}-{SPLIT_NAME}.array_record-{index:05d}-of-{count:05d}'


def _write_part(corpus: Corpus, spec: features.FeatureSpec, class_names: tuple[str, ...], items: Sequence[Any],
                base: str, schema: tfds.features.FeaturesDict, progress) -> None:
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
      examples = list(features.utterance_examples(corpus, item, spec, found))
    except features.DATA_ERRORS as error:
      rows.append({**row, 'kept': False, 'reason': f'{type(error).__name__}: {error}',
                   'source': item.audio_path or item.video_path or ''})
      continue
    seconds = found.pop('audio_ms') / 1000
    rows.append({**row, 'kept': True, 'clips': len({e['clip'] for e in examples}), 'seconds': seconds})
    stats.update(found)
    if writer is None:
      writer = array_record_module.ArrayRecordWriter(base + '.tmp', 'group_size:1')  # random access
    for example in examples:
      record = {**example, 'label': label, 'utterance': item.id, 'speaker': item.speaker}
      writer.write(schema.serialize_example(record))
      example_rows.append({'utterance': item.id, 'speaker': item.speaker, 'group': item.group,
                           'label': label, 'clip': example['clip'], 'copy': example['copy']})
  if writer is not None:
    writer.close()
    os.replace(base + '.tmp', base + '.array_record')
  part = {'ids': [item.id for item in items], 'rows': rows, 'examples': example_rows, 'stats': dict(stats)}
  files.write_json(base + '.json', part)


def build(corpus: Corpus, spec: features.FeatureSpec, data_dir: str, *, corpus_key: str | None = None,
          utterances_per_shard: int = 256) -> Built:
  """Builds (or reuses) the arrays of `corpus` under `spec` below `data_dir`.

  Args:
    corpus: any corpus reader (synthetic or real).
    spec: the features to compute.
    data_dir: root of all builds; this one goes to `<data_dir>/<corpus_key>/<build_key(spec)>`.
    corpus_key: distinguishes corpora of the same name built with different
      parameters (e.g. synthetic seeds); defaults to `corpus.name`.
    utterances_per_shard: utterances per ArrayRecord shard, the unit of resumption.

  Raises:
    UnusableCorpus: no utterance of the corpus is usable (the manifest says why), or the features
      need video and the corpus has none.
  """
  directory = os.path.join(os.path.abspath(data_dir), corpus_key or corpus.name, build_key(spec))
  if spec.with_video and getattr(corpus, 'audio_only', False):
    raise UnusableCorpus(f'{corpus.name} has no video, and these features include face video (a model that reads '
                         'it: fusion, video3d); use an audio model (cnn, cnn_rnn, cnn_lstm) or a corpus with video.')
  if not os.path.exists(os.path.join(directory, 'examples.jsonl')):
    # One builder at a time (the processes of a multi-process run, points of a sweep): the others
    # wait for it here and then read its build.
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, '.lock'), 'a') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      if not os.path.exists(os.path.join(directory, 'examples.jsonl')):
        # One BLAS thread: the spectrograms' matrix products are small, and BLAS threads
        # contending for the cores made them many times slower.
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


def _build(corpus: Corpus, spec: features.FeatureSpec, directory: str, utterances_per_shard: int) -> None:
  work = os.path.join(directory, 'unfinished')
  os.makedirs(work, exist_ok=True)
  # The shard size is not part of the build's identity: a resumed build keeps the size it began with.
  started = None
  if os.path.exists(os.path.join(work, 'build.json')):
    with open(os.path.join(work, 'build.json')) as f:
      started = json.load(f)
  if started and started['utterances_per_shard'] != utterances_per_shard:
    print(f"Resuming the build in {work} at the {started['utterances_per_shard']} utterances per shard it began "
          f'with (not {utterances_per_shard}).')
    utterances_per_shard = started['utterances_per_shard']
  elif not started:
    files.write_json(os.path.join(work, 'build.json'), {'utterances_per_shard': utterances_per_shard})
  class_names = label_sets.class_names(spec.class_set, [corpus.canonical[l] for l in corpus.labels],
                                       merge_exc=spec.merge_exc)
  listed = list(corpus.utterances())  # records only (ids, paths, labels): small
  schema = features_dict(spec)
  parts = []
  with progress_bar.bar(total=len(listed), desc=f'features {corpus.name} {spec.variant}', unit='utt') as progress:
    for start in range(0, len(listed), utterances_per_shard):
      items = listed[start:start + utterances_per_shard]
      base = os.path.join(work, f'part-{start // utterances_per_shard:05d}')
      if not os.path.exists(base + '.json'):
        _write_part(corpus, spec, class_names, items, base, schema, progress)
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
  files.write_json(os.path.join(directory, 'manifest.json'), manifest)
  if not example_rows:
    no_video = manifest['skipped_by_reason'].get('ValueError: no video')
    hint = (f' {no_video} had no video, and these features include face video: use an audio model (cnn, cnn_rnn, '
            'cnn_lstm) or add the video files.' if no_video else '')
    raise UnusableCorpus(f'No usable utterance in corpus {corpus.name!r} ({len(rows)} listed, reasons '
                         f"{manifest['skipped_by_reason']}).{hint} See {directory}/manifest.json.")
  written = [(base, part) for base, part in parts if part['examples']]
  for index, (base, _) in enumerate(written):
    final = os.path.join(directory, _shard_name(index, len(written)))
    if not os.path.exists(final):  # else moved by a run interrupted while finishing
      os.replace(base + '.array_record', final)
  split = tfds.core.SplitInfo(name=SPLIT_NAME, shard_lengths=[len(part['examples']) for _, part in written],
                              num_bytes=0, filename_template=None)
  tfds.folder_dataset.write_metadata(data_dir=directory, features=schema, split_infos=[split],
                                     check_data=False,  # the check reads through TensorFlow
                                     description=f'{corpus.name} {spec}')
  with open(os.path.join(directory, 'examples.tmp.jsonl'), 'w') as f:
    f.writelines(json.dumps(row) + '\n' for row in example_rows)
  os.replace(os.path.join(directory, 'examples.tmp.jsonl'), os.path.join(directory, 'examples.jsonl'))
  shutil.rmtree(work)
  print_manifest(manifest, directory)


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
      'long_utterances': {r['id']: r['seconds'] for r in kept if r.get('seconds', 0) > features.LONG_SECONDS},
      'rows': rows,
  }


def _reason_kind(reason: str) -> str:
  """The reason without its particulars (file, line, values): 'malformed label line', 'ValueError: too
  short', 'ValueError: no video', ..."""
  error = re.match(r'([A-Z]\w*(?:Error|Exception)): (.*)', reason)
  if error:
    message = re.split(r'[:\'"(\[{/\d]', error[2], maxsplit=1)[0].strip()
    return f'{error[1]}: {message}' if message else error[1]
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
  long = manifest.get('long_utterances')
  if long:
    longest = max(long, key=long.get)
    print(f'  long:        {len(long)} utterance(s) over {features.LONG_SECONDS:g} s, the longest {longest} '
          f'({long[longest]:.1f} s): clip variants cut them into many clips, full-utterance ones squeeze each '
          'into one image')

