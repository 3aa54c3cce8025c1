"""The face index contract that the embedded (LanceDB) and Elasticsearch stores both fulfil, and
the checks both make the same way (each engine writes only what differs).

Every index holds the faces of **one** embedding model (``EmbedderInfo.key``): its name is derived
from that key, and opening it with vectors of another dimension raises :class:`DimensionMismatchError`.
Scores are cosine similarities in [-1, 1] between unit-length vectors, whatever the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..calibration import Calibration
from ..errors import DimensionMismatchError
from ..types import (
    FACET_FIELDS,
    BulkResult,
    EmbedderInfo,
    FaceDecision,
    FaceRecord,
    Facet,
    Grouping,
    Hit,
    PersonRecord,
    SearchFilters,
    SourceRecord,
)

#: A collapsed search gathers this many times ``k`` nearest faces to collapse among, and while that
#: yields fewer than ``k`` groups and more faces may match, :data:`COLLAPSE_GROWTH` times as many again.
COLLAPSE_OVERSAMPLE = 8
COLLAPSE_GROWTH = 4


#: The most values a caller reads of one facet when it lists or counts them all (people, videos):
#: one terms aggregation's buckets, well under Elasticsearch's ``search.max_buckets`` (65,536).
FACET_LIMIT = 10_000

#: One stored face near a query: its ``face_id`` and cosine similarity.
Neighbour = tuple[str, float]
#: One recorded photo near a perceptual hash: its ``source`` and how many bits its hash differs by.
NearCopy = tuple[str, int]


def nearest_first(copies: Iterable[NearCopy]) -> list[NearCopy]:
    """Near-duplicates in the order :meth:`FaceIndex.near_duplicates` promises: fewest bits apart
    first, then by source."""
    return sorted(copies, key=lambda copy: (copy[1], copy[0]))


@dataclass(frozen=True)
class FaceBatch:
    """A slice of the stored faces as :meth:`FaceIndex.scan` reads them, row ``i`` of each field
    being one face: ``vectors`` is (n, dim) float32, unit rows ((n, 0) when read without them); ``persons``, ``labels`` and
    ``clusters`` are those fields of :class:`~search_engine.types.FaceRecord`, None where unset."""

    face_ids: tuple[str, ...]
    vectors: np.ndarray
    persons: tuple[str | None, ...]
    labels: tuple[str | None, ...]
    clusters: tuple[str | None, ...]


@dataclass(frozen=True)
class VectorIndexInfo:
    """How an index finds the nearest faces: ``kind``, ``"exact"`` (every vector scanned) or the
    vector index's type; how many faces it holds ``indexed`` and how many are not in it yet
    (``unindexed``, searched exactly until the next :meth:`FaceIndex.optimize`); its ``size_bytes``
    where the engine reports one."""

    kind: str
    indexed: int
    unindexed: int
    size_bytes: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def query_matrix(model: EmbedderInfo, vectors: np.ndarray) -> np.ndarray:
    """Queries as an (n, dim) float32 matrix.

    Raises:
        DimensionMismatchError: they have another dimension than the index's model.
    """
    queries = np.asarray(vectors, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != model.dim:
        raise DimensionMismatchError(
            f"query vectors of shape {queries.shape} given, the {model.key} index holds {model.dim}-d vectors"
        )
    return queries


def check_collapse(collapse: str | None) -> None:
    """Refuse to collapse on anything but a field of :data:`~search_engine.types.FACET_FIELDS`."""
    if collapse is not None and collapse not in FACET_FIELDS:
        raise ValueError(f"cannot collapse on {collapse!r}; choose one of {', '.join(FACET_FIELDS)}")


def check_facet_field(field: str) -> None:
    """Refuse facets on anything but a field of :data:`~search_engine.types.FACET_FIELDS`."""
    if field not in FACET_FIELDS:
        raise ValueError(f"no facets on {field!r}; choose one of {', '.join(FACET_FIELDS)}")


def query_vector(model: EmbedderInfo, vector: np.ndarray) -> np.ndarray:
    """A query as a (dim,) float32 vector.

    Raises:
        DimensionMismatchError: it has another dimension than the index's model.
    """
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    if query.shape[0] != model.dim:
        raise DimensionMismatchError(
            f"query vector has {query.shape[0]} dimensions, the {model.key} index holds {model.dim}"
        )
    return query


def storable(
    model: EmbedderInfo, faces: Sequence[FaceRecord]
) -> tuple[list[tuple[FaceRecord, np.ndarray]], list[tuple[str, str]]]:
    """The faces an upsert may store, each with its embedding as (dim,) float32, and the others as
    ``(face_id, reason)`` failures: an embedding must be ``dim`` finite floats."""
    ok, failed = [], []
    for face in faces:
        vector = np.asarray(face.embedding, dtype=np.float32).reshape(-1)
        if vector.shape[0] != model.dim or not np.all(np.isfinite(vector)):
            failed.append((face.face_id, f"embedding must be {model.dim} finite floats"))
        else:
            ok.append((face, vector))
    return ok, failed


def check_calibration(model: EmbedderInfo, calibration: Calibration | None) -> None:
    """Refuse to store another model's calibration with an index (its scores mean something else)."""
    if calibration is not None and calibration.model != model.key:
        raise ValueError(f"a calibration of {calibration.model} cannot judge the faces of {model.key}")


@runtime_checkable
class FaceIndex(Protocol):
    """A store of face embeddings with metadata, searchable by nearest neighbour."""

    model: EmbedderInfo

    def ensure(self) -> None:
        """Create the index if it does not exist; check its dimension if it does. Idempotent."""

    def upsert(self, faces: Sequence[FaceRecord]) -> BulkResult:
        """Insert or overwrite faces by ``face_id``; per-face failures are reported, not raised."""

    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        filters: SearchFilters | None = None,
        collapse: str | None = None,
        with_embeddings: bool = False,
    ) -> list[Hit]:
        """The ``k`` faces most similar to ``vector`` (unit length, shape (dim,)), best first.

        Filters are applied before ranking, so a filtered search still returns up to ``k`` hits.
        With ``collapse`` (a field of :data:`FACET_FIELDS`), only the best hit per value of that
        field is returned. ``with_embeddings`` fills each hit's ``embedding`` in the same request,
        for callers that go on with the vectors (:func:`~search_engine.expansion.search_expanded`).
        """

    def get(self, face_id: str) -> FaceRecord | None:
        """One stored face with its embedding, or None."""

    def records(self, face_ids: Sequence[str]) -> dict[str, FaceRecord]:
        """The stored faces (with their embeddings) of those ids that exist, by face id: :meth:`get`
        for many faces in a few requests."""

    def embeddings(self, face_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored unit vectors (float32, shape (dim,)) of those faces that exist, by face id."""

    def labels(self) -> dict[str, str]:
        """The label (the name given at indexing) of every face that has one, by face id."""

    def scan(
        self, batch_size: int = 10_000, filters: SearchFilters | None = None, vectors: bool = True
    ) -> Iterator[FaceBatch]:
        """Every stored face matching the filters (``min_score`` ignored) once, with its names and,
        unless ``vectors`` is False, its vector, in batches of at most ``batch_size`` (in no stated
        order). Without vectors a batch's ``vectors`` is (n, 0), and a scan reads a fraction of the
        store (a 192-d vector is most of a face's bytes)."""

    def neighbours(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        """For each row of ``vectors`` ((n, dim), unit rows), its ``k`` nearest stored faces, best
        first: the batched form of an unfiltered :meth:`search`, for jobs that query every face."""

    def set_people(self, changes: Mapping[str, Grouping]) -> int:
        """Set the ``cluster`` and ``person`` of faces by face id, leaving every other field as it
        is; faces not stored are passed over. Returns how many faces were updated."""

    def get_people(self) -> dict[str, PersonRecord]:
        """Every stored person record (what humans decided about a person), by person id."""

    def put_people(self, records: Sequence[PersonRecord]) -> None:
        """Store person records, replacing those of the same ids."""

    def get_decisions(self) -> dict[str, FaceDecision]:
        """Every stored face decision (what humans decided about a face), by face id."""

    def put_decisions(self, decisions: Sequence[FaceDecision]) -> None:
        """Store face decisions, replacing those of the same faces. They outlive the faces: a face
        re-indexed under its deterministic id is decided as before."""

    def faces_of_source(self, source: str) -> list[FaceRecord]:
        """Every stored face of one file, ordered by ``face_no``."""

    def delete_source(self, source: str) -> int:
        """Remove every face of one file and its source record; returns how many faces went."""

    def count(self, filters: SearchFilters | None = None) -> int:
        """How many faces match the filters (``min_score`` ignored: there is no query vector)."""

    def facets(self, field: str, size: int = 100, filters: SearchFilters | None = None) -> list[Facet]:
        """The most frequent values of ``field`` with their face counts, most frequent first."""

    def record_sources(self, sources: Sequence[SourceRecord]) -> None:
        """Remember files as ingested (or failed), overwriting earlier records of the same file."""

    def get_sources(self, sources: Sequence[str]) -> dict[str, SourceRecord]:
        """The stored records of those files that have one."""

    def image_hashes(self) -> dict[str, str]:
        """Every recorded file's ``image_hash`` (source name to hash), those that have one."""

    def near_duplicates(
        self, image_hash: str, max_distance: int, limit: int, exclude_source: str | None = None
    ) -> list[NearCopy]:
        """The recorded photos whose ``image_hash`` differs from this one
        (:func:`~search_engine.photo_hash.photo_hash`'s hex) in at most ``max_distance`` bits,
        nearest first and then by source, at most ``limit`` of them, ``exclude_source`` (the
        photo itself) left out (which of equally near photos make that cut is unspecified).
        Every hash is compared: none within the distance is missed."""

    def get_calibration(self) -> Calibration | None:
        """The calibration stored with this index (``facesearch calibrate``), or None."""

    def put_calibration(self, calibration: Calibration | None) -> None:
        """Store the model's calibration with this index (None removes it).

        Raises:
            ValueError: the calibration is another model's.
        """

    def vector_index(self) -> VectorIndexInfo:
        """How searches find the nearest faces now (exact scan or a vector index, and its coverage)."""

    def refresh(self) -> None:
        """Make every write so far visible to searches."""

    def optimize(self) -> None:
        """Fold what many small writes left into the index's structures (after an ingest run)."""

    def drop(self) -> None:
        """Delete the whole index: faces, source records, calibration, people and face decisions."""

    def close(self) -> None:
        """Release the client or handles."""
