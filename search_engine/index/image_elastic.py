"""The similar-photo index on Elasticsearch: one document per photo and per video keyframe behind the alias
``<prefix>-images-<image model key>`` (:func:`.mapping.images_alias`), its description an
int8-quantised HNSW ``dense_vector`` as the faces' is. Writes become visible at the next refresh,
or at once after :meth:`ElasticImageIndex.refresh` or with ``refresh_on_write``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
from elasticsearch import Elasticsearch

from ..config import IndexSettings
from ..ids import source_id
from ..types import BulkResult, EmbedderInfo, ImageHit, ImageRecord
from .base import query_vector
from .elastic_client import create_client, index_documents, talking
from .elastic_layout import create_images_index, drop_aliases
from .image_base import storable_images
from .mapping import (
    DEFAULT_VECTOR_INDEX,
    embedding_from_document,
    image_document,
    image_hit_from_document,
    images_alias,
)
from .queries import cosine_from_score, image_knn_body, image_sources_body

log = logging.getLogger(__name__)

#: Sources per lookup request.
_PAGE_SIZE = 1000


class ElasticImageIndex:
    """Elasticsearch implementation of :class:`~search_engine.index.image_base.ImageIndex`.

    Args:
        client: an ``Elasticsearch`` client (see :func:`create_client`); this index closes it.
        model: the image model whose descriptions this index holds.
        prefix: first part of the index, alias and template names (``FACESEARCH_ES_INDEX_PREFIX``).
        refresh_on_write: refresh after every write (tests and small interactive use).
        vector_index: dense_vector ``index_options.type`` of a newly created index.

    Nothing is sent to the cluster until the first call that needs it.
    """

    def __init__(
        self,
        client: Elasticsearch,
        model: EmbedderInfo,
        prefix: str = "facesearch",
        refresh_on_write: bool = False,
        vector_index: str = DEFAULT_VECTOR_INDEX,
    ) -> None:
        self.model = model
        self.alias = images_alias(prefix, model)
        self.refresh_on_write = refresh_on_write
        self._client = client
        self._vector_index = vector_index
        self._ready = False
        self.url = ", ".join(node.base_url for node in client.transport.node_pool.all())

    @classmethod
    def from_settings(cls, settings: IndexSettings, model: EmbedderInfo) -> ElasticImageIndex:
        return cls(create_client(settings), model, prefix=settings.es_index_prefix)

    def ensure(self) -> None:
        if self._ready:
            return
        with talking(self.url, f"preparing the index {self.alias}"):
            create_images_index(self._client, self.alias, self.model, self._vector_index)
        self._ready = True

    def upsert(self, images: Sequence[ImageRecord]) -> BulkResult:
        if not images:
            return BulkResult(indexed=0)
        self.ensure()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        valid, failed = storable_images(self.model, images)
        actions = [
            {"_index": self.alias, "_id": source_id(image.image_id), "_source": image_document(image, vector, now)}
            for image, vector in valid
        ]
        by_id = {source_id(image.image_id): image.image_id for image, _ in valid}
        with talking(self.url, f"indexing pictures into {self.alias}"):
            indexed, refused = index_documents(self._client, actions, self.refresh_on_write)
        failed.extend((by_id.get(doc_id, doc_id), reason) for doc_id, reason in refused)
        return BulkResult(indexed=indexed, failed=tuple(failed))

    def search(self, vector: np.ndarray, k: int = 20, exclude_sources: Sequence[str] = ()) -> list[ImageHit]:
        body = image_knn_body(query_vector(self.model, vector), k, exclude_sources)
        self.ensure()
        with talking(self.url, f"searching {self.alias}"):
            hits = self._client.search(index=self.alias, body=body)["hits"]["hits"]
        return [image_hit_from_document(hit["_source"], cosine_from_score(hit["_score"])) for hit in hits]

    def content_hashes(self, sources: Sequence[str]) -> dict[str, str]:
        self.ensure()
        unique = list(dict.fromkeys(sources))
        found: dict[str, str] = {}
        with talking(self.url, f"reading pictures from {self.alias}"):
            for start in range(0, len(unique), _PAGE_SIZE):
                body = image_sources_body(unique[start : start + _PAGE_SIZE])
                for hit in self._client.search(index=self.alias, body=body)["hits"]["hits"]:
                    found[hit["_source"]["source"]] = hit["_source"]["content_hash"]
        return found

    def embedding(self, image_id: str) -> np.ndarray | None:
        self.ensure()
        with talking(self.url, f"reading a picture from {self.alias}"):
            doc = self._client.options(ignore_status=404).get(index=self.alias, id=source_id(image_id)).body
        if not doc.get("found") or doc["_source"].get("image_id") != image_id:
            return None
        return embedding_from_document(image_id, doc["_source"])

    def delete_source(self, source: str) -> int:
        self.ensure()
        with talking(self.url, f"deleting the pictures of {source} from {self.alias}"):
            # delete_by_query only sees refreshed documents; pictures written a moment ago must go too.
            self._client.indices.refresh(index=self.alias)
            response = self._client.delete_by_query(
                index=self.alias, query={"term": {"source": source}}, conflicts="proceed", refresh=True
            )
        return int(response["deleted"])

    def count(self) -> int:
        self.ensure()
        with talking(self.url, f"counting photos in {self.alias}"):
            return int(self._client.count(index=self.alias)["count"])

    def refresh(self) -> None:
        self.ensure()
        with talking(self.url, f"refreshing {self.alias}"):
            self._client.indices.refresh(index=self.alias)

    def optimize(self) -> None:
        """Nothing to do: Elasticsearch merges its segments itself."""

    def drop(self) -> None:
        with talking(self.url, f"dropping {self.alias}"):
            drop_aliases(self._client, (self.alias,))
        self._ready = False

    def close(self) -> None:
        self._client.close()
