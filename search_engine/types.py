"""Typed values that cross module boundaries.

Conventions used everywhere:
- Images are ``numpy.ndarray`` of shape (H, W, 3), dtype uint8, **RGB** order.
- Boxes are ``(x1, y1, x2, y2)`` floats in source-image pixels, x to the right, y down.
- Landmarks are 5 ``(x, y)`` points in source pixels: left eye, right eye, nose, left and right
  mouth corner (image left/right, as MTCNN reports them).
- Embeddings are float32 vectors of unit L2 norm; similarity is their dot product (cosine), in [-1, 1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

PHOTO = "photo"
VIDEO = "video"
MEDIA_TYPES = (PHOTO, VIDEO)

#: Face fields that facets count and that a search may collapse on (best hit per value).
FACET_FIELDS = ("person", "video", "media_type", "source", "cluster")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in source pixels."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)

    def as_list(self) -> list[float]:
        return [round(self.x1, 1), round(self.y1, 1), round(self.x2, 1), round(self.y2, 1)]

    @classmethod
    def from_list(cls, values) -> Box:
        x1, y1, x2, y2 = (float(v) for v in values)
        return cls(x1, y1, x2, y2)


@dataclass(frozen=True)
class Detection:
    """One face found by the detector: box, MTCNN probability in [0, 1], 5 landmarks."""

    box: Box
    probability: float
    landmarks: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class EmbedderInfo:
    """Identity of an embedding model: vectors of different ``key``s are never mixed in one index."""

    name: str
    version: str
    dim: int

    @property
    def key(self) -> str:
        """Index-name-safe identity, e.g. ``dlib-r1``."""
        return f"{self.name}-{self.version}"


#: How a face field is stored, in both engines: ``keyword`` (text matched exactly), ``integer``,
#: ``float``, ``double`` (seconds into a video: a double keeps millisecond precision past the first
#: hours), ``date`` (ISO 8601 text), ``box`` (four floats ``x1, y1, x2, y2``, source pixels),
#: ``vector`` (the embedding). The embedded store's Arrow schema, the Elasticsearch mapping and
#: both engines' conversions are derived from these declarations.
FIELD_KINDS = ("keyword", "integer", "float", "double", "date", "box", "vector")


def _stored(kind: str, default: object = dataclasses.MISSING, *, on_hit: bool = False):
    """A :class:`FaceRecord` field stored as ``kind``; ``on_hit``: a search :class:`Hit` carries it
    too. A field whose default is None may be missing; the others are always stored."""
    return field(default=default, metadata={"kind": kind, "on_hit": on_hit})


@dataclass
class FaceRecord:
    """One face as stored in the index.

    ``face_id`` is deterministic (source, model, face number), so re-indexing overwrites rather
    than duplicates. A video face stands for a whole track, one continuous appearance: ``frame``
    and ``timestamp`` (seconds) locate its best face, ``start`` and ``end`` (seconds) the
    appearance. ``label`` is the name given at indexing, only to a face known to be that person
    (the subject of a labelled photo; the other faces of that photo have none). ``person`` is the
    name the face goes by, what filters and facets see: its label, or the name of the person it
    was grouped into. ``cluster`` is the id of that person (:mod:`search_engine.people`), None
    while it is grouped with no one.

    Adding a field is one declaration here (and one on :class:`Hit` if hits carry it).
    """

    face_id: str = _stored("keyword", on_hit=True)
    source: str = _stored("keyword", on_hit=True)
    face_no: int = _stored("integer")
    box: Box = _stored("box", on_hit=True)
    probability: float = _stored("float", on_hit=True)
    embedding: np.ndarray = _stored("vector")
    model: str = _stored("keyword", on_hit=True)
    person: str | None = _stored("keyword", None, on_hit=True)
    label: str | None = _stored("keyword", None)
    media_type: str = _stored("keyword", PHOTO, on_hit=True)
    video: str | None = _stored("keyword", None, on_hit=True)
    frame: int | None = _stored("integer", None, on_hit=True)
    timestamp: float | None = _stored("double", None, on_hit=True)
    start: float | None = _stored("double", None, on_hit=True)
    end: float | None = _stored("double", None, on_hit=True)
    image_width: int | None = _stored("integer", None)
    image_height: int | None = _stored("integer", None)
    content_hash: str | None = _stored("keyword", None)
    indexed_at: str | None = _stored("date", None)
    cluster: str | None = _stored("keyword", None, on_hit=True)


#: Face fields that a store written by an older version lacks and that start there as a copy of
#: another field, by name: before labels had a field of their own, ``person`` held them.
FILLED_FROM = {"label": "person"}


def face_fields() -> tuple[dataclasses.Field, ...]:
    """The stored face fields in order; each one's ``metadata["kind"]`` is one of :data:`FIELD_KINDS`."""
    return dataclasses.fields(FaceRecord)


def hit_field_names() -> tuple[str, ...]:
    """The stored fields a search hit carries."""
    return tuple(f.name for f in face_fields() if f.metadata["on_hit"])


class Status(str, Enum):
    """What happened to one file in an index run: ``skipped`` (unchanged since it was indexed) is
    only reported; the others are also what its :class:`SourceRecord` stores."""

    INDEXED = "indexed"
    NO_FACE = "no_face"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class SourceRecord:
    """What the index knows of one ingested file, so a re-run can skip it or report it, and what
    finds its near-duplicates: ``image_hash``, a photo's perceptual hash
    (:func:`search_engine.photo_hash.photo_hash`; None for a video or a file that failed).
    """

    source: str
    content_hash: str
    model: str
    faces: int
    status: Status = Status.INDEXED
    error: str | None = None
    media_type: str = PHOTO
    image_hash: str | None = None


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied *before* nearest-neighbour ranking.

    ``min_score`` is a cosine similarity floor in [-1, 1]; ``exclude_sources`` drops hits from those files;
    ``cluster`` keeps the faces grouped into that person, ``exclude_cluster`` drops them.
    """

    person: str | None = None
    video: str | None = None
    media_type: str | None = None
    min_score: float | None = None
    exclude_sources: tuple[str, ...] = ()
    cluster: str | None = None
    exclude_cluster: str | None = None


#: The :class:`SearchFilters` fields that keep only the faces whose field of that name equals them.
EQUALITY_FILTERS = ("person", "video", "media_type", "cluster")


@dataclass(frozen=True)
class Hit:
    """A stored face returned by a search, ``score`` being its cosine similarity to the query.

    ``rank_score`` is the similarity the hits are ordered by where that is another one (an
    expanded query, see :mod:`search_engine.expansion`); None means ``score`` itself. ``verdict``
    is what the score means on the archive searched (:mod:`search_engine.calibration`):
    ``"same_person"``, ``"possible"`` or None (neither, or the model is uncalibrated).
    ``embedding`` is the stored unit vector (float32, shape (dim,)) where the search was asked for
    it (``with_embeddings``), else None; it is never part of :meth:`to_dict`.
    """

    face_id: str
    score: float
    source: str
    box: Box
    probability: float
    model: str
    person: str | None = None
    media_type: str = PHOTO
    video: str | None = None
    frame: int | None = None
    timestamp: float | None = None
    start: float | None = None
    end: float | None = None
    cluster: str | None = None
    rank_score: float | None = None
    verdict: str | None = None
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {
            "face_id": self.face_id,
            "score": round(self.score, 4),
            "rank_score": round(self.score if self.rank_score is None else self.rank_score, 4),
            "verdict": self.verdict,
            "same_person": self.verdict == "same_person",
            "person": self.person,
            "source": self.source,
            "box": self.box.as_list(),
            "probability": round(self.probability, 4),
            "media_type": self.media_type,
            "video": self.video,
            "frame": self.frame,
            "timestamp": self.timestamp,
            "start": self.start,
            "end": self.end,
            "cluster": self.cluster,
            "model": self.model,
        }


@dataclass(frozen=True)
class Grouping:
    """Where one face belongs: the id of its person (``cluster``, None: no one) and the name it
    goes by (``person``)."""

    cluster: str | None
    person: str | None


@dataclass(frozen=True)
class PersonRecord:
    """What humans decided about one person (:mod:`search_engine.people`): the ``name`` they gave
    (None: unnamed), whether they ``hidden`` the person from the people lists, and the face they
    chose as the cover (None: the most typical face)."""

    person_id: str
    name: str | None = None
    hidden: bool = False
    cover_face_id: str | None = None


@dataclass(frozen=True)
class FaceDecision:
    """What humans decided about one face, kept apart from the face so a re-index keeps it:
    ``person_id``, the person they put it in (None: none), and ``not_person``, the people they took
    it out of, which it never joins again."""

    face_id: str
    person_id: str | None = None
    not_person: tuple[str, ...] = ()


@dataclass(frozen=True)
class Facet:
    """One value of a keyword field with how many faces carry it."""

    value: str
    count: int


@dataclass(frozen=True)
class BulkResult:
    """Outcome of a bulk upsert: how many faces landed and which failed, with reasons."""

    indexed: int
    failed: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass
class ImageRecord:
    """One picture as the similar-photo index stores it (:mod:`search_engine.index.image_base`): a
    photo, or a keyframe of a video at ``timestamp`` seconds (None for a photo). ``embedding`` is
    its whole-image description (unit length, the image model's dimension), ``content_hash`` the
    hash of the file's bytes it was computed from, so a re-run skips unchanged files, and
    ``width`` and ``height`` its size in pixels. Keyed by :attr:`image_id`."""

    source: str
    embedding: np.ndarray
    content_hash: str
    width: int
    height: int
    timestamp: float | None = None
    indexed_at: str | None = None

    @property
    def image_id(self) -> str:
        return image_key(self.source, self.timestamp)


def image_key(source: str, timestamp: float | None) -> str:
    """The key of a picture in the similar-photo index: a photo's source name, or a video's with
    ``#t=`` and the keyframe's time in milliseconds (the media-fragment form a player seeks to)."""
    return source if timestamp is None else f"{source}#t={timestamp:.3f}"


@dataclass(frozen=True)
class ImageHit:
    """A stored picture returned by a similar-photo search: a photo, or a video's keyframe at
    ``timestamp`` seconds. ``score`` is the cosine similarity of the two pictures' whole-image
    descriptions, in [-1, 1] (it says how alike they look, not who is in them)."""

    source: str
    score: float
    width: int
    height: int
    timestamp: float | None = None

    @property
    def image_id(self) -> str:
        return image_key(self.source, self.timestamp)

    def to_dict(self) -> dict:
        return {
            "image_id": self.image_id,
            "source": self.source,
            "media_type": PHOTO if self.timestamp is None else VIDEO,
            "timestamp": self.timestamp,
            "score": round(self.score, 4),
            "width": self.width,
            "height": self.height,
        }
