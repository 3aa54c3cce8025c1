"""The seed projects' comparison on LFW: whole-image ResNet50 search against face search.

Every LFW photo is described as a whole by the product's image model (torchvision's ResNet50 with
its ImageNet weights, ``facesearch index --image-search``) into the image index of ``--data-dir``
(an LFW index made by ``bench/lfw_retrieval.py`` is reused: its faces are not detected again).
Then, on the same queries as ``bench/lfw_retrieval.py`` (each image of the people with at least
two images, its own photo left out of the gallery), rank-1, precision@20 and mAP@20 of:

* whole-image search through the image index, as ``facesearch similar`` ranks;
* the same descriptions reduced by PCA to ``--pca`` components fitted on the collection (seed 000
  used 900), whitened or not, exact cosine kNN: whether PCA earns a place in the product;
* face search, plain kNN over the subject faces (``bench/lfw_retrieval.py``'s strict scoring).

Where the ImageNet weights can be neither downloaded nor read (``FACESEARCH_RESNET50_WEIGHTS``),
it says so and exits with status 2, printing no figure.

Usage: python bench/whole_image.py --lfw ../shared/data/lfw --data-dir DIR [--pca 900] [--people N]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from lfw_retrieval import K, query_vectors, ranking_metrics, retrieval  # noqa: E402

from ingest.local import index_locally  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.embedding import create_image_embedder  # noqa: E402
from search_engine.errors import ModelUnavailableError  # noqa: E402
from search_engine.index import create_image_index  # noqa: E402
from search_engine.indexing import source_name  # noqa: E402


def ranked_metrics(order: np.ndarray, query: int, people: list[str], others: int) -> tuple[float, float, float]:
    """rank-1, precision@K and AP@K of one query's ranked gallery rows (its own row left out)."""
    relevant = [people[j] == people[query] for j in order if j != query][:K]
    rank1, precision, ap, _ = ranking_metrics(relevant, others)
    return rank1, precision, ap


def pca_rows(vectors: np.ndarray, components: int, whiten: bool) -> np.ndarray:
    """``vectors`` projected on their first ``components`` principal axes (fitted on them all),
    whitened or not, rows scaled to unit length."""
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes[:components].T
    if whiten:
        projected /= singular[:components] / np.sqrt(len(vectors))
    return projected / np.linalg.norm(projected, axis=1, keepdims=True)


def exact_metrics(rows: np.ndarray, queries: list[int], people: list[str], count: dict[str, int]) -> np.ndarray:
    """Mean rank-1, precision@K and mAP@K of exact cosine kNN over ``rows`` for each query row."""
    found = []
    for start in range(0, len(queries), 256):
        chunk = queries[start : start + 256]
        scores = rows[chunk] @ rows.T
        top = np.argpartition(-scores, K + 1, axis=1)[:, : K + 1]
        for query, candidates, row in zip(chunk, top, scores):
            order = candidates[np.argsort(-row[candidates])]
            found.append(ranked_metrics(order, query, people, count[people[query]] - 1))
    return np.mean(found, axis=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (one sub-folder per person)")
    parser.add_argument("--data-dir", type=Path, help="LFW index to (re)use; default: a fresh temporary one")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS, help="face model of the face row")
    parser.add_argument("--pca", type=int, default=900, help="PCA components (0: no PCA rows)")
    parser.add_argument("--people", type=int, help="only the first N people folders (a quick check)")
    args = parser.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="facesearch-whole-image-"))
    settings = Settings.from_env().replace(embedder=args.embedder, data_dir=data_dir, es_url=None, image_search=True)
    try:
        model = create_image_embedder(settings.models)
    except ModelUnavailableError as exc:
        print(f"whole_image: no figure: {exc.message}", file=sys.stderr)
        return 2
    folders = sorted(p for p in args.lfw.iterdir() if p.is_dir())[: args.people]
    photos = [photo for folder in folders for photo in collect_photos([folder], person=folder.name).photos]

    started = time.perf_counter()
    summary, index = index_locally(settings, photos)
    seconds = time.perf_counter() - started
    images = create_image_index(settings.index, model.info)
    by_person: dict[str, list[str]] = defaultdict(list)
    for photo in photos:
        by_person[photo.person].append(source_name(photo.path))
    described = {s: images.embedding(s) for person in sorted(by_person) for s in by_person[person]}
    sources = [s for s, vector in described.items() if vector is not None]
    people = [Path(s).parent.name for s in sources]
    count = {person: people.count(person) for person in set(people)}
    queries = [i for i, person in enumerate(people) if count[person] >= 2]
    vectors = np.stack([described[s] for s in sources])

    rows: dict[str, tuple[float, float, float]] = {}
    product = []
    for i in queries:
        hits = images.search(vectors[i], k=K, exclude_sources=(sources[i],))
        relevant = [Path(hit.source).parent.name == people[i] for hit in hits]
        product.append(ranking_metrics(relevant, count[people[i]] - 1)[:3])
    rows[f"whole image, {model.info.key} {model.info.dim}-d (facesearch similar)"] = tuple(np.mean(product, axis=0))
    if args.pca:
        components = min(args.pca, len(sources) - 1)
        for whiten in (False, True):
            reduced = pca_rows(vectors, components, whiten)
            name = f"whole image, PCA {components}{' whitened' if whiten else ''}, exact kNN"
            rows[name] = tuple(exact_metrics(reduced, queries, people, count))
    face_queries = query_vectors(settings, [p.path for p in photos], data_dir / f"lfw-queries-{index.model.key}.npz")
    faces = retrieval(index.search, by_person, face_queries, "plain kNN")
    rows[f"face search, {index.model.key}, plain kNN (strict)"] = (
        faces["rank-1 (plain kNN, strict)"],
        faces["precision@20 (plain kNN, strict)"],
        faces["mAP@20 (plain kNN, strict)"],
    )

    print(f"\nLFW whole-image vs face search, {len(sources):,} photos, {len(queries):,} queries, index {data_dir}")
    print(f"index run (faces skipped where unchanged, photos described): {seconds:.0f} s, {summary.files} files")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"
    )
    print("| search | rank-1 | precision@20 | mAP@20 |\n|---|---|---|---|")
    for name, (rank1, precision, ap) in rows.items():
        print(f"| {name} | {rank1:.4f} | {precision:.4f} | {ap:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
