"""The scalable face index: Elasticsearch 8.15+ (self-managed or Elastic Cloud Hosted, 8.x or 9.x).

Faces live in an int8-quantised HNSW ``dense_vector`` index behind a per-model alias (names and
mappings in :mod:`.mapping`, request bodies in :mod:`.queries`). Use an elasticsearch-py of the
server's major version: a 9.x client cannot talk to an 8.x server, and the reverse.

Writes become visible to searches at the next refresh (about a second), or at once after
:meth:`ElasticFaceIndex.refresh`, or on every write with ``refresh_on_write=True``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from elasticsearch import (
    Elasticsearch,
    NotFoundError,
    helpers,
)

from ..calibration import Calibration
from ..config import IndexSettings
from ..errors import IndexUnavailableError
from ..ids import source_id
from ..photo_hash import distances
from ..types import (
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
from .base import (
    COLLAPSE_GROWTH,
    FaceBatch,
    NearCopy,
    Neighbour,
    VectorIndexInfo,
    check_calibration,
    check_collapse,
    check_facet_field,
    nearest_first,
    query_matrix,
    query_vector,
    storable,
)
from .elastic_client import (
    BULK_INITIAL_BACKOFF_S,
    BULK_MAX_BACKOFF_S,
    BULK_MAX_RETRIES,
    bulk_reason,
    bulk_stream,
    create_client,
    index_documents,
    talking,
)
from .elastic_layout import check_indices, check_server, create_missing, drop_all
from .mapping import (
    DEFAULT_VECTOR_INDEX,
    EMBEDDING_FIELD,
    calibration_from_mappings,
    decision_document,
    decision_from_document,
    embedding_from_document,
    face_document,
    faces_meta,
    hit_from_document,
    index_names,
    person_document,
    person_from_document,
    record_from_document,
    source_document,
    source_record_from_document,
)
from .queries import (
    MAX_KNN,
    cosine_from_score,
    count_body,
    every_document_body,
    facets_body,
    image_hashes_body,
    knn_search_body,
    labelled_faces_body,
    near_duplicates_body,
    neighbours_searches,
    people_updates,
    scan_body,
    source_faces_body,
)

log = logging.getLogger(__name__)

#: Faces per page when listing one file's faces; file ids per mget request.
PAGE_SIZE = 1000
#: kNN searches per msearch request in :meth:`ElasticFaceIndex.neighbours`.
SEARCHES_PER_REQUEST = 100


class ElasticFaceIndex:
    """Elasticsearch implementation of :class:`~search_engine.index.base.FaceIndex`.

    Args:
        client: an ``Elasticsearch`` client (see :func:`create_client`); this index closes it.
        model: the embedding model whose faces this index holds.
        prefix: first part of every index, alias and template name (``FACESEARCH_ES_INDEX_PREFIX``).
        refresh_on_write: refresh after every write so it is searchable at once; costly under
            heavy ingest, meant for tests and small interactive use.
        shards / replicas: of a newly created faces index, see :func:`.mapping.index_settings`.
        vector_index: dense_vector ``index_options.type`` of a newly created faces index.

    Nothing is sent to the cluster until the first call that needs it.
    """

    def __init__(
        self,
        client: Elasticsearch,
        model: EmbedderInfo,
        prefix: str = "facesearch",
        refresh_on_write: bool = False,
        shards: int = 1,
        replicas: int | None = None,
        vector_index: str = DEFAULT_VECTOR_INDEX,
    ) -> None:
        self.model = model
        self.prefix = prefix
        self.names = index_names(prefix, model)
        self.refresh_on_write = refresh_on_write
        self._client = client
        self._shards = shards
        self._replicas = replicas
        self._vector_index = vector_index
        self._ready = False
        self.url = ", ".join(node.base_url for node in client.transport.node_pool.all())

    @classmethod
    def from_settings(cls, settings: IndexSettings, model: EmbedderInfo) -> ElasticFaceIndex:
        """The index for ``model`` on the cluster at ``settings.es_url``, under ``settings.es_index_prefix``."""
        return cls(create_client(settings), model, prefix=settings.es_index_prefix)

    def _talking(self, doing: str):
        """See :func:`.elastic_client.talking`."""
        return talking(self.url, doing)

    def ensure(self) -> None:
        """Create the templates, versioned indices and aliases that are missing; check the vector size.

        Raises:
            DimensionMismatchError: the faces index holds vectors of another size than the model's.
            IndexUnavailableError: the cluster cannot be reached, refuses these credentials or is
                older than 8.15.
        """
        if self._ready:
            return
        with self._talking(f"preparing the index {self.names.faces_alias}"):
            check_server(self._client, self.url)
            create_missing(self._client, self.names, self.model, self._shards, self._replicas, self._vector_index)
            check_indices(self._client, self.names, self.model)
        self._ready = True

    def upsert(self, faces: Sequence[FaceRecord]) -> BulkResult:
        if not faces:
            return BulkResult(indexed=0)
        self.ensure()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        valid, failed = storable(self.model, faces)
        actions: list[dict[str, Any]] = []
        for face, _ in valid:
            if face.indexed_at is None:
                face = dataclasses.replace(face, indexed_at=now)
            actions.append({"_index": self.names.faces_alias, "_id": face.face_id, "_source": face_document(face)})
        with self._talking(f"indexing faces into {self.names.faces_alias}"):
            indexed, refused = index_documents(self._client, actions, self.refresh_on_write)
        failed.extend(refused)
        if failed:
            log.warning(
                "%d of %d faces not indexed into %s; first: %s",
                len(failed),
                len(faces),
                self.names.faces_alias,
                failed[0][1],
            )
        return BulkResult(indexed=indexed, failed=tuple(failed))

    def _bulk(self, actions, **options):
        """:func:`.elastic_client.bulk_stream` of these actions into this index."""
        return bulk_stream(self._client, actions, self.refresh_on_write, **options)

    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        filters: SearchFilters | None = None,
        collapse: str | None = None,
        with_embeddings: bool = False,
    ) -> list[Hit]:
        """See :meth:`FaceIndex.search`; scores are cosine similarities in [-1, 1].

        With ``collapse``, the kNN clause gathers ``8 * k`` faces and collapses among them; while
        that yields fewer than ``k`` groups and more faces may exist, it asks again for four times
        as many (at most 10,000).
        """
        check_collapse(collapse)
        query = query_vector(self.model, vector)
        self.ensure()
        knn_k = None
        while True:
            body = knn_search_body(query, k, filters, collapse=collapse, knn_k=knn_k, with_embeddings=with_embeddings)
            with self._talking(f"searching {self.names.faces_alias}"):
                response = self._client.search(index=self.names.faces_alias, body=body)
            hits = [
                hit_from_document(hit["_source"], cosine_from_score(hit["_score"]), with_embeddings)
                for hit in response["hits"]["hits"]
            ]
            gathered = body["knn"]["k"]
            if collapse is None or len(hits) >= k or gathered >= MAX_KNN:
                return hits
            if response["hits"]["total"]["value"] < gathered:
                # Fewer faces matched than were asked for: every matching face was among them.
                return hits
            knn_k = gathered * COLLAPSE_GROWTH

    def get(self, face_id: str) -> FaceRecord | None:
        self.ensure()
        with self._talking(f"reading face {face_id} from {self.names.faces_alias}"):
            try:
                response = self._client.get(index=self.names.faces_alias, id=face_id)
            except NotFoundError:
                return None
        return record_from_document(response["_source"])

    def _documents(self, face_ids: Sequence[str], **source) -> Iterator[dict]:
        """The stored documents (``_id`` and ``_source``) of those faces that exist, a page of ids
        per ``mget``; ``source`` narrows ``_source`` (``source_includes=[...]``)."""
        self.ensure()
        unique = list(dict.fromkeys(face_ids))
        with self._talking(f"reading faces from {self.names.faces_alias}"):
            for start in range(0, len(unique), PAGE_SIZE):
                ids = unique[start : start + PAGE_SIZE]
                response = self._client.mget(index=self.names.faces_alias, ids=ids, **source)
                yield from (doc for doc in response["docs"] if doc.get("found"))

    def records(self, face_ids: Sequence[str]) -> dict[str, FaceRecord]:
        return {doc["_id"]: record_from_document(doc["_source"]) for doc in self._documents(face_ids)}

    def embeddings(self, face_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return {
            doc["_id"]: embedding_from_document(doc["_id"], doc["_source"])
            for doc in self._documents(face_ids, source_includes=[EMBEDDING_FIELD])
        }

    def faces_of_source(self, source: str) -> list[FaceRecord]:
        hits = self._pages(
            self.names.faces_alias,
            lambda after: source_faces_body(source, PAGE_SIZE, after),
            f"listing the faces of {source} in {self.names.faces_alias}",
        )
        return [record_from_document(hit["_source"]) for hit in hits]

    def labels(self) -> dict[str, str]:
        hits = self._pages(
            self.names.faces_alias,
            lambda after: labelled_faces_body(PAGE_SIZE, after),
            f"listing the labelled faces of {self.names.faces_alias}",
        )
        return {hit["_id"]: hit["_source"]["label"] for hit in hits}

    def scan(
        self, batch_size: int = 10_000, filters: SearchFilters | None = None, vectors: bool = True
    ) -> Iterator[FaceBatch]:
        """See :meth:`FaceIndex.scan`: pages in face id order (``search_after``), so faces written
        meanwhile may or may not be seen."""
        self.ensure()
        search_after = None
        size = min(batch_size, MAX_KNN)
        while True:
            with self._talking(f"reading the faces of {self.names.faces_alias}"):
                body = scan_body(size, search_after, filters, vectors)
                hits = self._client.search(index=self.names.faces_alias, body=body)["hits"]["hits"]
            if hits:
                yield FaceBatch(
                    tuple(hit["_id"] for hit in hits),
                    np.stack([embedding_from_document(hit["_id"], hit["_source"]) for hit in hits])
                    if vectors
                    else np.zeros((len(hits), 0), np.float32),
                    tuple(hit["_source"].get("person") for hit in hits),
                    tuple(hit["_source"].get("label") for hit in hits),
                    tuple(hit["_source"].get("cluster") for hit in hits),
                )
            if len(hits) < size:
                return
            search_after = hits[-1]["sort"]

    def neighbours(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        queries = query_matrix(self.model, vectors)
        self.ensure()
        found: list[list[Neighbour]] = []
        with self._talking(f"searching {self.names.faces_alias}"):
            for start in range(0, len(queries), SEARCHES_PER_REQUEST):
                chunk = queries[start : start + SEARCHES_PER_REQUEST]
                response = self._client.msearch(index=self.names.faces_alias, searches=neighbours_searches(chunk, k))
                for answer in response["responses"]:
                    if "error" in answer:
                        raise IndexUnavailableError(
                            f"Elasticsearch refused a kNN search of {self.names.faces_alias}: {answer['error']}"
                        )
                    hits = answer["hits"]["hits"]
                    found.append([(hit["_id"], cosine_from_score(hit["_score"])) for hit in hits])
        return found

    def set_people(self, changes: Mapping[str, Grouping]) -> int:
        """See :meth:`FaceIndex.set_people`.

        Raises:
            IndexUnavailableError: Elasticsearch refused an update for another reason than the face
                being gone (the first such reason given).
        """
        if not changes:
            return 0
        self.ensure()
        updated, refused = 0, []
        with self._talking(f"grouping the faces of {self.names.faces_alias}"):
            for ok, item in self._bulk(people_updates(self.names.faces_alias, changes)):
                info = next(iter(item.values()))
                if ok:
                    updated += 1
                elif info.get("status") != 404:
                    refused.append(bulk_reason(info))
        if refused:
            raise IndexUnavailableError(
                f"Elasticsearch refused {len(refused)} of {len(changes)} updates of people in "
                f"{self.names.faces_alias}: {refused[0]}"
            )
        return updated

    def get_people(self) -> dict[str, PersonRecord]:
        records = (person_from_document(doc) for doc in self._every(self.names.people_alias, "person_id"))
        return {record.person_id: record for record in records}

    def put_people(self, records: Sequence[PersonRecord]) -> None:
        self._put(self.names.people_alias, {r.person_id: person_document(r) for r in records}, "person records")

    def get_decisions(self) -> dict[str, FaceDecision]:
        decisions = (decision_from_document(doc) for doc in self._every(self.names.decisions_alias, "face_id"))
        return {decision.face_id: decision for decision in decisions}

    def put_decisions(self, decisions: Sequence[FaceDecision]) -> None:
        self._put(self.names.decisions_alias, {d.face_id: decision_document(d) for d in decisions}, "face decisions")

    def _every(self, alias: str, key: str) -> Iterator[dict]:
        """Every document of one of the small indices, in ``key`` order."""
        hits = self._pages(alias, lambda after: every_document_body(key, PAGE_SIZE, after), f"reading {alias}")
        return (hit["_source"] for hit in hits)

    def _pages(self, alias: str, body_after: Callable[[list[Any] | None], dict], doing: str) -> Iterator[dict]:
        """Every hit of a sorted search of ``alias``, page after page: ``body_after`` makes the body
        of the page after a hit's ``sort`` values (None: the first), with ``PAGE_SIZE`` hits."""
        self.ensure()
        search_after = None
        with self._talking(doing):
            while True:
                hits = self._client.search(index=alias, body=body_after(search_after))["hits"]["hits"]
                yield from hits
                if len(hits) < PAGE_SIZE:
                    return
                search_after = hits[-1]["sort"]

    def _put(self, alias: str, documents: Mapping[str, dict], what: str, refresh: bool = True) -> None:
        """Index documents by id into ``alias``; with ``refresh``, visible to the next read at once
        (human decisions are few, and a person's page reads them straight after).

        Raises:
            IndexUnavailableError: Elasticsearch refused some (the first one's reason given).
        """
        if not documents:
            return
        self.ensure()
        actions = [{"_index": alias, "_id": key, "_source": doc} for key, doc in documents.items()]
        with self._talking(f"storing {what} in {alias}"):
            try:
                helpers.bulk(
                    self._client,
                    actions,
                    max_retries=BULK_MAX_RETRIES,
                    initial_backoff=BULK_INITIAL_BACKOFF_S,
                    max_backoff=BULK_MAX_BACKOFF_S,
                    require_alias=True,
                    refresh=refresh,
                )
            except helpers.BulkIndexError as exc:
                first = next(iter(exc.errors[0].values())) if exc.errors else {}
                raise IndexUnavailableError(
                    f"Elasticsearch refused {len(exc.errors)} of {len(actions)} {what} in {alias}: {bulk_reason(first)}"
                ) from exc

    def delete_source(self, source: str) -> int:
        self.ensure()
        with self._talking(f"deleting the faces of {source} from {self.names.faces_alias}"):
            # delete_by_query only sees refreshed documents; faces written a moment ago must go too.
            self._client.indices.refresh(index=self.names.faces_alias)
            response = self._client.delete_by_query(
                index=self.names.faces_alias,
                query={"term": {"source": source}},
                conflicts="proceed",
                refresh=True,
            )
            self._client.options(ignore_status=404).delete(
                index=self.names.sources_alias, id=source_id(source), refresh=self.refresh_on_write
            )
        return int(response["deleted"])

    def count(self, filters: SearchFilters | None = None) -> int:
        self.ensure()
        with self._talking(f"counting faces in {self.names.faces_alias}"):
            return int(self._client.count(index=self.names.faces_alias, body=count_body(filters))["count"])

    def facets(self, field: str, size: int = 100, filters: SearchFilters | None = None) -> list[Facet]:
        check_facet_field(field)
        if size < 1:
            return []
        self.ensure()
        with self._talking(f"counting {field} values in {self.names.faces_alias}"):
            response = self._client.search(index=self.names.faces_alias, body=facets_body(field, size, filters))
        buckets = response["aggregations"]["values"]["buckets"]
        return [Facet(str(bucket["key"]), int(bucket["doc_count"])) for bucket in buckets]

    def record_sources(self, sources: Sequence[SourceRecord]) -> None:
        """See :meth:`FaceIndex.record_sources`.

        Raises:
            IndexUnavailableError: Elasticsearch refused some records (the first one's reason given).
        """
        documents = {source_id(record.source): source_document(record) for record in sources}
        self._put(self.names.sources_alias, documents, "file records", self.refresh_on_write)

    def get_sources(self, sources: Sequence[str]) -> dict[str, SourceRecord]:
        if not sources:
            return {}
        self.ensure()
        wanted = set(sources)
        found: dict[str, SourceRecord] = {}
        unique = list(dict.fromkeys(sources))
        with self._talking(f"reading file records from {self.names.sources_alias}"):
            for start in range(0, len(unique), PAGE_SIZE):
                ids = [source_id(source) for source in unique[start : start + PAGE_SIZE]]
                for doc in self._client.mget(index=self.names.sources_alias, ids=ids)["docs"]:
                    if doc.get("found"):
                        record = source_record_from_document(doc["_source"])
                        if record.source in wanted:
                            found[record.source] = record
        return found

    def image_hashes(self) -> dict[str, str]:
        hits = self._pages(
            self.names.sources_alias,
            lambda after: image_hashes_body(PAGE_SIZE, after),
            f"listing the image hashes of {self.names.sources_alias}",
        )
        return {hit["_source"]["source"]: hit["_source"]["image_hash"] for hit in hits}

    def near_duplicates(
        self, image_hash: str, max_distance: int, limit: int, exclude_source: str | None = None
    ) -> list[NearCopy]:
        self.ensure()
        # A kNN returns at most MAX_KNN hits; that many copies of one photo is past any page.
        body = near_duplicates_body(image_hash, max_distance, min(limit, MAX_KNN), exclude_source)
        with self._talking(f"finding near-duplicate photos in {self.names.sources_alias}"):
            hits = self._client.search(index=self.names.sources_alias, body=body)["hits"]["hits"]
        # Distances from the hashes themselves, not from the scores' float arithmetic.
        names = [hit["_source"]["source"] for hit in hits]
        apart = distances(image_hash, [hit["_source"]["image_hash"] for hit in hits])
        return nearest_first((name, int(bits)) for name, bits in zip(names, apart) if bits <= max_distance)

    def get_calibration(self) -> Calibration | None:
        self.ensure()
        with self._talking(f"reading the calibration of {self.names.faces_alias}"):
            stored = calibration_from_mappings(self._client.indices.get_mapping(index=self.names.faces_alias).body)
        return None if stored is None else Calibration.from_dict(stored)

    def put_calibration(self, calibration: Calibration | None) -> None:
        check_calibration(self.model, calibration)
        self.ensure()
        meta = faces_meta(None if calibration is None else calibration.to_dict())
        with self._talking(f"storing the calibration of {self.names.faces_alias}"):
            self._client.indices.put_mapping(index=self.names.faces_alias, meta=meta)

    def vector_index(self) -> VectorIndexInfo:
        """The faces mapping's ``dense_vector`` index type; Elasticsearch indexes every face at refresh."""
        self.ensure()
        with self._talking(f"reading the mapping of {self.names.faces_alias}"):
            mappings = self._client.indices.get_mapping(index=self.names.faces_alias).body
        kind = next(
            (
                body["mappings"]["properties"][EMBEDDING_FIELD].get("index_options", {}).get("type", "hnsw")
                for body in mappings.values()
            ),
            "hnsw",
        )
        return VectorIndexInfo(kind, self.count(), 0)

    def refresh(self) -> None:
        with self._talking(f"refreshing {self.names.faces_alias}"):
            self._client.indices.refresh(
                index=[self.names.faces_alias, self.names.sources_alias], ignore_unavailable=True
            )

    def optimize(self) -> None:
        """Nothing to do: Elasticsearch merges its segments itself."""

    def drop(self) -> None:
        """Delete the faces and sources indices (every version behind the aliases) and their templates."""
        with self._talking(f"dropping {self.names.faces_alias}"):
            drop_all(self._client, self.names)
        self._ready = False

    def close(self) -> None:
        self._client.close()
