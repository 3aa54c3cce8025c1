"""Deterministic identities: the same face of the same file under the same model always gets the same id."""

from __future__ import annotations

import hashlib


def face_id(model_key: str, source: str, face_no: int, frame: int | None = None) -> str:
    """Hex id (32 chars) of face ``face_no`` of ``source`` (and of ``frame`` for a video) under a model."""
    parts = [model_key, source, str(face_no)] if frame is None else [model_key, source, str(frame), str(face_no)]
    return hashlib.sha1("\0".join(parts).encode("utf-8")).hexdigest()[:32]


def source_id(source: str) -> str:
    """Hex id (40 chars) of a source file's path, for stores whose keys must be short and safe."""
    return hashlib.sha1(source.encode("utf-8")).hexdigest()


def labelled_person_id(label: str) -> str:
    """Id of the person a human named ``label`` (a folder label): the same name, the same person."""
    return "n" + hashlib.sha1(label.encode("utf-8")).hexdigest()[:15]


def grouped_person_id(first_face_id: str) -> str:
    """Id of a person the clustering found, from the smallest face id it first held: stable, and
    apart from every :func:`labelled_person_id` by its first letter."""
    return "p" + hashlib.sha1(first_face_id.encode("utf-8")).hexdigest()[:15]
