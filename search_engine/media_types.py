"""The one table of the media files facesearch reads and serves: extension, kind, content type, and
whether a browser plays it. Indexing, the web app's media route and its pages all ask here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .types import PHOTO, VIDEO


@dataclass(frozen=True)
class MediaFormat:
    """One file extension (lower case, with its dot), what it holds (:data:`~search_engine.types.PHOTO`
    or :data:`~search_engine.types.VIDEO`), the content type it is served with, and whether every
    current browser shows it in an ``<img>`` or ``<video>`` element (others may in some browsers;
    the page offers them as a download)."""

    extension: str
    kind: str
    content_type: str
    plays_in_browser: bool


FORMATS: dict[str, MediaFormat] = {
    f.extension: f
    for f in (
        MediaFormat(".jpg", PHOTO, "image/jpeg", True),
        MediaFormat(".jpeg", PHOTO, "image/jpeg", True),
        MediaFormat(".png", PHOTO, "image/png", True),
        MediaFormat(".webp", PHOTO, "image/webp", True),
        MediaFormat(".bmp", PHOTO, "image/bmp", True),
        MediaFormat(".gif", PHOTO, "image/gif", True),
        MediaFormat(".mp4", VIDEO, "video/mp4", True),
        MediaFormat(".m4v", VIDEO, "video/mp4", True),
        MediaFormat(".webm", VIDEO, "video/webm", True),
        MediaFormat(".mov", VIDEO, "video/quicktime", False),
        MediaFormat(".mkv", VIDEO, "video/x-matroska", False),
        MediaFormat(".avi", VIDEO, "video/x-msvideo", False),
        MediaFormat(".ogv", VIDEO, "video/ogg", False),
        MediaFormat(".mpg", VIDEO, "video/mpeg", False),
        MediaFormat(".mpeg", VIDEO, "video/mpeg", False),
        MediaFormat(".wmv", VIDEO, "video/x-ms-wmv", False),
    )
}


#: The decoders (Pillow's format names) photos are read with, whatever a file is named: the formats
#: above (Pillow's JPEG decoder also reads the MPO files of cameras that embed a second picture).
#: Pillow knows many more (EPS, which runs Ghostscript; PSD; TIFF's many codecs ...); a file or an
#: upload in one of those is refused rather than handed to a decoder no one meant to expose.
PHOTO_DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
#: How errors name them to a user.
PHOTO_FORMAT_NAMES = "JPEG, PNG, WebP, BMP or GIF"


def media_format(path: Path | str) -> MediaFormat | None:
    """The format a file is named as, or None when facesearch neither reads nor serves it."""
    return FORMATS.get(Path(path).suffix.lower())


def is_image_path(path: Path | str) -> bool:
    """Whether the file name has one of the photo extensions facesearch reads."""
    found = media_format(path)
    return found is not None and found.kind == PHOTO


def is_video(path: Path | str) -> bool:
    """Whether the file is named like a video facesearch reads."""
    found = media_format(path)
    return found is not None and found.kind == VIDEO
