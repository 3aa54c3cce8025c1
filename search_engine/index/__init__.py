"""Face indexes: :class:`FaceIndex` is the contract, :func:`create_index` picks the engine; the
similar-photo index beside them: :class:`ImageIndex`, :func:`create_image_index`."""

from __future__ import annotations

from ..config import IndexSettings
from ..types import FACET_FIELDS, EmbedderInfo
from .base import FACET_LIMIT, FaceIndex
from .image_base import ImageIndex

__all__ = ["FACET_FIELDS", "FACET_LIMIT", "FaceIndex", "ImageIndex", "create_image_index", "create_index"]


def create_index(settings: IndexSettings, model: EmbedderInfo) -> FaceIndex:
    """Elasticsearch when ``FACESEARCH_ES_URL`` is set, else the embedded LanceDB store under the data dir."""
    if settings.es_url:
        from .elastic import ElasticFaceIndex

        return ElasticFaceIndex.from_settings(settings, model)
    from .embedded import EmbeddedFaceIndex

    return EmbeddedFaceIndex.from_settings(settings, model)


def create_image_index(settings: IndexSettings, model: EmbedderInfo) -> ImageIndex:
    """The similar-photo index of image model ``model``, on the same engine as :func:`create_index`."""
    if settings.es_url:
        from .image_elastic import ElasticImageIndex

        return ElasticImageIndex.from_settings(settings, model)
    from .image_embedded import EmbeddedImageIndex

    return EmbeddedImageIndex.from_settings(settings, model)
