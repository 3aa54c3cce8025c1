"""The core never depends on the web or the queue: imports flow web/ingest -> search_engine only."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"web", "ingest", "flask", "celery", "redis", "kombu"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "search_engine").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_imports_no_web_or_queue(path):
    assert not imported_modules(path) & FORBIDDEN


def test_importing_the_core_loads_no_model():
    import subprocess
    import sys

    code = (
        "import sys, search_engine.service, search_engine.index, ingest.cli, web, web.server; "
        "heavy = {'torch', 'dlib', 'facenet_pytorch', 'lancedb', 'elasticsearch'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
