"""Finding the photos and videos to index under the paths a user names, and who the photos show."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from search_engine.indexing import PhotoInput
from search_engine.media_types import is_image_path, is_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Collected:
    """The photos and videos found, and how many other files inside the folders were passed over."""

    photos: list[PhotoInput]
    ignored: int
    videos: list[Path] = field(default_factory=list)


def collect_photos(paths: Iterable[Path], person: str | None = None, person_from_folder: bool = False) -> Collected:
    """Every photo and video under ``paths``, in a stable order, each file once.

    Folders are walked recursively and only files with a photo extension (jpg, jpeg, png, webp, bmp)
    or a video extension (mp4, mov, avi, mkv, webm, ...) are taken; a file named explicitly is always
    taken (as a video if named like one, else as a photo), so a bad one is reported rather than
    ignored. Videos are not labelled: a clip may show anyone.

    Args:
        person: label for the subject face of every photo.
        person_from_folder: label each photo with its parent folder's name (LFW's
            ``Person_Name/Person_Name_0001.jpg`` layout); the folder name is kept exactly.
    """
    if person and person_from_folder:
        raise ValueError("choose either a person name or person-from-folder, not both")
    seen: set[Path] = set()
    photos: list[PhotoInput] = []
    videos: list[Path] = []
    ignored = 0

    def add(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        if is_video(path):
            videos.append(path)
            return
        label = path.parent.name if person_from_folder else person
        photos.append(PhotoInput(path=path, person=label or None))

    for root in paths:
        root = Path(root).expanduser()
        if not root.is_dir():
            add(root)
            continue
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            for name in sorted(files):
                path = Path(folder) / name
                if is_image_path(path) or is_video(path):
                    add(path)
                else:
                    ignored += 1
    return Collected(photos, ignored, videos)
