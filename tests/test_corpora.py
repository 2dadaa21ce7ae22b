"""Corpus readers: a generated miniature IEMOCAP, the real recordings in ../shared/data, generated file names."""
import collections
import os

import av
import numpy as np
import pytest
import soundfile as sf

from emojax.corpora import labels
from emojax.corpora.base import Skipped, Utterance
from emojax.corpora.cremad import CremadCorpus
from emojax.corpora.emodb import EmodbCorpus
from emojax.corpora.iemocap import IemocapCorpus
from emojax.corpora.ravdess import RavdessCorpus
from miniature_iemocap import make_miniature_iemocap

DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data'))


def real_corpus(name: str) -> str:
  path = os.path.join(DATA, name)
  if not os.path.isdir(path):
    pytest.skip(f'real recordings not available: {path} is absent (see ../shared/data/README.md)')
  return path


def split_items(corpus):
  items = list(corpus.utterances())
  return [i for i in items if isinstance(i, Utterance)], [i for i in items if isinstance(i, Skipped)]


def dominant_frequency(wave: np.ndarray, sr: int) -> float:
  spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
  return float(np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)])


# Labels.

def test_class_sets():
  iemocap = IemocapCorpus.labels
  assert labels.class_names('4class', iemocap) == ('hap', 'sad', 'ang', 'neu')
  assert labels.class_names('3class', iemocap) == ('sad', 'ang', 'neu')
  every = labels.class_names('all', iemocap)
  assert 'xxx' not in every and {'exc', 'fru', 'oth'} <= set(every)
  assert 'exc' not in labels.class_names('all', iemocap, merge_exc=True)
  names = labels.class_names('4class', iemocap)
  assert labels.class_index('exc', names, merge_exc=False) is None
  assert labels.class_index('exc', names, merge_exc=True) == names.index('hap')
  assert labels.class_index('fru', names) is None and labels.class_index(None, names) is None
  assert labels.class_index('neu', ('sad', 'ang', 'neu')) == 2
  with pytest.raises(ValueError, match='5class'):
    labels.class_names('5class', iemocap)
  with pytest.raises(ValueError, match='hap'):  # a class the corpus never labels
    labels.class_names('4class', ('sad', 'ang', 'neu'))


# IEMOCAP on a generated miniature.

@pytest.fixture(scope='module')
def miniature(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('iemocap'))
  return root, make_miniature_iemocap(root, defects=True)


def test_iemocap_listing(miniature):
  root, truth = miniature
  utterances, skipped = split_items(IemocapCorpus(root))
  assert {u.group for u in utterances} == {f'Session{s}' for s in range(1, 6)}  # not 1-4 only
  assert [u.id for u in utterances] == sorted(truth['utterances'], key=lambda i: (i[:5], i.rsplit('_', 1)[0],
                                                                                  truth['utterances'][i]['start']))
  missing_sentence = truth['defects']['missing_sentence_wav']
  for u in utterances:
    expected = truth['utterances'][u.id]
    assert (u.label, u.speaker, u.group, u.gender, u.video_side, u.vad) == (
        expected['label'], expected['speaker'], expected['group'], expected['gender'], expected['side'],
        expected['vad']), u.id
    assert u.video_path.endswith(os.path.join('dialog', 'avi', 'DivX', f'{expected["dialog"]}.avi'))
    if u.id == missing_sentence:  # falls back to cutting the dialog wav
      assert (u.audio_path, u.start, u.end) == (expected['wav'], expected['start'], expected['end'])
    else:
      assert (u.audio_path, u.start, u.end) == (expected['sentence_wav'], None, None)
  assert {'xxx', 'exc', 'fru'} <= {u.label for u in utterances}
  assert {u.video_side for u in utterances} == {'left', 'right'}
  assert {(s.id, s.source) for s in skipped} == {truth['defects']['malformed_line'], truth['defects']['missing_audio']}
  reasons = {s.id: s.reason for s in skipped}
  assert reasons[truth['defects']['malformed_line'][0]].startswith('malformed label line')
  assert reasons[truth['defects']['missing_audio'][0]].startswith('missing audio')


def test_iemocap_dialog_source_cuts_every_utterance(miniature):
  root, truth = miniature
  utterances, _ = split_items(IemocapCorpus(root, audio_source='dialog'))
  assert len(utterances) == len(truth['utterances'])
  for u in utterances:
    assert (u.audio_path, u.start, u.end) == (truth['utterances'][u.id]['wav'], truth['utterances'][u.id]['start'],
                                              truth['utterances'][u.id]['end'])


def test_iemocap_audio(miniature):
  root, truth = miniature
  by_sentence = {u.id: u for u in split_items(IemocapCorpus(root))[0]}
  by_dialog_reader = IemocapCorpus(root, audio_source='dialog')
  by_dialog = {u.id: u for u in split_items(by_dialog_reader)[0]}
  for utt_id in list(by_sentence)[:8]:  # sessions 1 and 2, the missing sentence wav among them
    expected = truth['utterances'][utt_id]
    wave, sr = IemocapCorpus(root).load_audio(by_sentence[utt_id])
    assert wave.dtype == np.float32 and wave.ndim == 1 and sr == truth['sample_rate']
    assert len(wave) == round((expected['end'] - expected['start']) * sr)
    assert dominant_frequency(wave, sr) == pytest.approx(expected['frequency'], abs=2)
    cut, cut_sr = by_dialog_reader.load_audio(by_dialog[utt_id])
    assert cut_sr == sr
    np.testing.assert_array_equal(cut, wave)


def test_iemocap_video_is_the_speakers_half_of_the_utterance(miniature):
  root, truth = miniature
  reader = IemocapCorpus(root)
  utterances = split_items(reader)[0]
  chosen = [u for u in utterances if u.group in ('Session1', 'Session2')][:8]
  assert {(u.video_side, u.gender) for u in chosen} == {('left', 'F'), ('right', 'M'), ('left', 'M'), ('right', 'F')}
  for u in chosen:
    expected = truth['utterances'][u.id]
    frames, fps = reader.load_video(u)
    assert fps == pytest.approx(truth['fps'])
    assert frames.dtype == np.uint8 and frames.shape[1:] == (60, 80, 3)
    assert abs(len(frames) - (expected['end'] - expected['start']) * fps) <= 1
    red, green, blue = (np.median(frames[..., c]) for c in range(3))
    assert (red > 150 and blue < 50) if u.gender == 'F' else (blue > 150 and red < 50), u.id
    assert green == pytest.approx(expected['green'], abs=8), u.id


def test_iemocap_unknown_layout(tmp_path):
  (tmp_path / 'Session1').mkdir()  # no dialog/EmoEvaluation inside
  with pytest.raises(ValueError, match='Session1 ... Session5'):
    IemocapCorpus(str(tmp_path))
  with pytest.raises(ValueError, match='audio_source'):
    IemocapCorpus(str(tmp_path), audio_source='video')


# The real recordings.

def test_emodb():
  corpus = EmodbCorpus(real_corpus('emodb'))
  utterances, skipped = split_items(corpus)
  assert len(utterances) == 408 and not skipped
  counts = collections.Counter(corpus.canonical[u.label] for u in utterances)
  print('Emo-DB per emotion:', dict(counts))
  assert counts == {'ang': 100, 'neu': 63, 'bor': 58, 'hap': 54, 'fea': 54, 'sad': 49, 'dis': 30}
  genders = {u.speaker: u.gender for u in utterances}
  assert genders == {'03': 'M', '08': 'F', '09': 'F', '10': 'M', '11': 'M', '12': 'M', '13': 'F', '14': 'F'}
  assert all(u.group == u.speaker for u in utterances)
  wave, sr = corpus.load_audio(utterances[0])
  assert sr == 22_050 and wave.dtype == np.float32 and len(wave) == 2 * sr
  assert corpus.load_video(utterances[0]) is None


def test_ravdess():
  corpus = RavdessCorpus(real_corpus('ravdess'))
  utterances, skipped = split_items(corpus)
  assert len(utterances) == 1199 and not skipped
  counts = collections.Counter(corpus.canonical[u.label] for u in utterances)
  print('RAVDESS per emotion:', dict(counts))
  assert counts == {'neu': 80, 'hap': 159, 'cal': 160, 'sad': 160, 'ang': 160, 'fea': 160, 'dis': 160, 'sur': 160}
  assert len({u.speaker for u in utterances}) == 20
  assert all(u.gender == ('M' if int(u.speaker[-2:]) % 2 else 'F') for u in utterances)
  wave, sr = corpus.load_audio(utterances[0])
  assert sr == 16_000 and wave.ndim == 1 and 2.5 * sr < len(wave) < 6 * sr
  assert corpus.load_video(utterances[0]) is None


def test_cremad_sample():
  corpus = CremadCorpus(real_corpus('crema-d-sample'))
  utterances, skipped = split_items(corpus)
  assert not skipped
  with_video = [u for u in utterances if u.video_path]
  audio_only = [u for u in utterances if not u.video_path]
  assert len(with_video) == 6 and len(audio_only) == 6
  assert {u.speaker for u in with_video} == {'1001'} and {u.speaker for u in audio_only} == {'1002'}
  assert all(u.audio_path == u.video_path for u in with_video)  # the flv's own audio track
  assert {corpus.canonical[u.label] for u in with_video} == {'ang', 'dis', 'fea', 'hap', 'neu', 'sad'}
  assert all(u.gender is None for u in utterances)  # no VideoDemographics.csv in the sample
  frames, fps = corpus.load_video(with_video[0])
  assert frames.dtype == np.uint8 and frames.shape[1:] == (360, 480, 3) and fps == pytest.approx(29.97, abs=0.01)
  wave, sr = corpus.load_audio(with_video[0])
  assert wave.ndim == 1 and 1.0 < len(wave) / sr < 4.0
  assert abs(len(wave) / sr - len(frames) / fps) < 0.3  # audio track and video cover the same take
  wave, sr = corpus.load_audio(audio_only[0])
  assert wave.ndim == 1 and 1.0 < len(wave) / sr < 4.0


# Generated files: RAVDESS names and linking, CREMA-D demographics, unknown layouts.

def write_av_mp4(path, *, seconds=0.5, tone=440.0, sr=16_000, with_audio=True):
  """A tiny mpeg4 video (with an AAC tone track unless `with_audio` is False)."""
  with av.open(str(path), 'w') as container:
    picture = container.add_stream('mpeg4', rate=10)
    picture.width, picture.height, picture.pix_fmt = 32, 24, 'yuv420p'
    sound = container.add_stream('aac', rate=sr, layout='mono') if with_audio else None
    for i in range(int(seconds * 10)):
      image = np.full((24, 32, 3), 20 * i, np.uint8)
      container.mux(picture.encode(av.VideoFrame.from_ndarray(image, format='rgb24')))
    container.mux(picture.encode())
    if sound is not None:
      wave = (0.5 * np.sin(2 * np.pi * tone * np.arange(int(seconds * sr)) / sr)).astype(np.float32)
      for first in range(0, len(wave), 1024):
        frame = av.AudioFrame.from_ndarray(wave[None, first:first + 1024], format='fltp', layout='mono')
        frame.sample_rate = sr
        container.mux(sound.encode(frame))
      container.mux(sound.encode())


def write_wav(path, *, seconds=0.5, tone=440.0, sr=16_000):
  sf.write(str(path), 0.5 * np.sin(2 * np.pi * tone * np.arange(int(seconds * sr)) / sr), sr)


def test_ravdess_names_and_linking(tmp_path):
  actor = tmp_path / 'Actor_01'
  actor.mkdir()
  write_av_mp4(actor / '01-01-03-01-01-01-01.mp4', tone=880.0)   # same take as the wav below
  write_wav(actor / '03-01-03-01-01-01-01.wav', tone=440.0)
  write_av_mp4(actor / '01-01-04-01-01-01-01.mp4', tone=660.0)   # audio-visual only
  write_av_mp4(actor / '02-01-05-01-01-01-01.mp4', with_audio=False)  # video only
  write_wav(actor / '03-02-05-01-01-01-01.wav')                  # song
  write_wav(actor / '03-01-06-01-01-01-01.wav')
  write_wav(actor / '03-01-06-01-01-01-01.flac')                 # a second audio file of the same take
  write_wav(actor / '03-01-09-01-01-01-01.wav')                  # unknown emotion
  write_wav(actor / '03-01-03-01-01-01-02.wav')                  # another actor's file
  write_wav(actor / '01-01-03-01-01-02-01.wav')                  # audio-visual must be .mp4
  write_wav(actor / 'notes.wav')
  utterances, skipped = split_items(RavdessCorpus(str(tmp_path)))
  by_id = {u.id: u for u in utterances}
  assert set(by_id) == {'01-03-01-01-01-01', '01-04-01-01-01-01', '01-06-01-01-01-01'}
  linked = by_id['01-03-01-01-01-01']
  assert linked.audio_path.endswith('03-01-03-01-01-01-01.wav') and linked.video_path.endswith('01-01-03-01-01-01-01.mp4')
  assert (linked.label, linked.speaker, linked.group, linked.gender) == ('03', 'Actor_01', 'Actor_01', 'M')
  assert by_id['01-06-01-01-01-01'].audio_path.endswith('.flac')  # sorted first; the .wav is the duplicate
  reader = RavdessCorpus(str(tmp_path))
  wave, sr = reader.load_audio(linked)
  assert dominant_frequency(wave, sr) == pytest.approx(440, abs=5)  # from the audio file, not the mp4
  frames, fps = reader.load_video(linked)
  assert frames.shape == (5, 24, 32, 3) and fps == pytest.approx(10)
  av_only = by_id['01-04-01-01-01-01']
  assert av_only.audio_path == av_only.video_path
  wave, sr = reader.load_audio(av_only)
  assert sr == 16_000 and dominant_frequency(wave, sr) == pytest.approx(660, abs=5)  # the mp4's track
  reasons = {s.id: s.reason for s in skipped}
  assert reasons['01-05-01-01-01-01'].startswith('video only')
  assert reasons['02-05-01-01-01-01'] == 'song'
  assert reasons['03-01-06-01-01-01-01'].startswith('duplicate audio_only')
  assert reasons['03-01-09-01-01-01-01'].startswith('unknown emotion')
  assert reasons['03-01-03-01-01-01-02'] == 'actor 02 filed under Actor_01'
  assert reasons['01-01-03-01-01-02-01'].startswith('modality 01')
  assert reasons['notes'].startswith('file name is not')
  assert all(s.source.startswith(str(actor)) for s in skipped)
  kept_song = {u.id: u for u in split_items(RavdessCorpus(str(tmp_path), keep_song=True))[0]}
  assert kept_song['02-05-01-01-01-01'].label == '05'


def test_cremad_demographics_and_bad_files(tmp_path):
  (tmp_path / 'AudioWAV').mkdir()
  write_wav(tmp_path / 'AudioWAV' / '1001_DFA_ANG_XX.wav')
  write_wav(tmp_path / 'AudioWAV' / '1002_IEO_HAP_HI.wav')
  (tmp_path / 'AudioWAV' / '1003_MTI_SAD_XX.wav').write_bytes(b'')
  write_wav(tmp_path / 'AudioWAV' / '1001_DFA_JOY_XX.wav')
  (tmp_path / 'VideoDemographics.csv').write_text(
      'ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n')
  corpus = CremadCorpus(str(tmp_path))
  utterances, skipped = split_items(corpus)
  assert {(u.id, u.gender, u.video_path) for u in utterances} == {('1001_DFA_ANG_XX', 'M', None),
                                                                 ('1002_IEO_HAP_HI', 'F', None)}
  assert {s.id: s.reason for s in skipped} == {
      '1003_MTI_SAD_XX': 'empty file',
      '1001_DFA_JOY_XX': "unknown emotion 'JOY'; expected one of ('ANG', 'DIS', 'FEA', 'HAP', 'NEU', 'SAD')"}
  assert corpus.load_video(utterances[0]) is None
  (tmp_path / 'VideoDemographics.csv').write_text('ActorID,Sex\n1001,Unknown\n')
  with pytest.raises(ValueError, match='VideoDemographics.csv:2'):
    CremadCorpus(str(tmp_path))


@pytest.mark.parametrize('reader, expected', [(EmodbCorpus, 'wav/'), (RavdessCorpus, 'Actor_NN/'),
                                              (CremadCorpus, 'AudioWAV/'), (IemocapCorpus, 'EmoEvaluation')])
def test_unknown_layout_names_what_was_expected(tmp_path, reader, expected):
  (tmp_path / 'something_else').mkdir()
  with pytest.raises(ValueError, match=expected):
    reader(str(tmp_path))
  with pytest.raises(ValueError, match='not'):
    reader(str(tmp_path / 'absent'))
