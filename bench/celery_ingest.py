"""Celery ingest throughput vs in-process ``facesearch index``, at equal cores.

For 1 and 2 worker processes: a fresh Redis, a fresh index, a ``facesearch worker`` started, the
LFW sample submitted in chunks of 32, timed from worker start to the job's end; and the same
photos indexed in-process (``facesearch index`` code, same number of processes), timed from the
call to its return. Both timings include starting processes and loading the models.
Median of ``--runs`` runs; the two sides take turns, run by run, so that a slower spell of a shared
machine does not land on one side only.

Usage: python bench/celery_ingest.py --lfw ../shared/data/lfw [--images 13233] [--runs 3] [--processes 1 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness.py, at the repository root

from ingest_throughput import cpu_name  # noqa: E402

from harness import redis_server, start_worker, stop  # noqa: E402
from ingest.celery_app import create_celery  # noqa: E402
from ingest.jobs import job_status, submit_photos  # noqa: E402
from ingest.local import index_locally  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.config import Settings  # noqa: E402


def celery_run(photos, workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="facesearch-celery-bench-") as tmp:
        return _celery_run(photos, workers, Path(tmp))


def _celery_run(photos, workers: int, work: Path) -> float:
    with redis_server(work) as url:
        env = {"FACESEARCH_BROKER_URL": url, "FACESEARCH_DATA_DIR": str(work / "data"), "FACESEARCH_EMBEDDER": "dlib"}
        app = create_celery(Settings.from_env(env))
        started = time.perf_counter()
        worker = start_worker(env, work / "worker.log", concurrency=workers)
        job_id = submit_photos(app, photos, chunk_size=32)
        while not (status := job_status(app, job_id)).finished:
            time.sleep(0.5)
        seconds = time.perf_counter() - started
        assert not status.summary.failures and status.summary.files == len(photos), status.to_dict()
        stop(worker)
        app.close()
        del app
    return len(photos) / seconds


def local_run(photos, workers: int) -> float:
    with tempfile.TemporaryDirectory(prefix="facesearch-local-bench-") as data:
        settings = Settings.from_env().replace(embedder="dlib", data_dir=Path(data), es_url=None, workers=workers)
        started = time.perf_counter()
        summary, index = index_locally(settings, photos, progress=False)
        seconds = time.perf_counter() - started
        index.close()
    assert not summary.failures
    return len(photos) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--images", type=int, default=13233, help="sample size (all of LFW by default)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="worker process counts to compare")
    args = parser.parse_args()

    every = sorted(args.lfw.rglob("*.jpg"))
    paths = every[:: max(1, len(every) // args.images)][: args.images]
    photos = collect_photos(paths, person_from_folder=True).photos
    rows = []
    for workers in args.processes:
        local, celery = [], []
        for _ in range(args.runs):
            local.append(local_run(photos, workers))
            celery.append(celery_run(photos, workers))
        rows.append((workers, statistics.median(local), statistics.median(celery), local, celery))

    print(f"\nCelery vs in-process ingest: {len(photos)} LFW images, dlib, median of {args.runs} runs")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| processes | in-process images/s | Celery images/s | Celery overhead | runs (in-process; Celery) |")
    print("|---|---|---|---|---|")
    for workers, local, celery, local_runs, celery_runs in rows:
        overhead = 100 * (local - celery) / local
        runs = f"{', '.join(f'{r:.1f}' for r in local_runs)}; {', '.join(f'{r:.1f}' for r in celery_runs)}"
        print(f"| {workers} | {local:.1f} | {celery:.1f} | {overhead:+.1f}% | {runs} |")


if __name__ == "__main__":
    main()
