"""Reading photos into RGB arrays, with one clear :class:`ImageError` per unusable file."""

from __future__ import annotations

import hashlib
import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .media_types import PHOTO_DECODERS, PHOTO_FORMAT_NAMES

log = logging.getLogger(__name__)


def content_hash(data: bytes) -> str:
    """Hex SHA-256 of a file's bytes: the identity of its content."""
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """Decode image bytes to an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Args:
        data: the encoded file: JPEG, PNG, WebP, BMP or GIF (its first frame), told by content,
            not by name; any other format is refused (see :data:`~.media_types.PHOTO_DECODERS`).
        name: how the file is named in errors (a path or an upload's file name).
        max_pixels: images with more pixels than this are refused before they are decoded.

    Raises:
        ImageError: empty, not an image, truncated, corrupt or too large.
    """
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Our own size check below replaces Pillow's bomb warning; its hard limit still applies.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=PHOTO_DECODERS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageError(
                        name, f"image too large: {width}x{height} pixels exceeds the limit of {max_pixels:,}"
                    )
                img.load()
                # Each step below would otherwise copy the whole picture (4 bytes a pixel in
                # Pillow): a 64 MP photo briefly took 1.1 GB to decode, now half that.
                ImageOps.exif_transpose(img, in_place=True)
                rgb = img if img.mode == "RGB" else img.convert("RGB")
                pixels = np.asarray(rgb, dtype=np.uint8)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(name, f"image too large (decompression bomb): {exc}") from None
    except UnidentifiedImageError:
        raise ImageError(name, f"not an image file facesearch reads (not {PHOTO_FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(name, f"corrupt or truncated image: {exc}") from None
    return np.ascontiguousarray(pixels)


def read_file(path: Path) -> bytes:
    """A file's bytes, or an :class:`ImageError` saying why it can't be read."""
    with _readable(path):
        return path.read_bytes()


def file_hash(path: Path) -> str:
    """:func:`content_hash` of a file read in pieces (videos need not fit in memory)."""
    digest = hashlib.sha256()
    with _readable(path), open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn the OS's reasons for not reading ``path`` into an :class:`ImageError` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise ImageError(str(path), "file not found") from None
    except IsADirectoryError:
        raise ImageError(str(path), "is a directory, not a file") from None
    except PermissionError:
        raise ImageError(str(path), "permission denied") from None
    except OSError as exc:
        raise ImageError(str(path), f"unreadable: {exc.strerror or exc}") from None


def load_image(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    """Read and decode one photo; returns the RGB array and the SHA-256 of the file's bytes."""
    data = read_file(path)
    return decode_image(data, str(path), max_pixels), content_hash(data)
