r"""Builds the arrays a run config reads, once, prints the manifest and writes every split.

  python -m experiments.prepare --config=configs/emodb.py
  python -m experiments.prepare --config=configs/fusion.py:paper --config.corpus.name=iemocap \
      --config.corpus.root=/data/IEMOCAP_full_release --config.data.variant=ds1
  python -m experiments.prepare --config=configs/cnn.py:smoke

It takes the config of `experiments.run` (same file, presets and `--config.x=y`
overrides) and builds through the same `features.spec_from_config` and corpus
key, so `experiments.run` of that config reuses the build. An interrupted build
resumes where it stopped. Prints the manifest (every utterance kept or skipped,
with the reason) and writes, next to the records, the random 80/20 split and
every leave-one-group-out fold as JSON.

Real corpora are downloaded by hand (their licences need a request or a click):
  IEMOCAP   request the release at https://sail.usc.edu/iemocap/ (USC SAIL licence form); unpack
            IEMOCAP_full_release/ and pass it as --config.corpus.root (it holds Session1 ... Session5).
  RAVDESS   https://zenodo.org/record/1188976: Audio_Speech_Actors_01-24.zip (audio) and/or
            Video_Speech_Actor_NN.zip (audio-visual .mp4); unpack so Actor_NN/ folders sit in the root.
  CREMA-D   https://github.com/CheyneyComputerScience/CREMA-D (git lfs): AudioWAV/ and VideoFlash/
            under the root.
  Emo-DB    http://emodb.bilderbar.info/download/: unpack so wav/ sits in the root.
"""
import json
import os
import sys

from emojax import host

if __name__ == '__main__':
  host.reexec_with_hugepages()  # before the imports below, which would otherwise run in both processes

# pylint: disable=wrong-import-position
from absl import app, flags
from ml_collections import config_flags

from emojax import arrays, corpora, features, schema, splits
from experiments import fail
from experiments.configs import resolve_config_path

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Run config: configs/<model>.py[:preset].',
                                          lock_config=True)
_SHARD = flags.DEFINE_integer('utterances_per_shard', 256, 'Utterances per ArrayRecord shard (unit of resumption).')


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    schema.validate(config)
    built = arrays.build(corpora.get_corpus(config.corpus), features.spec_from_config(config), config.data.data_dir,
                         corpus_key=corpora.corpus_key(config.corpus), utterances_per_shard=_SHARD.value)
  except (schema.InvalidConfig, arrays.UnusableCorpus) as e:
    fail(e)
  arrays.print_manifest(built.manifest, built.directory)

  split_dir = os.path.join(built.directory, 'splits')
  os.makedirs(split_dir, exist_ok=True)
  written = {'random_80_20': splits.split_examples(built.examples, 'random', test_fraction=0.2, seed=config.seed)}
  groups = sorted({e['group'] for e in built.examples})
  if len(groups) > 1:  # leave-one-group-out: sessions (IEMOCAP), actors / speakers elsewhere
    for fold, group in enumerate(groups):
      written[f'leave_out_{group}'] = splits.split_examples(built.examples, 'group', fold=fold)
  for name, split in written.items():
    splits.write(split, os.path.join(split_dir, f'{name}.json'), built.examples)
    print(splits.describe(split, built.examples, built.class_names))
  print(f'Splits written to {split_dir}: {", ".join(sorted(written))}')
  print(json.dumps({'records': len(built.examples), 'directory': built.directory}))


if __name__ == '__main__':
  sys.argv = resolve_config_path(sys.argv)
  flags.mark_flag_as_required('config')
  app.run(main)
