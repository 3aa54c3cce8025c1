"""Detect and embed every face of a batch of images in as few model calls as possible."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .config import ModelSettings
from .detection import FaceDetector
from .embedding import Embedder, create_embedder, create_image_embedder
from .types import Detection

if TYPE_CHECKING:
    from .embedding.resnet50 import ResNet50ImageEmbedder

log = logging.getLogger(__name__)

#: Faces smaller than this fraction of the largest face's area are never taken for the subject.
SUBJECT_MIN_AREA_RATIO = 0.35


@dataclass(frozen=True)
class EmbeddedFace:
    """A detection with its unit-length float32 embedding."""

    detection: Detection
    embedding: np.ndarray


def subject_index(detections: Sequence[Detection], width: int, height: int) -> int | None:
    """Which face a photo is *of*: among the faces at least a third as large as the largest, the one
    nearest the image centre (portrait and press photos are framed on their subject). None if no face.
    """
    if not detections:
        return None
    largest = max(d.box.area for d in detections)
    cx, cy = width / 2.0, height / 2.0

    def off_centre(i: int) -> float:
        x, y = detections[i].box.center
        return (x - cx) ** 2 + (y - cy) ** 2

    candidates = [i for i, d in enumerate(detections) if d.box.area >= SUBJECT_MIN_AREA_RATIO * largest]
    return min(candidates, key=off_centre)


def largest_index(detections: Sequence[Detection]) -> int | None:
    """The face with the largest box, or None."""
    if not detections:
        return None
    return max(range(len(detections)), key=lambda i: detections[i].box.area)


class FacePipeline:
    """MTCNN detection then alignment + embedding, batched across images; and, where similar-photo
    search is on, the model describing each photo as a whole (``image_embedder``, else None)."""

    def __init__(
        self, detector: FaceDetector, embedder: Embedder, image_embedder: ResNet50ImageEmbedder | None = None
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.image_embedder = image_embedder

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> FacePipeline:
        """A loaded detector + the embedder the settings mean (``auto`` resolved) + the whole-photo
        model when ``FACESEARCH_IMAGE_SEARCH`` is on, torch threads set."""
        if settings.torch_threads:
            import torch

            torch.set_num_threads(settings.torch_threads)
        detector = FaceDetector(
            min_face_size=settings.min_face_size,
            min_probability=settings.min_probability,
            batch_size=settings.batch_size,
            device=settings.device,
        )
        return cls(detector, create_embedder(settings), create_image_embedder(settings)).load()

    def load(self) -> FacePipeline:
        self.detector.load()
        self.embedder.load()
        if self.image_embedder is not None:
            self.image_embedder.load()
        return self

    def analyse(
        self, images: Sequence[np.ndarray], max_side: int | None = None, query: bool = False
    ) -> list[list[EmbeddedFace]]:
        """Every face of every (H, W, 3) uint8 RGB image, with its embedding, in detection order.

        ``max_side`` overrides the detector's downscaling limit for these images (video frames are
        detected smaller than photos); alignment and embedding always use the full image. ``query``:
        the faces are to search with, not to store (see :meth:`Embedder.embed`).
        """
        detections = self.detector.detect(images, max_side=max_side)
        vectors = self.embedder.embed(list(zip(images, detections)), query=query)
        return [[EmbeddedFace(det, vec) for det, vec in zip(dets, vecs)] for dets, vecs in zip(detections, vectors)]
