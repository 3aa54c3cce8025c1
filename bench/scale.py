"""The embedded store at scale: kNN latency and recall, exact and through its vector index.

Fills a fresh embedded store through the product's own upsert path with faces shaped like real
ones: the identities of a labelled index of the model (``--seed-data-dir``, e.g. the LFW index
``bench/lfw_retrieval.py --data-dir`` made) give each person's mean face and each face's offset
from it; new identities' mean faces are drawn from a Gaussian fitted to the real ones, their faces
are a mean face plus a real face's offset, and how many faces each identity has follows LFW's
photos per person. Every face goes by its identity's name (``person``, not a label, so nothing is
pinned for the people job); one in ten is a video face, 2,000 per video, so the person and video
filters are as selective as in an archive. The store is laid out as an archive's ingest lays it
out, which decides what a filtered exact scan costs (reading scattered rows costs ten times as much
per row as reading adjacent ones): the faces come in a random order, so a person's faces lie
scattered through the store, while a video's 2,000 are written together, as indexing a video
writes its tracks (the last 2,000 of every 20,000 rows).

Then, for ``--queries`` held-out faces of stored identities (k=20): p50 / p95 latency plain,
person-filtered (the query's identity) and video-filtered (a video each query's turn picks);
recall@20 of each against exact search (numpy over the same vectors, the filter's faces only);
recall of the query's own identity (its stored faces found in the top 20, exact and indexed).
First with the exact scan, then after :meth:`EmbeddedFaceIndex.optimize` built the vector index
(build time, index size). Also the store's write throughput per tenth of the fill, and disk per face.
With ``--people``, last, the people job (``facesearch people cluster``) on the indexed store: its
time, and its pairwise and BCubed F against the identities.

With ``--dim``, the faces are carried into more dimensions than the model's (see :func:`widened`):
what a wider model's store costs, on the same faces.

Usage: python bench/scale.py --seed-data-dir DIR [--faces 100000] [--queries 300] [--runs 3] [--people] [--dim 512]
       python bench/scale.py --seed-data-dir DIR --data-dir STORE --queries-only [the same --faces, --queries]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.embedding import embedder_info  # noqa: E402
from search_engine.index import lance_store  # noqa: E402
from search_engine.index.embedded import EmbeddedFaceIndex  # noqa: E402
from search_engine.people import cluster_index, grouping_threshold  # noqa: E402
from search_engine.types import VIDEO, Box, EmbedderInfo, FaceRecord, SearchFilters  # noqa: E402

K = 20
FACES_PER_VIDEO = 2000
#: One video's faces end every block of this many rows: one face in ten is a video face.
ROWS_PER_VIDEO = 10 * FACES_PER_VIDEO


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def seed_shapes(index) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The real identities' unit mean faces (people with two faces or more), every such face's
    offset from its mean face, and how many faces each labelled person has."""
    by_label: dict[str, list[np.ndarray]] = {}
    for batch in index.scan():
        for vector, label in zip(batch.vectors, batch.labels):
            if label is not None:
                by_label.setdefault(label, []).append(vector)
    centres, offsets = [], []
    for vectors in by_label.values():
        if len(vectors) >= 2:
            centre = unit(np.mean(vectors, axis=0))
            centres.append(centre)
            offsets.extend(v - centre for v in vectors)
    return np.stack(centres), np.stack(offsets), [len(v) for v in by_label.values()]


def synthetic_faces(n: int, centres, offsets, sizes, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` face vectors and their identity numbers (see the module docstring)."""
    counts = rng.choice(sizes, size=n)  # more identities than needed: the faces run out first
    counts = counts[: int(np.searchsorted(np.cumsum(counts), n)) + 1]
    # One draw for every identity: each draw of a multivariate normal factorises the covariance.
    means = unit(rng.multivariate_normal(centres.mean(axis=0), np.cov(centres, rowvar=False), size=len(counts)))
    identities = np.repeat(np.arange(len(counts)), counts)[:n]
    return unit(means[identities] + offsets[rng.integers(0, len(offsets), size=n)]), identities


def widened(vectors: np.ndarray, model: EmbedderInfo, dim: int) -> tuple[np.ndarray, EmbedderInfo]:
    """The faces carried into ``dim`` dimensions by a fixed random orthonormal map, and a model of
    that width. Every cosine between them stays what it was, so neighbours, filters and recall
    mean what they meant, while each comparison and each stored vector costs what a ``dim``-d
    model's does: a stand-in for a wider model's cost, not for its faces' geometry."""
    basis, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(dim, model.dim)))
    wider = dataclasses.replace(model, version=f"{model.version}-in{dim}d", dim=dim)
    return (vectors @ basis.T.astype(np.float32)).astype(np.float32), wider


def video_of(row: int) -> str | None:
    """The video the store's ``row``-th face was found in, or None for a photo's face."""
    if row % ROWS_PER_VIDEO < ROWS_PER_VIDEO - FACES_PER_VIDEO:
        return None
    return f"v{row // ROWS_PER_VIDEO}.mp4"


def records(vectors, identities, model_key: str, start: int) -> list[FaceRecord]:
    out = []
    for i, (vector, who) in enumerate(zip(vectors, identities), start):
        video = video_of(i)
        out.append(
            FaceRecord(
                face_id=f"f{i:08d}",
                source=f"/scale/video/{video}" if video else f"/scale/photo/{i}.jpg",
                face_no=0,
                box=Box(0, 0, 100, 100),
                probability=0.99,
                embedding=vector,
                model=model_key,
                person=f"id{who}",
                media_type=VIDEO if video else "photo",
                video=video,
            )
        )
    return out


def exact_top(stored: np.ndarray, queries: np.ndarray, chunk: int = 64) -> list[list[str]]:
    """Each query's K nearest stored faces by cosine (numpy, exact), best first."""
    top = []
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ stored.T
        best = np.argpartition(-scores, K, axis=1)[:, :K]
        for row, candidates in zip(scores, best):
            top.append([f"f{j:08d}" for j in candidates[np.argsort(-row[candidates])]])
    return top


def exact_top_among(stored: np.ndarray, query: np.ndarray, rows: np.ndarray) -> list[str]:
    """The query's K nearest among the stored faces ``rows`` (numpy, exact), best first."""
    return [f"f{j:08d}" for j in rows[np.argsort(-(stored[rows] @ query))[:K]]]


def measure(store, queries, truth: dict[str, list[list[str]]], mates, filters_of, runs: int) -> dict:
    """Latency percentiles (ms, median over runs) and recalls for each kind of search (``truth``:
    each kind's exact top K per query)."""
    figures = {}
    for kind in ("plain", "person", "video"):
        p50s, p95s, found = [], [], []
        for _ in range(runs):
            latencies, found = [], []
            for q, query in enumerate(queries):
                started = time.perf_counter()
                hits = store.search(query, k=K, filters=filters_of(kind, q))
                latencies.append((time.perf_counter() - started) * 1000)
                found.append([h.face_id for h in hits])
            p50s.append(float(np.percentile(latencies, 50)))
            p95s.append(float(np.percentile(latencies, 95)))
        row = {
            "p50": statistics.median(p50s),
            "p95": statistics.median(p95s),
            # A query whose identity has no face stored finds nothing with its person filter, rightly.
            "recall@20": statistics.fmean(len(set(f) & set(t)) / len(t) for f, t in zip(found, truth[kind]) if t),
        }
        if kind == "plain":
            row["mates found"] = statistics.fmean(len(set(f) & m) / min(len(m), K) for f, m in zip(found, mates) if m)
        figures[kind] = row
    return figures


def queries_again(store, faces: int, queries, truth, mates, filters_of, args) -> None:
    """``--queries-only``: the indexed searches of an earlier run's store, timed in this process."""
    if store.count() != faces or store.vector_index().kind == "exact":
        raise SystemExit(f"{args.data_dir} does not hold an indexed store of {faces:,} faces from an earlier run")
    indexed = measure(store, queries, truth, mates, filters_of, args.runs)
    print(
        f"\nIndexed searches again, fresh process: {faces:,} faces, {platform.machine()}, {os.cpu_count()} cores, "
        f"{len(queries)} queries x {args.runs} runs"
    )
    print("| search | indexed p50 | indexed p95 | recall@20 vs exact |")
    print("|---|---|---|---|")
    for kind in ("plain", "person", "video"):
        i = indexed[kind]
        print(f"| {kind} | {i['p50']:.1f} | {i['p95']:.1f} | {i['recall@20']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-data-dir", type=Path, required=True, help="data dir of a labelled index (LFW)")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--faces", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3, help="query passes (median reported)")
    parser.add_argument(
        "--exact-queries",
        type=int,
        help="time the exact scan with only the first N queries (at 1M faces each takes about a second)",
    )
    parser.add_argument("--data-dir", type=Path, help="scratch directory; default: a fresh temporary one")
    parser.add_argument("--people", action="store_true", help="then time the people job on the store")
    parser.add_argument(
        "--dim", type=int, help="store the faces in this many dimensions, more than the model's (see widened())"
    )
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="time the indexed searches again, in this fresh process, on the store an earlier run with "
        "the same --faces and --queries left in --data-dir (no fill, no build, no exact timings)",
    )
    args = parser.parse_args()
    if args.queries_only and not args.data_dir:
        parser.error("--queries-only needs the --data-dir of an earlier run")

    settings = Settings.from_env().replace(embedder=args.embedder, data_dir=args.seed_data_dir, es_url=None)
    model = embedder_info(settings.models)
    if args.dim is not None and args.dim <= model.dim:
        parser.error(f"--dim must exceed the {model.key} model's {model.dim} dimensions")
    if args.dim is not None and args.people:
        parser.error("--people groups faces at the model's own calibration: leave out --dim")
    seed = EmbeddedFaceIndex.from_settings(settings.index, model)
    centres, offsets, sizes = seed_shapes(seed)
    rng = np.random.default_rng(0)
    vectors, identities = synthetic_faces(args.faces + args.queries * 4, centres, offsets, sizes, rng)
    if args.dim is not None:
        vectors, model = widened(vectors, model, args.dim)
    # Queries: one face of each of some identities with other faces stored; the rest are stored.
    rows_of: dict[int, list[int]] = {}
    for row, identity in enumerate(identities):
        rows_of.setdefault(int(identity), []).append(row)
    multi = [rows for rows in rows_of.values() if len(rows) >= 2]
    picked = [multi[i][0] for i in rng.permutation(len(multi))[: args.queries]]
    held = np.zeros(len(vectors), dtype=bool)
    held[picked] = True
    # A random order: a person's faces scattered through the store, as an archive's are.
    stored_rows = rng.permutation(np.flatnonzero(~held)[: args.faces])
    stored, who = vectors[stored_rows], identities[stored_rows]

    queries = vectors[picked]
    query_who = identities[picked]
    members: dict[int, list[int]] = {}
    for i, w in enumerate(who):
        members.setdefault(int(w), []).append(i)
    mates = [{f"f{i:08d}" for i in members.get(int(w), [])} for w in query_who]
    videos: dict[str, list[int]] = {}
    for i in range(len(stored)):
        if (name := video_of(i)) is not None:
            videos.setdefault(name, []).append(i)
    video_names = sorted(videos)
    video_rows = [np.array(videos[name]) for name in video_names]
    nobody = np.zeros(0, dtype=np.int64)
    truth = {
        "plain": exact_top(stored, queries),
        "person": [
            exact_top_among(stored, q, np.array(members[int(w)]) if int(w) in members else nobody)
            for q, w in zip(queries, query_who)
        ],
        "video": [exact_top_among(stored, q, video_rows[n % len(video_rows)]) for n, q in enumerate(queries)],
    }

    def filters_of(kind: str, q: int) -> SearchFilters | None:
        if kind == "person":
            return SearchFilters(person=f"id{query_who[q]}")
        if kind == "video":
            return SearchFilters(video=video_names[q % len(video_names)])
        return None

    scratch = args.data_dir or Path(tempfile.mkdtemp(prefix="facesearch-scale-"))
    if args.queries_only:
        queries_again(
            EmbeddedFaceIndex(scratch / "lancedb", model), len(stored), queries, truth, mates, filters_of, args
        )
        return
    store = EmbeddedFaceIndex(scratch / "lancedb", model)
    store.ensure()
    throughput, batch = [], 1000
    tenth = max(len(stored) // 10, batch)
    started = time.perf_counter()
    mark = started
    for at in range(0, len(stored), batch):
        store.upsert(records(stored[at : at + batch], who[at : at + batch], model.key, at))
        if (at + batch) % tenth == 0:
            now = time.perf_counter()
            throughput.append(tenth / (now - mark))
            mark = now
    store.optimize()
    fill_s = time.perf_counter() - started

    timed = slice(0, args.exact_queries or len(queries))
    exact = measure(
        store, queries[timed], {kind: top[timed] for kind, top in truth.items()}, mates[timed], filters_of, args.runs
    )
    indexed_store = EmbeddedFaceIndex(scratch / "lancedb", model, vector_index_faces=1)
    indexed_store.ensure()
    built = time.perf_counter()
    indexed_store.optimize()
    build_s = time.perf_counter() - built
    info = indexed_store.vector_index()
    indexed = measure(indexed_store, queries, truth, mates, filters_of, args.runs)
    # Disk as a store settles: the files the fill's compactions replaced are deleted by the next
    # optimize once old enough (lance_store.KEEP_OLD_VERSIONS), as the next ingest's would.
    time.sleep(max(0.0, lance_store.KEEP_OLD_VERSIONS.total_seconds() - (time.perf_counter() - built)))
    indexed_store.optimize()
    disk = sum(p.stat().st_size for p in (scratch / "lancedb").rglob("*") if p.is_file())

    print(
        f"\nEmbedded store at {len(stored):,} faces, {model.dim}-d ({model.key} shapes), "
        f"{platform.machine()}, {os.cpu_count()} cores, {args.queries} queries x {args.runs} runs "
        f"({len(queries[timed])} of them for the exact scan)"
    )
    print(f"fill through upsert: {fill_s:.1f} s; faces/s per tenth: {', '.join(f'{t:,.0f}' for t in throughput)}")
    print(
        f"vector index: {info.kind}, built in {build_s:.1f} s, {info.size_bytes / len(stored):.0f} B per face; "
        f"disk {disk / len(stored):.0f} B per face; this process's peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB (the bench's own vectors included)"
    )
    print("| search | exact p50 | exact p95 | indexed p50 | indexed p95 | indexed recall@20 vs exact |")
    print("|---|---|---|---|---|---|")
    for kind in ("plain", "person", "video"):
        e, i = exact[kind], indexed[kind]
        print(f"| {kind} | {e['p50']:.1f} | {e['p95']:.1f} | {i['p50']:.1f} | {i['p95']:.1f} | {i['recall@20']:.4f} |")
    print(
        "own identity's faces in the top 20: "
        f"exact {exact['plain']['mates found']:.4f}, indexed {indexed['plain']['mates found']:.4f}"
    )
    if args.people:
        from people_clustering import scores, stored_groups

        threshold = grouping_threshold(settings.search, indexed_store)
        report = cluster_index(indexed_store, threshold)
        measured = scores(stored_groups(indexed_store), {f"f{i:08d}": f"id{w}" for i, w in enumerate(who)})
        print(
            f"people job: {report.seconds:.0f} s for {report.faces:,} faces (threshold {threshold:.4f}, kNN "
            f"through the index): {report.people:,} people, {report.alone:,} faces alone; pairwise F "
            f"{measured['pairwise F']:.4f}, BCubed F {measured['BCubed F']:.4f}"
        )


if __name__ == "__main__":
    main()
