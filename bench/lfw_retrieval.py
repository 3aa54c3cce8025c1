"""LFW retrieval and verification through the real pipeline and store.

Indexes every LFW image with ``facesearch``'s own ingest (person labels from the folders, only each
photo's subject face labelled), embeds each photo's subject face again as a search's query (which a
model may embed differently from a stored face, see ``Embedder.embed``), then:

* retrieval: each image of the people with >= 2 images queries the index with its subject face,
  its own photo excluded from the gallery; rank-1, precision@20 (hits / min(20, other images of that
  person)), mAP@20, recall@20; once ranked as ``facesearch search`` ranks (query expansion, see
  ``search_engine/expansion.py``), once by plain kNN;
* verification: the 6,000 pairs of ``pairs.txt``, cosine similarity of the first image's query to
  the second's stored face, 10-fold accuracy with the threshold chosen on the other 9 folds;
* calibration: the stranger model (``search_engine/calibration.py``: each face's best score among
  other people's faces) of the subject faces of the people with >= 2 images, which leaves the 4,069 people with one image out of it; with the
  verification threshold it is what ``search_engine/calibrations/`` ships (``--write-calibration``);
* open set (NIST 1:N): every image queries the index with its subject face, its own photo excluded.
  Stranger queries are the images of people with one image, whose best hit can only be someone
  else: FPIR(t) is the share of them with a best hit at or above t. Mated queries are the other
  images: DIR(t) is the share whose rank-1 hit is that person and scores at least t. DIR is printed
  at FPIR 1/2/5/10% and at the product's own "same person" threshold for this gallery's size.

Usage: python bench/lfw_retrieval.py --lfw ../shared/data/lfw --pairs ../shared/data/lfw_pairs.txt \
  [--embedder mobilefacenet] [--write-calibration search_engine/calibrations/KEY.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from ingest.local import index_locally  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.calibration import POSSIBLE_FACTOR, Calibration, verdicts  # noqa: E402
from search_engine.calibration_fit import LfwPair, PairFit, fit_calibration, fit_pairs, read_lfw_pairs  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.embedding import expansion_threshold  # noqa: E402
from search_engine.expansion import rank  # noqa: E402
from search_engine.imageio import load_image  # noqa: E402
from search_engine.index import FaceIndex  # noqa: E402
from search_engine.indexing import source_name  # noqa: E402
from search_engine.pipeline import FacePipeline, subject_index  # noqa: E402
from search_engine.types import EmbedderInfo, Hit, SearchFilters  # noqa: E402

K = 20


def subject_vectors(index: FaceIndex, sources: list[str]) -> dict[str, np.ndarray]:
    """The labelled (subject) face's vector of each source that has one."""
    vectors = {}
    for source in tqdm(sources, desc="reading subject faces", unit="img"):
        for face in index.faces_of_source(source):
            if face.person is not None:
                vectors[source] = face.embedding
    return vectors


def query_vectors(settings: Settings, photos: list[Path], cache: Path) -> dict[str, np.ndarray]:
    """The subject face of each photo (detected as ingest detects it) embedded as a query; kept in
    ``cache`` (an ``.npz`` file), where a run with the same ``--data-dir`` finds them."""
    if cache.is_file():
        with np.load(cache) as stored:
            return dict(zip(stored["sources"].tolist(), stored["vectors"]))
    pipeline = FacePipeline.from_settings(settings.models)
    batch, queries = settings.models.batch_size, {}
    for start in tqdm(range(0, len(photos), batch), desc="embedding queries", unit="batch"):
        images = [load_image(path, settings.models.max_image_pixels)[0] for path in photos[start : start + batch]]
        subjects = []
        for path, image, detections in zip(photos[start : start + batch], images, pipeline.detector.detect(images)):
            chosen = subject_index(detections, image.shape[1], image.shape[0])
            if chosen is not None:
                subjects.append((source_name(path), image, detections[chosen]))
        embedded = pipeline.embedder.embed([(image, [face]) for _, image, face in subjects], query=True)
        queries.update((source, rows[0]) for (source, _, _), rows in zip(subjects, embedded))
    np.savez(cache, sources=np.array(list(queries)), vectors=np.stack(list(queries.values())))
    return queries


def ranking_metrics(relevant: list[bool], others: int) -> tuple[float, float, float, float]:
    """rank-1, precision@K, AP@K and recall@K of one ranked list of relevance flags."""
    top = relevant[:K]
    found, cumulative, total = sum(top), 0, 0.0
    for i, rel in enumerate(top, 1):
        if rel:
            cumulative += 1
            total += cumulative / i
    return float(bool(top) and top[0]), found / min(K, others), total / min(K, others), found / others


def retrieval(
    rank: Callable[..., list[Hit]], by_person: dict[str, list[str]], queries: dict[str, np.ndarray], name: str
) -> dict:
    """Metrics of one ranking two ways: 'strict' counts every hit that is not the query's person as a
    miss, an unlabelled face included (often that very person, seen in someone else's photo);
    'labelled' first drops unlabelled hits, whose identity LFW does not give (the usual 'junk' rule).
    ``rank(vector, k=, filters=)`` is facesearch's ranking or a plain kNN search."""
    strict, labelled, asked, missing = [], [], 0, 0
    for person, sources in tqdm(sorted(by_person.items()), desc=f"retrieval queries, {name}", unit="person"):
        if len(sources) < 2:
            continue
        others = len(sources) - 1
        for source in sources:
            asked += 1
            if source not in queries:
                missing += 1
                strict.append((0.0, 0.0, 0.0, 0.0))
                labelled.append((0.0, 0.0, 0.0, 0.0))
                continue
            hits = rank(queries[source], k=3 * K, filters=SearchFilters(exclude_sources=(source,)))
            strict.append(ranking_metrics([hit.person == person for hit in hits], others))
            labelled.append(ranking_metrics([hit.person == person for hit in hits if hit.person is not None], others))
    results = {"queries": asked, "queries without a subject face": missing}
    for how, rows in (("strict", strict), ("labelled hits", labelled)):
        rank1, precision, ap, recall = np.mean(rows, axis=0)
        results |= {
            f"rank-1 ({name}, {how})": float(rank1),
            f"precision@20 ({name}, {how})": float(precision),
            f"mAP@20 ({name}, {how})": float(ap),
            f"recall@20 ({name}, {how})": float(recall),
        }
    return results


def verification(
    pairs: list[LfwPair], queries: dict[str, np.ndarray], vectors: dict[str, np.ndarray]
) -> tuple[PairFit, int]:
    """10-fold verification of ``pairs.txt`` (the first image's query against the second's stored
    face) and how many pairs miss a face; such a pair gets similarity -1 (judged 'different'), so a
    missed detection counts against the model."""

    def score(pair: LfwPair) -> float:
        a, b = source_name(pair.first), source_name(pair.second)
        return float(queries[a] @ vectors[b]) if a in queries and b in vectors else -1.0

    scores = np.array([score(p) for p in pairs])
    return fit_pairs(scores, np.array([p.same for p in pairs])), int(np.sum(scores == -1.0))


def calibrate(
    model: EmbedderInfo,
    by_person: dict[str, list[str]],
    vectors: dict[str, np.ndarray],
    pairs: PairFit,
    queries: dict[str, np.ndarray] | None,
) -> Calibration:
    """The stranger law of the subject faces of the people with >= 2 images: each face's best
    score, as a query (or as stored, ``queries`` None), among the stored faces of everyone else
    there."""
    sources = [
        s
        for person, ss in sorted(by_person.items())
        if len(ss) >= 2
        for s in ss
        if s in vectors and s in (queries or vectors)
    ]
    people = {s: person for person, ss in by_person.items() for s in ss}
    measured_on = (
        f"LFW (deep-funneled): the best stranger score of each of the {len(sources):,} subject faces of the "
        f"people with two or more images{' as a query' if queries else ''} among the stored faces of all the "
        "others; pair threshold: 10-fold mean on pairs.txt, the first image as a query"
    )
    probes = None if queries is None else np.stack([queries[s] for s in sources])
    return fit_calibration(
        model, np.stack([vectors[s] for s in sources]), [people[s] for s in sources], pairs, measured_on, probes
    )


def open_set(
    index: FaceIndex, by_person: dict[str, list[str]], queries: dict[str, np.ndarray], threshold: float | None
) -> dict:
    """DIR at fixed FPIRs and at the product's threshold (see the module docstring)."""
    stranger, mated = [], []
    for person, sources in tqdm(sorted(by_person.items()), desc="open-set queries", unit="person"):
        for source in sources:
            if source not in queries:
                if len(sources) >= 2:
                    mated.append(-2.0)
                continue
            (best,) = index.search(queries[source], k=1, filters=SearchFilters(exclude_sources=(source,)))
            if len(sources) == 1:
                stranger.append(best.score)
            else:
                # A mated query whose rank-1 hit is someone else is never a correct identification.
                mated.append(best.score if best.person == person else -2.0)
    stranger, mated = np.array(stranger), np.array(mated)
    results = {"open-set stranger queries": len(stranger), "open-set mated queries": len(mated)}
    for fpir in (0.01, 0.02, 0.05, 0.10):
        t = float(np.quantile(stranger, 1.0 - fpir, method="higher"))
        results[f"DIR at FPIR {fpir:.0%} (threshold {t:.3f})"] = float(np.mean(mated >= t))
    if threshold is not None:
        results[f"product threshold {threshold:.4f}: FPIR"] = float(np.mean(stranger >= threshold))
        results[f"product threshold {threshold:.4f}: DIR"] = float(np.mean(mated >= threshold))
        results["stranger queries with a same-person hit in their top 1"] = int(np.sum(stranger >= threshold))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (one sub-folder per person)")
    parser.add_argument("--pairs", type=Path, required=True, help="LFW pairs.txt")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--write-calibration", type=Path, help="write the calibration measured here to this JSON file")
    parser.add_argument("--data-dir", type=Path, help="index directory to (re)use; default: a fresh temporary one")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="facesearch-lfw-"))
    settings = Settings.from_env().replace(embedder=args.embedder, data_dir=data_dir, es_url=None)
    collected = collect_photos([args.lfw], person_from_folder=True)
    started = time.perf_counter()
    summary, index = index_locally(settings, collected.photos)
    seconds = time.perf_counter() - started

    by_person: dict[str, list[str]] = defaultdict(list)
    for photo in collected.photos:
        by_person[photo.person].append(source_name(photo.path))
    pairs = read_lfw_pairs(args.pairs, args.lfw)
    vectors = subject_vectors(index, sorted(s for ss in by_person.values() for s in ss))
    queries = query_vectors(
        settings, [photo.path for photo in collected.photos], data_dir / f"lfw-queries-{index.model.key}.npz"
    )

    results = {
        "images": summary.files,
        "faces indexed": index.count(),
        "images with no face detected": summary.no_face,
        "failed files": len(summary.failures),
        "index run (s)": round(seconds, 1),
    }
    fit, missing = verification(pairs, queries, vectors)
    calibration = calibrate(index.model, by_person, vectors, fit, queries)
    # What `facesearch calibrate` fits on an index's own labelled faces, which has no query vectors.
    stored_only = calibrate(index.model, by_person, vectors, fit, None)
    threshold = expansion_threshold(settings.search, index.model, calibration)
    expansion = f"{settings.search.expansion_neighbours} neighbours >= {threshold}"
    ranking = partial(rank, settings.search, index, calibration=calibration)
    results |= retrieval(ranking, by_person, queries, f"facesearch, expansion {expansion}")
    results |= retrieval(index.search, by_person, queries, "plain kNN")
    results |= {
        "pairs": fit.pairs,
        "pairs with a face missing": missing,
        "verification accuracy": fit.accuracy,
        "verification std": fit.accuracy_std,
        "threshold (mean over folds)": fit.threshold,
    }

    if args.write_calibration:
        args.write_calibration.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")
    gallery = index.count()
    judged = verdicts(calibration, gallery, settings.search.target_fpir, settings.search.same_person_threshold)
    results |= {
        "calibration probes (Gumbel location, scale)": f"{calibration.probes} ({calibration.location:.4f}, {calibration.scale:.4f})",
        f"same-person threshold, {gallery:,} faces, target FPIR {settings.search.target_fpir:.0%}": judged.same_person,
        f"possible-match threshold (target FPIR {POSSIBLE_FACTOR * settings.search.target_fpir:.0%})": judged.possible,
    }
    stored_judged = verdicts(stored_only, gallery, settings.search.target_fpir, settings.search.same_person_threshold)
    results[f"same-person threshold of a calibration on stored faces only, {gallery:,} faces"] = (
        stored_judged.same_person
    )
    results |= open_set(index, by_person, queries, judged.same_person)

    print(f"\nLFW retrieval, embedder {index.model.key}, index {data_dir}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    print("| metric | value |\n|---|---|")
    for name, value in results.items():
        shown = f"{value:.4f}" if isinstance(value, float) and value < 10 else value
        print(f"| {name} | {shown} |")


if __name__ == "__main__":
    main()
