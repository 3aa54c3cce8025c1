"""Face tracks: detections in successive sampled frames linked into continuous appearances.

A detection joins a live track when its box overlaps the track's last box and its embedding is as
similar to the track's last embedding as two photos of one person are; otherwise it starts a new
track. Both tests matter: a cut between two close-ups (a debate) keeps the box where it was but
changes the face, and two people crossing swap positions but not faces. A track that has not been
seen for ``max_gap`` seconds ends. Times are seconds; boxes are in frame pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .pipeline import EmbeddedFace
from .types import Box, Detection


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in [0, 1]."""
    width = min(a.x2, b.x2) - max(a.x1, b.x1)
    height = min(a.y2, b.y2) - max(a.y1, b.y1)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return inter / (a.area + b.area - inter)


def face_quality(detection: Detection) -> float:
    """How good a face is to stand for its track: larger, more frontal and more certain is better.

    Size counts up to 150 px (the embedders' input size: beyond it nothing is gained); frontality is
    how evenly the nose sits between the eyes (1 frontal, 0 in profile).
    """
    (lx, _), (rx, _), (nx, _) = detection.landmarks[:3]
    eye_span = abs(rx - lx)
    frontal = 0.0 if eye_span < 1e-6 else max(0.0, 1.0 - abs((nx - lx) - (rx - nx)) / eye_span)
    size = min(detection.box.width, detection.box.height, 150.0) / 150.0
    return detection.probability * size * (0.25 + 0.75 * frontal)


@dataclass
class Sighting:
    """One detection of a track: frame index, time (s), the face and its quality score."""

    frame: int
    timestamp: float
    face: EmbeddedFace
    quality: float


@dataclass
class Track:
    """One continuous appearance of one face. ``end`` is the last time (s) it was seen, including
    unchanged frames that were not re-detected."""

    sightings: list[Sighting] = field(default_factory=list)
    end: float = 0.0

    @property
    def start(self) -> float:
        return self.sightings[0].timestamp

    @property
    def first_frame(self) -> int:
        return self.sightings[0].frame

    @property
    def last(self) -> Sighting:
        return self.sightings[-1]

    @property
    def best(self) -> Sighting:
        """The sighting with the highest :func:`face_quality` (the earliest among equals)."""
        return max(self.sightings, key=lambda s: s.quality)

    def mean_embedding(self) -> np.ndarray:
        """Unit-length mean of the sightings' embeddings (float32)."""
        mean = np.mean([s.face.embedding for s in self.sightings], axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


class FaceTracker:
    """Links the faces of successive sampled frames into :class:`Track` s.

    Args:
        link_similarity: the cosine similarity a detection needs to the track's last face to join it
            (the embedder's same-person threshold).
        min_iou: the box overlap it needs with the track's last box.
        max_gap: seconds a track may go unseen before it ends.
    """

    def __init__(self, link_similarity: float, min_iou: float = 0.2, max_gap: float = 1.0) -> None:
        self.link_similarity = link_similarity
        self.min_iou = min_iou
        self.max_gap = max_gap
        self._live: list[Track] = []
        self._done: list[Track] = []
        self._last_observed: float | None = None

    def observe(self, frame: int, timestamp: float, faces: Sequence[EmbeddedFace]) -> None:
        """Add the faces detected in one frame (frames in time order)."""
        self._expire(timestamp)
        self._last_observed = timestamp
        pairs = []
        for t, track in enumerate(self._live):
            last = track.last.face
            for f, face in enumerate(faces):
                overlap = iou(last.detection.box, face.detection.box)
                similarity = float(np.dot(last.embedding, face.embedding))
                if overlap >= self.min_iou and similarity >= self.link_similarity:
                    pairs.append((similarity + overlap, t, f))
        taken_tracks: set[int] = set()
        taken_faces: set[int] = set()
        # Greedy on the best pairs first: with the few faces per frame of real video it matches
        # what an optimal assignment would, at no cost.
        for _, t, f in sorted(pairs, reverse=True):
            if t in taken_tracks or f in taken_faces:
                continue
            taken_tracks.add(t)
            taken_faces.add(f)
            self._extend(self._live[t], frame, timestamp, faces[f])
        for f, face in enumerate(faces):
            if f not in taken_faces:
                track = Track()
                self._extend(track, frame, timestamp, face)
                self._live.append(track)

    def hold(self, timestamp: float) -> None:
        """A frame that looks unchanged since the last observed one: the tracks seen there are still
        on screen (a track missing from that frame stays missing)."""
        for track in self._live:
            if track.last.timestamp == self._last_observed:
                track.end = max(track.end, timestamp)

    def finish(self) -> list[Track]:
        """Every track, ordered by start time (then first-frame face order); the tracker is spent."""
        self._done.extend(self._live)
        self._live = []
        return sorted(self._done, key=lambda track: (track.start, track.first_frame))

    def _extend(self, track: Track, frame: int, timestamp: float, face: EmbeddedFace) -> None:
        track.sightings.append(Sighting(frame, timestamp, face, face_quality(face.detection)))
        track.end = max(track.end, timestamp)

    def _expire(self, timestamp: float) -> None:
        live = []
        for track in self._live:
            (live if timestamp - track.end <= self.max_gap else self._done).append(track)
        self._live = live
