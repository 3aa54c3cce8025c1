"""Batch jobs through a real Redis and a real Celery worker process (no eager mode)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image

from ingest.cli import EXIT_PARTIAL, main
from search_engine.config import Settings
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.types import SearchFilters

from .test_cli import variant

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed (scripts/setup.sh --test installs it)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("redis-server did not start")
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    # The CLI commands run in this process leave Celery clients behind (a CLI process just exits):
    # collect them while Redis is still up, so their results can unsubscribe, and without
    # complaining about the sockets the CLI never meant to close.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def worker_env(redis_url, tmp_path_factory):
    return {
        "FACESEARCH_BROKER_URL": redis_url,
        "FACESEARCH_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
        "FACESEARCH_EMBEDDER": "dlib",
    }


@pytest.fixture(scope="module")
def worker(worker_env, tmp_path_factory):
    """``facesearch worker`` with two processes, as a user starts it."""
    log = tmp_path_factory.mktemp("worker-log") / "worker.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESEARCH_")} | worker_env
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ingest.cli", "worker", "--concurrency", "2", "--loglevel", "INFO"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    from ingest.celery_app import create_celery

    app = create_celery(Settings.from_env(worker_env))
    deadline = time.monotonic() + 120
    while not app.control.ping(timeout=1):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the worker did not start:\n{log.read_text()}")
    yield process
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def photos(tmp_path, astronaut, cameraman):
    root = tmp_path / "photos"
    for person, image in (("Eileen_Collins", astronaut), ("Cameraman", cameraman)):
        (root / person).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(variant(image, i)).save(root / person / f"{person}_{i:04d}.jpg")
    (root / "Cameraman" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_submitted_folder_lands_in_the_index_with_labels(worker, worker_env, photos, monkeypatch, capsys):
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    code = main(["submit", str(photos), "--person-from-folder", "--chunk-size", "4", "--wait", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_PARTIAL
    assert summary["state"] == "finished with failures"
    assert (summary["files"], summary["indexed"], summary["faces"]) == (13, 12, 12)
    assert summary["chunks"] == {"total": 4, "done": 4, "failed": 0}
    assert [f["source"].rsplit("/", 1)[1] for f in summary["failures"]] == ["broken.jpg"]

    index = EmbeddedFaceIndex(Path(worker_env["FACESEARCH_DATA_DIR"]) / "lancedb", DlibEmbedder.info)
    assert index.count() == 12
    assert index.count(SearchFilters(person="Eileen_Collins")) == 6
    assert index.count(SearchFilters(person="Cameraman")) == 6

    code = main(["job", summary["job_id"], "--json"])
    again = json.loads(capsys.readouterr().out)
    assert code == EXIT_PARTIAL and again["failures"] == summary["failures"]
    assert "not an image" in again["failures"][0]["error"] or "truncated" in again["failures"][0]["error"]

    # Submitting the same folder again indexes nothing twice.
    main(["submit", str(photos), "--person-from-folder", "--wait", "--json"])
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["skipped_unchanged"] == 12 and rerun["indexed"] == 0
    assert index.count() == 12


def test_unknown_job_is_a_clear_error(worker_env, monkeypatch, capsys, redis_url):
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    assert main(["job", "no-such-job"]) == 1
    assert "no job no-such-job" in capsys.readouterr().err
