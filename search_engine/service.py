"""``SearchService``: the Python API the CLI, the web app and the workers share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import Settings
from .errors import InvalidRequestError, NoFaceError
from .imageio import decode_image, read_file
from .index import FaceIndex, create_index
from .indexing import FileOutcome, PhotoInput, index_photos
from .pipeline import EmbeddedFace, FacePipeline, largest_index
from .types import Detection, Hit, SearchFilters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """The faces found in the query image, which one was searched with, and the hits (best first)."""

    query_faces: tuple[Detection, ...]
    face: int
    hits: tuple[Hit, ...]

    def to_dict(self) -> dict:
        return {
            "query_faces": [
                {"face": n, "box": d.box.as_list(), "probability": round(d.probability, 4)}
                for n, d in enumerate(self.query_faces)
            ],
            "face": self.face,
            "hits": [hit.to_dict() for hit in self.hits],
        }


class SearchService:
    """Detect, embed, index and search faces with one pipeline and one index.

    Build it once per process with :meth:`from_settings`; it is safe to share between requests.
    """

    def __init__(self, settings: Settings, pipeline: FacePipeline, index: FaceIndex) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.index = index

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchService:
        """Load the detector and embedder, open (and create if needed) the index for that embedder."""
        pipeline = FacePipeline.from_settings(settings)
        index = create_index(settings, pipeline.embedder.info)
        index.ensure()
        return cls(settings, pipeline, index)

    def index_photos(self, items: Sequence[PhotoInput]) -> list[FileOutcome]:
        """Index one batch of photos (see :func:`search_engine.indexing.index_photos`)."""
        return index_photos(self.pipeline, self.index, items, self.settings.max_image_pixels)

    def faces_in(self, image: np.ndarray) -> list[EmbeddedFace]:
        """Every face of one (H, W, 3) uint8 RGB image with its embedding."""
        return self.pipeline.analyse([image])[0]

    def search_image(
        self,
        image: np.ndarray,
        k: int = 20,
        filters: SearchFilters | None = None,
        face: int | None = None,
        collapse: str | None = None,
    ) -> SearchResult:
        """Search with one face of an RGB image: the largest, or number ``face`` (0-based, as listed).

        Raises:
            NoFaceError: the image holds no detectable face.
            InvalidRequestError: ``face`` is out of range.
        """
        detections = self.pipeline.detector.detect([image])[0]
        if not detections:
            raise NoFaceError("no face found in the query image")
        chosen = largest_index(detections) if face is None else face
        if not 0 <= chosen < len(detections):
            raise InvalidRequestError(f"the query image has {len(detections)} face(s); face {face} does not exist")
        # Only the face searched with is embedded: in a group photo each other face would cost as much.
        (vector,) = self.pipeline.embedder.embed([(image, [detections[chosen]])])[0]
        hits = self.index.search(vector, k=k, filters=filters, collapse=collapse)
        return SearchResult(tuple(detections), chosen, tuple(hits))

    def search_file(self, path: Path, **options) -> SearchResult:
        """:meth:`search_image` on a photo file (an :class:`ImageError` names it if unusable)."""
        image = decode_image(read_file(Path(path)), str(path), self.settings.max_image_pixels)
        return self.search_image(image, **options)

    def close(self) -> None:
        self.index.close()
