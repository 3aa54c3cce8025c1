"""Which files the web app may serve, and face thumbnails cut from them."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from search_engine.media_types import media_format
from search_engine.types import Box

log = logging.getLogger(__name__)

#: Longest side of a face thumbnail, pixels.
THUMBNAIL_SIZE = 160
#: Context kept around a face box on each side of a thumbnail, as a fraction of the box's size.
THUMBNAIL_MARGIN = 0.25


class MediaRoots:
    """The folders files may be served from (``FACESEARCH_MEDIA_ROOTS``).

    A path is served only if, once every symlink and ``..`` in it is resolved, it is a regular file
    of a media type facesearch reads (:mod:`search_engine.media_types`) inside one of the roots
    (themselves resolved once, here).
    """

    def __init__(self, roots: Sequence[Path]) -> None:
        self.roots = tuple(Path(os.path.realpath(root)) for root in roots)
        for root in self.roots:
            if not root.is_dir():
                log.warning("media root %s is not a folder; nothing under it can be served", root)

    def resolve(self, path: str) -> Path | None:
        """The real file behind ``path`` (absolute, as the index names sources), or None when it
        must not be served: relative, outside every root, not a regular file, or not a media type."""
        if "\x00" in path or not os.path.isabs(path):
            return None
        real = Path(os.path.realpath(path))
        if not any(real.is_relative_to(root) for root in self.roots):
            return None
        if media_format(real) is None or not real.is_file():
            return None
        return real


def face_thumbnail(image: np.ndarray, box: Box) -> bytes:
    """A JPEG of the square around a face, with some context, at most :data:`THUMBNAIL_SIZE` a side.

    Args:
        image: the (H, W, 3) uint8 RGB photo or video frame the face was found in.
        box: the face in that image's pixels.
    """
    height, width = image.shape[:2]
    cx, cy = box.center
    half = max(box.width, box.height) * (0.5 + THUMBNAIL_MARGIN)
    left, top = max(0, int(cx - half)), max(0, int(cy - half))
    right, bottom = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
    crop = Image.fromarray(image[top:bottom, left:right])
    crop.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    out = io.BytesIO()
    crop.save(out, format="JPEG", quality=85)
    return out.getvalue()
