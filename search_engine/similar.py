"""Similar-photo search: photos that look alike as wholes (scene, event, objects), beside face search.

Each indexed photo's whole-image description (:mod:`search_engine.embedding.resnet50`) lives in
the image index (:class:`~search_engine.index.image_base.ImageIndex`), filled by ingest runs with
``FACESEARCH_IMAGE_SEARCH`` on (:mod:`search_engine.indexing`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import Settings
from .embedding import create_image_embedder
from .embedding.resnet50 import ResNet50ImageEmbedder
from .errors import NotFoundError
from .imageio import decode_image, read_file
from .index import ImageIndex, create_image_index
from .types import ImageHit


class SimilarPhotos:
    """Search the image index with a photo, or with a photo it holds.

    Args:
        model: the loaded whole-photo model the index was filled with.
        images: that model's image index.
        max_pixels: larger query photos are refused as decompression bombs.
    """

    def __init__(self, model: ResNet50ImageEmbedder, images: ImageIndex, max_pixels: int) -> None:
        self.model = model
        self.images = images
        self.max_pixels = max_pixels

    @classmethod
    def open(cls, settings: Settings, model: ResNet50ImageEmbedder | None = None) -> SimilarPhotos:
        """Over ``model`` (else the one the settings name, loaded now, whether or not
        ``FACESEARCH_IMAGE_SEARCH`` is on) and its image index, created if missing.

        Raises:
            ModelUnavailableError: the model's weights can be neither downloaded nor read.
        """
        if model is None:
            model = create_image_embedder(settings.replace(image_search=True).models)
        images = create_image_index(settings.index, model.info)
        images.ensure()
        return cls(model, images, settings.models.max_image_pixels)

    def similar_image(self, image: np.ndarray, k: int = 20) -> list[ImageHit]:
        """The ``k`` indexed photos that look most like an (H, W, 3) uint8 RGB photo, best first."""
        return self.images.search(self.model.embed_images([image])[0], k=k)

    def similar_file(self, path: Path, k: int = 20) -> list[ImageHit]:
        """:meth:`similar_image` of a photo file (an :class:`ImageError` names it if it is unusable)."""
        return self.similar_image(decode_image(read_file(Path(path)), str(path), self.max_pixels), k=k)

    def similar_to_source(self, source: str, k: int = 20) -> list[ImageHit]:
        """The ``k`` other indexed photos that look most like the indexed photo ``source``, best first.

        Raises:
            NotFoundError: the image index holds no description of ``source``.
        """
        vector = self.images.embedding(source)
        if vector is None:
            raise NotFoundError(
                f"{source} is not in the image index {self.images.model.key} "
                "(photos are described when indexed with --image-search or FACESEARCH_IMAGE_SEARCH=1)"
            )
        return self.images.search(vector, k=k, exclude_sources=(source,))

    def close(self) -> None:
        self.images.close()
