"""Crash safety of the embedded store: SIGKILL ``facesearch index`` at random points, re-run, compare.

Indexes an LFW sample once uninterrupted (the reference), then ``--kills`` times from scratch,
each run killed with SIGKILL at a random point drawn from ``--seed``: a moment of the run (from
outside, while photos are being analysed or written), a write (the n-th time a run takes the
store's write lock, to merge faces or file records, killed 0-50 ms in), or the compaction at the
end. After each kill it checks that the store opens, that no face id is stored twice and that no
process of the killed run lives on; then it re-runs ``facesearch index`` and compares the stored
face ids and file records with the reference.

Usage: python bench/crash_index.py --lfw ../shared/data/lfw [--images 300] [--kills 12]
       [--workers 2] [--embedder mobilefacenet] [--seed 0]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness.py, at the repository root

from ingest_throughput import cpu_name  # noqa: E402

from harness import killed_index_run, processes_with_env, start_facesearch  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.embedding import embedder_info  # noqa: E402
from search_engine.index import create_index  # noqa: E402
from search_engine.indexing import source_name  # noqa: E402


def contents(embedder: str, data_dir: Path, photos: list[Path]) -> tuple[Counter, dict]:
    settings = Settings.from_env({"FACESEARCH_EMBEDDER": embedder, "FACESEARCH_DATA_DIR": str(data_dir)})
    index = create_index(settings.index, embedder_info(settings.models))
    try:
        ids = Counter(face_id for batch in index.scan(vectors=False) for face_id in batch.face_ids)
        files = index.get_sources([source_name(p) for p in photos])
    finally:
        index.close()
    return ids, {s: (r.status, r.faces, r.content_hash) for s, r in files.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="facesearch-crash-index-"))
    every = sorted(args.lfw.rglob("*.jpg"))
    photos = every[:: max(1, len(every) // args.images)][: args.images]
    (work / "photos").mkdir()
    for path in photos:
        (work / "photos" / path.name).symlink_to(path.resolve())
    linked = sorted((work / "photos").iterdir())
    command = ["index", str(work / "photos"), "--embedder", args.embedder, "--quiet", "--workers", str(args.workers)]
    env = {"FACESEARCH_EMBEDDER": args.embedder}

    started = time.monotonic()
    assert start_facesearch(command, {**env, "FACESEARCH_DATA_DIR": str(work / "ref")}, work / "ref.log").wait() in (
        0,
        3,
    )
    duration = time.monotonic() - started
    reference = contents(args.embedder, work / "ref", linked)
    batches = -(-len(linked) // 32)
    print(f"{cpu_name()}, {os.cpu_count()} cores; {args.embedder}, {args.workers} workers")
    print(f"reference: {len(linked)} photos, {sum(reference[0].values())} faces, {duration:.0f} s, {batches} batches")
    print("\n| run | killed at | faces when killed | stored twice | processes left | re-run equals reference |")
    print("|---|---|---|---|---|---|")
    held = True
    for run in range(args.kills):
        data_dir = work / f"run{run}"
        run_env = {**env, "FACESEARCH_DATA_DIR": str(data_dir)}
        point = rng.choice(["moment", "write", "compaction"])
        if point == "moment":
            at = rng.uniform(0.3, 0.95) * duration
            where = f"{at:.1f} s in"
            process = start_facesearch(command, run_env, work / f"run{run}.log")
            time.sleep(at)
            process.send_signal(signal.SIGKILL)
            status = process.wait()
        else:
            # Writes: 1 opens the tables, then each batch merges its faces, then its file records.
            nth = rng.randint(2, 1 + 2 * batches) if point == "write" else 1
            delay = rng.uniform(0, 0.05)
            where = (
                f"{point} {nth}, {1000 * delay:.0f} ms in"
                if point == "write"
                else f"compaction, {1000 * delay:.0f} ms in"
            )
            status = killed_index_run(command, run_env, work / f"run{run}.log", point, nth, delay)
        deadline = time.monotonic() + 15
        while processes_with_env("FACESEARCH_DATA_DIR", str(data_dir)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = len(processes_with_env("FACESEARCH_DATA_DIR", str(data_dir)))
        ids, _ = contents(args.embedder, data_dir, linked)
        twice = sum(1 for n in ids.values() if n > 1)
        rerun = start_facesearch(command, run_env, work / f"run{run}.log").wait()
        equal = rerun in (0, 3) and contents(args.embedder, data_dir, linked) == reference
        killed = "" if status == -9 else f" (not killed: exit {status})"
        print(f"| {run + 1} | {where}{killed} | {sum(ids.values())} | {twice} | {left} | {'yes' if equal else 'NO'} |")
        held &= status == -9 and twice == 0 and left == 0 and equal
        shutil.rmtree(data_dir)
    shutil.rmtree(work)
    print(f"\nheld: {'yes' if held else 'NO'}")
    raise SystemExit(0 if held else 1)


if __name__ == "__main__":
    main()
