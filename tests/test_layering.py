"""Imports flow one way: the CLI (``facesearch``) -> web / ingest -> search_engine, and inside the
core from its base (settings, types, errors) up through models and index, pipeline, to the service."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "search_engine": {"web", "ingest", "facesearch", "flask", "celery", "redis", "kombu"},
    "ingest": {"web", "facesearch", "flask"},
    "web": {"ingest", "facesearch", "celery"},
}
#: The core's rooms, lowest first: a module imports only from its own rank or below.
CORE_RANKS = (
    {"config", "settings_fields", "types", "errors", "ids", "media_types"},
    {
        "imageio",
        "alignment",
        "calibration",
        "calibration_fit",
        "video",
        "mtcnn",
        "detection",
        "embedding",
        "index",
        "photo_hash",
    },
    {"pipeline", "expansion", "tracking", "grouping", "people"},
    {"indexing", "video_indexing", "similar"},
    {"service"},
)


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str | None, list[str]]]:
    """Every import of a file as (level, module, names); level 0 is absolute."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((0, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module, [alias.name for alias in node.names]))
    return found


def core_room(path: Path) -> str:
    """The core module or subpackage a file belongs to (``index`` for index/elastic.py)."""
    return path.relative_to(ROOT / "search_engine").parts[0].removesuffix(".py")


def core_rooms_imported(path: Path) -> set[str]:
    """The core modules or subpackages a core file imports, relative imports resolved."""
    package = list(path.relative_to(ROOT).parent.parts)
    rooms = set()
    for level, module, names in imports(path):
        if level == 0:
            parts = module.split(".")
            if parts[0] == "search_engine" and len(parts) > 1:
                rooms.add(parts[1])
            continue
        base = package[: len(package) - level + 1]
        target = base + (module.split(".") if module else [])
        if len(target) > 1:
            rooms.add(target[1])
        else:
            rooms.update(names)
    return rooms


def rank(room: str) -> int:
    return next(i for i, rooms in enumerate(CORE_RANKS) if room in rooms)


@pytest.mark.parametrize(
    "path",
    [path for package in FORBIDDEN for path in sources(package)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_layers_import_only_downwards(path):
    package = path.relative_to(ROOT).parts[0]
    absolute = {module.split(".")[0] for level, module, _ in imports(path) if level == 0}
    assert not absolute & FORBIDDEN[package]


@pytest.mark.parametrize("path", sources("search_engine"), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_rooms_import_only_their_rank_or_below(path):
    if path.parent == ROOT / "search_engine" and path.name == "__init__.py":
        return
    own = rank(core_room(path))
    above = {room for room in core_rooms_imported(path) - {core_room(path)} if rank(room) > own}
    assert not above, f"{path.name} ({core_room(path)}) imports {sorted(above)} from above its rank"


def test_every_core_module_has_a_rank():
    rooms = {core_room(path) for path in sources("search_engine")} - {"__init__"}
    assert rooms <= set().union(*CORE_RANKS)


def test_importing_the_application_loads_no_model():
    import subprocess
    import sys

    code = (
        "import sys, search_engine.service, search_engine.index, facesearch.cli, web, web.server; "
        "heavy = {'torch', 'dlib', 'facenet_pytorch', 'lancedb', 'elasticsearch', 'igraph'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
