"""Video: decoding and cutting, audio tracks, frame sampling, halves, fixed and face crops."""
from __future__ import annotations

import glob
import os

import av
import numpy as np
import pytest
import soundfile as sf

from emojax import video

DATA = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'data')
FPS, FRAMES, HEIGHT, WIDTH = 10, 30, 64, 96


def green_of(index: int) -> int:
  """Frame `index` of the synthetic video is painted with this green level."""
  return 10 + 8 * index


def index_of(frame: np.ndarray) -> int:
  return int(round((np.median(frame[..., 1]) - 10) / 8))


def write_video(path: str, *, with_audio: bool = False) -> None:
  """FRAMES mpeg4 frames at FPS: red left half, blue right half, green = the frame index."""
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=FPS)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
    stream.bit_rate = 4_000_000
    if with_audio:
      sound = container.add_stream('aac', rate=16000, layout='mono')
    for i in range(FRAMES):
      frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
      frame[:, :WIDTH // 2, 0] = 200
      frame[:, WIDTH // 2:, 2] = 200
      frame[..., 1] = green_of(i)
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
    if with_audio:
      t = np.arange(FRAMES // FPS * 16000) / 16000
      wave = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
      chunk = 1024
      for i, start in enumerate(range(0, wave.shape[1], chunk)):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + chunk]), format='fltp',
                                           layout='mono')
        frame.sample_rate, frame.pts = 16000, start
        for packet in sound.encode(frame):
          container.mux(packet)
      for packet in sound.encode():
        container.mux(packet)


@pytest.fixture(scope='module', params=['avi', 'mp4'])
def synthetic(request, tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp('video') / f'synthetic.{request.param}')
  write_video(path)
  return path


def cremad_clips() -> list[str]:
  files = sorted(glob.glob(os.path.join(DATA, 'crema-d-sample', 'VideoFlash', '*.flv')))
  if not files:
    pytest.skip('no CREMA-D sample clips at shared/data/crema-d-sample/VideoFlash (shared/data absent)')
  return files


def indices(frames: np.ndarray) -> list[int]:
  return [index_of(frame) for frame in frames]


# --- Decoding ---------------------------------------------------------------------------------------


def test_decode_whole_video(synthetic):
  frames, fps = video.decode_video(synthetic)
  assert frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
  assert fps == pytest.approx(FPS)
  assert indices(frames) == list(range(FRAMES))


def test_decode_cuts_start_end(synthetic):
  frames, _ = video.decode_video(synthetic, start=1.0, end=2.0)
  assert indices(frames) == list(range(10, 20))
  # Midpoint rule: frame 12 spans [1.2, 1.3), midpoint 1.25.
  frames, _ = video.decode_video(synthetic, start=1.26, end=1.74)
  assert indices(frames) == list(range(13, 17))
  tail, _ = video.decode_video(synthetic, start=2.5)
  assert indices(tail) == list(range(25, FRAMES))


def test_decode_range_shorter_than_a_frame_gives_the_frame_shown(synthetic):
  frames, _ = video.decode_video(synthetic, start=1.23, end=1.24)
  assert indices(frames) == [12]


def test_decode_errors_name_the_file(synthetic, tmp_path):
  with pytest.raises(ValueError, match='no video frames'):
    video.decode_video(synthetic, start=10.0, end=11.0)
  with pytest.raises(ValueError, match='not after start'):
    video.decode_video(synthetic, start=1.0, end=1.0)
  junk = tmp_path / 'junk.avi'
  junk.write_bytes(b'\x00garbage' * 100)
  with pytest.raises(ValueError, match=r'junk\.avi: cannot open'):
    video.decode_video(str(junk))
  cut = tmp_path / 'cut.mp4'
  cut.write_bytes(open(synthetic, 'rb').read()[:40])
  with pytest.raises(ValueError, match=r'cut\.mp4'):
    video.decode_video(str(cut))
  sound = tmp_path / 'sound.wav'
  sf.write(str(sound), np.zeros(800, np.float32), 8000)
  with pytest.raises(ValueError, match=r'sound\.wav: no video stream'):
    video.decode_video(str(sound))
  with pytest.raises(ValueError, match=r'synthetic\.\w+: no audio stream'):
    video.decode_audio_track(synthetic)
  with pytest.raises(FileNotFoundError, match='missing.avi'):
    video.decode_video(str(tmp_path / 'missing.avi'))


def test_decode_audio_track_of_a_synthetic_mp4(tmp_path):
  path = str(tmp_path / 'with_sound.mp4')
  write_video(path, with_audio=True)
  wave, sr = video.decode_audio_track(path)
  assert sr == 16000 and wave.dtype == np.float32
  assert len(wave) == pytest.approx(3 * sr, abs=2048)  # AAC adds priming/padding samples
  spectrum = np.abs(np.fft.rfft(wave))
  assert np.fft.rfftfreq(len(wave), 1 / sr)[np.argmax(spectrum)] == pytest.approx(440, abs=2)
  resampled, new_sr = video.decode_audio_track(path, sample_rate=8000)
  assert new_sr == 8000 and len(resampled) == pytest.approx(len(wave) / 2, abs=1)


# --- Frame operations ---------------------------------------------------------------------------------


def coded_frames(count: int) -> np.ndarray:
  frames = np.zeros((count, 8, 12, 3), np.uint8)
  frames[..., 1] = np.array([green_of(i) for i in range(count)], np.uint8)[:, None, None]
  return frames


def test_frames_per_clip():
  assert video.frames_per_clip(3.0) == 20
  assert video.frames_per_clip(1.5) == 10
  assert video.frames_per_clip(7.5) == 50
  assert video.frames_per_clip(0.01) == 1
  assert video.frames_per_clip(3.0, per_3s=30) == 30


def test_sample_frames_are_evenly_spaced():
  assert indices(video.sample_frames(coded_frames(30), 20)) == [int((k + 0.5) * 1.5) for k in range(20)]
  assert indices(video.sample_frames(coded_frames(20), 20)) == list(range(20))
  assert indices(video.sample_frames(coded_frames(24), 4)) == [3, 9, 15, 21]


def test_sample_frames_repeats_short_sequences_in_order():
  assert indices(video.sample_frames(coded_frames(5), 20)) == [i for i in range(5) for _ in range(4)]
  assert indices(video.sample_frames(coded_frames(1), 3)) == [0, 0, 0]
  with pytest.raises(ValueError, match='empty'):
    video.sample_frames(coded_frames(0), 3)


def test_speaker_halves(synthetic):
  frames, _ = video.decode_video(synthetic, end=0.5)
  left, right = video.speaker_half(frames, 'left'), video.speaker_half(frames, 'right')
  assert left.shape == right.shape == (5, HEIGHT, WIDTH // 2, 3)
  assert np.median(left[..., 0]) > 180 and np.median(left[..., 2]) < 20
  assert np.median(right[..., 2]) > 180 and np.median(right[..., 0]) < 20
  assert video.speaker_half(frames, None) is frames
  odd = np.zeros((1, 4, 7, 3), np.uint8)
  assert video.speaker_half(odd, 'left').shape == video.speaker_half(odd, 'right').shape == (1, 4, 3, 3)
  with pytest.raises(ValueError, match='side'):
    video.speaker_half(frames, 'middle')


def test_fixed_crop_is_the_middle_half_of_the_rows():
  frames = np.arange(2 * 8 * 6 * 3, dtype=np.uint8).reshape(2, 8, 6, 3)
  cropped = video.fixed_crop(frames)
  np.testing.assert_array_equal(cropped, frames[:, 2:6])


def test_resize_and_video_clip_shapes():
  frames = np.random.default_rng(0).integers(0, 255, (7, 120, 160, 3), dtype=np.uint8)
  resized = video.resize_frames(frames, (30, 50))
  assert resized.shape == (7, 30, 50, 3) and resized.dtype == np.uint8
  clip, found = video.video_clip(frames, n_frames=20, size=(60, 100))
  assert clip.shape == (20, 60, 100, 3) and clip.dtype == np.uint8 and not found
  with pytest.raises(ValueError, match='crop'):
    video.video_clip(frames, crop='mouth')


def test_no_face_falls_back_to_the_fixed_crop():
  frames = np.full((6, 120, 160, 3), (40, 160, 60), np.uint8)
  face_clip, found = video.video_clip(frames, n_frames=4, size=(30, 50), crop='face')
  fixed_clip, _ = video.video_clip(frames, n_frames=4, size=(30, 50), crop='fixed')
  assert not found
  np.testing.assert_array_equal(face_clip, fixed_clip)


# --- Real CREMA-D clips -----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def cremad():
  return [(path, *video.decode_video(path)) for path in cremad_clips()]


def test_cremad_decode(cremad):
  for path, frames, fps in cremad:
    assert frames.shape[1:] == (360, 480, 3), path
    assert fps == pytest.approx(29.97, abs=0.01)
    assert 1.5 < len(frames) / fps < 2.6, path


def test_cremad_cut_matches_the_whole_decode(cremad):
  path, frames, fps = cremad[0]
  cut, _ = video.decode_video(path, start=0.5, end=1.0)
  assert len(cut) == pytest.approx(0.5 * fps, abs=1)
  first = next(i for i in range(len(frames)) if np.array_equal(frames[i], cut[0]))
  np.testing.assert_array_equal(cut, frames[first:first + len(cut)])
  assert first / fps == pytest.approx(0.5, abs=1.5 / fps)


def test_cremad_audio_track(cremad):
  for path, frames, fps in cremad:
    wave, sr = video.decode_audio_track(path)
    assert sr == 44100 and wave.dtype == np.float32
    assert 1.5 < len(wave) / sr < 2.6 and abs(len(wave) / sr - len(frames) / fps) < 0.2, path
    assert np.sqrt(np.mean(wave ** 2)) > 1e-3 and np.abs(wave).max() <= 1.0, path


def test_cremad_face_found_on_every_clip(cremad):
  for path, frames, _ in cremad:
    box = video.detect_face(frames)
    assert box is not None, path
    x, y, w, h = box
    assert 0 <= x and 0 <= y and x + w <= 480 and y + h <= 360, path
    assert 60 < w < 300 and 60 < h < 300, path  # one head on a 480x360 frame, not a speck or the frame
    clip, found = video.video_clip(frames, n_frames=20, size=(60, 100), crop='face')
    assert found and clip.shape == (20, 60, 100, 3) and clip.dtype == np.uint8
    # The crop follows the output's 60:100 aspect, so the face is not stretched.
    cropped, _ = video.face_crop(frames[:3], aspect=0.6)
    assert cropped.shape[1] / cropped.shape[2] == pytest.approx(0.6, abs=0.01)


def test_cremad_frame_without_its_face_falls_back(cremad):
  _, frames, _ = cremad[0]
  x, y, w, h = video.detect_face(frames)
  blanked = frames[:4].copy()
  # Paint the head (and a margin around it) with the green backdrop's colour.
  background = np.median(frames[0, :20, :20].reshape(-1, 3), axis=0).astype(np.uint8)
  blanked[:, max(0, y - h // 2):y + 2 * h, max(0, x - w // 2):x + w + w // 2] = background
  cropped, found = video.face_crop(blanked)
  assert not found
  np.testing.assert_array_equal(cropped, video.fixed_crop(blanked))


def test_truncated_cremad_clip_is_a_clear_error(tmp_path):
  data = open(cremad_clips()[0], 'rb').read()
  header_only = tmp_path / 'header_only.flv'
  header_only.write_bytes(data[:20])
  with pytest.raises(ValueError, match=r'header_only\.flv'):
    video.decode_video(str(header_only))
  half = tmp_path / 'half.flv'
  half.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match=r'half\.flv: truncated file: its video stream'):
    video.decode_video(str(half))
  with pytest.raises(ValueError, match=r'half\.flv: truncated file: its audio stream'):
    video.decode_audio_track(str(half))
  # The part before the cut is still there to ask for.
  frames, fps = video.decode_video(str(half), end=0.5)
  assert len(frames) == pytest.approx(0.5 * fps, abs=1)


def test_truncated_synthetic_video_is_a_clear_error(synthetic, tmp_path):
  data = open(synthetic, 'rb').read()
  path = tmp_path / f'half{os.path.splitext(synthetic)[1]}'
  path.write_bytes(data[:len(data) // 2])
  # mp4 keeps its index at the end, so a cut-off copy does not even open; either way the file is named.
  with pytest.raises(ValueError, match=r'half\.\w+: (cannot open|truncated file)'):
    video.decode_video(str(path))
