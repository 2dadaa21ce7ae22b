r"""Precomputes a corpus's features into ArrayRecord files once, and writes its splits.

  python -m experiments.prepare --corpus=iemocap --corpus_dir=/data/IEMOCAP_full_release --variant=ds1
  python -m experiments.prepare --corpus=ravdess --corpus_dir=../shared/data/ravdess --variant=ds2 \
      --frontend=faithful --audio_size=200,300 --no_video
  python -m experiments.prepare --corpus=synthetic --variant=ds2

A run (`experiments.run`) with the same corpus and feature settings reuses the
build. An interrupted build resumes where it stopped. Prints the manifest
(every utterance kept or skipped, with the reason) and writes, next to the
records, the random 80/20 split and every speaker-independent fold as JSON.

Real corpora are downloaded by hand (their licences need a request or a click):
  IEMOCAP   request the release at https://sail.usc.edu/iemocap/ (USC SAIL licence form); unpack
            IEMOCAP_full_release/ and pass it as --corpus_dir (it holds Session1 ... Session5).
  RAVDESS   https://zenodo.org/record/1188976: Audio_Speech_Actors_01-24.zip (audio) and/or
            Video_Speech_Actor_NN.zip (audio-visual .mp4); unpack so Actor_NN/ folders sit in --corpus_dir.
  CREMA-D   https://github.com/CheyneyComputerScience/CREMA-D (git lfs): AudioWAV/ and VideoFlash/
            under --corpus_dir.
  Emo-DB    http://emodb.bilderbar.info/download/: unpack so wav/ sits in --corpus_dir.
"""
import json
import os

from emojax import host

if __name__ == '__main__':
  host.reexec_with_hugepages()  # before the imports below (4 s), which would otherwise run in both processes

# pylint: disable=wrong-import-position
from absl import app, flags

from emojax import arrays, corpora, splits
from experiments.configs import common

_CORPUS = flags.DEFINE_enum('corpus', None, sorted(corpora.READERS), 'Corpus reader.')
_CORPUS_DIR = flags.DEFINE_string('corpus_dir', '', 'Folder of a real corpus (manual download).')
_IEMOCAP_AUDIO_SOURCE = flags.DEFINE_enum('iemocap_audio_source', 'sentences', ['sentences', 'dialog'],
                                          'IEMOCAP: sentences/wav files, or cut the dialog wav by the label times.')
_DATA_DIR = flags.DEFINE_string('data_dir', 'data', 'Root of the precomputed arrays.')
_VARIANT = flags.DEFINE_enum('variant', 'ds2', sorted(arrays.VARIANTS), 'The paper\'s dataset variant.')
_FRONTEND = flags.DEFINE_enum('frontend', 'native', ['native', 'faithful'], 'Spectrogram front end.')
_AUDIO_SIZE = flags.DEFINE_list('audio_size', ['64', '96'], 'Spectrogram rows,columns.')
_CLASS_SET = flags.DEFINE_enum('class_set', '4class', ['4class', '3class', 'all'], 'Classes kept.')
_MERGE_EXC = flags.DEFINE_bool('merge_exc', False, "IEMOCAP: count 'exc' as 'hap'.")
_NO_VIDEO = flags.DEFINE_bool('no_video', False, 'Audio only (required for audio-only corpora).')
_VIDEO_CROP = flags.DEFINE_enum('video_crop', 'fixed', ['fixed', 'face'], 'Face region crop.')
_VIDEO_SIZE = flags.DEFINE_list('video_size', ['60', '100'], 'Frame rows,columns.')
_VIDEO_FRAMES = flags.DEFINE_integer('video_frames', 20, 'Frames per clip.')
_CLIP_SECONDS = flags.DEFINE_float('clip_seconds', 3.0, 'Clip length of the clipped variants (ds2, ds4).')
_AUGMENT_COPIES = flags.DEFINE_integer('augment_copies', 0, 'Extra copies of each clip with a faint tone sweep '
                                       'mixed in (used on the training side only).')
_SHARD = flags.DEFINE_integer('utterances_per_shard', 256, 'Utterances per ArrayRecord shard (unit of resumption).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the random split.')


def main(argv):
  del argv
  # The run configs' corpus options (reader defaults), so a run with the same corpus reuses this build.
  corpus_config = common.base_config('fusion', None).corpus
  corpus_config.update(name=_CORPUS.value, root=_CORPUS_DIR.value,
                       iemocap_audio_source=_IEMOCAP_AUDIO_SOURCE.value)
  spec = arrays.FeatureSpec(
      variant=_VARIANT.value, frontend=_FRONTEND.value, audio_size=tuple(map(int, _AUDIO_SIZE.value)),
      clip_seconds=_CLIP_SECONDS.value, class_set=_CLASS_SET.value, merge_exc=_MERGE_EXC.value,
      with_video=not _NO_VIDEO.value, video_frames=_VIDEO_FRAMES.value, video_size=tuple(map(int, _VIDEO_SIZE.value)),
      video_crop=_VIDEO_CROP.value, augment_copies=_AUGMENT_COPIES.value)
  built = arrays.build(corpora.get_corpus(corpus_config), spec, _DATA_DIR.value,
                       corpus_key=corpora.corpus_key(corpus_config), utterances_per_shard=_SHARD.value)
  arrays.print_manifest(built.manifest, built.directory)

  split_dir = os.path.join(built.directory, 'splits')
  os.makedirs(split_dir, exist_ok=True)
  written = {'random_80_20': arrays.split_examples(built.examples, 'random', test_fraction=0.2, seed=_SEED.value)}
  groups = sorted({e['group'] for e in built.examples})
  if len(groups) > 1:  # leave-one-group-out: sessions (IEMOCAP), actors / speakers elsewhere
    for fold, group in enumerate(groups):
      written[f'leave_out_{group}'] = arrays.split_examples(built.examples, 'group', fold=fold)
  for name, split in written.items():
    splits.write(split, os.path.join(split_dir, f'{name}.json'), built.examples)
    print(splits.describe(split, built.examples, built.class_names))
  print(f'Splits written to {split_dir}: {", ".join(sorted(written))}')
  print(json.dumps({'records': len(built.examples), 'directory': built.directory}))


if __name__ == '__main__':
  flags.mark_flag_as_required('corpus')
  app.run(main)
