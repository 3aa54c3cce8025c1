"""Services going away mid-job: the broker (Redis, persistent as in the docker stack) stopped while
a Celery job runs and started again. The worker waits for it, the job then completes, and the
index ends with exactly the faces an uninterrupted in-process run stores."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from PIL import Image

from facesearch.cli import main
from harness import running_redis, start_worker, stop
from ingest.celery_app import celery_client
from ingest.jobs import job_status, submit_photos
from ingest.sources import collect_photos
from search_engine.config import Settings
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.index.embedded import EmbeddedFaceIndex

from .test_cli import variant


def stored(data_dir: Path) -> dict[str, str | None]:
    index = EmbeddedFaceIndex(data_dir / "lancedb", DlibEmbedder.info)
    return {
        face_id: person for batch in index.scan(vectors=False) for face_id, person in zip(batch.face_ids, batch.persons)
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory, astronaut, cameraman):
    root = tmp_path_factory.mktemp("outage-photos")
    for person, image in (("Eileen_Collins", astronaut), ("Cameraman", cameraman)):
        (root / person).mkdir()
        for i in range(10):
            Image.fromarray(variant(image, i)).save(root / person / f"{i}.jpg")
    return root


def test_a_job_survives_a_broker_restart(photos, tmp_path):
    reference = tmp_path / "reference"
    args = ["index", str(photos), "--person-from-folder", "--embedder", "dlib", "--quiet", "--workers", "1"]
    assert main([*args, "--data-dir", str(reference)]) == 0

    with running_redis(tmp_path, persistent=True) as redis:
        env = {
            "FACESEARCH_BROKER_URL": redis.url,
            "FACESEARCH_DATA_DIR": str(tmp_path / "data"),
            "FACESEARCH_EMBEDDER": "dlib",
        }
        worker = start_worker(env, tmp_path / "worker.log", concurrency=1)
        try:
            with celery_client(Settings.from_env(env)) as app:
                job_id = submit_photos(app, collect_photos([photos], person_from_folder=True).photos, chunk_size=2)
                while job_status(app, job_id).chunks_done < 2:
                    time.sleep(0.2)
            redis.stop()
            time.sleep(5)  # the worker finishes its chunk with no broker, and keeps trying
            assert worker.poll() is None
            redis.start()
            with celery_client(Settings.from_env(env)) as app:
                deadline = time.monotonic() + 180
                while not (status := job_status(app, job_id)).finished and time.monotonic() < deadline:
                    time.sleep(0.5)
            assert status.finished, (tmp_path / "worker.log").read_text()[-3000:]
        finally:
            stop(worker)
    assert status.chunks_failed == 0 and not status.summary.failures
    assert stored(tmp_path / "data") == stored(reference)
