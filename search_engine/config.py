"""One frozen settings object, read from ``FACESEARCH_*`` environment variables at an entry point.

The settings come in groups (:class:`ModelSettings`, :class:`IndexSettings`, :class:`QueueSettings`,
:class:`VideoSettings`, :class:`WebSettings`, :class:`SearchSettings`); code that needs one group
takes that group. Each setting is declared once, below, with :func:`~.settings_fields.setting`:
its default, how its variable is parsed, what values it accepts, and one line on what it does.
Reading the environment, checking values and the README's configuration table
(``python -m search_engine.config``, compared with the README by ``tests/test_config.py``) all come
from those declarations. A setting's variable is ``FACESEARCH_``, its group's prefix and its name.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError
from .settings_fields import (
    KINDS,
    Declaration,
    at_least,
    flag,
    keys,
    one_of,
    path,
    paths,
    positive,
    setting,
    valid_keys,
    web_address,
    within,
)

#: The embedding models, in the order ``auto`` tries them; ``auto`` picks one of them.
MODELS = ("facenet", "mobilefacenet", "dlib")
EMBEDDERS = ("auto", *MODELS)


def _default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("facesearch", appauthor=False)


class _Group:
    """A group of settings: checks its values on construction."""

    PREFIX: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            declaration: Declaration = f.metadata["declaration"]
            problem = declaration.check(value) if declaration.check and value is not None else None
            if problem:
                raise ConfigError(f"FACESEARCH_{self.PREFIX}{f.name.upper()} {problem}, got {value!r}")


@dataclass(frozen=True)
class ModelSettings(_Group):
    """The detector and the embedder: which model, where its weights are, how it runs."""

    PREFIX: ClassVar[str] = ""

    embedder: str = setting(
        "auto",
        "`auto`, `facenet`, `mobilefacenet` or `dlib` ([Models](#models))",
        check=one_of(*EMBEDDERS),
    )
    facenet_weights: Path | None = setting(
        None, "local VGGFace2 state dict (`20180402-114759-vggface2.pt`)", parse=path
    )
    mobilefacenet_weights: Path | None = setting(
        None,
        "folder holding `mobilefacenet.json` and `.bin` (else the model cache, filled with npm)",
        parse=path,
    )
    image_search: bool = setting(
        False,
        "also describe every photo as a whole for similar-photo search (`facesearch similar`; "
        "ResNet50, ImageNet weights, [Similar photos](#similar-photos))",
        parse=flag,
        shown="`0` (off)",
    )
    resnet50_weights: Path | None = setting(
        None,
        "local torchvision ResNet50 state dict (`resnet50-0676ba61.pth`; else downloaded once into torch's cache)",
        parse=path,
    )
    device: str = setting(
        "cpu",
        "torch device of the detector and FaceNet (`cuda`, `cuda:1`); dlib and MobileFaceNet stay on the CPU",
    )
    min_probability: float = setting(0.9, "MTCNN probability cut", parse=float, check=within(0, 1))
    # On LFW faces shrunk to 32 px still verify almost as well as at full size (bench/face_size.py),
    # and not looking for smaller ones makes detection a quarter faster.
    min_face_size: int = setting(
        32, "smallest face detected and indexed: box width, source pixels", parse=int, check=positive
    )
    max_image_pixels: int = setting(
        90_000_000, "larger images are refused as decompression bombs", parse=int, check=positive
    )
    batch_size: int = setting(32, "images per model batch", parse=int, check=positive)
    workers: int = setting(
        0,
        "indexing processes; `serve`'s worker processes",
        parse=int,
        check=at_least(0, "0 (automatic) or more"),
        shown="`0` (one per core)",
    )
    torch_threads: int = setting(
        0,
        "torch threads per process",
        parse=int,
        check=at_least(0, "0 (automatic) or more"),
        shown="`0` (cores / workers)",
    )

    @property
    def worker_count(self) -> int:
        """``workers``, with 0 meaning one per core."""
        return self.workers or max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class IndexSettings(_Group):
    """Where the faces are stored: the embedded store's folder, or an Elasticsearch cluster."""

    PREFIX: ClassVar[str] = ""

    data_dir: Path = setting(
        _default_data_dir, "embedded index directory", parse=path, shown="`~/.local/share/facesearch`"
    )
    es_url: str | None = setting(None, "use this Elasticsearch cluster instead of the embedded index")
    es_api_key: str | None = setting(None, "Elasticsearch API key (or the two below)")
    es_user: str | None = setting(None, "Elasticsearch basic auth user")
    es_password: str | None = setting(None, "Elasticsearch basic auth password")
    es_ca_cert: Path | None = setting(None, "CA bundle for a TLS cluster", parse=path)
    es_index_prefix: str = setting("facesearch", "prefix of index, alias and template names")
    vector_index_faces: int = setting(
        10_000,
        "faces from which the embedded store builds a vector index (one HNSW graph) at its next "
        "optimize and searches through it; `0`: always the exact scan",
        parse=int,
        check=at_least(0, "0 (never) or more"),
    )

    @property
    def backend(self) -> str:
        """``"elasticsearch"`` when an ES URL is configured, else ``"embedded"``."""
        return "elasticsearch" if self.es_url else "embedded"


@dataclass(frozen=True)
class QueueSettings(_Group):
    """The Celery queue that ingest jobs go through."""

    PREFIX: ClassVar[str] = ""

    broker_url: str = setting("redis://127.0.0.1:6379/0", "Celery broker and result backend")
    visibility_timeout: int = setting(
        900, "seconds before a vanished worker's task goes to another", parse=int, check=positive
    )


@dataclass(frozen=True)
class VideoSettings(_Group):
    """How videos are sampled and cut into tracks (``FACESEARCH_VIDEO_*``)."""

    PREFIX: ClassVar[str] = "VIDEO_"

    fps: float = setting(
        2.0, "video frames sampled per second", parse=float, check=within(0, 60, low_open=True), shown="`2`"
    )
    max_side: int = setting(
        640,
        "video frames are downscaled to this longer side for detection (0: full size)",
        parse=int,
        check=at_least(0, "0 (full size) or more"),
    )
    segment_seconds: float = setting(
        120.0, "videos are processed in pieces of this length", parse=float, check=positive, shown="`120`"
    )
    track_embedding: str = setting(
        "best", "a track's stored embedding: `best` face or `mean` over the track", check=one_of("best", "mean")
    )
    keyframe_seconds: float = setting(
        10.0,
        "with similar-photo search on, a video's frame is described as a picture every this many seconds",
        parse=float,
        check=positive,
        shown="`10`",
    )


@dataclass(frozen=True)
class WebSettings(_Group):
    """The web app and the stack around it."""

    PREFIX: ClassVar[str] = ""

    kibana_url: str | None = setting(
        None, "Kibana that `facesearch init` imports its saved objects into", check=web_address
    )
    web_url: str = setting(
        "http://localhost:8000",
        "the web app as a browser reaches it (Kibana loads face thumbnails from it)",
        check=web_address,
    )
    media_roots: tuple[Path, ...] = setting(
        (), "folders (`:`-separated) the web app may serve photos and videos from", parse=paths
    )
    max_upload_bytes: int = setting(
        20_000_000, "largest query upload the web app accepts (413 beyond)", parse=int, check=positive
    )
    api_keys: tuple[str, ...] = setting(
        (), "comma-separated keys; when set, every page and API call needs one", parse=keys, check=valid_keys
    )
    results_per_page: int = setting(
        20,
        'hits the search page shows first and adds per "More results"',
        parse=int,
        check=positive,
    )
    keep_uploads: Path | None = setting(
        None, "folder to keep a copy of every query photo in (none kept by default)", parse=path
    )


@dataclass(frozen=True)
class SearchSettings(_Group):
    """What a score means and how hits are ranked."""

    PREFIX: ClassVar[str] = ""

    target_fpir: float = setting(
        0.01,
        'share of searches for someone the archive does not hold that may still get a "same person" hit; '
        "the calibrated threshold rises with the archive's size to keep it ([Verdicts](#verdicts-you-can-trust))",
        parse=float,
        check=within(0, 1, low_open=True, high_open=True, what="a share"),
    )
    same_person_threshold: float | None = setting(
        None,
        'a fixed cosine similarity for "same person" instead, whatever the archive\'s size',
        parse=float,
        check=within(-1, 1, what="a cosine similarity"),
        shown="– (calibrated)",
    )
    expansion_neighbours: int = setting(
        3,
        "nearest faces that may join the query in ranking (query expansion); `0`: off",
        parse=int,
        check=at_least(0, "0 (off) or more"),
    )
    expansion_threshold: float | None = setting(
        None,
        "cosine similarity a nearest face needs to join; else the embedder's measured value, else its "
        "calibration's; no expansion for a model with neither",
        parse=float,
        check=within(-1, 1, high_open=True, what="a cosine similarity"),
        shown="per embedder (MobileFaceNet `0.5`, dlib `0.93`)",
    )


#: The groups, by their attribute on :class:`Settings`, in the README's order.
GROUPS: dict[str, type[_Group]] = {
    "models": ModelSettings,
    "index": IndexSettings,
    "queue": QueueSettings,
    "video": VideoSettings,
    "web": WebSettings,
    "search": SearchSettings,
}


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it once with :meth:`from_env` and pass it (or the group a
    function needs) down."""

    models: ModelSettings = dataclasses.field(default_factory=ModelSettings)
    index: IndexSettings = dataclasses.field(default_factory=IndexSettings)
    queue: QueueSettings = dataclasses.field(default_factory=QueueSettings)
    video: VideoSettings = dataclasses.field(default_factory=VideoSettings)
    web: WebSettings = dataclasses.field(default_factory=WebSettings)
    search: SearchSettings = dataclasses.field(default_factory=SearchSettings)

    def replace(self, **changes: Any) -> Settings:
        """A copy with some settings changed, each named as its variable is without ``FACESEARCH_``,
        in lower case (``embedder=``, ``video_fps=``): CLI flags and tests override this way."""
        by_group: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            group, field = _where(name)
            by_group.setdefault(group, {})[field] = value
        return dataclasses.replace(
            self, **{group: dataclasses.replace(getattr(self, group), **fields) for group, fields in by_group.items()}
        )

    @classmethod
    def of(cls, **changes: Any) -> Settings:
        """The defaults with some settings changed (see :meth:`replace`)."""
        return cls().replace(**changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the ``FACESEARCH_*`` variables; unset or empty ones keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for variable, name, field in declarations():
            declaration: Declaration = field.metadata["declaration"]
            raw = env.get(variable, "").strip()
            if not raw:
                continue
            try:
                values[name] = declaration.parse(raw)
            except ValueError:
                kind = KINDS.get(declaration.parse, "readable")
                raise ConfigError(f"{variable} must be {kind}, got {raw!r}") from None
        return cls.of(**values)


def declarations() -> Iterator[tuple[str, str, dataclasses.Field]]:
    """``(variable, name for replace, field)`` of every setting, in the README's order; the field's
    ``metadata["declaration"]`` is its :class:`~.settings_fields.Declaration`."""
    for group in GROUPS.values():
        for f in dataclasses.fields(group):
            name = f"{group.PREFIX}{f.name}".lower()
            yield f"FACESEARCH_{name.upper()}", name, f


def _where(name: str) -> tuple[str, str]:
    """The group attribute and field of a setting named as :meth:`Settings.replace` takes it."""
    for attr, group in GROUPS.items():
        prefix = group.PREFIX.lower()
        if name.startswith(prefix):
            field = name[len(prefix) :]
            if field in {f.name for f in dataclasses.fields(group)}:
                return attr, field
    raise TypeError(f"no setting named {name!r}")


def _shown_default(field: dataclasses.Field) -> str:
    shown = field.metadata["declaration"].shown
    if shown is not None:
        return shown
    if field.default is None or field.default == ():
        return "–"
    return f"`{field.default}`"


def settings_table() -> str:
    """The README's configuration table (markdown), one row per setting."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for variable, _, f in declarations():
        rows.append(f"| `{variable}` | {_shown_default(f)} | {f.metadata['declaration'].doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
