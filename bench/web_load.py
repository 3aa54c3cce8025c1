"""Latency and throughput of ``POST /api/v1/search`` served by ``facesearch serve`` (gunicorn).

For each server configuration (worker processes x request threads; torch threads = cores / workers):
copy the index, start ``facesearch serve`` on it, then
1. one client, one query after another: latency percentiles over ``--queries`` LFW photos;
2. ``--clients`` concurrent clients for ``--duration`` seconds: requests/s, latency percentiles,
   the slowest request and errors (anything but 200; "no face" 422s are counted apart).
Model loading and a short warm-up are excluded. Queries are LFW photos spread over all people,
sent as uploads the way the search page does (multipart, k = 20).

With ``--mixed`` the clients of step 2 cycle through what the page and an API user ask for, not
only searches: in every 10 requests 4 searches, 2 face thumbnails, 1 media range request
(``Range: bytes=0-4095``, answered 206), 1 list of people, 1 of grouped people and 1 of videos
or the search page; latency percentiles are given per kind. The server's resident memory (all its
processes) is read before the load and after each of ``--rounds`` rounds of it.

Usage: python bench/web_load.py --data-dir /path/to/lfw-index --lfw ../shared/data/lfw
       [--configs default,1x4] [--queries 200] [--clients 50] [--duration 60] [--mixed] [--rounds 1]
       [--setting NAME=VALUE]
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
from harness import processes_with_env, running_server, status_kib  # noqa: E402
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
    fetch(session, tally, "POST", url, files={"image": (name, data, "image/jpeg")}, data={"k": "20"})


def fetch(session: requests.Session, tally: Tally, method: str, url: str, **options) -> None:
    """One request; a 200 or 206 adds its latency, a 422 (no face) is counted apart, anything
    else is an error."""
    started = time.perf_counter()
    try:
        response = session.request(method, url, timeout=REQUEST_TIMEOUT_S, **options)
    except requests.RequestException as exc:
        tally.errors.append(f"{method} {url}: {type(exc).__name__}: {exc}")
        return
    elapsed = time.perf_counter() - started
    if response.status_code in (200, 206):
        tally.latencies.append(elapsed)
    elif response.status_code == 422:
        tally.no_face += 1
    else:
        tally.errors.append(f"{method} {url}: {response.status_code}: {response.text[:200]}")


#: The mixed load's cycle of 10 requests (see the module's docstring).
MIX = ("search", "thumbnail", "search", "media", "people", "search", "thumbnail", "persons", "search", "videos")


def mixed_request(session: requests.Session, base: str, n: int, queries, hits, tallies: dict[str, Tally]) -> None:
    """The ``n``-th request of a client's mixed cycle; ``hits`` are (face_id, media_url) pairs."""
    kind = MIX[n % len(MIX)]
    face_id, media_url = hits[n % len(hits)]
    if kind == "search":
        name, data = queries[n % len(queries)]
        ask(session, f"{base}/api/v1/search", name, data, tallies[kind])
    elif kind == "thumbnail":
        fetch(session, tallies[kind], "GET", f"{base}/api/v1/faces/{face_id}/thumbnail")
    elif kind == "media":
        fetch(session, tallies[kind], "GET", base + media_url, headers={"Range": "bytes=0-4095"})
    elif kind == "people":
        fetch(session, tallies[kind], "GET", f"{base}/api/v1/people", params={"limit": "50"})
    elif kind == "persons":
        fetch(session, tallies[kind], "GET", f"{base}/api/v1/persons", params={"limit": "24"})
    elif n // len(MIX) % 2:
        fetch(session, tallies[kind], "GET", f"{base}/")
    else:
        fetch(session, tallies[kind], "GET", f"{base}/api/v1/videos")


def served_hits(base: str, queries) -> list[tuple[str, str]]:
    """(face id, media URL) of the hits of a few searches, for the mixed load to ask for."""
    found = []
    with requests.Session() as session:
        for name, data in queries[:10]:
            answer = session.post(
                f"{base}/api/v1/search", files={"image": (name, data, "image/jpeg")}, data={"k": "20"}
            )
            if answer.status_code == 200:
                found += [(h["face_id"], h["media_url"]) for h in answer.json()["hits"] if h["media_url"]]
    if not found:
        raise SystemExit("the searches found no served faces: is --lfw the folder the index was built from?")
    return found


def server_rss_mib(data_dir: Path) -> float:
    """Resident memory of every process of the server (those started with its data directory)."""
    pids = processes_with_env("FACESEARCH_DATA_DIR", str(data_dir))
    return sum(status_kib(pid, "VmRSS") for pid in pids) / 1024


def one_client(url: str, queries: list[tuple[str, bytes]]) -> Tally:
    tally = Tally()
    with requests.Session() as session:
        for name, data in queries:
            ask(session, url, name, data, tally)
    return tally


def many_clients(
    url: str, queries: list[tuple[str, bytes]], clients: int, duration_s: float, mixed_hits=None
) -> tuple[dict[str, Tally], float]:
    """``clients`` threads asking without pause until the deadline: searches at ``url``, or with
    ``mixed_hits`` the :data:`MIX` on the server ``url`` belongs to. Returns a tally per kind of
    request and the seconds from start until the last answer came back."""
    kinds = sorted(set(MIX)) if mixed_hits else ["search"]
    tallies = [{kind: Tally() for kind in kinds} for _ in range(clients)]
    deadline = time.monotonic() + duration_s
    start = threading.Barrier(clients + 1)
    base = url.removesuffix("/api/v1/search")

    def client(n: int) -> None:
        with requests.Session() as session:
            start.wait()
            i = n * 7
            while time.monotonic() < deadline:
                if mixed_hits:
                    mixed_request(session, base, i, queries, mixed_hits, tallies[n])
                else:
                    name, data = queries[i % len(queries)]
                    ask(session, url, name, data, tallies[n]["search"])
                i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    totals = {kind: Tally() for kind in kinds}
    for tally in tallies:
        for kind in kinds:
            totals[kind].add(tally[kind])
    return totals, time.monotonic() - began


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
    parser.add_argument("--mixed", action="store_true", help="load with the page's and API's mix of requests")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of concurrent load, memory read after each")
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
                hits = served_hits(base, queries) if args.mixed else None
                print(f"{label}: one client done, {args.clients} clients for {args.duration:.0f} s", flush=True)
                rss = [server_rss_mib(data_dir)]
                by_kind: dict[str, Tally] = {}
                seconds = 0.0
                for _ in range(args.rounds):
                    more, more_seconds = many_clients(url, queries, args.clients, args.duration, hits)
                    for kind, tally in more.items():
                        by_kind.setdefault(kind, Tally()).add(tally)
                    seconds += more_seconds
                    rss.append(server_rss_mib(data_dir))
            loaded = Tally()
            for tally in by_kind.values():
                loaded.add(tally)
            rows.append((label, single, loaded, seconds, by_kind, rss))
    load_after = os.getloadavg()

    mix = "a mix of requests (--mixed)" if args.mixed else "POST /api/v1/search"
    print(f"\n{mix}, {len(queries)} LFW photos as queries (k = 20), embedder {args.embedder}")
    print(f"machine: {cpu_name()}, {cores} cores, Python {platform.python_version()}")
    if settings:
        print("server settings: " + ", ".join(f"{name}={value}" for name, value in settings.items()))
    print(
        f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
        f"after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}"
    )
    print(
        f"| workers x threads | 1 client p50 / p95 / p99 ms | {args.clients} clients req/s | "
        "p50 / p95 / p99 ms | max ms | errors | no face | server RSS MiB, before and after each round |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, single, loaded, seconds, _, rss in rows:
        lat = loaded.latencies
        print(
            f"| {label} | {percentile(single.latencies, 50):.0f} / {percentile(single.latencies, 95):.0f} / "
            f"{percentile(single.latencies, 99):.0f} | {len(lat) / seconds:.1f} | {percentile(lat, 50):.0f} / "
            f"{percentile(lat, 95):.0f} / {percentile(lat, 99):.0f} | {1000 * max(lat, default=0):.0f} | "
            f"{len(single.errors) + len(loaded.errors)} | {single.no_face + loaded.no_face} | "
            + " / ".join(f"{value:.0f}" for value in rss)
            + " |"
        )
    if args.mixed:
        print("\n| workers x threads | request | answered | p50 / p95 / p99 ms | errors |\n|---|---|---|---|---|")
        for label, _, _, _, by_kind, _ in rows:
            for kind, tally in by_kind.items():
                lat = tally.latencies
                print(
                    f"| {label} | {kind} | {len(lat)} | {percentile(lat, 50):.0f} / {percentile(lat, 95):.0f} / "
                    f"{percentile(lat, 99):.0f} | {len(tally.errors)} |"
                )
    for label, single, loaded, *_ in rows:
        for error in (single.errors + loaded.errors)[:5]:
            print(f"  {label} error: {error}")


if __name__ == "__main__":
    main()
