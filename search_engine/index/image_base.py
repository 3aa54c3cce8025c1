"""The similar-photo index contract that the embedded (LanceDB) and Elasticsearch stores both fulfil.

It sits beside the face index and holds one whole-image description per photo, and per keyframe
of a video (an :class:`~search_engine.types.ImageRecord`, keyed by its ``image_id``), all of one image model (``EmbedderInfo.key``, which
names the table or index). Scores are cosine similarities in [-1, 1] between unit-length vectors,
whatever the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..types import BulkResult, EmbedderInfo, ImageHit, ImageRecord


def storable_images(
    model: EmbedderInfo, images: Sequence[ImageRecord]
) -> tuple[list[tuple[ImageRecord, np.ndarray]], list[tuple[str, str]]]:
    """The pictures an upsert may store, each with its embedding as (dim,) float32, the last record
    of an ``image_id`` winning, and the others as ``(image_id, reason)`` failures: an embedding
    must be ``dim`` finite floats."""
    ok: dict[str, tuple[ImageRecord, np.ndarray]] = {}
    failed = []
    for image in images:
        vector = np.asarray(image.embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != model.dim or not np.all(np.isfinite(vector)):
            failed.append((image.image_id, f"image embedding must be {model.dim} finite floats"))
        else:
            ok[image.image_id] = (image, vector)
    return list(ok.values()), failed


@runtime_checkable
class ImageIndex(Protocol):
    """A store of whole-photo descriptions, searchable by nearest neighbour."""

    model: EmbedderInfo

    def ensure(self) -> None:
        """Create the index if it does not exist; check its dimension if it does. Idempotent.

        Raises:
            DimensionMismatchError: it holds vectors of another dimension than ``model``'s.
        """

    def upsert(self, images: Sequence[ImageRecord]) -> BulkResult:
        """Insert or overwrite pictures by ``image_id``; per-picture failures are reported (keyed by
        image id), not raised."""

    def search(self, vector: np.ndarray, k: int = 20, exclude_sources: Sequence[str] = ()) -> list[ImageHit]:
        """The ``k`` stored pictures most similar to ``vector`` (unit length, shape (dim,)), best
        first, leaving out those of the files ``exclude_sources`` before ranking.

        Raises:
            DimensionMismatchError: ``vector`` has another dimension than the index's model.
        """

    def content_hashes(self, sources: Sequence[str]) -> dict[str, str]:
        """The ``content_hash`` each of those files was described from, for those with pictures stored."""

    def embedding(self, image_id: str) -> np.ndarray | None:
        """A stored picture's unit vector (float32, shape (dim,)) by ``image_id`` (a photo's is its
        source name), or None."""

    def delete_source(self, source: str) -> int:
        """Remove the pictures of one file (a photo, or a video's keyframes); returns how many went."""

    def count(self) -> int:
        """How many pictures are stored."""

    def refresh(self) -> None:
        """Make every write so far visible to searches."""

    def optimize(self) -> None:
        """Fold what many small writes left into the index's structures (after an ingest run)."""

    def drop(self) -> None:
        """Delete the whole index."""

    def close(self) -> None:
        """Release the client or handles."""
