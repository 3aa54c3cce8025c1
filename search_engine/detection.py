"""Face detection with MTCNN (facenet-pytorch's trained networks), behind a small wrapper.

The cascade itself is :mod:`search_engine.mtcnn`; it batches only images of one size, which this
wrapper groups. Callers see :class:`Detection` lists in source pixels.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence

import cv2
import numpy as np

from .errors import ModelUnavailableError
from .mtcnn import Cascade, Faces
from .types import Box, Detection

log = logging.getLogger(__name__)

#: Smallest face MTCNN is asked to look for in the (possibly downscaled) image it runs on: its
#: default, below which the image pyramid grows and false positives with it.
MIN_DETECTED_FACE = 20


class FaceDetector:
    """Finds every face in RGB images.

    Args:
        min_face_size: smallest face kept, as the width of its box in source pixels: smaller ones
            are not looked for, and any MTCNN returns anyway are dropped.
        min_probability: detections whose MTCNN probability is below this are dropped. MTCNN's own
            last-stage cut is 0.7; on large photos false positives around 0.8 are common, hence 0.9.
        max_side: images whose longer side exceeds this are downscaled for detection (boxes and
            landmarks are mapped back to source pixels); 0 disables it.
        batch_size: images of one size stacked per MTCNN call.
        device: torch device name.
    """

    def __init__(
        self,
        min_face_size: int = 32,
        min_probability: float = 0.9,
        max_side: int = 1600,
        batch_size: int = 32,
        device: str = "cpu",
    ) -> None:
        self.min_face_size = min_face_size
        self.min_probability = min_probability
        self.max_side = max_side
        self.batch_size = batch_size
        self.device = device
        self._mtcnn = None
        self._lock = threading.Lock()

    def load(self) -> FaceDetector:
        """Build MTCNN (its weights ship inside facenet-pytorch). Idempotent."""
        if self._mtcnn is None:
            try:
                self._mtcnn = Cascade(self.device)
            except ImportError as exc:
                raise ModelUnavailableError(f"facenet-pytorch is not importable: {exc}") from exc
        return self

    def detect(self, images: Sequence[np.ndarray], max_side: int | None = None) -> list[list[Detection]]:
        """Detect faces in each image.

        Args:
            images: (H, W, 3) uint8 RGB arrays, any sizes; same-size images are batched together.
            max_side: this call's downscaling limit instead of the constructor's (0: none).

        Returns:
            For each image, its faces sorted by probability (highest first), in source pixels;
            none for an image whose shorter side is below ``min_face_size``.
        """
        self.load()
        results: list[list[Detection]] = [[] for _ in images]
        limit = self.max_side if max_side is None else max_side
        prepared = [self._downscale(image, limit) for image in images]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (small, _) in enumerate(prepared):
            # An image narrower than the smallest face kept holds none (and MTCNN's pyramid would
            # start below its 12-pixel window).
            if min(images[i].shape[:2]) >= self.min_face_size:
                by_shape[small.shape].append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = np.stack([prepared[i][0] for i in chunk])
                faces = self._run(batch, prepared[chunk[0]][1])
                for i, found in zip(chunk, faces):
                    results[i] = self._detections(found, prepared[i][1])
        return results

    def _run(self, batch: np.ndarray, scale: float):
        # The pyramid starts at the scale where the smallest wanted face is MTCNN's 12-px window.
        # The web app's request threads take turns: one batch at a time already uses this
        # process's share of the cores.
        with self._lock:
            return self._mtcnn.detect(batch, max(MIN_DETECTED_FACE, round(self.min_face_size * scale)))

    @staticmethod
    def _downscale(image: np.ndarray, limit: int) -> tuple[np.ndarray, float]:
        height, width = image.shape[:2]
        longest = max(height, width)
        if not limit or longest <= limit:
            return image, 1.0
        scale = limit / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale

    def _detections(self, faces: Faces, scale: float) -> list[Detection]:
        found = []
        for box, prob, pts in zip(faces.boxes, faces.probabilities, faces.landmarks):
            if float(prob) < self.min_probability:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in box)
            if x2 - x1 < self.min_face_size:
                continue
            landmarks = tuple((float(x) / scale, float(y) / scale) for x, y in pts)
            found.append(Detection(Box(x1, y1, x2, y2), float(prob), landmarks))
        found.sort(key=lambda d: -d.probability)
        return found
