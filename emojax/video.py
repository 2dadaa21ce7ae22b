"""Video: decoding (PyAV), frame sampling, speaker half, fixed and face crops, resizing.

The paper's video features: cut the utterance, 20 frames per 3 s, crop the
speaker's half of IEMOCAP's side-by-side frame and then the face/head region
(a fixed window: the middle half vertically), 60x100 pixels. `face_crop` is
the paper's proposed fix: a detected face box, with the fixed crop as fallback.
"""
from __future__ import annotations

import functools
import os

import av
import cv2
import librosa
import numpy as np

# Frames the face detector looks at per clip; one box (their median) then crops the whole clip.
_DETECTION_FRAMES = 5


def _open(path: str) -> av.container.InputContainer:
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no such file.')
  try:
    return av.open(path)
  except av.error.FFmpegError as err:
    raise ValueError(f'{path}: cannot open as audio/video: {err}') from err


def _check_complete(path: str, container: av.container.InputContainer, stream: av.stream.Stream,
                    decoded_until: float) -> None:
  """Raises ValueError when a stream ends well before the duration its container declares (a cut-off file).

  Allows half a second or 10% of the declared duration, whichever is more:
  declared durations are rounded, and a container's covers its longest stream.
  """
  if stream.duration is not None and stream.time_base is not None:
    declared = float(stream.duration * stream.time_base)
  elif container.duration is not None:
    declared = container.duration / av.time_base
  else:
    return
  if declared - decoded_until > max(0.5, 0.1 * declared):
    raise ValueError(f'{path}: truncated file: its {stream.type} stream ends at {decoded_until:.2f} s, '
                     f'the container declares {declared:.2f} s.')


def decode_video(path: str, *, start: float | None = None,
                 end: float | None = None) -> tuple[np.ndarray, float]:
  """Decodes the RGB frames of [start, end) seconds of a video file.

  Seeks to the key frame before `start`, so only the needed range is decoded.
  A frame belongs to the range when its midpoint (timestamp + half a frame)
  falls in [start, end); a range shorter than a frame gives the one frame
  shown at `start`.

  Args:
    path: the video file (.avi, .mp4, .flv, ...).
    start: first second; None = the beginning.
    end: second to stop at (exclusive); None = the end.

  Returns:
    (uint8 frames (T, H, W, 3) RGB, frames per second).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not a readable video, no video stream, corrupt data, or nothing at [start, end).
  """
  if start is not None and end is not None and end <= start:
    raise ValueError(f'{path}: end {end} s is not after start {start} s.')
  with _open(path) as container:
    if not container.streams.video:
      raise ValueError(f'{path}: no video stream.')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
      raise ValueError(f'{path}: the video stream has no frame rate.')
    fps = float(rate)
    first = 0.0 if start is None else start
    last = np.inf if end is None else end
    frames, shown_at_start = [], None
    try:
      if start:
        container.seek(int(start / stream.time_base), stream=stream, backward=True)
      time = None
      for index, frame in enumerate(container.decode(stream)):
        # A few containers (old AVIs) carry no timestamps: count frames instead (no seek then).
        time = frame.time if frame.time is not None else (first if start else 0.0) + index / fps
        if time <= first < time + 1 / fps:
          shown_at_start = frame
        middle = time + 0.5 / fps
        if middle >= last:
          break
        if middle >= first:
          frames.append(frame.to_ndarray(format='rgb24'))
      else:  # decoded to the end of the stream
        _check_complete(path, container, stream, 0.0 if time is None else time + 1 / fps)
    except av.error.FFmpegError as err:
      raise ValueError(f'{path}: corrupt video data: {err}') from err
  if not frames and shown_at_start is not None and end is not None:
    frames = [shown_at_start.to_ndarray(format='rgb24')]
  if not frames:
    raise ValueError(f'{path}: no video frames in [{start}, {end}) s.')
  return np.stack(frames), fps


def decode_audio_track(path: str, *, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
  """Decodes the first audio track of a container (CREMA-D .flv holds MP3) to mono float32 in [-1, 1].

  Channels are averaged; `sample_rate` resamples with librosa (None keeps the track's rate).

  Raises:
    FileNotFoundError: no such file.
    ValueError: not readable, no audio stream, corrupt or empty audio.
  """
  with _open(path) as container:
    if not container.streams.audio:
      raise ValueError(f'{path}: no audio stream.')
    stream = container.streams.audio[0]
    sr = stream.rate
    # Planar float keeps every channel separate, whatever the codec's sample format.
    resampler = av.AudioResampler(format='fltp')
    chunks = []
    try:
      for frame in container.decode(stream):
        chunks.extend(converted.to_ndarray() for converted in resampler.resample(frame))
      chunks.extend(converted.to_ndarray() for converted in resampler.resample(None))
    except av.error.FFmpegError as err:
      raise ValueError(f'{path}: corrupt audio data: {err}') from err
    samples = sum(chunk.shape[1] for chunk in chunks)
    if samples == 0:
      raise ValueError(f'{path}: the audio track holds no samples.')
    _check_complete(path, container, stream, samples / sr)
  wave = np.concatenate(chunks, axis=1).mean(axis=0)
  if sample_rate is not None and sample_rate != sr:
    wave, sr = librosa.resample(wave, orig_sr=sr, target_sr=sample_rate), sample_rate
  return np.clip(wave, -1.0, 1.0).astype(np.float32), int(sr)


def frames_per_clip(seconds: float, per_3s: int = 20) -> int:
  """How many frames a clip of `seconds` gets at the paper's rate of `per_3s` frames per 3 s (at least 1)."""
  return max(1, int(round(seconds * per_3s / 3.0)))


def sample_frames(frames: np.ndarray, n_frames: int) -> np.ndarray:
  """`n_frames` frames evenly spaced in time: frame i is taken from the middle of the i-th of n equal spans.

  Fewer than `n_frames` frames are repeated (each kept in order).
  """
  if len(frames) == 0:
    raise ValueError('cannot sample from an empty frame sequence.')
  indices = ((np.arange(n_frames) + 0.5) * len(frames) / n_frames).astype(int)
  return frames[indices]


def speaker_half(frames: np.ndarray, side: str | None) -> np.ndarray:
  """The 'left' or 'right' half of side-by-side frames (IEMOCAP's two actors); None = the whole frame."""
  if side is None:
    return frames
  half = frames.shape[2] // 2
  if side == 'left':
    return frames[:, :, :half]
  if side == 'right':
    return frames[:, :, frames.shape[2] - half:]
  raise ValueError(f"Unknown side {side!r}; expected 'left', 'right' or None.")


def fixed_crop(frames: np.ndarray) -> np.ndarray:
  """The paper's fixed face/head window: the middle half of the rows, the full width."""
  height = frames.shape[1]
  return frames[:, height // 4:height // 4 + height // 2]


@functools.cache
def _face_detector() -> cv2.CascadeClassifier:
  """OpenCV's frontal-face Haar cascade; its model file ships inside the opencv wheel."""
  if not hasattr(cv2, 'CascadeClassifier'):
    raise ImportError(f'OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 dropped them); '
                      'install opencv-python-headless<5.')
  path = os.path.join(cv2.data.haarcascades, 'haarcascade_frontalface_default.xml')
  detector = cv2.CascadeClassifier(path)
  if detector.empty():
    raise OSError(f'{path}: cannot load the Haar face cascade.')
  return detector


def detect_face(frames: np.ndarray) -> tuple[int, int, int, int] | None:
  """One face box (x, y, width, height) for a clip, or None when no frame shows a frontal face.

  The largest detection in each of a few evenly spaced frames; the box is the
  median of those, so a single false or jittery detection does not move it.
  """
  boxes = []
  for frame in sample_frames(frames, min(_DETECTION_FRAMES, len(frames))):
    grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    smallest = max(16, min(grey.shape) // 8)
    found = _face_detector().detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(smallest, smallest))
    if len(found):
      boxes.append(max(found, key=lambda box: box[2] * box[3]))
  if not boxes:
    return None
  return tuple(int(round(v)) for v in np.median(np.array(boxes), axis=0))


def _expand(box: tuple[int, int, int, int], margin: float, aspect: float | None,
            height: int, width: int) -> tuple[int, int, int, int]:
  """The face box grown by `margin` per side, widened or heightened to `aspect` (h / w), kept in the image."""
  x, y, w, h = box
  centre_x, centre_y = x + w / 2, y + h / 2
  w, h = w * (1 + 2 * margin), h * (1 + 2 * margin)
  if aspect is not None:
    w, h = max(w, h / aspect), max(h, w * aspect)
  w, h = min(int(round(w)), width), min(int(round(h)), height)
  # Shift (rather than shrink) a box that runs over an edge.
  left = int(np.clip(round(centre_x - w / 2), 0, width - w))
  top = int(np.clip(round(centre_y - h / 2), 0, height - h))
  return left, top, w, h


def face_crop(frames: np.ndarray, *, margin: float = 0.25,
              aspect: float | None = None) -> tuple[np.ndarray, bool]:
  """Crops every frame to one detected face box (see `detect_face`), grown by `margin` of its size per side.

  Args:
    frames: uint8 (T, H, W, 3).
    margin: share of the face's width/height added on each side (forehead, chin, ears).
    aspect: widen or heighten the box to this height/width ratio (the output's, so
      resizing does not distort the face); None keeps the grown face box.

  Returns:
    (cropped frames, True), or (fixed_crop(frames), False) when no face is found.
  """
  box = detect_face(frames)
  if box is None:
    return fixed_crop(frames), False
  left, top, w, h = _expand(box, margin, aspect, frames.shape[1], frames.shape[2])
  return frames[:, top:top + h, left:left + w], True


def resize_frames(frames: np.ndarray, size: tuple[int, int] = (60, 100)) -> np.ndarray:
  """Resizes uint8 frames to size = (height, width) with area averaging (the right filter to shrink)."""
  height, width = size
  return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA) for frame in frames])


def video_clip(frames: np.ndarray, *, n_frames: int = 20, size: tuple[int, int] = (60, 100),
               crop: str = 'fixed') -> tuple[np.ndarray, bool]:
  """A clip's video features: `n_frames` evenly sampled frames, cropped, resized to `size`.

  Args:
    frames: uint8 (T, H, W, 3) of the clip's time window (the speaker's half already chosen).
    n_frames: frames to keep (the paper: 20 per 3 s).
    size: (height, width) of each frame (the paper: 60x100).
    crop: 'fixed' (the paper's middle-half window) or 'face' (detected face box, the
      fixed window when none is found).

  Returns:
    (uint8 (n_frames, height, width, 3), whether a face was found; always False for 'fixed').
  """
  sampled = sample_frames(frames, n_frames)
  if crop == 'fixed':
    return resize_frames(fixed_crop(sampled), size), False
  if crop == 'face':
    cropped, found = face_crop(sampled, aspect=size[0] / size[1])
    return resize_frames(cropped, size), found
  raise ValueError(f"Unknown crop {crop!r}; expected 'fixed' or 'face'.")
