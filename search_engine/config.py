"""One frozen settings object, read from ``FACESEARCH_*`` environment variables at an entry point.

Each setting is declared once, below, as a field of :class:`Settings` with :func:`setting`: its
default, how its variable is parsed, what values it accepts, and one line on what it does. Reading
the environment, checking values and the README's configuration table
(``python -m search_engine.config``, compared with the README by ``tests/test_config.py``) all come
from those declarations.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: The embedding models, in the order ``auto`` tries them; ``auto`` picks one of them.
MODELS = ("facenet", "mobilefacenet", "dlib")
EMBEDDERS = ("auto", *MODELS)


def _default_data_dir() -> Path:
    from platformdirs import user_data_path

    return user_data_path("facesearch", appauthor=False)


# --- parsers: the text of a variable to a value (ValueError when it is not one) ---


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _paths(raw: str) -> tuple[Path, ...]:
    """A ``os.pathsep``-separated list of folders (``:`` on Linux), ``~`` expanded, empty entries dropped."""
    return tuple(Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip())


def _keys(raw: str) -> tuple[str, ...]:
    """Comma-separated API keys, blanks around them dropped."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


# --- checks: None when a value is acceptable, else what it must be ---

Check = Callable[[Any], "str | None"]


def _one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def _within(low: float, high: float, *, low_open: bool = False, high_open: bool = False, what: str = "") -> Check:
    def check(value) -> str | None:
        if value is None:
            return None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if above and below:
            return None
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        return f"must be {what + ' ' if what else ''}within {interval}"

    return check


def _at_least(low: int, what: str = "") -> Check:
    return lambda value: None if value >= low else f"must be {what or f'{low} or more'}"


def _web_address(value: str | None) -> str | None:
    return None if value is None or value.startswith(("http://", "https://")) else "must start with http:// or https://"


def _valid_keys(value: tuple[str, ...]) -> str | None:
    bad = any(not key or "," in key or any(c.isspace() for c in key) for key in value)
    return "must be comma-separated keys without spaces" if bad else None


@dataclass(frozen=True)
class Declaration:
    """How one setting is read and checked, and what the README says of it.

    ``shown`` is the default as the README's table writes it, where the value itself says too
    little (``0`` meaning one per core); ``parse`` turns the variable's text into the value.
    """

    doc: str
    parse: Callable[[str], Any] = str
    check: Check | None = None
    shown: str | None = None


def setting(default: Any, doc: str, **how: Any) -> Any:
    """A :class:`Settings` field: its default (a callable for one computed when needed) and its
    :class:`Declaration`."""
    meta = {"declaration": Declaration(doc, **how)}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def variable(name: str) -> str:
    """The environment variable of a setting: ``FACESEARCH_`` and the field name in capitals."""
    return f"FACESEARCH_{name.upper()}"


_KINDS = {int: "a whole number", float: "a number"}


def _positive(value) -> str | None:
    return None if value > 0 else "must be positive"


@dataclass(frozen=True)
class Settings:
    """Runtime configuration. Build it once with :meth:`from_env` and pass it down; each field is a
    ``FACESEARCH_<NAME>`` variable, declared with its one-line doc below."""

    # --- models ---
    embedder: str = setting(
        "auto",
        "`auto`, `facenet`, `mobilefacenet` or `dlib` ([Models](#models))",
        check=_one_of(*EMBEDDERS),
    )
    data_dir: Path = setting(
        _default_data_dir, "embedded index directory", parse=_path, shown="`~/.local/share/facesearch`"
    )
    facenet_weights: Path | None = setting(
        None, "local VGGFace2 state dict (`20180402-114759-vggface2.pt`)", parse=_path
    )
    mobilefacenet_weights: Path | None = setting(
        None,
        "folder holding `mobilefacenet.json` and `.bin` (else the model cache, filled with npm)",
        parse=_path,
    )
    # --- Elasticsearch ---
    es_url: str | None = setting(None, "use this Elasticsearch cluster instead of the embedded index")
    es_api_key: str | None = setting(None, "Elasticsearch API key (or the two below)")
    es_user: str | None = setting(None, "Elasticsearch basic auth user")
    es_password: str | None = setting(None, "Elasticsearch basic auth password")
    es_ca_cert: Path | None = setting(None, "CA bundle for a TLS cluster", parse=_path)
    es_index_prefix: str = setting("facesearch", "prefix of index, alias and template names")
    # --- detection and ingest ---
    min_probability: float = setting(0.9, "MTCNN probability cut", parse=float, check=_within(0, 1))
    # On LFW faces shrunk to 32 px still verify almost as well as at full size (bench/face_size.py),
    # and not looking for smaller ones makes detection a quarter faster.
    min_face_size: int = setting(
        32, "smallest face detected and indexed: box width, source pixels", parse=int, check=_positive
    )
    max_image_pixels: int = setting(
        90_000_000, "larger images are refused as decompression bombs", parse=int, check=_positive
    )
    batch_size: int = setting(32, "images per model batch", parse=int, check=_positive)
    workers: int = setting(
        0,
        "indexing processes; `serve`'s worker processes",
        parse=int,
        check=_at_least(0, "0 (automatic) or more"),
        shown="`0` (one per core)",
    )
    torch_threads: int = setting(
        0,
        "torch threads per process",
        parse=int,
        check=_at_least(0, "0 (automatic) or more"),
        shown="`0` (cores / workers)",
    )
    # --- the queue ---
    broker_url: str = setting("redis://127.0.0.1:6379/0", "Celery broker and result backend")
    visibility_timeout: int = setting(
        900, "seconds before a vanished worker's task goes to another", parse=int, check=_positive
    )
    # --- video ---
    video_fps: float = setting(
        2.0, "video frames sampled per second", parse=float, check=_within(0, 60, low_open=True), shown="`2`"
    )
    video_max_side: int = setting(
        640,
        "video frames are downscaled to this longer side for detection (0: full size)",
        parse=int,
        check=_at_least(0, "0 (full size) or more"),
    )
    video_segment_seconds: float = setting(
        120.0, "videos are processed in pieces of this length", parse=float, check=_positive, shown="`120`"
    )
    video_track_embedding: str = setting(
        "best", "a track's stored embedding: `best` face or `mean` over the track", check=_one_of("best", "mean")
    )
    device: str = setting(
        "cpu",
        "torch device of the detector and FaceNet (`cuda`, `cuda:1`); dlib and MobileFaceNet stay on the CPU",
    )
    # --- the stack and the web app ---
    kibana_url: str | None = setting(
        None, "Kibana that `facesearch init` imports its saved objects into", check=_web_address
    )
    web_url: str = setting(
        "http://localhost:8000",
        "the web app as a browser reaches it (Kibana loads face thumbnails from it)",
        check=_web_address,
    )
    media_roots: tuple[Path, ...] = setting(
        (), "folders (`:`-separated) the web app may serve photos and videos from", parse=_paths
    )
    max_upload_bytes: int = setting(
        20_000_000, "largest query upload the web app accepts (413 beyond)", parse=int, check=_positive
    )
    api_keys: tuple[str, ...] = setting(
        (), "comma-separated keys; when set, every page and API call needs one", parse=_keys, check=_valid_keys
    )
    results_per_page: int = setting(
        20,
        'hits the search page shows first and adds per "More results"',
        parse=int,
        check=_positive,
    )
    keep_uploads: Path | None = setting(
        None, "folder to keep a copy of every query photo in (none kept by default)", parse=_path
    )
    # --- verdicts and ranking ---
    target_fpir: float = setting(
        0.01,
        'share of searches for someone the archive does not hold that may still get a "same person" hit; '
        "the calibrated threshold rises with the archive's size to keep it ([Verdicts](#verdicts-you-can-trust))",
        parse=float,
        check=_within(0, 1, low_open=True, high_open=True, what="a share"),
    )
    same_person_threshold: float | None = setting(
        None,
        'a fixed cosine similarity for "same person" instead, whatever the archive\'s size',
        parse=float,
        check=_within(-1, 1, what="a cosine similarity"),
        shown="– (calibrated)",
    )
    expansion_neighbours: int = setting(
        3,
        "nearest faces that may join the query in ranking (query expansion); `0`: off",
        parse=int,
        check=_at_least(0, "0 (off) or more"),
    )
    expansion_threshold: float | None = setting(
        None,
        "cosine similarity a nearest face needs to join; else the embedder's measured value, else its "
        "calibration's; no expansion for a model with neither",
        parse=float,
        check=_within(-1, 1, high_open=True, what="a cosine similarity"),
        shown="per embedder (MobileFaceNet `0.5`, dlib `0.93`)",
    )

    def __post_init__(self) -> None:
        for name, declaration in declarations().items():
            value = getattr(self, name)
            problem = declaration.check(value) if declaration.check and value is not None else None
            if problem:
                raise ConfigError(f"{variable(name)} {problem}, got {value!r}")

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
        """Read the ``FACESEARCH_*`` variables; unset or empty ones keep their defaults."""
        env = os.environ if environ is None else environ
        values = {}
        for name, declaration in declarations().items():
            raw = env.get(variable(name), "").strip()
            if not raw:
                continue
            try:
                values[name] = declaration.parse(raw)
            except ValueError:
                kind = _KINDS.get(declaration.parse, "readable")
                raise ConfigError(f"{variable(name)} must be {kind}, got {raw!r}") from None
        return cls(**values)


def declarations() -> dict[str, Declaration]:
    """Every setting's declaration, by field name, in the order declared."""
    return {f.name: f.metadata["declaration"] for f in dataclasses.fields(Settings)}


def _shown_default(name: str, declaration: Declaration) -> str:
    if declaration.shown is not None:
        return declaration.shown
    default = next(f for f in dataclasses.fields(Settings) if f.name == name).default
    if default is None or default == ():
        return "–"
    return f"`{default}`"


def settings_table() -> str:
    """The README's configuration table (markdown), one row per setting."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, declaration in declarations().items():
        rows.append(f"| `{variable(name)}` | {_shown_default(name, declaration)} | {declaration.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
