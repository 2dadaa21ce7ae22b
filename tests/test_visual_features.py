"""Per-clip visual features: generated clip tables and OpenFace folders in their exact layouts, every malformed
input, the pairing of utterance ids with clip keys, and the real RAVDESS action units in ../shared/data."""
import csv
import os
import re

import numpy as np
import pytest

from emojax import visual_features as vf
from emojax.corpora.base import Utterance
from emojax.corpora.ravdess import RavdessCorpus

DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data'))

# OpenFace 2's action units: 17 intensities, 18 presences (AU28 has a presence only).
AU_R = tuple(f'AU{n:02d}_r' for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45))
AU_C = tuple(f'AU{n:02d}_c' for n in (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 28, 45))
AU = AU_R + AU_C
# Some of the other columns FeatureExtraction writes between `success` and the AUs (gaze, head pose, landmarks).
OTHER = (('gaze_0_x', 'gaze_0_y', 'gaze_0_z', 'gaze_angle_x', 'gaze_angle_y', 'pose_Tx', 'pose_Ty', 'pose_Tz',
          'pose_Rx', 'pose_Ry', 'pose_Rz') + tuple(f'x_{i}' for i in range(3)) + tuple(f'y_{i}' for i in range(3))
         + ('p_scale',))


def write_openface_csv(path, aus, success, *, sep=', ', other=OTHER, au_names=AU):
  """An OpenFace 2 FeatureExtraction CSV: `aus` (T, len(au_names)) values, `success` (T,) 0/1 per frame.

  OpenFace separates every field, header included, by ', '; `sep=','` writes the variant without spaces.
  Frames without a face carry zeros in every AU column, as OpenFace writes them.
  """
  header = ('frame', 'face_id', 'timestamp', 'confidence', 'success') + tuple(other) + tuple(au_names)
  lines = [sep.join(header)]
  for t, (values, ok) in enumerate(zip(aus, success)):
    values = values if ok else [0.0] * len(au_names)
    fields = [str(t + 1), '0', f'{t / 30:.3f}', '0.98' if ok else '0.00', str(int(ok))]
    fields += [f'{0.5 * i:.3f}' for i in range(len(other))] + [repr(float(v)) for v in values]
    lines.append(sep.join(fields))
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def write_table(path, rows, names=AU, *, sep=','):
  """A clip table: header `clip,<names>`, then one `key,values...` line per clip (values as given, text or numbers)."""
  lines = [sep.join(('clip',) + tuple(names))]
  lines += [sep.join([key] + [v if isinstance(v, str) else repr(float(v)) for v in values]) for key, values in rows]
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')


def au_values(rng, shape):
  """Intensities 0-5 on the first 17 columns and presences 0/1 on the last 18, rounded to be exact in float32."""
  values = np.round(rng.uniform(0, 5, shape), 3)
  values[..., len(AU_R):] = rng.integers(0, 2, shape[:-1] + (len(AU_C),))
  return values


def real_data(*names):
  for name in names:
    path = os.path.join(DATA, name)
    if not os.path.exists(path):
      pytest.skip(f'real recordings not available: {path} is absent (see ../shared/data/README.md)')
  return [os.path.join(DATA, name) for name in names]


# Clip tables.

@pytest.mark.parametrize('sep', [',', ', '])
def test_table_values_read_back_exactly(tmp_path, sep):
  rng = np.random.default_rng(0)
  keys = ['01-01-03-01-01-01-12', '01-01-05-02-02-01-12', 'clip with spaces']
  values = au_values(rng, (len(keys), len(AU)))
  path = str(tmp_path / 'au.csv')
  write_table(path, zip(keys, values), sep=sep)
  features = vf.load(path)
  assert features.names == AU and features.kind == 'vector' and features.source == path and features.errors == {}
  assert list(features.rows) == keys
  for key, expected in zip(keys, values):
    row = features.rows[key]
    assert row.dtype == np.float32 and row.shape == (len(AU),)
    np.testing.assert_array_equal(row, expected.astype(np.float32))
    assert not row.flags.writeable  # the frozen dataclass's arrays cannot be changed behind its back


def test_table_keeps_any_feature_columns_in_file_order_and_skips_blank_lines(tmp_path):
  path = tmp_path / 'features.csv'
  path.write_text('clip,b,a\n\nx,1.5,-2\n\n y ,3e2, 4 \n\n')
  features = vf.load(str(path))
  assert features.names == ('b', 'a')
  np.testing.assert_array_equal(features.rows['x'], [1.5, -2.0])
  np.testing.assert_array_equal(features.rows['y'], [300.0, 4.0])


@pytest.mark.parametrize('text, line, column, problem', [
    ('clip,a,b\nx,1,2\ny,NaN,3\n', 3, "'a'", "'NaN' is not finite"),
    ('clip,a,b\nx,1,inf\n', 2, "'b'", "'inf' is not finite"),
    ('clip,a,b\nx,1,2\ny,3,-Infinity\n', 3, "'b'", "'-Infinity' is not finite"),
    ('clip,a,b\nx,1e39,2\n', 2, "'a'", "'1e39' is too large for float32"),
    ('clip,a,b\nx,1,2\ny,3,high\n', 3, "'b'", "'high' is not a number"),
    ('clip,a,b\nx,1,\n', 2, "'b'", "'' is not a number"),
    ('clip,a,b\nx,1,2\ny,3\n', 3, "'b'", '2 fields where the header has 3'),
    ('clip,a,b\nx,1,2,4\n', 2, "'b'", '4 fields where the header has 3'),
    ('clip,a,b\nx,1,2\n\ny,1,2\nx,3,4\n', 5, "'clip'", "duplicate clip 'x' (first on line 2)"),
    ('clip,a,b\n,1,2\n', 2, "'clip'", 'empty clip key'),
    ('clip,a,a\nx,1,2\n', 1, "'a'", 'duplicate column name'),
    ('name,a,b\nx,1,2\n', 1, 'column 1', 'expected "clip"'),
])
def test_table_errors_name_file_line_and_column(tmp_path, text, line, column, problem):
  path = tmp_path / 'au.csv'
  path.write_text(text)
  with pytest.raises(ValueError) as error:
    vf.load(str(path))
  message = str(error.value)
  assert message.startswith(f'{path}, line {line}') and column in message and problem in message, message


@pytest.mark.parametrize('text, problem', [('', 'empty file'), ('\n  \n', 'empty file'),
                                           ('clip,a,b\n', 'no clip rows after the header'),
                                           ('clip\nx\n', 'line 1: no feature column')])
def test_empty_table_is_an_error(tmp_path, text, problem):
  path = tmp_path / 'au.csv'
  path.write_text(text)
  with pytest.raises(ValueError, match=f'^{re.escape(str(path))}.*{problem}'):
    vf.load(str(path))


def test_missing_path_and_non_csv_file_are_errors(tmp_path):
  with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'absent.csv'}: no such file or folder")):
    vf.load(str(tmp_path / 'absent.csv'))
  (tmp_path / 'au.txt').write_text('clip,a\nx,1\n')
  with pytest.raises(ValueError, match='au.txt: not a .csv file'):
    vf.load(str(tmp_path / 'au.txt'))


def test_an_openface_file_given_as_a_table_says_to_load_its_folder(tmp_path):
  path = str(tmp_path / '01-01-03-01-01-01-12.csv')
  write_openface_csv(path, np.ones((2, len(AU))), [1, 1])
  with pytest.raises(ValueError, match="line 1, column 1: the first column is 'frame'.*load the folder"):
    vf.load(path)


# OpenFace folders.

@pytest.mark.parametrize('sep', [', ', ','])
def test_openface_folder_keeps_au_columns_and_successful_frames(tmp_path, sep):
  rng = np.random.default_rng(1)
  clips = {'01-01-03-01-01-01-12': [1, 0, 1, 1, 0], '01-01-05-02-02-01-12': [1, 1, 1]}
  frames = {key: au_values(rng, (len(success), len(AU))) for key, success in clips.items()}
  for key, success in clips.items():
    write_openface_csv(str(tmp_path / f'{key}.csv'), frames[key], success, sep=sep)
  (tmp_path / 'notes.txt').write_text('not a clip')  # other files of the folder are not clips
  features = vf.load(str(tmp_path))
  assert features.names == AU  # gaze, pose, landmarks, frame, timestamp, ... dropped
  assert features.kind == 'sequence' and features.source == str(tmp_path) and features.errors == {}
  assert sorted(features.rows) == sorted(clips)
  for key, success in clips.items():
    expected = frames[key][np.asarray(success) == 1].astype(np.float32)
    assert features.rows[key].dtype == np.float32 and features.rows[key].shape == (sum(success), len(AU))
    np.testing.assert_array_equal(features.rows[key], expected)


def test_openface_failed_frames_are_neither_kept_nor_checked(tmp_path):
  path = tmp_path / 'c.csv'
  path.write_text('frame, face_id, timestamp, confidence, success, AU01_r, AU01_c\n'
                  '1, 0, 0.000, 0.00, 0, nan, -1\n'  # no face: placeholders, whatever they hold
                  '2, 0, 0.033, 0.97, 1, 2.5, 1\n')
  features = vf.load(str(tmp_path))
  np.testing.assert_array_equal(features.rows['c'], [[2.5, 1.0]])


def test_openface_clip_without_a_face_is_recorded_and_the_others_read(tmp_path):
  write_openface_csv(str(tmp_path / 'good.csv'), np.full((2, len(AU)), 0.5), [1, 1])
  write_openface_csv(str(tmp_path / 'no_face.csv'), np.full((3, len(AU)), 0.5), [0, 0, 0])
  write_openface_csv(str(tmp_path / 'no_frame.csv'), np.zeros((0, len(AU))), [])
  features = vf.load(str(tmp_path))
  assert list(features.rows) == ['good']
  assert sorted(features.errors) == ['no_face', 'no_frame']
  assert features.errors['no_face'].startswith('no frame with success == 1 among 3')
  assert str(tmp_path / 'no_face.csv') in features.errors['no_face']
  assert features.errors['no_frame'].startswith('no frame rows') and 'no_frame.csv' in features.errors['no_frame']


def test_openface_columns_in_another_order_are_put_in_openface_order(tmp_path):
  write_openface_csv(str(tmp_path / 'a.csv'), np.tile(np.arange(len(AU), dtype=float), (2, 1)), [1, 1])
  order = np.random.default_rng(2).permutation(len(AU))
  shuffled = np.tile(np.arange(len(AU), dtype=float)[order], (1, 1))
  write_openface_csv(str(tmp_path / 'b.csv'), shuffled, [1], au_names=[AU[i] for i in order], other=())
  features = vf.load(str(tmp_path))
  assert features.names == AU
  np.testing.assert_array_equal(features.rows['b'], [np.arange(len(AU))])


@pytest.mark.parametrize('body, line, column, problem', [
    ('1, 0, 0.0, 0.9, 1, 1.0, NaN\n', 2, "'AU01_c'", "'NaN' is not finite"),
    ('1, 0, 0.0, 0.9, 1, 1.0, 0\n2, 0, 0.0, 0.9, 1, inf, 1\n', 3, "'AU01_r'", "'inf' is not finite"),
    ('1, 0, 0.0, 0.9, 1, strong, 0\n', 2, "'AU01_r'", "'strong' is not a number"),
    ('1, 0, 0.0, 0.9, 1, 1.0\n', 2, "'AU01_c'", '6 fields where the header has 7'),
    ('1, 0, 0.0, 0.9, 1, 1.0, 0, 7\n', 2, "'AU01_c'", '8 fields where the header has 7'),
    ('1, 0, 0.0, 0.9, yes, 1.0, 0\n', 2, "'success'", "'yes' is not a number"),
    ('1, 0, 0.0, 0.9, 0.5, 1.0, 0\n', 2, "'success'", "'0.5' is not 0 or 1"),
])
def test_openface_errors_name_file_line_and_column(tmp_path, body, line, column, problem):
  write_openface_csv(str(tmp_path / 'a_good_clip.csv'), np.ones((1, 2)), [1], au_names=('AU01_r', 'AU01_c'))
  path = tmp_path / 'bad.csv'
  path.write_text('frame, face_id, timestamp, confidence, success, AU01_r, AU01_c\n' + body)
  with pytest.raises(ValueError) as error:
    vf.load(str(tmp_path))
  message = str(error.value)
  assert message.startswith(f'{path}, line {line}') and column in message and problem in message, message


def test_openface_inconsistent_columns_across_files_are_an_error(tmp_path):
  write_openface_csv(str(tmp_path / 'a.csv'), np.ones((1, len(AU))), [1])
  write_openface_csv(str(tmp_path / 'b.csv'), np.ones((1, len(AU) - 1)), [1], au_names=AU[:-1])
  expected = (f"{tmp_path / 'b.csv'}, line 1: its AU columns differ from those of {tmp_path / 'a.csv'} "
              "(missing ['AU45_c'], extra [])")
  with pytest.raises(ValueError, match='^' + re.escape(expected)):
    vf.load(str(tmp_path))


@pytest.mark.parametrize('text, problem', [
    ('', 'empty file'),
    ('frame, face_id, timestamp, confidence, AU01_r\n1, 0, 0.0, 0.9, 1\n', 'line 1: no "success" column'),
    ('frame, face_id, timestamp, confidence, success, pose_Tx\n1, 0, 0.0, 0.9, 1, 3\n', 'line 1: no AU column'),
])
def test_openface_file_without_header_success_or_au_is_an_error(tmp_path, text, problem):
  (tmp_path / 'c.csv').write_text(text)
  with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path / 'c.csv'))}.*{problem}"):
    vf.load(str(tmp_path))


def test_folder_without_csv_files_is_an_error(tmp_path):
  (tmp_path / 'readme.txt').write_text('nothing here')
  with pytest.raises(ValueError, match=f'^{re.escape(str(tmp_path))}: no .csv files'):
    vf.load(str(tmp_path))


# Summaries.

def test_summarise_is_the_mean_over_frames():
  frames = np.array([[1.0, 0.0, 1.0], [3.0, 1.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=np.float32)
  summary = vf.summarise(frames)
  assert summary.dtype == np.float32 and summary.shape == (3,)
  np.testing.assert_array_equal(summary, [1.5, 0.5, 1.0])  # mean intensity; presence as a fraction of frames
  for bad in (np.zeros((0, 3)), np.zeros(3), np.zeros((2, 3, 1))):
    with pytest.raises(ValueError, match='expects a \\(T, D\\) sequence'):
      vf.summarise(bad)


def test_to_vectors_turns_a_folder_into_clip_vectors(tmp_path):
  frames = au_values(np.random.default_rng(3), (4, len(AU)))
  write_openface_csv(str(tmp_path / 'c.csv'), frames, [1, 1, 0, 1])
  write_openface_csv(str(tmp_path / 'empty.csv'), frames, [0, 0, 0, 0])
  sequences = vf.load(str(tmp_path))
  vectors = vf.to_vectors(sequences)
  assert vectors.kind == 'vector' and vectors.names == AU and vectors.errors == sequences.errors
  np.testing.assert_allclose(vectors.rows['c'], frames[[0, 1, 3]].mean(axis=0), rtol=1e-6)
  assert vf.to_vectors(vectors) is vectors


# Pairing utterances with clips.

def test_key_for_ravdess_takes_any_form_of_the_take():
  expected = '01-01-03-02-01-01-12'
  for utterance_id in ('01-03-02-01-01-12',  # the reader's take id
                       '03-01-03-02-01-01-12', '03-01-03-02-01-01-12.flac',  # the audio file
                       'Actor_12/03-01-03-02-01-01-12.wav', '/data/ravdess/Actor_12/01-01-03-02-01-01-12.mp4'):
    assert vf.key_for('ravdess', utterance_id) == expected, utterance_id
  assert vf.key_for('RAVDESS', '01-03-02-01-01-12') == expected
  for bad in ('03-01-03-02-01-12',  # a take id with channel 03: a modality with a field missing
              '04-01-03-02-01-01-12', 'Ses01F_impro01_F000', '1-03-02-01-01-12'):
    with pytest.raises(ValueError, match='is not a RAVDESS utterance id'):
      vf.key_for('ravdess', bad)


def test_key_for_other_corpora_is_the_base_name_stem():
  assert vf.key_for('iemocap', 'Ses01F_impro01_F000') == 'Ses01F_impro01_F000'
  assert vf.key_for('cremad', 'VideoFlash/1001_DFA_ANG_XX.flv') == '1001_DFA_ANG_XX'
  assert vf.key_for('emodb', '03a01Fa') == '03a01Fa'


def test_lookup_finds_the_row_of_an_utterance_or_none(tmp_path):
  path = str(tmp_path / 'au.csv')
  write_table(path, [('01-01-03-02-01-01-12', [1.0, 2.0]), ('1001_DFA_ANG_XX', [3.0, 4.0])], names=('a', 'b'))
  features = vf.load(path)
  utterance = Utterance(id='01-03-02-01-01-12', speaker='Actor_12', group='Actor_12', label='03')
  np.testing.assert_array_equal(vf.lookup(features, 'ravdess', utterance), [1.0, 2.0])
  np.testing.assert_array_equal(vf.lookup(features, 'ravdess', utterance.id), [1.0, 2.0])
  np.testing.assert_array_equal(vf.lookup(features, 'cremad', '1001_DFA_ANG_XX'), [3.0, 4.0])
  assert vf.lookup(features, 'ravdess', '01-03-02-01-02-12') is None
  assert vf.lookup(features, 'cremad', '1001_DFA_SAD_XX') is None


# The real RAVDESS action units.

def test_real_ravdess_action_units_read_exactly():
  (au_csv,) = real_data(os.path.join('ravdess-au', 'au.csv'))
  features = vf.load(au_csv)
  with open(au_csv, newline='') as f:
    lines = list(csv.reader(f))
  assert features.names == tuple(lines[0][1:]) == AU
  assert len(features.rows) == len(lines) - 1 == 1199 and features.errors == {}
  for fields in lines[1:]:
    np.testing.assert_array_equal(features.rows[fields[0]], np.asarray(fields[1:], dtype=np.float32))
  assert all(key.startswith('01-01-') for key in features.rows)  # audio-visual speech takes
  table = np.stack(list(features.rows.values()))
  assert table[:, :17].min() >= 0 and table[:, :17].max() <= 5  # intensities 0-5
  assert table[:, 17:].min() >= 0 and table[:, 17:].max() <= 1  # presences: fractions of frames


def test_every_ravdess_utterance_of_two_actors_has_a_visual_row():
  root, au_csv = real_data('ravdess', os.path.join('ravdess-au', 'au.csv'))
  features = vf.load(au_csv)
  actors = {'Actor_01': 60, 'Actor_07': 59}  # Actor_07 lost a duplicate take (../shared/data/README.md)
  utterances = [u for u in RavdessCorpus(root).utterances() if isinstance(u, Utterance) and u.group in actors]
  assert {actor: sum(u.group == actor for u in utterances) for actor in actors} == actors
  missing = [u.id for u in utterances if vf.lookup(features, 'ravdess', u) is None]
  assert missing == []
  for u in utterances:  # the row is the take's: same emotion, intensity, statement, repetition and actor
    key = vf.key_for('ravdess', u.id)
    assert key == '01-' + u.id and os.path.basename(u.audio_path) == f'03-{u.id}.flac'
    assert vf.lookup(features, 'ravdess', u) is features.rows[key]
