"""One frozen settings object, read from ``FACESEARCH_*`` environment variables at an entry point."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

#: The embedding models, in the order ``auto`` tries them; ``auto`` picks one of them.
MODELS = ("facenet", "mobilefacenet", "dlib")
EMBEDDERS = ("auto", *MODELS)
#: The most hits one search may ask for (the web app's "more results" stops there).
MAX_RESULTS = 1000


def _default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("facesearch", appauthor=False)


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it once with :meth:`from_env` and pass it down.

    Attributes:
        embedder: ``"facenet"`` (InceptionResnetV1/VGGFace2, 512-d), ``"mobilefacenet"`` (ArcFace-family,
            MS1M, 192-d), ``"dlib"`` (dlib ResNet, 128-d), or ``"auto"``: the first of those three
            whose weights are at hand, with a notice for each one passed over.
        data_dir: where the embedded LanceDB store and thumbnails live.
        es_url: Elasticsearch URL; when set, the Elasticsearch backend is used instead of LanceDB.
        es_api_key / es_user / es_password / es_ca_cert: Elasticsearch credentials and CA bundle.
        es_index_prefix: prefix of Elasticsearch index and alias names.
        facenet_weights: local path of the VGGFace2 state dict, used instead of downloading.
        mobilefacenet_weights: folder holding ``mobilefacenet.json`` and ``.bin``, used instead of
            fetching them with npm into the model cache.
        min_face_size: smallest face detected and indexed (box width, source pixels). On LFW faces
            shrunk to 32 px still verify almost as well as at full size (bench/face_size.py), and
            not looking for smaller ones makes detection a quarter faster. Where an image is
            downscaled for detection (``video_max_side``, photos over 1600 px), faces under 20
            pixels of the downscaled image are not looked for either.
        min_probability: detections below this MTCNN probability are dropped.
        max_image_pixels: larger images are refused as decompression bombs.
        batch_size: images per detection/embedding batch.
        torch_threads: intra-op threads for torch (0 = torch's default, or cores / workers).
        workers: processes that detect and embed in parallel (0 = one per core).
        broker_url: the Celery broker (Redis) that ingest jobs go through; also its result backend.
        visibility_timeout: seconds before Redis hands a task whose worker vanished to another
            worker; must exceed the longest task (a chunk of photos takes seconds).
        video_fps: frames sampled per second of video.
        video_max_side: video frames are downscaled to this longer side (pixels) for detection.
        video_segment_seconds: videos are processed in pieces of this many seconds (each one task).
        video_track_embedding: what a track is searched by: ``best`` (its best face's embedding) or
            ``mean`` (the normalised mean over its faces).
        device: torch device the detector and the FaceNet embedder run on (``cpu``, ``cuda``,
            ``cuda:1``); dlib always runs on the CPU.
        kibana_url: Kibana that ``facesearch init`` imports the saved objects into; it accepts
            the Elasticsearch credentials above.
        web_url: the web app's address as a browser reaches it; Kibana's face thumbnails link there.
        media_roots: folders the web app may serve indexed files (and face thumbnails) from; a file
            outside all of them, or a link leading out of them, is never served. Empty: none served.
        max_upload_bytes: largest query upload the web app accepts, in bytes; larger ones get 413.
        api_keys: when any is set, every web page and API call must present one of them.
        results_per_page: hits the search page shows at first and adds per "more results".
        keep_uploads: folder where the web app keeps a copy of every query photo; None keeps none.
        same_person_threshold: cosine similarity from which two faces are called the same person,
            whatever the archive's size; None: the embedder's calibration decides
            (:mod:`search_engine.calibration`).
        target_fpir: the share of searches for someone the archive does not hold that may still
            get a "same person" hit; the calibrated threshold rises with the archive to keep it.
        expansion_neighbours: how many of a query's nearest faces may join it to rank the hits
            (query expansion, see :mod:`search_engine.expansion`); 0 ranks by the query face alone.
        expansion_threshold: cosine similarity a nearest face needs to join the query; None uses
            the embedder's calibrated value (``EXPANSION_THRESHOLDS``), and a model without one
            ranks by the query face alone.
    """

    embedder: str = "auto"
    data_dir: Path = dataclasses.field(default_factory=_default_data_dir)
    es_url: str | None = None
    es_api_key: str | None = None
    es_user: str | None = None
    es_password: str | None = None
    es_ca_cert: Path | None = None
    es_index_prefix: str = "facesearch"
    facenet_weights: Path | None = None
    mobilefacenet_weights: Path | None = None
    min_face_size: int = 32
    min_probability: float = 0.9
    max_image_pixels: int = 90_000_000
    batch_size: int = 32
    torch_threads: int = 0
    workers: int = 0
    broker_url: str = "redis://127.0.0.1:6379/0"
    visibility_timeout: int = 900
    video_fps: float = 2.0
    video_max_side: int = 640
    video_segment_seconds: float = 120.0
    video_track_embedding: str = "best"
    device: str = "cpu"
    kibana_url: str | None = None
    web_url: str = "http://localhost:8000"
    media_roots: tuple[Path, ...] = ()
    max_upload_bytes: int = 20_000_000
    api_keys: tuple[str, ...] = ()
    results_per_page: int = 20
    keep_uploads: Path | None = None
    same_person_threshold: float | None = None
    target_fpir: float = 0.01
    expansion_neighbours: int = 3
    expansion_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.embedder not in EMBEDDERS:
            raise ConfigError(f"FACESEARCH_EMBEDDER must be one of {', '.join(EMBEDDERS)}, got {self.embedder!r}")
        if not 0.0 <= self.min_probability <= 1.0:
            raise ConfigError(f"FACESEARCH_MIN_PROBABILITY must be within [0, 1], got {self.min_probability}")
        if self.min_face_size < 1 or self.batch_size < 1:
            raise ConfigError("FACESEARCH_MIN_FACE_SIZE and FACESEARCH_BATCH_SIZE must be positive")
        if not 0 < self.video_fps <= 60 or self.video_segment_seconds <= 0 or self.video_max_side < 0:
            raise ConfigError(
                "FACESEARCH_VIDEO_FPS must be in (0, 60], FACESEARCH_VIDEO_SEGMENT_SECONDS positive "
                "and FACESEARCH_VIDEO_MAX_SIDE 0 (full size) or more"
            )
        if self.video_track_embedding not in ("best", "mean"):
            raise ConfigError(
                f"FACESEARCH_VIDEO_TRACK_EMBEDDING must be best or mean, got {self.video_track_embedding!r}"
            )
        if self.workers < 0 or self.torch_threads < 0:
            raise ConfigError("FACESEARCH_WORKERS and FACESEARCH_TORCH_THREADS must be 0 (automatic) or more")
        for name, url in (("WEB_URL", self.web_url), ("KIBANA_URL", self.kibana_url)):
            if url is not None and not url.startswith(("http://", "https://")):
                raise ConfigError(f"FACESEARCH_{name} must start with http:// or https://, got {url!r}")
        if self.max_upload_bytes < 1:
            raise ConfigError(f"FACESEARCH_MAX_UPLOAD_BYTES must be positive, got {self.max_upload_bytes}")
        if not 1 <= self.results_per_page <= MAX_RESULTS:
            raise ConfigError(
                f"FACESEARCH_RESULTS_PER_PAGE must be within [1, {MAX_RESULTS}], got {self.results_per_page}"
            )
        if any(not key or "," in key or any(c.isspace() for c in key) for key in self.api_keys):
            raise ConfigError("FACESEARCH_API_KEYS must be comma-separated keys without spaces")
        if self.same_person_threshold is not None and not -1.0 <= self.same_person_threshold <= 1.0:
            raise ConfigError(
                f"FACESEARCH_SAME_PERSON_THRESHOLD must be a cosine similarity within [-1, 1], got {self.same_person_threshold}"
            )
        if not 0.0 < self.target_fpir < 1.0:
            raise ConfigError(f"FACESEARCH_TARGET_FPIR must be a share within (0, 1), got {self.target_fpir}")
        if self.expansion_neighbours < 0:
            raise ConfigError(
                f"FACESEARCH_EXPANSION_NEIGHBOURS must be 0 (off) or more, got {self.expansion_neighbours}"
            )
        if self.expansion_threshold is not None and not -1.0 <= self.expansion_threshold < 1.0:
            raise ConfigError(
                f"FACESEARCH_EXPANSION_THRESHOLD must be a cosine similarity within [-1, 1), got {self.expansion_threshold}"
            )

    @property
    def backend(self) -> str:
        """``"elasticsearch"`` when an ES URL is configured, else ``"embedded"``."""
        return "elasticsearch" if self.es_url else "embedded"

    @property
    def worker_count(self) -> int:
        """``workers``, with 0 meaning one per core."""
        return self.workers or max(1, os.cpu_count() or 1)

    def replace(self, **changes: object) -> Settings:
        """A copy with some fields changed (CLI flags override the environment this way)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``FACESEARCH_*`` variables; unset or empty ones keep their defaults."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(f"FACESEARCH_{name}", "").strip()
            return value or None

        def number(name: str, kind: type):
            raw = get(name)
            if raw is None:
                return None
            try:
                return kind(raw)
            except ValueError:
                raise ConfigError(f"FACESEARCH_{name} must be a {kind.__name__}, got {raw!r}") from None

        values: dict[str, object] = {
            "embedder": get("EMBEDDER"),
            "data_dir": Path(get("DATA_DIR")).expanduser() if get("DATA_DIR") else None,
            "es_url": get("ES_URL"),
            "es_api_key": get("ES_API_KEY"),
            "es_user": get("ES_USER"),
            "es_password": get("ES_PASSWORD"),
            "es_ca_cert": Path(get("ES_CA_CERT")).expanduser() if get("ES_CA_CERT") else None,
            "es_index_prefix": get("ES_INDEX_PREFIX"),
            "facenet_weights": Path(get("FACENET_WEIGHTS")).expanduser() if get("FACENET_WEIGHTS") else None,
            "mobilefacenet_weights": (
                Path(get("MOBILEFACENET_WEIGHTS")).expanduser() if get("MOBILEFACENET_WEIGHTS") else None
            ),
            "min_face_size": number("MIN_FACE_SIZE", int),
            "min_probability": number("MIN_PROBABILITY", float),
            "max_image_pixels": number("MAX_IMAGE_PIXELS", int),
            "batch_size": number("BATCH_SIZE", int),
            "torch_threads": number("TORCH_THREADS", int),
            "workers": number("WORKERS", int),
            "broker_url": get("BROKER_URL"),
            "visibility_timeout": number("VISIBILITY_TIMEOUT", int),
            "video_fps": number("VIDEO_FPS", float),
            "video_max_side": number("VIDEO_MAX_SIDE", int),
            "video_segment_seconds": number("VIDEO_SEGMENT_SECONDS", float),
            "video_track_embedding": get("VIDEO_TRACK_EMBEDDING"),
            "device": get("DEVICE"),
            "kibana_url": get("KIBANA_URL"),
            "web_url": get("WEB_URL"),
            "media_roots": _paths(get("MEDIA_ROOTS")),
            "max_upload_bytes": number("MAX_UPLOAD_BYTES", int),
            "api_keys": _keys(get("API_KEYS")),
            "results_per_page": number("RESULTS_PER_PAGE", int),
            "keep_uploads": Path(get("KEEP_UPLOADS")).expanduser() if get("KEEP_UPLOADS") else None,
            "same_person_threshold": number("SAME_PERSON_THRESHOLD", float),
            "target_fpir": number("TARGET_FPIR", float),
            "expansion_neighbours": number("EXPANSION_NEIGHBOURS", int),
            "expansion_threshold": number("EXPANSION_THRESHOLD", float),
        }
        return cls(**{key: value for key, value in values.items() if value is not None})


def _paths(raw: str | None) -> tuple[Path, ...] | None:
    """A ``os.pathsep``-separated list of folders (``:`` on Linux), ``~`` expanded, empty entries dropped."""
    if raw is None:
        return None
    return tuple(Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip())


def _keys(raw: str | None) -> tuple[str, ...] | None:
    """Comma-separated API keys, blanks around them dropped."""
    if raw is None:
        return None
    return tuple(key.strip() for key in raw.split(",") if key.strip())
