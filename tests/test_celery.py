"""Batch jobs through a real Redis and a real Celery worker process (no eager mode)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from PIL import Image

import hostile_media
from facesearch.cli import EXIT_PARTIAL, main
from harness import redis_server, start_worker, stop, wait_until
from ingest.celery_app import celery_client
from ingest.jobs import job_status, submit_photos
from search_engine.config import Settings
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.indexing import source_name
from search_engine.types import SearchFilters

from .conftest import STEP
from .test_cli import variant
from .test_hostile_media import corpus


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="module")
def worker_env(redis_url, tmp_path_factory):
    return {
        "FACESEARCH_BROKER_URL": redis_url,
        "FACESEARCH_DATA_DIR": str(tmp_path_factory.mktemp("worker-data")),
        "FACESEARCH_EMBEDDER": "dlib",
        # Short segments, so the test video takes several tasks in a row.
        "FACESEARCH_VIDEO_SEGMENT_SECONDS": "5",
    }


@pytest.fixture(scope="module")
def worker(worker_env, tmp_path_factory):
    """``facesearch worker`` with two processes, as a user starts it."""
    process = start_worker(worker_env, tmp_path_factory.mktemp("worker-log") / "worker.log", concurrency=2)
    yield process
    stop(process)


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

    # Submitting the same folder again indexes nothing twice; a worker then groups the faces.
    main(["submit", str(photos), "--person-from-folder", "--wait", "--json", "--cluster"])
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["skipped_unchanged"] == 12 and rerun["indexed"] == 0
    assert index.count() == 12
    assert (rerun["people"]["faces"], rerun["people"]["people"], rerun["people"]["alone"]) == (12, 2, 0)
    assert {c.value: c.count for c in index.facets("person")} == {"Eileen_Collins": 6, "Cameraman": 6}
    assert len(index.facets("cluster")) == 2


def test_unknown_job_is_a_clear_error(worker_env, monkeypatch, capsys, redis_url):
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    assert main(["job", "no-such-job"]) == 1
    assert "no job no-such-job" in capsys.readouterr().err


def test_healthcheck_pings_this_hosts_worker(worker, worker_env, monkeypatch, capsys):
    """The image's HEALTHCHECK: healthy while the worker on this host answers, not when none does."""
    import socket

    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    assert main(["healthcheck"]) == 0
    monkeypatch.setattr(socket, "gethostname", lambda: "another-container")
    assert main(["healthcheck", "--timeout", "1"]) == 1
    assert "worker facesearch@another-container did not answer" in capsys.readouterr().err


def test_healthcheck_of_an_address_nobody_serves(capsys):
    from .test_kibana import closed_port

    url = f"http://127.0.0.1:{closed_port()}/"
    assert main(["healthcheck", "--url", url, "--timeout", "2"]) == 1
    assert f"{url} does not answer" in capsys.readouterr().err


def test_a_video_is_indexed_one_segment_task_after_another(worker, worker_env, scene, tmp_path, monkeypatch, capsys):
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    code = main(["submit", str(scene), str(broken), "--wait", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_PARTIAL
    assert (summary["files"], summary["indexed"]) == (2, 1)
    assert summary["failures"][0]["source"] == str(broken)
    assert "cannot be decoded as a video" in summary["failures"][0]["error"]

    index = EmbeddedFaceIndex(Path(worker_env["FACESEARCH_DATA_DIR"]) / "lancedb", DlibEmbedder.info)
    tracks = sorted((f.start, f.end) for f in index.faces_of_source(str(scene)))
    assert summary["faces"] == len(tracks)
    # 5 s segments: the astronaut's 2-7 s appearance is cut at 5 s; the cameraman's 5-11 s at 10 s.
    starts = [start for start, _ in tracks]
    assert starts == pytest.approx([2.0, 5.0, 5.0, 10.0], abs=STEP)
    assert max(end for _, end in tracks) == pytest.approx(11.0, abs=STEP)

    main(["submit", str(scene), "--wait", "--json"])
    rerun = json.loads(capsys.readouterr().out)
    assert rerun["skipped_unchanged"] == 1 and rerun["faces"] == len(tracks)
    assert len(index.faces_of_source(str(scene))) == len(tracks)


def test_job_status_reads_finished_and_failed_chunks_from_the_backend(redis_url):
    """A chunk task that failed as a whole (its retries spent) names each of its files."""
    from celery import states
    from celery.app.task import Context
    from celery.result import AsyncResult, GroupResult

    from ingest.celery_app import create_celery
    from ingest.jobs import job_status
    from search_engine.config import Settings
    from search_engine.indexing import BatchSummary

    app = create_celery(Settings.from_env({"FACESEARCH_BROKER_URL": redis_url}))
    done, failed, pending = (AsyncResult(f"chunk-{n}", app=app) for n in range(3))
    GroupResult("job-with-a-failed-chunk", [done, failed, pending], app=app).save()
    summary = BatchSummary(files=2, indexed=2, faces=3).to_dict()
    app.backend.store_result(done.id, summary, states.SUCCESS, request=Context(args=[["a.jpg", "b.jpg"]]))
    error = ConnectionError("index unreachable")
    app.backend.store_result(failed.id, error, states.FAILURE, request=Context(args=[["c.jpg", "d.jpg"]]))

    status = job_status(app, "job-with-a-failed-chunk")
    assert (status.chunks_total, status.chunks_done, status.chunks_failed) == (3, 1, 1)
    assert status.summary.files == 4 and status.summary.faces == 3
    assert status.summary.failures == [
        (path, "chunk task failed: ConnectionError: index unreachable") for path in ("c.jpg", "d.jpg")
    ]
    app.close()


def test_hostile_files_through_the_workers(worker, worker_env, tmp_path, astronaut, monkeypatch, capsys):
    """The corpus of test_hostile_media.py as a Celery job: the same outcomes, and the worker lives on."""
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    files = corpus(tmp_path / "media", astronaut)
    code = main(["submit", str(tmp_path / "media"), "--chunk-size", "16", "--wait", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_PARTIAL and summary["chunks"]["failed"] == 0
    assert summary["files"] == len(files)
    index = EmbeddedFaceIndex(Path(worker_env["FACESEARCH_DATA_DIR"]) / "lancedb", DlibEmbedder.info)
    assert hostile_media.problems(files, index.get_sources([source_name(f.path) for f in files])) == []
    assert worker.poll() is None
    assert main(["healthcheck"]) == 0


@pytest.mark.parametrize("timeout, every", [(5, 1), (60, 10), (900, 10)])
def test_workers_look_for_a_vanished_workers_tasks_soon_after_the_visibility_timeout(timeout, every):
    from ingest.celery_app import create_celery

    options = create_celery(Settings.of(visibility_timeout=timeout)).conf.broker_transport_options
    assert options["visibility_timeout"] == timeout
    # Each look is a real scan (no throttling), a few times per timeout, at least every 10 s.
    assert (options["unacked_restore_interval"], options["unacked_restore_throttle"]) == (every, 1)


def test_a_worker_killed_during_a_video_segment_loses_and_doubles_nothing(scene, tmp_path, monkeypatch, capsys):
    """The whole worker (master and children) SIGKILLed while a video's second segment task runs:
    that task returns to the queue after the visibility timeout, a new worker redoes it, and the
    video ends with exactly the tracks of an uninterrupted in-process run. Its own Redis: the
    module's worker must not take the tasks."""
    with redis_server(tmp_path) as redis_url:
        status, tracks, reference = _video_job_with_a_killed_worker(redis_url, scene, tmp_path, monkeypatch, capsys)
    assert status.finished and status.summary.indexed == 1 and not status.summary.failures
    assert len({t.face_id for t in tracks}) == len(tracks)
    assert sorted((t.face_id, round(t.start, 2), round(t.end, 2)) for t in tracks) == sorted(
        (t.face_id, round(t.start, 2), round(t.end, 2)) for t in reference
    )


def _video_job_with_a_killed_worker(redis_url, scene, tmp_path, monkeypatch, capsys):
    env = {
        "FACESEARCH_BROKER_URL": redis_url,
        "FACESEARCH_DATA_DIR": str(tmp_path / "data"),
        "FACESEARCH_EMBEDDER": "dlib",
        "FACESEARCH_VIDEO_SEGMENT_SECONDS": "5",
        "FACESEARCH_VISIBILITY_TIMEOUT": "5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["index", str(scene), "--data-dir", str(tmp_path / "reference"), "--quiet", "--workers", "1"]) == 0
    reference = EmbeddedFaceIndex(tmp_path / "reference" / "lancedb", DlibEmbedder.info).faces_of_source(str(scene))

    log = tmp_path / "worker1.log"
    first = start_worker(env, log, concurrency=1)
    capsys.readouterr()
    with celery_client(Settings.from_env(env)) as app:
        job_id = submit_photos(app, [], chunk_size=1, videos=[scene])
        try:
            wait_until(lambda: log.read_text().count("index_video[") >= 3, first, 120, "no second segment task")
        finally:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
        second = start_worker(env, tmp_path / "worker2.log", concurrency=1)
        try:
            deadline = time.monotonic() + 180
            while not (status := job_status(app, job_id)).finished and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            stop(second)
    tracks = EmbeddedFaceIndex(tmp_path / "data" / "lancedb", DlibEmbedder.info).faces_of_source(str(scene))
    return status, tracks, reference
