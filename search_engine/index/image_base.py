"""The similar-photo index contract that the embedded (LanceDB) and Elasticsearch stores both fulfil.

It sits beside the face index and holds one whole-image description per photo (an
:class:`~search_engine.types.ImageRecord`), all of one image model (``EmbedderInfo.key``, which
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
    """The photos an upsert may store, each with its embedding as (dim,) float32, the last record
    of a source winning, and the others as ``(source, reason)`` failures: an embedding must be
    ``dim`` finite floats."""
    ok: dict[str, tuple[ImageRecord, np.ndarray]] = {}
    failed = []
    for image in images:
        vector = np.asarray(image.embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != model.dim or not np.all(np.isfinite(vector)):
            failed.append((image.source, f"image embedding must be {model.dim} finite floats"))
        else:
            ok[image.source] = (image, vector)
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
        """Insert or overwrite photos by ``source``; per-photo failures are reported (keyed by
        source), not raised."""

    def search(self, vector: np.ndarray, k: int = 20, exclude_sources: Sequence[str] = ()) -> list[ImageHit]:
        """The ``k`` stored photos most similar to ``vector`` (unit length, shape (dim,)), best
        first, leaving out ``exclude_sources`` before ranking.

        Raises:
            DimensionMismatchError: ``vector`` has another dimension than the index's model.
        """

    def content_hashes(self, sources: Sequence[str]) -> dict[str, str]:
        """The ``content_hash`` each of those photos was described from, for those stored."""

    def embedding(self, source: str) -> np.ndarray | None:
        """A stored photo's unit vector (float32, shape (dim,)), or None."""

    def delete_source(self, source: str) -> int:
        """Remove one photo; returns how many records went (0 or 1)."""

    def count(self) -> int:
        """How many photos are stored."""

    def refresh(self) -> None:
        """Make every write so far visible to searches."""

    def optimize(self) -> None:
        """Fold what many small writes left into the index's structures (after an ingest run)."""

    def drop(self) -> None:
        """Delete the whole index."""

    def close(self) -> None:
        """Release the client or handles."""
