"""Latency and throughput of ``POST /api/v1/search`` served by ``facesearch serve`` (gunicorn).

For each server configuration (worker processes x request threads; torch threads = cores / workers):
copy the index, start ``facesearch serve`` on it, then
1. one client, one query after another: latency percentiles over ``--queries`` LFW photos;
2. ``--clients`` concurrent clients for ``--duration`` seconds: requests/s, latency percentiles,
   the slowest request and errors (anything but 200; "no face" 422s are counted apart).
Model loading and a short warm-up are excluded. Queries are LFW photos spread over all people,
sent as uploads the way the search page does (multipart, k = 20).

Usage: python bench/web_load.py --data-dir /path/to/lfw-index --lfw ../shared/data/lfw
       [--configs default,1x4] [--queries 200] [--clients 50] [--duration 60] [--setting NAME=VALUE]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness.py, at the repository root

import requests  # noqa: E402
from ingest_throughput import cpu_name  # noqa: E402

from facesearch.cli.serve import SERVE_THREADS  # noqa: E402
from harness import running_server  # noqa: E402
from search_engine.config import MODELS  # noqa: E402

REQUEST_TIMEOUT_S = 120
WARMUP_QUERIES = 10


@dataclass
class Tally:
    """Latencies (seconds) of the 200 answers, and counts of the others."""

    latencies: list[float] = field(default_factory=list)
    no_face: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.latencies += other.latencies
        self.no_face += other.no_face
        self.errors += other.errors


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return 1000 * (ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def ask(session: requests.Session, url: str, name: str, data: bytes, tally: Tally) -> None:
    started = time.perf_counter()
    try:
        response = session.post(
            url, files={"image": (name, data, "image/jpeg")}, data={"k": "20"}, timeout=REQUEST_TIMEOUT_S
        )
    except requests.RequestException as exc:
        tally.errors.append(f"{type(exc).__name__}: {exc}")
        return
    elapsed = time.perf_counter() - started
    if response.status_code == 200:
        tally.latencies.append(elapsed)
    elif response.status_code == 422:
        tally.no_face += 1
    else:
        tally.errors.append(f"{response.status_code}: {response.text[:200]}")


def one_client(url: str, queries: list[tuple[str, bytes]]) -> Tally:
    tally = Tally()
    with requests.Session() as session:
        for name, data in queries:
            ask(session, url, name, data, tally)
    return tally


def many_clients(url: str, queries: list[tuple[str, bytes]], clients: int, duration_s: float) -> tuple[Tally, float]:
    """``clients`` threads asking without pause until the deadline; returns the tally and the
    seconds from start until the last answer came back."""
    tallies = [Tally() for _ in range(clients)]
    deadline = time.monotonic() + duration_s
    start = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with requests.Session() as session:
            start.wait()
            i = n * 7
            while time.monotonic() < deadline:
                name, data = queries[i % len(queries)]
                ask(session, url, name, data, tallies[n])
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total, time.monotonic() - began


def parse_config(text: str, cores: int) -> tuple[str, int, int]:
    """``default`` (``facesearch serve``'s own: a worker per core) or ``WxT``: label, workers, threads."""
    if text == "default":
        return f"default ({cores}x{SERVE_THREADS})", cores, SERVE_THREADS
    workers, threads = (int(part) for part in text.lower().split("x"))
    return f"{workers}x{threads}", workers, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", type=Path, required=True, help="an existing index (copied, never opened in place)"
    )
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder: the media root and the query photos")
    parser.add_argument("--configs", default="default", help="comma-separated: default, or WORKERSxTHREADS (e.g. 2x4)")
    parser.add_argument("--queries", type=int, default=200, help="single-client queries (default 200)")
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--duration", type=float, default=60, help="seconds of concurrent load (default 60)")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="FACESEARCH_NAME=VALUE for the server (repeatable), e.g. EXPANSION_NEIGHBOURS=0",
    )
    args = parser.parse_args()
    try:
        settings = {f"FACESEARCH_{name.upper()}": value for name, value in (s.split("=", 1) for s in args.setting)}
    except ValueError:
        parser.error("--setting takes NAME=VALUE")

    cores = os.cpu_count() or 1
    every = sorted(args.lfw.rglob("*.jpg"))
    picked = every[:: max(1, len(every) // args.queries)][: args.queries]
    queries = [(path.name, path.read_bytes()) for path in picked]
    configs = [parse_config(text.strip(), cores) for text in args.configs.split(",")]
    load_before = os.getloadavg()

    rows = []
    with tempfile.TemporaryDirectory(prefix="facesearch-web-bench-") as scratch:
        data_dir = Path(scratch) / "data"
        shutil.copytree(args.data_dir, data_dir)
        env = settings | {"FACESEARCH_EMBEDDER": args.embedder, "FACESEARCH_DATA_DIR": str(data_dir)}
        for label, workers, threads in configs:
            server_args = ["--workers", str(workers), "--threads", str(threads), "--media-root", str(args.lfw)]
            print(f"{label}: starting facesearch serve", flush=True)
            with running_server(server_args, env, Path(scratch) / f"serve-{workers}x{threads}.log") as base:
                url = f"{base}/api/v1/search"
                one_client(url, queries[:WARMUP_QUERIES] * workers)
                single = one_client(url, queries)
                print(f"{label}: one client done, {args.clients} clients for {args.duration:.0f} s", flush=True)
                loaded, seconds = many_clients(url, queries, args.clients, args.duration)
            rows.append((label, single, loaded, seconds))
    load_after = os.getloadavg()

    print(f"\nPOST /api/v1/search, {len(queries)} LFW photos as queries (k = 20), embedder {args.embedder}")
    print(f"machine: {cpu_name()}, {cores} cores, Python {platform.python_version()}")
    if settings:
        print("server settings: " + ", ".join(f"{name}={value}" for name, value in settings.items()))
    print(
        f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    print(
        f"| workers x threads | 1 client p50 / p95 / p99 ms | {args.clients} clients req/s | "
        "p50 / p95 / p99 ms | max ms | errors | no face |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, single, loaded, seconds in rows:
        lat = loaded.latencies
        print(
            f"| {label} | {percentile(single.latencies, 50):.0f} / {percentile(single.latencies, 95):.0f} / "
            f"{percentile(single.latencies, 99):.0f} | {len(lat) / seconds:.1f} | {percentile(lat, 50):.0f} / "
            f"{percentile(lat, 95):.0f} / {percentile(lat, 99):.0f} | {1000 * max(lat, default=0):.0f} | "
            f"{len(single.errors) + len(loaded.errors)} | {single.no_face + loaded.no_face} |"
        )
    for label, single, loaded, _ in rows:
        for error in (single.errors + loaded.errors)[:5]:
            print(f"  {label} error: {error}")


if __name__ == "__main__":
    main()
