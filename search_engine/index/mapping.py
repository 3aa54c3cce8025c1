"""Elasticsearch names, mappings, settings and document conversions: plain data, no client.

Layout, per embedding model (``EmbedderInfo.key``) and prefix ``p``:

- faces: alias ``p-faces-<key>`` over the concrete index ``p-faces-<key>-v<MAPPING_VERSION>``;
- ingested files: alias ``p-sources-<key>`` over ``p-sources-<key>-v<MAPPING_VERSION>``;
- human decisions about people (``p-people-<key>``, one document per person id) and about faces
  (``p-decisions-<key>``, one per face id), each likewise over its ``-v<MAPPING_VERSION>`` index.

Everything reads and writes through the aliases, so a mapping change is a new versioned index, a
reindex and an alias flip, never an in-place rewrite. An index template per alias (same name as the
alias, pattern ``<alias>-v*``) gives any later versioned index the current settings and mapping.

The faces index's mapping ``_meta`` holds the mapping version and, once ``facesearch calibrate``
has run, the model's calibration (:func:`faces_meta`): it lives and goes with the faces it judges.

A face document stores its box as an object of four floats ``{"x1", "y1", "x2", "y2"}`` in source
pixels (x right, y down), so each edge is a queryable number rather than a position in an array,
and its embedding as an indexed ``dense_vector`` with ``dot_product`` similarity: embeddings are
unit length, so the dot product is their cosine similarity.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..photo_hash import HASH_BITS
from ..types import (
    PHOTO,
    Box,
    EmbedderInfo,
    FaceDecision,
    FaceRecord,
    Hit,
    ImageHit,
    ImageRecord,
    PersonRecord,
    SourceRecord,
    Status,
    face_fields,
    hit_field_names,
)

#: Bumped whenever a mapping below changes incompatibly; it names the concrete indices.
MAPPING_VERSION = 1

#: The dense_vector field of a face document.
EMBEDDING_FIELD = "embedding"

#: ``int8_hnsw`` keeps an int8-quantised HNSW graph (about a quarter of the float memory) and the
#: float vectors on disk; scores it reports are close to, not exactly, the float dot product.
DEFAULT_VECTOR_INDEX = "int8_hnsw"

#: The oldest server whose mappings these are: ``bit`` dense vectors, which the sources index
#: searches photos' hashes with, came in 8.15.
MIN_SERVER_VERSION = (8, 15)

#: A photo's perceptual hash as the sources index searches it: the hash's bits as a ``bit``
#: dense vector, scanned exhaustively (``flat``) by Hamming distance, which is what ``l2_norm``
#: means for bits. ``image_hash`` keeps the hash as text, read back with the file's record.
IMAGE_BITS_FIELD = "image_bits"

#: Above Elasticsearch's built-in templates (priority 100 and below), so ours wins for our names.
TEMPLATE_PRIORITY = 200

# Index names are lowercase and may not hold \ / * ? " < > | , # : or spaces; start with a letter or digit.
_UNSAFE = re.compile(r"[^a-z0-9._-]")
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class IndexNames:
    """The aliases, concrete indices and templates of one embedding model's store."""

    faces_alias: str
    sources_alias: str
    people_alias: str
    decisions_alias: str

    @property
    def aliases(self) -> tuple[str, ...]:
        return (self.faces_alias, self.sources_alias, self.people_alias, self.decisions_alias)

    @staticmethod
    def index_of(alias: str) -> str:
        """The concrete index an alias of this version points at (its template has the alias's name)."""
        return f"{alias}-v{MAPPING_VERSION}"

    @property
    def faces_index(self) -> str:
        return self.index_of(self.faces_alias)

    @property
    def sources_index(self) -> str:
        return self.index_of(self.sources_alias)


def index_names(prefix: str, model: EmbedderInfo) -> IndexNames:
    """Names for ``model``'s faces and sources under ``prefix`` (lowercased; see the module doc).

    Raises:
        ConfigError: the prefix cannot start an Elasticsearch index name.
    """
    return IndexNames(*(_name(prefix, kind, model) for kind in ("faces", "sources", "people", "decisions")))


def images_alias(prefix: str, model: EmbedderInfo) -> str:
    """The alias of the similar-photo index of image model ``model`` under ``prefix``
    (``p-images-<key>``, over ``p-images-<key>-v<MAPPING_VERSION>``).

    Raises:
        ConfigError: the prefix cannot start an Elasticsearch index name.
    """
    return _name(prefix, "images", model)


def _name(prefix: str, kind: str, model: EmbedderInfo) -> str:
    clean = prefix.strip().lower()
    if not _PREFIX.match(clean) or len(clean) > 100:
        raise ConfigError(
            "FACESEARCH_ES_INDEX_PREFIX must be 1-100 characters of a-z, 0-9, '.', '_' or '-' "
            f"starting with a letter or digit, got {prefix!r}"
        )
    return f"{clean}-{kind}-{_UNSAFE.sub('_', model.key.lower())}"


def faces_mapping(dim: int, vector_index: str = DEFAULT_VECTOR_INDEX) -> dict[str, Any]:
    """Mapping of the faces index for ``dim``-dimensional unit embeddings.

    ``vector_index`` is the dense_vector ``index_options.type``: ``int8_hnsw`` (default) or
    ``hnsw`` for exact float scores at four times the graph memory.
    """
    properties: dict[str, Any] = {}
    for f in face_fields():
        kind = f.metadata["kind"]
        if kind == "vector":
            properties[EMBEDDING_FIELD] = _vector_property(dim, vector_index)
        elif kind == "box":
            properties[f.name] = {"properties": {edge: {"type": "float"} for edge in _EDGES}}
        else:
            properties[f.name] = {"type": kind}
    return {"dynamic": "strict", "_meta": faces_meta(None), "properties": properties}


def _vector_property(dim: int, vector_index: str) -> dict[str, Any]:
    """An indexed ``dense_vector`` of ``dim`` unit floats: ``dot_product`` is then their cosine."""
    return {
        "type": "dense_vector",
        "dims": dim,
        "index": True,
        "similarity": "dot_product",
        "index_options": {"type": vector_index},
    }


def images_mapping(dim: int, vector_index: str = DEFAULT_VECTOR_INDEX) -> dict[str, Any]:
    """Mapping of the similar-photo index: one document per photo and per video keyframe (``_id`` =
    :func:`~search_engine.ids.source_id` of its ``image_id``), its ``dim``-d unit description as a
    ``dense_vector`` with ``dot_product`` similarity, as the faces' is; ``timestamp``: a keyframe's
    seconds into its video."""
    keyword = {"type": "keyword"}
    return _strict(
        {
            "image_id": keyword,
            "source": keyword,
            "timestamp": {"type": "double"},
            EMBEDDING_FIELD: _vector_property(dim, vector_index),
            "content_hash": keyword,
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "indexed_at": {"type": "date"},
        }
    )


def image_document(record: ImageRecord, vector: np.ndarray, indexed_at: str) -> dict[str, Any]:
    """The JSON document stored for one picture of the similar-photo index (``vector`` is its
    checked (dim,) float32 embedding; ``indexed_at`` is used where the record has none; a photo's
    ``timestamp`` left out)."""
    doc = {
        "image_id": record.image_id,
        "source": record.source,
        EMBEDDING_FIELD: np.asarray(vector, dtype=np.float32).reshape(-1).tolist(),
        "content_hash": record.content_hash,
        "width": int(record.width),
        "height": int(record.height),
        "indexed_at": record.indexed_at or indexed_at,
    }
    if record.timestamp is not None:
        doc["timestamp"] = float(record.timestamp)
    return doc


def image_hit_from_document(doc: Mapping[str, Any], score: float) -> ImageHit:
    """An :class:`ImageHit` from a stored picture's ``_source`` and its cosine ``score`` in [-1, 1]."""
    timestamp = doc.get("timestamp")
    return ImageHit(
        doc["source"],
        float(score),
        int(doc["width"]),
        int(doc["height"]),
        None if timestamp is None else float(timestamp),
    )


def copy_field_body(source: str, target: str) -> dict[str, Any]:
    """The ``update_by_query`` arguments copying field ``source`` into ``target`` wherever it is set."""
    return {
        "query": {"bool": {"filter": [{"exists": {"field": source}}]}},
        "script": {
            "source": "ctx._source[params.target] = ctx._source[params.source]",
            "lang": "painless",
            "params": {"source": source, "target": target},
        },
    }


def missing_properties(mappings: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of the ``wanted`` mapping that one index's ``mappings`` (a ``get_mapping`` body)
    lacks, as mapping properties: an index created by an older version gets them with
    ``put_mapping`` (adding a field is the one change a strict mapping takes in place)."""
    held = mappings.get("properties", {})
    return {name: spec for name, spec in wanted["properties"].items() if name not in held}


def faces_meta(calibration: Mapping[str, Any] | None) -> dict[str, Any]:
    """The faces mapping's whole ``_meta`` (an update replaces it all) with a calibration's
    :meth:`~search_engine.calibration.Calibration.to_dict`, or without one."""
    meta: dict[str, Any] = {"mapping_version": MAPPING_VERSION}
    if calibration is not None:
        meta["calibration"] = dict(calibration)
    return meta


def calibration_from_mappings(response: Mapping[str, Any]) -> dict[str, Any] | None:
    """The calibration stored in a ``get_mapping`` response of the faces alias (one index), or None."""
    for body in response.values():
        stored = body.get("mappings", {}).get("_meta", {}).get("calibration")
        if stored is not None:
            return dict(stored)
    return None


def sources_mapping() -> dict[str, Any]:
    """Mapping of the index of ingested files: one document per file, ``_id`` = :func:`~search_engine.ids.source_id`."""
    keyword = {"type": "keyword"}
    return _strict(
        {
            "source": keyword,
            "content_hash": keyword,
            "model": keyword,
            "faces": {"type": "integer"},
            "status": keyword,
            # Kept for display only: error messages are never searched.
            "error": {"type": "text", "index": False},
            "media_type": keyword,
            "image_hash": keyword,
            IMAGE_BITS_FIELD: {
                "type": "dense_vector",
                "element_type": "bit",
                "dims": HASH_BITS,
                "index": True,
                "similarity": "l2_norm",
                "index_options": {"type": "flat"},
            },
        }
    )


def _strict(properties: dict[str, Any]) -> dict[str, Any]:
    """A strict mapping of these properties, stamped with the mapping version."""
    return {"dynamic": "strict", "_meta": {"mapping_version": MAPPING_VERSION}, "properties": properties}


def people_mapping() -> dict[str, Any]:
    """Mapping of the person records: one document per person, ``_id`` = the person id."""
    keyword = {"type": "keyword"}
    return _strict({"person_id": keyword, "name": keyword, "hidden": {"type": "boolean"}, "cover_face_id": keyword})


def decisions_mapping() -> dict[str, Any]:
    """Mapping of the face decisions: one document per face, ``_id`` = the face id; ``not_person``
    is an array of person ids."""
    keyword = {"type": "keyword"}
    return _strict({"face_id": keyword, "person_id": keyword, "not_person": keyword})


def person_document(record: PersonRecord) -> dict[str, Any]:
    return dataclasses.asdict(record)


def person_from_document(doc: Mapping[str, Any]) -> PersonRecord:
    return PersonRecord(doc["person_id"], doc.get("name"), bool(doc.get("hidden", False)), doc.get("cover_face_id"))


def decision_document(decision: FaceDecision) -> dict[str, Any]:
    return {"face_id": decision.face_id, "person_id": decision.person_id, "not_person": list(decision.not_person)}


def decision_from_document(doc: Mapping[str, Any]) -> FaceDecision:
    return FaceDecision(doc["face_id"], doc.get("person_id"), tuple(doc.get("not_person") or ()))


def index_settings(shards: int = 1, replicas: int | None = None, keep_source_vectors: bool = False) -> dict[str, Any]:
    """Settings of a new index.

    Args:
        shards: primary shards; one holds millions of faces, more only spread a very large index.
        replicas: fixed replica count, or None for ``auto_expand_replicas: 0-1`` (no replica on a
            single node, so it stays green; one replica as soon as a second node joins).
        keep_source_vectors: set ``index.mapping.exclude_source_vectors: false``. Elasticsearch 9.2+
            otherwise leaves vectors out of ``_source`` and so out of get/mget answers; only pass
            True to servers that know the setting (see :func:`knows_exclude_source_vectors`).
    """
    if shards < 1 or (replicas is not None and replicas < 0):
        raise ValueError(f"need shards >= 1 and replicas >= 0, got {shards} and {replicas}")
    settings: dict[str, Any] = {"index.number_of_shards": shards}
    if replicas is None:
        settings["index.auto_expand_replicas"] = "0-1"
    else:
        settings["index.number_of_replicas"] = replicas
    if keep_source_vectors:
        settings["index.mapping.exclude_source_vectors"] = False
    return settings


def server_version(version_number: str) -> tuple[int, int] | None:
    """(major, minor) of a server's ``info()["version"]["number"]``, None when it reads otherwise."""
    found = re.match(r"^(\d+)\.(\d+)", version_number)
    return None if found is None else (int(found.group(1)), int(found.group(2)))


def knows_exclude_source_vectors(version_number: str) -> bool:
    """Whether a server of this version (``info()["version"]["number"]``) has ``exclude_source_vectors``.

    The setting exists, defaulting to true for new indices, from Elasticsearch 9.2; older servers
    refuse it as unknown.
    """
    version = server_version(version_number)
    return version is not None and version >= (9, 2)


def index_template(alias: str, mappings: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Body of ``indices.put_index_template`` giving every ``<alias>-v*`` index these mappings and settings."""
    return {
        "index_patterns": [f"{alias}-v*"],
        "priority": TEMPLATE_PRIORITY,
        "template": {"settings": dict(settings), "mappings": dict(mappings)},
        "_meta": {"managed_by": "facesearch", "mapping_version": MAPPING_VERSION},
    }


def embedding_dims(mappings: Mapping[str, Any]) -> int | None:
    """The ``dims`` of the embedding field in one index's ``mappings`` (None when it has none)."""
    field = mappings.get("properties", {}).get(EMBEDDING_FIELD, {})
    if field.get("type") != "dense_vector":
        return None
    dims = field.get("dims")
    return int(dims) if dims is not None else None


_EDGES = ("x1", "y1", "x2", "y2")


def _same(value: Any) -> Any:
    return value


#: How a value of each kind of face field is written into a document, and read back from one.
_TO_JSON = {
    "keyword": _same,
    "date": _same,
    "integer": int,
    "float": float,
    "double": float,
    "box": lambda box: dict(zip(_EDGES, (float(box.x1), float(box.y1), float(box.x2), float(box.y2)))),
    "vector": lambda vector: np.asarray(vector, dtype=np.float32).reshape(-1).tolist(),
}
_FROM_JSON = {
    "keyword": _same,
    "date": _same,
    "integer": int,
    "float": float,
    "double": float,
    "box": lambda box: Box(*(float(box[edge]) for edge in _EDGES)),
}


def face_document(record: FaceRecord) -> dict[str, Any]:
    """The JSON document stored for one face (None fields left out); its ``_id`` is ``face_id``."""
    doc: dict[str, Any] = {}
    for f in face_fields():
        value = getattr(record, f.name)
        if value is not None:
            doc[EMBEDDING_FIELD if f.metadata["kind"] == "vector" else f.name] = _TO_JSON[f.metadata["kind"]](value)
    return doc


def embedding_from_document(face_id: str, doc: Mapping[str, Any]) -> np.ndarray:
    """The float32 embedding in a stored face's ``_source``; ValueError when the index left it out."""
    if EMBEDDING_FIELD not in doc:
        raise ValueError(
            f"face {face_id!r} came back without its {EMBEDDING_FIELD!r}: the index leaves "
            "vectors out of _source (index.mapping.exclude_source_vectors)"
        )
    return np.asarray(doc[EMBEDDING_FIELD], dtype=np.float32)


def _fields_from_document(doc: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """The named face fields read from a stored face's ``_source``: a missing one gets its default."""
    values = {}
    for f in face_fields():
        if f.name not in names or f.metadata["kind"] == "vector":
            continue
        raw = doc.get(f.name)
        if raw is None and f.default is dataclasses.MISSING:
            raise ValueError(f"a stored face document lacks its {f.name!r}: {dict(doc)}")
        values[f.name] = f.default if raw is None else _FROM_JSON[f.metadata["kind"]](raw)
    return values


def record_from_document(doc: Mapping[str, Any]) -> FaceRecord:
    """A :class:`FaceRecord` from a stored face's ``_source``, embedding included (float32)."""
    names = [f.name for f in face_fields()]
    return FaceRecord(embedding=embedding_from_document(doc.get("face_id"), doc), **_fields_from_document(doc, names))


def hit_from_document(doc: Mapping[str, Any], score: float, with_embedding: bool = False) -> Hit:
    """A :class:`Hit` from a face's ``_source`` and its cosine ``score`` in [-1, 1], its embedding
    read too ``with_embedding`` (ValueError as :func:`embedding_from_document` when it is missing)."""
    fields = _fields_from_document(doc, hit_field_names())
    if with_embedding:
        fields["embedding"] = embedding_from_document(doc.get("face_id"), doc)
    return Hit(score=float(score), **fields)


def source_document(record: SourceRecord) -> dict[str, Any]:
    """The JSON document stored for one ingested file; its ``_id`` is :func:`~search_engine.ids.source_id`."""
    doc: dict[str, Any] = {
        "source": record.source,
        "content_hash": record.content_hash,
        "model": record.model,
        "faces": int(record.faces),
        "status": Status(record.status).value,
        "media_type": record.media_type,
    }
    for optional in ("error", "image_hash"):
        if getattr(record, optional) is not None:
            doc[optional] = getattr(record, optional)
    if record.image_hash is not None:
        # A bit vector may be given as the hex of its bytes, first byte's high bit first: the hash itself.
        doc[IMAGE_BITS_FIELD] = record.image_hash
    return doc


def source_record_from_document(doc: Mapping[str, Any]) -> SourceRecord:
    """A :class:`SourceRecord` from a stored file document's ``_source``."""
    return SourceRecord(
        source=doc["source"],
        content_hash=doc["content_hash"],
        model=doc["model"],
        faces=int(doc["faces"]),
        status=Status(doc["status"]),
        error=doc.get("error"),
        media_type=doc.get("media_type") or PHOTO,
        image_hash=doc.get("image_hash"),
    )
