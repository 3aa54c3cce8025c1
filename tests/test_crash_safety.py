"""``facesearch index`` killed outright (SIGKILL, as the OOM killer or a power cut stops it) while
it writes to the embedded store and while the store compacts: the store opens, no face is stored
twice, the killed run's pool workers do not outlive it, and a re-run ends with exactly the faces
and file records of a run never interrupted. ``bench/crash_index.py`` kills LFW runs at many
more points."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from facesearch.cli import main
from harness import killed_index_run, processes_with_env
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.indexing import source_name

from .test_cli import people_folder

ARGS = ["--embedder", "dlib", "--batch-size", "4", "--quiet", "--json"]


def contents(data_dir: Path, photos: Path) -> tuple[Counter, dict]:
    """Each stored face id with how often it is stored, and each photo's file record."""
    index = EmbeddedFaceIndex(data_dir / "lancedb", DlibEmbedder.info)
    ids = Counter(face_id for batch in index.scan(vectors=False) for face_id in batch.face_ids)
    files = index.get_sources([source_name(path) for path in sorted(photos.rglob("*.jpg"))])
    return ids, {source: (r.status, r.faces, r.content_hash) for source, r in files.items()}


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, cameraman):
    return people_folder(tmp_path_factory.mktemp("crash-photos"), astronaut, cameraman, 6)


def index(photos: Path, data_dir: Path, *extra: str) -> int:
    return main(["index", str(photos), "--person-from-folder", "--data-dir", str(data_dir), *ARGS, *extra])


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("reference")
    assert index(photos, data_dir) == 0
    return contents(data_dir, photos)


@pytest.mark.parametrize(
    "point, nth, delay_s, workers",
    [
        # Writes: 1 opens the tables, then each batch merges its faces and then its file records.
        ("write", 4, 0.0, "1"),  # the second batch's faces being merged
        ("write", 3, 0.01, "2"),  # the first batch's file records, with a pool of two workers
        ("compaction", 1, 0.05, "1"),  # the compaction at the end of the run
    ],
)
def test_a_killed_index_run_leaves_a_store_that_a_rerun_completes(
    photos, reference, tmp_path, capsys, point, nth, delay_s, workers
):
    data_dir = tmp_path / "data"
    args = ["index", str(photos), "--person-from-folder", *ARGS, "--workers", workers]
    env = {"FACESEARCH_DATA_DIR": str(data_dir)}
    status = killed_index_run(args, env, tmp_path / "log", point, nth, delay_s)
    assert status == -9, (tmp_path / "log").read_text()[-2000:]
    deadline = time.monotonic() + 10
    while processes_with_env("FACESEARCH_DATA_DIR", str(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_with_env("FACESEARCH_DATA_DIR", str(data_dir)) == []

    ids, _ = contents(data_dir, photos)
    assert set(ids.values()) <= {1}
    assert set(ids) <= set(reference[0])

    capsys.readouterr()
    assert index(photos, data_dir) == 0
    assert json.loads(capsys.readouterr().out)["failed"] == 0
    assert contents(data_dir, photos) == reference
