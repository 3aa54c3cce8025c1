"""Face indexes: :class:`FaceIndex` is the contract, :func:`create_index` picks the engine."""

from __future__ import annotations

from ..config import IndexSettings
from ..types import FACET_FIELDS, EmbedderInfo
from .base import FACET_LIMIT, FaceIndex

__all__ = ["FACET_FIELDS", "FACET_LIMIT", "FaceIndex", "create_index"]


def create_index(settings: IndexSettings, model: EmbedderInfo) -> FaceIndex:
    """Elasticsearch when ``FACESEARCH_ES_URL`` is set, else the embedded LanceDB store under the data dir."""
    if settings.es_url:
        from .elastic import ElasticFaceIndex

        return ElasticFaceIndex.from_settings(settings, model)
    from .embedded import EmbeddedFaceIndex

    return EmbeddedFaceIndex.from_settings(settings, model)
