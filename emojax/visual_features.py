"""Per-clip visual features (facial action units) read from CSV, and their pairing with corpus utterances.

Two layouts on disk:
  a table   `clip,<name>,<name>,...`: one row per clip, a clip-level vector (e.g. ../shared/data/ravdess-au/au.csv,
            OpenFace 2 action units summarised over each clip's frames by their publisher);
  a folder  of OpenFace 2 FeatureExtraction outputs, one `<clip key>.csv` per clip, one row per frame:
            `frame, face_id, timestamp, confidence, success, AU01_r, ..., AU45_r, AU01_c, ..., AU45_c` and
            possibly gaze_*, pose_*, x_*, ... columns. Only the AU columns are kept, and only frames with
            success == 1 (a frame where OpenFace found no face carries zeros, not a face).

A malformed file (bad number, NaN/inf, wrong row width, duplicate clip, missing or empty file) is a `ValueError`
naming the file, its line and the column: a broken input is fixed by whoever made it, not silently averaged in.
A well-formed OpenFace file in which no frame found a face is a fact about that clip, not a broken read: it goes
in `VisualFeatures.errors` with the reason, and the other clips are read.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re

import numpy as np

from emojax.corpora.base import Utterance

# OpenFace 2's action unit columns: AUxx_r intensities (0-5), AUxx_c presences (0 or 1 per frame).
_AU_COLUMN = re.compile(r'^AU(\d\d)_([rc])$')
# RAVDESS: an utterance id ('VV-EE-II-SS-RR-NN', the reader's take id) or a file name stem with the modality
# in front ('MM-VV-EE-II-SS-RR-NN', e.g. the audio file's 03-01-...).
_RAVDESS_ID = re.compile(r'^(?:(?P<modality>0[123])-)?(?P<take>(?P<channel>0[12])-\d\d-\d\d-\d\d-\d\d-\d\d)$')
_RAVDESS_AUDIO_VISUAL = '01'  # the modality of the audio-visual .mp4 whose name stems key the visual rows


@dataclasses.dataclass(frozen=True)
class VisualFeatures:
  """The visual features of a set of clips, keyed by clip.

  Attributes:
    names: the feature columns, in the order of each row's last axis.
    kind: 'vector' (a table: one (D,) row per clip) or 'sequence' (an OpenFace folder: (T, D) frames per clip).
    rows: clip key -> float32 array, read-only ((D,) for vectors, (T, D) for sequences, T >= 1).
    source: the file or folder read.
    errors: clip key -> why the clip has no row (e.g. no frame in which OpenFace found a face).
  """

  names: tuple[str, ...]
  kind: str
  rows: dict[str, np.ndarray]
  source: str
  errors: dict[str, str] = dataclasses.field(default_factory=dict)


def load(path: str) -> VisualFeatures:
  """The features at `path`: a .csv file is a table of clip vectors, a folder holds OpenFace per-clip CSVs."""
  if os.path.isdir(path):
    return _load_openface_folder(path)
  if not os.path.isfile(path):
    raise ValueError(f'{path}: no such file or folder (expected a clip table .csv or a folder of OpenFace .csv files).')
  if not path.lower().endswith('.csv'):
    raise ValueError(f'{path}: not a .csv file (expected a clip table .csv or a folder of OpenFace .csv files).')
  return _load_table(path)


def summarise(sequence: np.ndarray) -> np.ndarray:
  """The clip-level (D,) vector of a (T, D) frame sequence: the mean over frames of every column.

  The mean of an intensity (AUxx_r, 0-5) is the clip's average intensity, and the mean of a presence (AUxx_c, 0/1
  per frame) is the fraction of frames in which the unit is present: the same scales as the clip table's columns
  (intensities 0-5, presences as fractions 0-1), so a model trained on vectors can read a folder too. A maximum
  would rest on the single noisiest frame; the mean does not.
  """
  sequence = np.asarray(sequence)
  if sequence.ndim != 2 or sequence.shape[0] == 0:
    raise ValueError(f'summarise expects a (T, D) sequence with T >= 1 frames, not shape {sequence.shape}.')
  return sequence.astype(np.float64).mean(axis=0).astype(np.float32)


def to_vectors(features: VisualFeatures) -> VisualFeatures:
  """`features` with every sequence summarised to a clip vector (vectors are returned as they are)."""
  if features.kind == 'vector':
    return features
  rows = {key: _read_only(summarise(frames)) for key, frames in features.rows.items()}
  return dataclasses.replace(features, kind='vector', rows=rows)


def key_for(corpus_name: str, utterance_id: str) -> str:
  """The visual clip key of a corpus utterance id.

  RAVDESS: the audio-visual file's name stem `01-VV-EE-II-SS-RR-NN`, from the reader's take id `VV-EE-II-SS-RR-NN`
  or any file name (or path) of the take, e.g. the audio's `03-01-EE-II-SS-RR-NN.flac`. Other corpora: the id's
  base name without an extension (their visual files are named after the utterance).
  """
  stem = os.path.splitext(os.path.basename(utterance_id))[0]
  if corpus_name.lower() != 'ravdess':
    return stem
  fields = _RAVDESS_ID.match(stem)
  if fields is None:
    raise ValueError(f'{utterance_id!r} is not a RAVDESS utterance id: expected VV-EE-II-SS-RR-NN with channel VV '
                     '01 or 02 (or a file name MM-VV-EE-II-SS-RR-NN.ext with modality MM 01, 02 or 03).')
  return f'{_RAVDESS_AUDIO_VISUAL}-{fields["take"]}'


def lookup(features: VisualFeatures, corpus_name: str, utterance: Utterance | str) -> np.ndarray | None:
  """The row of an utterance (an `Utterance` or its id), or None when its clip has none (the caller says why)."""
  utterance_id = utterance.id if isinstance(utterance, Utterance) else utterance
  return features.rows.get(key_for(corpus_name, utterance_id))


# Reading.

def _read_csv(path: str) -> list[tuple[int, list[str]]]:
  """(1-based line number, fields) of every non-blank line of a CSV file; the header is line 1."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    lines = []
    start = 1
    for fields in reader:
      if any(field.strip() for field in fields):
        lines.append((start, fields))
      start = reader.line_num + 1  # a quoted field may span lines: a record starts after the previous one ends
  if not lines:
    raise ValueError(f'{path}: empty file (expected a header line).')
  return lines


def _header(path: str, line: int, fields: list[str]) -> list[str]:
  """The header's column names, stripped (OpenFace writes ', ' between them)."""
  names = [field.strip() for field in fields]
  seen = set()
  for number, name in enumerate(names, start=1):
    if not name:
      raise ValueError(f'{path}, line {line}, column {number}: empty column name.')
    if name in seen:
      raise ValueError(f'{path}, line {line}, column {name!r}: duplicate column name.')
    seen.add(name)
  return names


def _check_width(path: str, line: int, fields: list[str], header: list[str]) -> None:
  if len(fields) < len(header):
    raise ValueError(f'{path}, line {line}: {len(fields)} fields where the header has {len(header)} '
                     f'(no value for column {header[len(fields)]!r}).')
  if len(fields) > len(header):
    raise ValueError(f'{path}, line {line}: {len(fields)} fields where the header has {len(header)} '
                     f'(a value after the last column {header[-1]!r}).')


def _number(path: str, line: int, column: str, text: str) -> float:
  """A finite float32 value, or a ValueError naming where the field is."""
  try:
    value = float(text)
  except ValueError:
    raise ValueError(f'{path}, line {line}, column {column!r}: {text.strip()!r} is not a number.') from None
  with np.errstate(over='ignore'):
    fits = np.isfinite(np.float32(value))
  if not fits:
    what = 'not finite' if not np.isfinite(value) else 'too large for float32'
    raise ValueError(f'{path}, line {line}, column {column!r}: {text.strip()!r} is {what}.')
  return value


def _read_only(array: np.ndarray) -> np.ndarray:
  array.flags.writeable = False
  return array


def _load_table(path: str) -> VisualFeatures:
  lines = _read_csv(path)
  header_line, header_fields = lines[0]
  header = _header(path, header_line, header_fields)
  if header[0] != 'clip':
    hint = ' (an OpenFace per-frame file? load the folder of such files)' if 'success' in header else ''
    raise ValueError(f'{path}, line {header_line}, column 1: the first column is {header[0]!r}, expected "clip"{hint}.')
  if len(header) < 2:
    raise ValueError(f'{path}, line {header_line}: no feature column after "clip".')
  if len(lines) == 1:
    raise ValueError(f'{path}: no clip rows after the header.')
  rows, first_line = {}, {}
  for line, fields in lines[1:]:
    _check_width(path, line, fields, header)
    key = fields[0].strip()
    if not key:
      raise ValueError(f"{path}, line {line}, column 'clip': empty clip key.")
    if key in rows:
      raise ValueError(f"{path}, line {line}, column 'clip': duplicate clip {key!r} (first on line {first_line[key]}).")
    values = [_number(path, line, column, text) for column, text in zip(header[1:], fields[1:])]
    rows[key] = _read_only(np.asarray(values, dtype=np.float32))
    first_line[key] = line
  return VisualFeatures(names=tuple(header[1:]), kind='vector', rows=rows, source=path)


def _au_order(name: str) -> tuple[int, int]:
  """OpenFace's order: every intensity (_r) by unit number, then every presence (_c)."""
  number, kind = _AU_COLUMN.match(name).groups()
  return (0 if kind == 'r' else 1, int(number))


def _load_openface_folder(folder: str) -> VisualFeatures:
  files = sorted(name for name in os.listdir(folder)
                 if not name.startswith('.') and name.lower().endswith('.csv')
                 and os.path.isfile(os.path.join(folder, name)))
  if not files:
    raise ValueError(f'{folder}: no .csv files (expected one OpenFace FeatureExtraction .csv per clip).')
  names, names_file = None, None
  rows, errors, files_of = {}, {}, {}
  for file_name in files:
    path = os.path.join(folder, file_name)
    key = os.path.splitext(file_name)[0]
    if key in files_of:
      raise ValueError(f'{path}: duplicate clip {key!r} (also {files_of[key]}).')
    files_of[key] = path
    file_names, frames, problem = _read_openface_file(path)
    if names is None:
      names, names_file = file_names, path
    elif file_names != names:
      missing = [n for n in names if n not in file_names]
      extra = [n for n in file_names if n not in names]
      raise ValueError(f'{path}, line 1: its AU columns differ from those of {names_file} '
                       f'(missing {missing}, extra {extra}).')
    if problem is not None:
      errors[key] = problem
    else:
      rows[key] = _read_only(frames)
  return VisualFeatures(names=names, kind='sequence', rows=rows, source=folder, errors=errors)


def _read_openface_file(path: str) -> tuple[tuple[str, ...], np.ndarray | None, str | None]:
  """(AU column names, (T, D) frames with success == 1, or None and why the clip has none) of one OpenFace CSV."""
  lines = _read_csv(path)
  header_line, header_fields = lines[0]
  header = _header(path, header_line, header_fields)
  if 'success' not in header:
    raise ValueError(f'{path}, line {header_line}: no "success" column (not an OpenFace FeatureExtraction file?).')
  columns = sorted((i for i, name in enumerate(header) if _AU_COLUMN.match(name)), key=lambda i: _au_order(header[i]))
  if not columns:
    raise ValueError(f'{path}, line {header_line}: no AU column (AUxx_r / AUxx_c).')
  names = tuple(header[i] for i in columns)
  success = header.index('success')
  frames = []
  for line, fields in lines[1:]:
    _check_width(path, line, fields, header)
    found = _number(path, line, 'success', fields[success])
    if found not in (0.0, 1.0):
      raise ValueError(f"{path}, line {line}, column 'success': {fields[success].strip()!r} is not 0 or 1.")
    if found == 0.0:  # no face in this frame: its values are placeholders, neither read nor checked
      continue
    frames.append([_number(path, line, header[i], fields[i]) for i in columns])
  if not frames:
    why = 'no frame rows' if len(lines) == 1 else f'no frame with success == 1 among {len(lines) - 1}'
    return names, None, f'{why} (OpenFace found no face in {path})'
  return names, np.asarray(frames, dtype=np.float32), None
