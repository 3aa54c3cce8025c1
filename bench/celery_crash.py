"""Crash safety of Celery ingest: SIGKILL a worker mid-job, start another, lose and duplicate nothing.

Indexes the same LFW sample twice: once in this process (the reference), once as a Celery job
whose first worker (master and children) is killed with SIGKILL when about a third of the photos
are done. A second worker takes over: tasks are acknowledged only when done, so the dead worker's
chunks return to the queue after the visibility timeout (shortened here to --visibility seconds).
Then the face counts, per-person counts and face ids of both indexes must be equal.

Usage: python bench/celery_crash.py --lfw ../shared/data/lfw [--images 520]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness.py, at the repository root

from harness import redis_server, start_worker, stop  # noqa: E402
from ingest.celery_app import create_celery  # noqa: E402
from ingest.jobs import job_status, submit_photos  # noqa: E402
from ingest.local import index_locally  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.config import Settings  # noqa: E402
from search_engine.embedding.dlib_resnet import DlibEmbedder  # noqa: E402
from search_engine.index.embedded import EmbeddedFaceIndex  # noqa: E402


def contents(data_dir: Path, sources: list[str]) -> tuple[int, set[str], dict[str, int]]:
    index = EmbeddedFaceIndex(data_dir / "lancedb", DlibEmbedder.info)
    ids = {face.face_id for source in sources for face in index.faces_of_source(source)}
    people = {facet.value: facet.count for facet in index.facets("person", size=10_000)}
    return index.count(), ids, people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--images", type=int, default=520)
    parser.add_argument("--kill-at", type=float, default=0.33, help="fraction of photos done when the worker dies")
    parser.add_argument("--visibility", type=int, default=20, help="visibility timeout for this run, seconds")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="facesearch-crash-"))
    every = sorted(args.lfw.rglob("*.jpg"))
    paths = every[:: max(1, len(every) // args.images)][: args.images]
    photos = collect_photos(paths, person_from_folder=True).photos
    sources = [str(p.path.resolve()) for p in photos]

    reference_dir = work / "reference"
    settings = Settings.from_env().replace(embedder="dlib", data_dir=reference_dir, es_url=None)
    index_locally(settings, photos, progress=False)
    reference = contents(reference_dir, sources)
    print(f"reference (in-process): {reference[0]} faces from {len(photos)} photos")

    with redis_server(work) as url:
        env = {
            "FACESEARCH_BROKER_URL": url,
            "FACESEARCH_DATA_DIR": str(work / "celery"),
            "FACESEARCH_EMBEDDER": "dlib",
            "FACESEARCH_VISIBILITY_TIMEOUT": str(args.visibility),
        }
        app = create_celery(Settings.from_env(env))
        first = start_worker(env, work / "worker1.log", concurrency=2)
        job_id = submit_photos(app, photos, chunk_size=16)
        while job_status(app, job_id).summary.files < args.kill_at * len(photos):
            time.sleep(0.2)
        done_at_kill = job_status(app, job_id).summary.files
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        print(f"SIGKILLed worker 1 (master and children) with {done_at_kill}/{len(photos)} photos done")
        started = time.monotonic()
        second = start_worker(env, work / "worker2.log", concurrency=2)
        while not (status := job_status(app, job_id)).finished:
            time.sleep(0.5)
        print(f"worker 2 finished the job {time.monotonic() - started:.0f} s after the kill: {status.state}")
        stop(second)
        app.close()
        del app  # let redis_server collect its pending results while Redis still answers

    crashed = contents(work / "celery", sources)
    print("\n| | in-process reference | Celery, worker killed mid-job |\n|---|---|---|")
    print(f"| faces in the index | {reference[0]} | {crashed[0]} |")
    print(f"| distinct face ids | {len(reference[1])} | {len(crashed[1])} |")
    print(f"| people labelled | {len(reference[2])} | {len(crashed[2])} |")
    print(f"| job failures | – | {len(status.summary.failures)} |")
    same = reference[0] == crashed[0] and reference[1] == crashed[1] and reference[2] == crashed[2]
    print(f"\nsame faces, same ids, same labels: {'yes' if same else 'NO'}")
    raise SystemExit(0 if same and not status.summary.failures else 1)


if __name__ == "__main__":
    main()
