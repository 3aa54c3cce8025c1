"""Reading videos: probe, sample frames at a steady rate with their container timestamps, read one frame.

OpenCV's FFmpeg backend decodes; it applies the container's rotation metadata itself (frames come
out upright, and :class:`VideoInfo` reports the upright size). Frames are (H, W, 3) uint8 **RGB**.
Times are seconds from the start of the video.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .errors import ImageError

log = logging.getLogger(__name__)

_UNREADABLE = "cannot be decoded as a video (not a video, damaged, or a codec this OpenCV build lacks)"


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds: upright frame size in pixels, nominal frames per second, frame count and
    duration in seconds (both as the container states them; the last frames' timestamps win)."""

    path: str
    width: int
    height: int
    fps: float
    frames: int
    duration: float


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its index in the stream, its presentation time (s) and the RGB image."""

    index: int
    timestamp: float
    image: np.ndarray


def _open(path: Path) -> cv2.VideoCapture:
    if not Path(path).is_file():
        raise ImageError(str(path), "no such file" if not Path(path).exists() else "not a regular file")
    if Path(path).stat().st_size == 0:
        raise ImageError(str(path), "empty file (0 bytes)")
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not capture.isOpened():
        capture.release()
        raise ImageError(str(path), _UNREADABLE)
    return capture


def probe(path: Path) -> VideoInfo:
    """Size, rate and length of a video, reading its first frame to be sure it decodes; a stated
    length the file cannot hold is replaced by its decoded frame count.

    Raises:
        ImageError: the file is missing or cannot be decoded.
    """
    capture = _open(path)
    try:
        ok, first = capture.read()
        if not ok or first is None:
            raise ImageError(str(path), _UNREADABLE)
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if fps <= 0 or fps > 1000:
            raise ImageError(str(path), f"the container states no usable frame rate ({fps})")
        size = Path(path).stat().st_size
        if frames > size:
            # The stated length is a claim, and damaged headers make absurd ones (a 30 kB clip
            # claimed 136 years, which would have been planned as 36 million segments). No video
            # holds more frames than bytes: count them instead, a decoding pass over the file.
            counted = 1
            while capture.grab():
                counted += 1
            log.warning("%s: the container states %d frames in %d bytes; %d decode", path, frames, size, counted)
            frames = counted
    finally:
        capture.release()
    height, width = first.shape[:2]
    return VideoInfo(str(path), width, height, fps, max(frames, 1), max(frames, 1) / fps)


def sample_frames(path: Path, rate: float, start: float = 0.0, end: float | None = None) -> Iterator[Frame]:
    """Frames of ``path`` at about ``rate`` per second from ``start`` (inclusive) to ``end`` (exclusive).

    Every frame is decoded (inter-coded video needs it) but only the first frame at or after each
    sampling time is converted and yielded, so the cost of a skipped frame is its decode alone.
    Timestamps are the container's presentation times.

    Raises:
        ImageError: the file cannot be opened or decoded.
    """
    if rate <= 0:
        raise ValueError(f"the sampling rate must be positive, got {rate}")
    capture = _open(path)
    try:
        if start > 0:
            capture.set(cv2.CAP_PROP_POS_MSEC, start * 1000.0)
        step = 1.0 / rate
        next_time = start
        while capture.grab():
            index = int(capture.get(cv2.CAP_PROP_POS_FRAMES)) - 1
            timestamp = float(capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            if end is not None and timestamp >= end:
                break
            # Half a frame of slack: a frame stamped a hair before the sampling time is that sample.
            if timestamp + 1e-3 < next_time:
                continue
            ok, bgr = capture.retrieve()
            if not ok:
                raise ImageError(str(path), f"frame {index} at {timestamp:.2f} s cannot be decoded")
            yield Frame(index, timestamp, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            while next_time <= timestamp + 1e-3:
                next_time += step
    finally:
        capture.release()


def read_frame(path: Path, index: int) -> np.ndarray:
    """Frame number ``index`` (0-based) of a video as an (H, W, 3) uint8 RGB array.

    Raises:
        ImageError: the file cannot be decoded or has no such frame.
    """
    capture = _open(path)
    try:
        if index > 0:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = capture.read()
    finally:
        capture.release()
    if not ok or bgr is None:
        raise ImageError(str(path), f"has no frame {index}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ChangeDetector:
    """Says whether a frame differs visibly from the last frame it accepted, so unchanged frames can
    skip face detection.

    Both frames are shrunk to a thumbnail ``width`` pixels wide and compared in CIELAB (a difference
    of about 1 is at the edge of what a person sees), cell by cell on a grid of ``cell``-pixel
    squares: a frame is *changed* when any cell's mean difference exceeds ``threshold``, so a person
    stepping into one part of a still scene counts even though the frame's overall mean barely
    moves. Comparing with the last *accepted* frame means slow drift adds up; and a frame is
    accepted anyway once ``max_hold`` seconds have passed, since a face too small to move a cell can
    still come and go.
    """

    def __init__(self, threshold: float = 6.0, max_hold: float = 2.0, width: int = 64, cell: int = 8) -> None:
        self.threshold = threshold
        self.max_hold = max_hold
        self.width = width
        self.cell = cell
        self._last: np.ndarray | None = None
        self._last_time = 0.0

    def _thumbnail(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        rows = max(self.cell, round(height * self.width / width) // self.cell * self.cell)
        small = cv2.resize(image, (self.width, rows), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)

    def difference(self, a: np.ndarray, b: np.ndarray) -> float:
        """Largest per-cell mean absolute CIELAB difference of two thumbnails."""
        diff = np.abs(a - b).mean(axis=2)
        rows, cols = diff.shape[0] // self.cell, diff.shape[1] // self.cell
        return float(diff.reshape(rows, self.cell, cols, self.cell).mean(axis=(1, 3)).max())

    def changed(self, image: np.ndarray, timestamp: float) -> bool:
        """True (and remember this frame) when ``image`` differs from the last accepted frame, when
        ``max_hold`` seconds have passed since it, or when it is the first frame seen."""
        thumb = self._thumbnail(image)
        if (
            self._last is not None
            and self._last.shape == thumb.shape
            and timestamp - self._last_time < self.max_hold
            and self.difference(thumb, self._last) <= self.threshold
        ):
            return False
        self._last, self._last_time = thumb, timestamp
        return True
