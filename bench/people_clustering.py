"""Grouping faces into people (``facesearch people cluster``) measured on all of LFW.

Indexes LFW with the product's own ingest (or reuses ``--data-dir``), copies every face into a
fresh embedded index with the person labels taken off (the algorithm never sees them), and groups
them three ways on the same kNN graph, the one the product asks its index for (each face's 32
nearest, edges at the index's "same person" threshold):

* **facesearch**: ``search_engine.grouping`` (label propagation, then centroid passes);
* **connected components** of the graph (scipy), the simplest grouping;
* **Chinese whispers**, dlib's (``dlib.chinese_whispers``, unweighted as in dlib's own
  ``chinese_whispers_clustering``).

Scores are over the faces LFW names (each photo's subject face; the other faces of a photo take
part but are not scored), a face left alone counting as a person of its own: pairwise
precision / recall / F over pairs of faces, BCubed precision / recall / F per face, and how many
people the labelled faces were put in (LFW has 5,749).

Then incrementality: a second fresh index gets the photos of a random half of the files, is
grouped, gets the other half and is grouped again incrementally (new faces join the people found
so far or form new ones); its scores beside the all-at-once run, and a re-run that must change
nothing.

Usage: python bench/people_clustering.py --lfw ../shared/data/lfw [--data-dir DIR] [--runs 3]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ingest.local import index_locally  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.grouping import neighbourhoods  # noqa: E402
from search_engine.index import FaceIndex, create_index  # noqa: E402
from search_engine.indexing import source_name  # noqa: E402
from search_engine.people import cluster_index, grouping_threshold  # noqa: E402
from search_engine.types import Grouping  # noqa: E402


def scores(assigned: dict[str, str], truth: dict[str, str]) -> dict[str, float]:
    """Pairwise and BCubed precision / recall / F of ``assigned`` (face id to group) against
    ``truth`` (face id to person), over the faces of ``truth``."""
    faces = sorted(truth)
    predicted = [assigned[f] for f in faces]
    actual = [truth[f] for f in faces]
    both = Counter(zip(predicted, actual))
    groups, people = Counter(predicted), Counter(actual)

    def pairs(counts: Counter) -> float:
        return sum(c * (c - 1) / 2 for c in counts.values())

    precision = pairs(both) / pairs(groups) if pairs(groups) else 1.0
    recall = pairs(both) / pairs(people)
    b_precision = statistics.fmean(both[(g, p)] / groups[g] for g, p in zip(predicted, actual))
    b_recall = statistics.fmean(both[(g, p)] / people[p] for g, p in zip(predicted, actual))
    return {
        "pairwise P": precision,
        "pairwise R": recall,
        "pairwise F": 2 * precision * recall / (precision + recall),
        "BCubed P": b_precision,
        "BCubed R": b_recall,
        "BCubed F": 2 * b_precision * b_recall / (b_precision + b_recall),
        "people": len(groups),
    }


def stored_groups(index: FaceIndex) -> dict[str, str]:
    """Each face's stored person, a face alone being a group of its own."""
    groups = {}
    for batch in index.scan():
        for face_id, cluster in zip(batch.face_ids, batch.clusters):
            groups[face_id] = cluster if cluster is not None else f"alone:{face_id}"
    return groups


def copy_unlabelled(source: FaceIndex, target: FaceIndex, sources: Sequence[str]) -> int:
    """Every face of ``sources`` from one index into another, without person labels or clusters."""
    copied, pending = 0, []
    for number, name in enumerate(tqdm(sources, unit="file", desc="copying faces", dynamic_ncols=True), 1):
        pending.extend(
            dataclasses.replace(f, person=None, label=None, cluster=None) for f in source.faces_of_source(name)
        )
        if number % 1000 == 0 or number == len(sources):
            copied += target.upsert(pending).indexed
            pending = []
    target.optimize()
    return copied


def baselines(index: FaceIndex, threshold: float) -> dict[str, tuple[dict[str, str], float]]:
    """Connected components and dlib's Chinese whispers on the product's kNN graph: each one's
    grouping and seconds (the graph's kNN time is the product's, not counted here)."""
    import dlib
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    face_ids, chunks = [], []
    for batch in index.scan():
        face_ids.extend(batch.face_ids)
        chunks.append(batch.vectors)
    vectors = np.concatenate(chunks)
    hoods = neighbourhoods(index, face_ids, vectors, np.ones(len(face_ids), dtype=bool), 32, None)
    rows = np.repeat(hoods.faces, hoods.nearest.shape[1])
    cols = hoods.nearest.reshape(-1)
    keep = (cols >= 0) & (hoods.scores.reshape(-1) >= threshold)
    rows, cols = rows[keep], cols[keep]
    n = len(face_ids)
    results = {}
    started = time.perf_counter()
    _, components = connected_components(coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n)), directed=False)
    results["connected components"] = (components, time.perf_counter() - started)
    started = time.perf_counter()
    edges = [(int(a), int(b)) for a, b in zip(rows, cols) if a < b] + [(i, i) for i in range(n)]
    results["Chinese whispers (dlib)"] = (np.asarray(dlib.chinese_whispers(edges)), time.perf_counter() - started)
    return {
        name: ({f: str(g) for f, g in zip(face_ids, labels)}, seconds) for name, (labels, seconds) in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (one sub-folder per person)")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--data-dir", type=Path, help="LFW index directory to (re)use; default: a fresh temporary one")
    parser.add_argument("--runs", type=int, default=3, help="full clustering runs timed (median reported)")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="facesearch-lfw-"))
    settings = Settings.from_env().replace(embedder=args.embedder, data_dir=data_dir, es_url=None)
    collected = collect_photos([args.lfw], person_from_folder=True)
    _, lfw = index_locally(settings, collected.photos)
    truth = lfw.labels()
    sources = sorted(source_name(photo.path) for photo in collected.photos)

    scratch = Path(tempfile.mkdtemp(prefix="facesearch-people-"))
    whole = create_index(settings.replace(data_dir=scratch / "whole").index, lfw.model)
    faces = copy_unlabelled(lfw, whole, sources)
    threshold = grouping_threshold(settings.search, whole)
    print(f"{faces} faces ({len(truth)} labelled, {len(set(truth.values()))} people); threshold {threshold:.4f}")

    seconds = []
    for run in range(args.runs):
        if run:
            whole.set_people(dict.fromkeys(stored_groups(whole), Grouping(None, None)))
        report = cluster_index(whole, threshold, full=True)
        seconds.append(report.seconds)
    rows = {"facesearch": (scores(stored_groups(whole), truth), statistics.median(seconds))}
    for name, (groups, took) in baselines(whole, threshold).items():
        rows[name] = (scores(groups, truth), took)

    halves = create_index(settings.replace(data_dir=scratch / "halves").index, lfw.model)
    shuffled = random.Random(0).sample(sources, len(sources))
    copy_unlabelled(lfw, halves, sorted(shuffled[: len(sources) // 2]))
    first = cluster_index(halves, threshold)
    copy_unlabelled(lfw, halves, sorted(shuffled[len(sources) // 2 :]))
    second = cluster_index(halves, threshold)
    rows["facesearch, in two halves"] = (scores(stored_groups(halves), truth), first.seconds + second.seconds)
    again = cluster_index(halves, threshold)

    print(f"\nGrouping LFW into people ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    print("| algorithm | pairwise P | pairwise R | pairwise F | BCubed P | BCubed R | BCubed F | people | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (measured, took) in rows.items():
        figures = " | ".join(f"{measured[key]:.4f}" for key in list(measured)[:6])
        print(f"| {name} | {figures} | {measured['people']} | {took:.1f} |")
    print(f"\nfull runs: {', '.join(f'{s:.1f}' for s in seconds)} s (kNN through the index included)")
    print(f"two halves: {first.to_dict()} then {second.to_dict()}")
    print(f"re-run after the halves changed {again.changed} faces")


if __name__ == "__main__":
    main()
