"""Services going away mid-job: the broker (Redis, persistent as in the docker stack) stopped while
a Celery job runs and started again. The worker waits for it, the job then completes, and the
index ends with exactly the faces an uninterrupted in-process run stores."""

from __future__ import annotations

import fcntl
import json
import threading
import time
from pathlib import Path

import pytest

from facesearch.cli import main
from harness import running_redis, start_facesearch, start_worker, stop, wait_until
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.index.embedded import EmbeddedFaceIndex

from .test_cli import people_folder

ARGS = ["--embedder", "dlib", "--quiet", "--workers", "1"]


def stored(data_dir: Path) -> dict[str, str | None]:
    index = EmbeddedFaceIndex(data_dir / "lancedb", DlibEmbedder.info)
    return {
        face_id: person for batch in index.scan(vectors=False) for face_id, person in zip(batch.face_ids, batch.persons)
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, cameraman):
    return people_folder(tmp_path_factory.mktemp("outage-photos"), astronaut, cameraman, 10)


def stored_reference(photos: Path, tmp_path: Path) -> dict[str, str | None]:
    """What an uninterrupted in-process run of all the photos stores."""
    reference = tmp_path / "reference"
    assert main(["index", str(photos), "--person-from-folder", "--data-dir", str(reference), *ARGS]) == 0
    return stored(reference)


def test_a_job_survives_a_broker_restart(photos, tmp_path, monkeypatch, capsys):
    """``submit --wait`` while Redis is stopped for 5 s and started again: the worker and the CLI
    wait for it, and the job ends complete."""
    reference = stored_reference(photos, tmp_path)
    capsys.readouterr()
    with running_redis(tmp_path, persistent=True) as redis:
        env = {
            "FACESEARCH_BROKER_URL": redis.url,
            "FACESEARCH_DATA_DIR": str(tmp_path / "data"),
            "FACESEARCH_EMBEDDER": "dlib",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        worker = start_worker(env, tmp_path / "worker.log", concurrency=1)
        codes = []
        submit = ["submit", str(photos), "--person-from-folder", "--chunk-size", "2", "--wait", "--json"]
        follower = threading.Thread(target=lambda: codes.append(main(submit)))
        try:
            follower.start()
            wait_until(lambda: len(stored(tmp_path / "data")) >= 4, worker, 120, "the worker stored nothing")
            redis.stop()
            time.sleep(5)  # the worker finishes its chunk with no broker, and keeps trying
            assert worker.poll() is None and follower.is_alive()
            redis.start()
            follower.join(timeout=180)
        finally:
            stop(worker)
    assert codes == [0], (tmp_path / "worker.log").read_text()[-3000:]
    out, err = capsys.readouterr()
    assert "the broker does not answer" in err and "the broker answers again" in err
    summary = json.loads(out)
    assert summary["chunks"]["failed"] == 0 and summary["failed"] == 0 and summary["files"] == 20
    assert stored(tmp_path / "data") == reference


def test_a_stuck_writer_holding_the_store_makes_a_run_wait_and_say_so(photos, tmp_path):
    """A process that holds the embedded store's write lock and does nothing: ``facesearch index``
    says it is waiting, stores nothing meanwhile, and completes once the lock is free."""
    data_dir = tmp_path / "data"
    assert main(["index", str(photos / "Cameraman"), "--person-from-folder", "--data-dir", str(data_dir), *ARGS]) == 0
    before = stored(data_dir)
    log = tmp_path / "index.log"
    with open(data_dir / "lancedb" / ".write.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = start_facesearch(
            ["index", str(photos), "--person-from-folder", *ARGS], {"FACESEARCH_DATA_DIR": str(data_dir)}, log
        )
        try:
            wait_until(lambda: "waiting for it" in log.read_text(), run, 120, f"no word of the lock: {log.read_text()}")
            time.sleep(2)
            # Reads need no lock: the store is read (as searches are) while the writer is stuck.
            assert run.poll() is None and stored(data_dir) == before
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    assert run.wait(timeout=120) == 0
    assert "free again" in log.read_text()
    assert stored(data_dir) == stored_reference(photos, tmp_path)


def test_an_unreachable_elasticsearch_is_a_clear_error(photos, capsys):
    from .test_kibana import closed_port

    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["index", str(photos), "--es-url", url, *ARGS]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach Elasticsearch at {url}" in err and "Traceback" not in err
