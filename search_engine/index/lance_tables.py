"""The embedded store's tables as Arrow sees them: the faces and sources schemas (from the face
fields' declarations), the SQL filters LanceDB runs, and rows to and from records and hits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from ..photo_hash import HASH_BYTES, hash_bytes
from ..types import (
    EQUALITY_FILTERS,
    Box,
    FaceRecord,
    Hit,
    SearchFilters,
    SourceRecord,
    Status,
    face_fields,
    hit_field_names,
)

_RECORD_FIELDS = tuple(f.name for f in face_fields())
_HIT_FIELDS = hit_field_names()
#: Columns a search reads: a hit's fields and LanceDB's distance, never the embedding.
HIT_COLUMNS = [*_HIT_FIELDS, "_distance"]


#: Arrow type of each kind of face field (:data:`~search_engine.types.FIELD_KINDS`); a vector's
#: depends on the model's dimension.
_ARROW_TYPES = {
    "keyword": pa.string(),
    "integer": pa.int32(),
    "float": pa.float32(),
    "double": pa.float64(),
    "date": pa.string(),
    "box": pa.list_(pa.float32(), 4),
}


def faces_schema(dim: int) -> pa.Schema:
    """Arrow schema of the faces table for ``dim``-dimensional embeddings, from the face fields'
    declarations (:class:`~search_engine.types.FaceRecord`): a field may be null where its default is None."""
    return pa.schema(
        [
            pa.field(
                f.name,
                pa.list_(pa.float32(), dim) if f.metadata["kind"] == "vector" else _ARROW_TYPES[f.metadata["kind"]],
                nullable=f.default is None,
            )
            for f in face_fields()
        ]
    )


#: A photo's perceptual hash as the sources table keeps it: its bytes as a vector, which LanceDB
#: searches by Hamming distance (:func:`~search_engine.photo_hash.hash_bytes`); null for a video.
IMAGE_BITS = pa.field("image_bits", pa.list_(pa.uint8(), HASH_BYTES))

SOURCES_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("content_hash", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("faces", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("media_type", pa.string(), nullable=False),
        IMAGE_BITS,
    ]
)
#: The hex text column in which an older version's sources table kept the hashes.
OLD_IMAGE_HASH = "image_hash"


PEOPLE_SCHEMA = pa.schema(
    [
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("hidden", pa.bool_(), nullable=False),
        pa.field("cover_face_id", pa.string()),
    ]
)

DECISIONS_SCHEMA = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string()),
        pa.field("not_person", pa.list_(pa.string()), nullable=False),
    ]
)


def sql_literal(value: str) -> str:
    """A SQL string literal for a LanceDB filter, quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def where_clause(filters: SearchFilters | None) -> str | None:
    """The SQL predicate for the equality and exclusion parts of ``filters`` (None when unfiltered)."""
    if filters is None:
        return None
    parts = []
    for column in EQUALITY_FILTERS:
        value = getattr(filters, column)
        if value is not None:
            parts.append(f"{column} = {sql_literal(value)}")
    if filters.exclude_sources:
        listed = ", ".join(sql_literal(s) for s in filters.exclude_sources)
        parts.append(f"source NOT IN ({listed})")
    if filters.exclude_cluster is not None:
        parts.append(f"(cluster IS NULL OR cluster != {sql_literal(filters.exclude_cluster)})")
    return " AND ".join(parts) or None


def face_row(face: FaceRecord, vector: np.ndarray, indexed_at: str) -> dict:
    row = {name: getattr(face, name) for name in _RECORD_FIELDS}
    row.update(
        box=[face.box.x1, face.box.y1, face.box.x2, face.box.y2],
        probability=float(face.probability),
        embedding=vector,
        indexed_at=indexed_at,
    )
    return row


def hit_from_row(row: dict) -> Hit:
    """A :class:`Hit` from a search's row, its ``embedding`` too where the row has that column."""
    values = {name: row[name] for name in _HIT_FIELDS}
    values.update(box=Box.from_list(row["box"]), probability=float(row["probability"]))
    if "embedding" in row:
        values["embedding"] = np.asarray(row["embedding"], dtype=np.float32)
    # LanceDB's cosine distance is 1 - cosine similarity.
    return Hit(score=float(1.0 - row["_distance"]), **values)


def source_row(record: SourceRecord) -> dict:
    """The sources table's row of one file record."""
    row = {name: getattr(record, name) for name in SOURCES_SCHEMA.names if name != IMAGE_BITS.name}
    row["status"] = Status(record.status).value
    row[IMAGE_BITS.name] = None if record.image_hash is None else list(hash_bytes(record.image_hash))
    return row


def source_from_row(row: dict) -> SourceRecord:
    """The file record of one row of the sources table."""
    values = {name: row[name] for name in SOURCES_SCHEMA.names if name != IMAGE_BITS.name}
    values["status"] = Status(values["status"])
    bits = row[IMAGE_BITS.name]
    return SourceRecord(**values, image_hash=None if bits is None else bytes(bits).hex())


def record_from_row(row: dict) -> FaceRecord:
    values = {name: row[name] for name in _RECORD_FIELDS}
    values.update(
        box=Box.from_list(row["box"]),
        probability=float(row["probability"]),
        embedding=np.asarray(row["embedding"], dtype=np.float32),
    )
    return FaceRecord(**values)
