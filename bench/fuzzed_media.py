"""Hostile media through both ingest paths: every good photo indexed, every bad file reported, no crash.

Writes ``--good`` LFW photos (the first photo of people spread over the alphabet, re-encoded as
JPEG) and ``--hostile`` generated hostile files (``hostile_media.py``: empty, truncated,
bit-flipped and spliced JPEG/PNG/WebP/BMP/GIF/MP4/MKV, huge declared dimensions, decompression
bombs, wrong extensions, audio-only containers, HTML and SVG named as photos, huge-but-legal
photos) into one folder, then indexes it twice from scratch: with ``facesearch index`` (its own
process, ``--workers`` processes), and as a Celery job (``facesearch worker`` on a fresh Redis).
For each run it reads every file's record back from the index and prints a table per kind of
file, the problems found (a file without a record, a good photo not indexed, a file that must
fail but did not, a failure without a reason), and the peak RSS of the indexing processes.

Usage: python bench/fuzzed_media.py --lfw ../shared/data/lfw [--good 50] [--hostile 1000]
       [--seed 0] [--embedder mobilefacenet] [--workers 2]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness.py, at the repository root

from ingest_throughput import cpu_name  # noqa: E402

import hostile_media  # noqa: E402
from harness import facesearch_env, redis_server, start_worker, status_kib, stop  # noqa: E402
from ingest.celery_app import create_celery  # noqa: E402
from ingest.jobs import job_status, submit_photos  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.embedding import embedder_info  # noqa: E402
from search_engine.index import create_index  # noqa: E402
from search_engine.indexing import source_name  # noqa: E402


def good_photos(lfw: Path, count: int) -> list[np.ndarray]:
    """The first photo of ``count`` people spread evenly over LFW's sorted folders, as RGB arrays."""
    people = sorted(p for p in lfw.iterdir() if p.is_dir())
    chosen = people[:: max(1, len(people) // count)][:count]
    return [np.asarray(Image.open(sorted(person.glob("*.jpg"))[0]).convert("RGB")) for person in chosen]


def records(settings: Settings, files) -> dict:
    index = create_index(settings.index, embedder_info(settings.models))
    try:
        return index.get_sources([source_name(f.path) for f in files])
    finally:
        index.close()


def peak_rss_kib(pid: int) -> int:
    """The largest peak RSS (VmHWM) of ``pid`` and its descendants still alive (Linux /proc)."""
    try:
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return 0
    return max([status_kib(pid, "VmHWM"), *(peak_rss_kib(child) for child in children)])


def report(name: str, files, found: dict, peak_kib: int, seconds: float, crashed: str | None) -> bool:
    table = hostile_media.tally(files, found)
    statuses = sorted({status for counts in table.values() for status in counts})
    print(f"\n### {name}: {len(files)} files in {seconds:.0f} s, peak RSS {peak_kib / 1024:.0f} MiB")
    print("| kind | files | " + " | ".join(statuses) + " |")
    print("|---|---|" + "---|" * len(statuses))
    for kind, counts in sorted(table.items()):
        print(f"| {kind} | {sum(counts.values())} | " + " | ".join(str(counts.get(s, 0)) for s in statuses) + " |")
    problems = hostile_media.problems(files, found)
    if crashed:
        problems.insert(0, crashed)
    print(f"problems: {len(problems)}")
    for line in problems[:50]:
        print(f"  {line}")
    return not problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--good", type=int, default=50)
    parser.add_argument("--hostile", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--workers", type=int, default=2, help="processes: facesearch index's, the Celery worker's")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="facesearch-fuzzed-"))
    files = hostile_media.write_corpus(work / "media", good_photos(args.lfw, args.good), args.hostile, args.seed)
    size = sum(f.path.stat().st_size for f in files)
    print(f"{cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; {args.embedder}")
    print(
        f"{len(files)} files ({size / 1e6:.0f} MB): {args.good} good photos, {args.hostile} hostile, seed {args.seed}"
    )
    env = facesearch_env({"FACESEARCH_EMBEDDER": args.embedder})
    held = True

    local = Settings.from_env({"FACESEARCH_EMBEDDER": args.embedder, "FACESEARCH_DATA_DIR": str(work / "index")})
    command = [sys.executable, "-m", "facesearch", "index", str(work / "media"), "--quiet", "--json"]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--workers", str(args.workers)],
        env={**env, "FACESEARCH_DATA_DIR": str(work / "index")},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    # 3: the run ended and some files failed, which is what this corpus must give.
    crashed = None if done.returncode == 3 else f"facesearch index exited {done.returncode}: {done.stderr[-2000:]}"
    if crashed is None:
        summary = json.loads(done.stdout)
        print(f"facesearch index: {summary['indexed']} indexed, {summary['failed']} failure lines")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    held &= report("facesearch index", files, records(local, files), peak, seconds, crashed)

    celery = Settings.from_env({"FACESEARCH_EMBEDDER": args.embedder, "FACESEARCH_DATA_DIR": str(work / "celery")})
    with redis_server(work) as url:
        worker_env = {
            "FACESEARCH_BROKER_URL": url,
            "FACESEARCH_DATA_DIR": str(work / "celery"),
            "FACESEARCH_EMBEDDER": args.embedder,
        }
        app = create_celery(Settings.from_env(worker_env))
        worker = start_worker(worker_env, work / "worker.log", concurrency=args.workers)
        collected = collect_photos([work / "media"])
        started = time.monotonic()
        job_id = submit_photos(app, collected.photos, chunk_size=32, videos=collected.videos)
        peak = 0
        while not (status := job_status(app, job_id)).finished:
            peak = max(peak, peak_rss_kib(worker.pid))
            time.sleep(0.5)
        seconds = time.monotonic() - started
        peak = max(peak, peak_rss_kib(worker.pid))
        alive = worker.poll() is None and bool(app.control.ping(timeout=5))
        crashed = (
            None
            if alive and not status.chunks_failed
            else f"worker alive: {alive}; {status.chunks_failed} tasks failed"
        )
        print(
            f"\nCelery: {status.summary.indexed} indexed, {len(status.summary.failures)} failure lines, state {status.state}"
        )
        stop(worker)
        app.close()
        del app
    held &= report("Celery job", files, records(celery, files), peak, seconds, crashed)
    shutil.rmtree(work)
    print(f"\nheld: {'yes' if held else 'NO'}")
    raise SystemExit(0 if held else 1)


if __name__ == "__main__":
    main()
