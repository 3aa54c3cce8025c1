"""The small family of errors facesearch raises. All pickle cleanly (they may cross a Celery boundary)."""

from __future__ import annotations


class FaceSearchError(Exception):
    """Base class: every error here carries one human-readable message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        return (type(self), (self.message,))


class ConfigError(FaceSearchError):
    """A setting is missing or malformed."""


class ImageError(FaceSearchError):
    """A file could not be used as an image; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


class InvalidRequestError(FaceSearchError):
    """A request asks for something that does not exist, such as a face number out of range."""


class NoFaceError(FaceSearchError):
    """A query image holds no detectable face."""


class ModelUnavailableError(FaceSearchError):
    """A model's weights or library could not be loaded."""


class IndexUnavailableError(FaceSearchError):
    """The face index (LanceDB directory or Elasticsearch cluster) cannot be reached."""


class DimensionMismatchError(FaceSearchError):
    """An index holds vectors of another size than the embedder produces."""


class NotFoundError(FaceSearchError):
    """A request names a person or face the index does not hold."""


class ConflictError(FaceSearchError):
    """A request contradicts what is stored, such as a person's name another person has."""
