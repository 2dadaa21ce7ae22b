r"""Feature extraction speed and memory: emojax's front ends against the authors' matplotlib route.

  python -m experiments.feature_benchmark                    # throughput on real files (Emo-DB / RAVDESS)
  python -m experiments.feature_benchmark --files=20         # fewer files
  python -m experiments.feature_benchmark --memory           # peak memory of builds of N and 10 N utterances

Throughput: each method runs in its own child process over the same files
(read from disk, waveform -> image array), so its peak memory (`ru_maxrss`,
the child's RSS high-water mark) is its own. Methods:
  logmel       `audio.logmel_spectrogram`, 64x96 log-mel, 1 channel
  faithful     `audio.faithful_spectrogram`, 200x300 RGB: the paper's image via a colormap lookup
  matplotlib   the authors' way: librosa specshow (seismic, vmin/vmax +-60 dB, no axes) drawn into a
               figure, saved as a PNG file, reloaded with PIL, top 60% cropped, resized to 200x300,
               ImageNet-normalised
Files: ../shared/data/emodb/wav, else ../shared/data/ravdess, else generated tones.

--memory: `arrays.build` of a generated corpus (tones with noise, side-by-side
video frames, paper-sized 20x60x100 clips) of N and of 10 N utterances, each in
a child process; the peak RSS should not grow with N because records are
streamed to disk utterance by utterance.

Writes feature_benchmark.{json,md} (or feature_memory.{json,md}) under --out.
"""
from __future__ import annotations

import glob
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from typing import Any, Iterator

import numpy as np
from absl import app, flags

_FILES = flags.DEFINE_integer('files', 60, 'Audio files per throughput method.')
_OUT = flags.DEFINE_string('out', 'benchmarks', 'Folder for the JSON and markdown results.')
_MEMORY = flags.DEFINE_bool('memory', False, 'Measure the peak memory of builds of N and 10 N utterances.')
_UTTERANCES = flags.DEFINE_integer('utterances', 40, 'N, the smaller corpus of --memory.')
_BLAS_THREADS = flags.DEFINE_integer('blas_threads', 1, 'OPENBLAS/OMP threads of each child (0: library default). '
                                     'Per-utterance work is small: on a busy machine more BLAS threads make '
                                     'the log-mel slower.')
_CHILD = flags.DEFINE_string('child', '', 'Internal: run one measurement (a method, or build:<N>) and print JSON.')

METHODS = ('logmel', 'faithful', 'matplotlib')
_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), '..', 'shared', 'data')


def audio_files(limit: int) -> tuple[list[str], str]:
  """Up to `limit` real recordings and where they come from; empty when none are on this machine."""
  for pattern, name in (('emodb/wav/*.wav', 'Emo-DB wav (2.0 s, 22.05 kHz)'),
                        ('ravdess/Actor_*/*.flac', 'RAVDESS flac (3-5 s, 16 kHz)')):
    found = sorted(glob.glob(os.path.join(_DATA, pattern)))
    if found:
      # Evenly spread over the corpus (speakers and emotions), not the first speaker only.
      return [found[i] for i in np.linspace(0, len(found) - 1, min(limit, len(found))).astype(int)], name
  return [], 'generated tones (no real recordings on this machine)'


def matplotlib_image(wave: np.ndarray, sr: int, png_path: str) -> np.ndarray:
  """The authors' pipeline: plot the dB spectrogram, save a PNG, reload it, crop, resize, normalise."""
  import librosa
  import librosa.display
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from PIL import Image

  from emojax import audio

  wave = librosa.resample(wave, orig_sr=sr, target_sr=44100) if sr != 44100 else wave
  db = librosa.amplitude_to_db(np.abs(librosa.stft(wave, n_fft=2048, hop_length=512)), ref=1.0)
  figure = plt.figure(figsize=(3, 2), dpi=100)  # 300x200 pixels
  axes = figure.add_axes([0, 0, 1, 1])
  librosa.display.specshow(db, sr=44100, hop_length=512, cmap='seismic', vmin=-60, vmax=60, ax=axes)
  axes.set_axis_off()
  figure.savefig(png_path, dpi=100)
  plt.close(figure)
  with Image.open(png_path) as png:
    image = png.convert('RGB')
    width, height = image.size
    image = image.crop((0, int(0.6 * height), width, height)).resize((300, 200), Image.BILINEAR)
  pixels = np.asarray(image, np.float32) / 255.0
  return (pixels - audio.IMAGENET_MEAN) / audio.IMAGENET_STD


def _tone(seed: int, seconds: float, sr: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  wave = 0.3 * np.sin(2 * np.pi * rng.uniform(150, 600) * t) + 0.01 * rng.normal(size=t.size)
  return wave.astype(np.float32)


def measure_method(method: str, limit: int) -> dict[str, Any]:
  """Runs one method over the files (in this process) and returns its throughput and peak memory."""
  from emojax import audio

  files, origin = audio_files(limit)
  waves: Iterator[tuple[np.ndarray, int]]
  if files:
    waves = (audio.load_waveform(path) for path in files)
  else:
    waves = ((_tone(i, 3.0, 16000), 16000) for i in range(limit))
  compute = {
      'logmel': lambda wave, sr, _: audio.logmel_spectrogram(wave, sr, size=(64, 96)),
      'faithful': lambda wave, sr, _: audio.faithful_spectrogram(wave, sr, size=(200, 300)),
      'matplotlib': matplotlib_image,
  }[method]
  with tempfile.TemporaryDirectory() as folder:
    # One warm-up utterance (imports, colormap and filter-bank caches) outside the timing.
    first = audio.load_waveform(files[0]) if files else (_tone(0, 3.0, 16000), 16000)
    compute(*first, os.path.join(folder, 'warmup.png'))
    start = time.perf_counter()
    count = 0
    for i, (wave, sr) in enumerate(waves):
      image = compute(wave, sr, os.path.join(folder, f'{i}.png'))
      count += 1
    seconds = time.perf_counter() - start
  return {'method': method, 'utterances': count, 'seconds': seconds, 'utterances_per_s': count / seconds,
          'shape': list(image.shape), 'peak_rss_mb': _peak_rss_mb(), 'files': origin}


class ToneCorpus:
  """A generated audio-visual corpus (a `Corpus`): every signal is made on demand from the utterance id.

  Utterances last 2-7 s (so 1-2 clips of 3 s), four emotions, four speakers,
  side-by-side 30 fps 120x320 video; nothing is held between utterances.
  """

  name = 'tones'
  labels = ('neu', 'hap', 'sad', 'ang')
  canonical = {label: label for label in labels}

  def __init__(self, size: int):
    self.size = size

  def utterances(self):
    from emojax.corpora.base import Utterance
    for i in range(self.size):
      yield Utterance(id=f'utt{i:06d}', speaker=f'spk{i % 4}', group=f'spk{i % 4}', label=self.labels[i % 4],
                      video_side='left' if i % 2 else 'right')

  def _seconds(self, utt) -> float:
    return 2.0 + 5.0 * (zlib.crc32(utt.id.encode()) % 1000) / 1000

  def load_audio(self, utt):
    return _tone(zlib.crc32(utt.id.encode()), self._seconds(utt), 16000), 16000

  def load_video(self, utt):
    from emojax import video
    rng = np.random.default_rng(zlib.crc32(utt.id.encode()))
    frames = rng.integers(0, 255, size=(int(self._seconds(utt) * 30), 120, 320, 3), dtype=np.uint8)
    return video.speaker_half(frames, utt.video_side), 30.0


def measure_build(size: int) -> dict[str, Any]:
  """Builds the generated corpus of `size` utterances (in this process) and returns its peak memory."""
  from emojax import arrays, features

  spec = features.FeatureSpec(variant='ds2', frontend='logmel', audio_size=(64, 96), video_frames=20,
                              video_size=(60, 100))
  with tempfile.TemporaryDirectory() as data_dir:
    before = _peak_rss_mb()
    start = time.perf_counter()
    built = arrays.build(ToneCorpus(size), spec, data_dir, utterances_per_shard=64)
    seconds = time.perf_counter() - start
    record_bytes = sum(os.path.getsize(p) for p in glob.glob(os.path.join(built.directory, '*array_record*')))
    return {'utterances': size, 'examples': len(built.examples), 'records_mb': record_bytes / 2**20,
            'seconds': seconds, 'peak_rss_mb_before_build': before, 'peak_rss_mb': _peak_rss_mb()}


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _child(argument: str) -> dict[str, Any]:
  command = [sys.executable, '-m', 'experiments.feature_benchmark', f'--child={argument}',
             f'--files={_FILES.value}']
  env = dict(os.environ)
  if _BLAS_THREADS.value:
    env.update(OPENBLAS_NUM_THREADS=str(_BLAS_THREADS.value), OMP_NUM_THREADS=str(_BLAS_THREADS.value))
  result = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if result.returncode:
    raise RuntimeError(f'{" ".join(command)} failed:\n{result.stderr[-3000:]}')
  return json.loads(result.stdout.strip().splitlines()[-1])


def _write(name: str, results: dict[str, Any], table: list[str]) -> None:
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, f'{name}.json'), 'w') as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(_OUT.value, f'{name}.md'), 'w') as f:
    f.write('\n'.join(table) + '\n')
  print('\n'.join(table))
  print(f'\nWritten: {_OUT.value}/{name}.json, {_OUT.value}/{name}.md')


def main(argv):
  del argv
  if _CHILD.value:
    kind, _, size = _CHILD.value.partition(':')
    print(json.dumps(measure_build(int(size)) if kind == 'build' else measure_method(kind, _FILES.value)))
    return
  threads = _BLAS_THREADS.value or 'default'
  machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, '
             f'BLAS threads {threads}')
  if _MEMORY.value:
    runs = [_child(f'build:{size}') for size in (_UTTERANCES.value, 10 * _UTTERANCES.value)]
    table = ['# Peak memory of a feature build against corpus size', '',
             f'Generated corpus (`ToneCorpus`: 2-7 s tones, side-by-side video), variant ds2, logmel 64x96 '
             f'log-mel + 20x60x100 video per 3-s clip, {machine}. Each build in its own process; '
             'peak RSS = `ru_maxrss`.', '',
             '| utterances | records | ArrayRecord MB | build s | peak RSS MB (after imports) | peak RSS MB |',
             '|---:|---:|---:|---:|---:|---:|']
    table += [f"| {r['utterances']} | {r['examples']} | {r['records_mb']:.0f} | {r['seconds']:.1f} | "
              f"{r['peak_rss_mb_before_build']:.0f} | {r['peak_rss_mb']:.0f} |" for r in runs]
    growth = runs[1]['peak_rss_mb'] - runs[0]['peak_rss_mb']
    table += ['', f"10x the utterances ({runs[1]['records_mb'] / max(runs[0]['records_mb'], 1e-9):.1f}x the data) "
              f'changed the peak RSS by {growth:+.0f} MB.']
    _write('feature_memory', {'machine': machine, 'runs': runs}, table)
    return
  runs = [_child(method) for method in METHODS]
  table = ['# Feature extraction: emojax front ends vs the authors\' matplotlib route', '',
           f"{runs[0]['utterances']} files of {runs[0]['files']}, one process per method, {machine}. "
           'Time covers reading the file and making the image array (after one warm-up file).', '',
           '| method | output | utterances/s | peak RSS MB |', '|---|---|---:|---:|']
  table += [f"| {r['method']} | {'x'.join(map(str, r['shape']))} | {r['utterances_per_s']:.1f} | "
            f"{r['peak_rss_mb']:.0f} |" for r in runs]
  by_method = {r['method']: r for r in runs}
  table += ['', f"faithful is {by_method['faithful']['utterances_per_s'] / by_method['matplotlib']['utterances_per_s']:.1f}x "
            'the matplotlib route (same colours, no figure or PNG).']
  _write('feature_benchmark', {'machine': machine, 'runs': runs}, table)


if __name__ == '__main__':
  app.run(main)
