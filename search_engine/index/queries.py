"""Elasticsearch request bodies for face search, counts and facets: plain dicts, no client.

Scores: with ``dot_product`` similarity on float vectors Elasticsearch reports
``_score = (1 + dot) / 2`` in [0, 1]; :func:`cosine_from_score` maps it back to the cosine
similarity in [-1, 1] that :class:`~search_engine.types.Hit` carries. The kNN ``similarity`` floor,
by contrast, is compared with the raw similarity (the dot product itself), so a cosine
``min_score`` goes there unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..types import EQUALITY_FILTERS, Grouping, SearchFilters
from .base import COLLAPSE_OVERSAMPLE, check_collapse, check_facet_field
from .mapping import EMBEDDING_FIELD, IMAGE_BITS_FIELD

#: Elasticsearch's ceiling for both ``k`` and ``num_candidates`` of a kNN search.
MAX_KNN = 10_000

#: Floor of the default ``num_candidates``: below it, HNSW recall drops for little time saved.
MIN_CANDIDATES = 100

#: Returned hits leave out the embedding unless asked for it: it is large.
HIT_SOURCE = {"excludes": [EMBEDDING_FIELD]}


def query_vector(vector: np.ndarray | Sequence[float]) -> list[float]:
    """``vector`` as a unit-length list of floats.

    Elasticsearch refuses ``dot_product`` query vectors that are not unit length, and scaling the
    query changes no ranking, so the cosine meaning of the scores is kept whatever the input norm.

    Raises:
        ValueError: the vector is empty, zero or not finite.
    """
    values = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(values)) if values.size else 0.0
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the query vector must be finite and non-zero")
    return (values / norm).astype(np.float32).tolist()


def filter_clauses(filters: SearchFilters | None) -> list[dict[str, Any]]:
    """Filter-context clauses for the equality and exclusion parts of ``filters`` (``min_score`` aside).

    The :data:`~search_engine.types.EQUALITY_FILTERS` become ``term`` filters; ``exclude_sources`` and
    ``exclude_cluster`` become ``bool.must_not`` clauses.
    """
    if filters is None:
        return []
    clauses: list[dict[str, Any]] = [
        {"term": {field: getattr(filters, field)}} for field in EQUALITY_FILTERS if getattr(filters, field) is not None
    ]
    if filters.exclude_sources:
        clauses.append({"bool": {"must_not": [{"terms": {"source": list(filters.exclude_sources)}}]}})
    if filters.exclude_cluster is not None:
        clauses.append({"bool": {"must_not": [{"term": {"cluster": filters.exclude_cluster}}]}})
    return clauses


def _filtered_query(clauses: list[dict[str, Any]]) -> dict[str, Any]:
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def knn_search_body(
    vector: np.ndarray | Sequence[float],
    k: int,
    filters: SearchFilters | None = None,
    num_candidates: int | None = None,
    collapse: str | None = None,
    knn_k: int | None = None,
    with_embeddings: bool = False,
) -> dict[str, Any]:
    """A search body for the ``k`` faces nearest ``vector``, best first.

    Args:
        vector: the query embedding (normalised here, see :func:`query_vector`).
        k: hits wanted, 1 to :data:`MAX_KNN`; the body's ``size``.
        filters: applied inside the ``knn`` clause, so they restrict the candidates *before*
            ranking and a filtered search still finds up to ``k`` faces; ``min_score`` (cosine)
            becomes the clause's ``similarity`` floor.
        num_candidates: per-shard HNSW candidates; default ``max(100, 2 * knn_k)``. Always raised
            to at least ``knn_k`` and capped at 10,000.
        collapse: a field of :data:`~search_engine.index.base.FACET_FIELDS`; only the best face per
            value comes back (faces lacking the field form one group).
        knn_k: nearest faces the ``knn`` clause gathers; default ``k``, or with ``collapse``
            ``k * COLLAPSE_OVERSAMPLE`` (capped at 10,000), since collapsing happens among them.
        with_embeddings: return the hits' whole ``_source``, embedding included.
    """
    if not 1 <= k <= MAX_KNN:
        raise ValueError(f"k must be within [1, {MAX_KNN}], got {k}")
    check_collapse(collapse)
    if knn_k is None:
        knn_k = k if collapse is None else k * COLLAPSE_OVERSAMPLE
    knn_k = min(max(knn_k, k), MAX_KNN)
    if num_candidates is None:
        num_candidates = max(MIN_CANDIDATES, 2 * knn_k)
    knn: dict[str, Any] = {
        "field": EMBEDDING_FIELD,
        "query_vector": query_vector(vector),
        "k": knn_k,
        "num_candidates": min(max(num_candidates, knn_k), MAX_KNN),
    }
    clauses = filter_clauses(filters)
    if clauses:
        knn["filter"] = clauses
    if filters is not None and filters.min_score is not None:
        knn["similarity"] = float(filters.min_score)
    body: dict[str, Any] = {"knn": knn, "size": k, "_source": True if with_embeddings else HIT_SOURCE}
    if collapse is not None:
        body["collapse"] = {"field": collapse}
    return body


def cosine_from_score(score: float) -> float:
    """The cosine similarity in [-1, 1] behind a ``dot_product`` kNN ``_score`` of ``(1 + cos) / 2``."""
    return min(1.0, max(-1.0, 2.0 * float(score) - 1.0))


def count_body(filters: SearchFilters | None = None) -> dict[str, Any]:
    """A ``count`` body for the faces matching the filters (``min_score`` ignored: no query vector)."""
    return {"query": _filtered_query(filter_clauses(filters))}


def facets_body(field: str, size: int = 100, filters: SearchFilters | None = None) -> dict[str, Any]:
    """A search body counting the ``size`` most frequent values of ``field`` among the filtered faces.

    No hits, only a ``terms`` aggregation named ``values``: most frequent first, ties by value,
    faces lacking the field not counted. ``min_score`` is ignored (there is no query vector).
    """
    check_facet_field(field)
    if size < 1:
        raise ValueError(f"facet size must be at least 1, got {size}")
    return {
        "size": 0,
        "track_total_hits": False,
        "query": _filtered_query(filter_clauses(filters)),
        "aggs": {"values": {"terms": {"field": field, "size": size}}},
    }


def source_faces_body(source: str, size: int, search_after: list[Any] | None = None) -> dict[str, Any]:
    """One page of the faces of ``source`` in (frame, face_no) order, embeddings included.

    ``face_id`` ends the sort so every face has a distinct sort key for ``search_after`` paging;
    pass the last hit's ``sort`` values to get the next page.
    """
    body: dict[str, Any] = {
        "size": size,
        "query": {"bool": {"filter": [{"term": {"source": source}}]}},
        "sort": [
            {"frame": {"order": "asc", "missing": "_first"}},
            {"face_no": {"order": "asc"}},
            {"face_id": {"order": "asc"}},
        ],
    }
    if search_after is not None:
        body["search_after"] = search_after
    return body


def scan_body(
    size: int,
    search_after: list[Any] | None = None,
    filters: SearchFilters | None = None,
    vectors: bool = True,
) -> dict[str, Any]:
    """One page, in face id order, of the filtered faces with their person, label, cluster and,
    with ``vectors``, embedding (the rest of the document left out): what
    :meth:`~search_engine.index.base.FaceIndex.scan` reads. ``min_score`` is ignored."""
    body: dict[str, Any] = {
        "size": size,
        "query": _filtered_query(filter_clauses(filters)),
        "_source": [*([EMBEDDING_FIELD] if vectors else []), "person", "label", "cluster"],
        "sort": [{"face_id": {"order": "asc"}}],
    }
    if search_after is not None:
        body["search_after"] = search_after
    return body


def neighbours_searches(vectors: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The ``msearch`` body (header and search alternating) asking the ``k`` faces nearest each
    row of ``vectors``: unfiltered kNN searches whose hits carry only their ids and scores."""
    searches: list[dict[str, Any]] = []
    for vector in vectors:
        body = knn_search_body(vector, k)
        body["_source"] = False
        searches.extend(({}, body))
    return searches


def people_updates(alias: str, changes: Mapping[str, Grouping]) -> list[dict[str, Any]]:
    """Bulk actions setting the ``cluster`` and ``person`` of faces by id, partial updates that
    leave every other field as stored (None stores a null: the field is unset)."""
    return [
        {"_op_type": "update", "_index": alias, "_id": face_id, "doc": {"cluster": g.cluster, "person": g.person}}
        for face_id, g in changes.items()
    ]


def every_document_body(key: str, size: int, search_after: list[Any] | None = None) -> dict[str, Any]:
    """One page, in ``key`` order, of every document of an index (person records, face decisions)."""
    body: dict[str, Any] = {"size": size, "query": {"match_all": {}}, "sort": [{key: {"order": "asc"}}]}
    if search_after is not None:
        body["search_after"] = search_after
    return body


def image_hashes_body(size: int, search_after: list[Any] | None = None) -> dict[str, Any]:
    """One page, in source order, of the file records that carry an image hash: only source and hash read."""
    body: dict[str, Any] = {
        "size": size,
        "query": {"bool": {"filter": [{"exists": {"field": "image_hash"}}]}},
        "_source": ["source", "image_hash"],
        "sort": [{"source": {"order": "asc"}}],
    }
    if search_after is not None:
        body["search_after"] = search_after
    return body


def near_duplicates_body(
    image_hash: str, max_distance: int, limit: int, exclude_source: str | None = None
) -> dict[str, Any]:
    """A search body for the file records whose hashes differ from ``image_hash`` in at most
    ``max_distance`` bits, the ``limit`` nearest, ``exclude_source`` left out: a kNN over the
    hashes' bits, exhaustive (the ``flat`` index) and bounded by the distance (for ``bit`` vectors
    the ``similarity`` floor is a Hamming distance ceiling), the query as the hash's hex, as the
    documents hold it; each hit's source and hash read."""
    if not 1 <= limit <= MAX_KNN:
        raise ValueError(f"limit must be within [1, {MAX_KNN}], got {limit}")
    knn: dict[str, Any] = {
        "field": IMAGE_BITS_FIELD,
        "query_vector": image_hash,
        "k": limit,
        "num_candidates": limit,
        "similarity": max_distance,
    }
    if exclude_source is not None:
        knn["filter"] = [{"bool": {"must_not": [{"term": {"source": exclude_source}}]}}]
    return {"knn": knn, "size": limit, "_source": ["source", "image_hash"]}


def labelled_faces_body(size: int, search_after: list[Any] | None = None) -> dict[str, Any]:
    """One page, in face id order, of the faces that carry a label: only that label read."""
    body: dict[str, Any] = {
        "size": size,
        "query": {"bool": {"filter": [{"exists": {"field": "label"}}]}},
        "_source": ["label"],
        "sort": [{"face_id": {"order": "asc"}}],
    }
    if search_after is not None:
        body["search_after"] = search_after
    return body


def image_knn_body(vector: np.ndarray | Sequence[float], k: int, exclude_sources: Sequence[str] = ()) -> dict[str, Any]:
    """A search body for the ``k`` photos of the similar-photo index nearest ``vector``, best first,
    ``exclude_sources`` left out before ranking (a filter inside the ``knn`` clause); the hits'
    ``_source`` leaves the embedding out. ``num_candidates`` as :func:`knn_search_body`'s default."""
    if not 1 <= k <= MAX_KNN:
        raise ValueError(f"k must be within [1, {MAX_KNN}], got {k}")
    knn: dict[str, Any] = {
        "field": EMBEDDING_FIELD,
        "query_vector": query_vector(vector),
        "k": k,
        "num_candidates": min(max(MIN_CANDIDATES, 2 * k), MAX_KNN),
    }
    if exclude_sources:
        knn["filter"] = [{"bool": {"must_not": [{"terms": {"source": list(exclude_sources)}}]}}]
    return {"knn": knn, "size": k, "_source": HIT_SOURCE}


def image_sources_body(sources: Sequence[str]) -> dict[str, Any]:
    """A search body for one picture of each of ``sources`` in the similar-photo index (collapsed
    on ``source``: a video has many keyframes), with its ``source`` and ``content_hash``."""
    return {
        "query": {"bool": {"filter": [{"terms": {"source": list(sources)}}]}},
        "collapse": {"field": "source"},
        "size": len(sources),
        "_source": ["source", "content_hash"],
    }
