"""Ingest throughput on LFW: the batched pipeline (1 and N worker processes) vs a naive loop.

Each run indexes the same sample of LFW photos into a fresh embedded index. Reported:
images/s end to end (reading, detection, embedding, storing, model start-up included), median of
``--runs`` runs per mode, and the per-stage cost of the batched pipeline in one process.

Usage: python bench/ingest_throughput.py --lfw ../shared/data/lfw [--images 2000] [--runs 3] [--default-only]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from ingest.local import chunks, index_locally  # noqa: E402
from ingest.sources import collect_photos  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.ids import face_id  # noqa: E402
from search_engine.imageio import load_image  # noqa: E402
from search_engine.index import create_index  # noqa: E402
from search_engine.pipeline import FacePipeline  # noqa: E402
from search_engine.types import FaceRecord  # noqa: E402


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def naive(settings: Settings, paths: list[Path]) -> float:
    """One image at a time: read, detect, embed, store; torch on every core. Returns images/s."""
    started = time.perf_counter()
    pipeline = FacePipeline.from_settings(settings.models)
    index = create_index(settings.index, pipeline.embedder.info)
    index.ensure()
    key = pipeline.embedder.info.key
    for path in paths:
        image, digest = load_image(path, settings.models.max_image_pixels)
        detections = pipeline.detector.detect([image])[0]
        vectors = pipeline.embedder.embed([(image, detections)])[0]
        index.upsert(
            [
                FaceRecord(face_id(key, str(path), n), str(path), n, d.box, d.probability, v, key)
                for n, (d, v) in enumerate(zip(detections, vectors))
            ]
        )
    return len(paths) / (time.perf_counter() - started)


def batched(settings: Settings, paths: list[Path]) -> float:
    """The real ingest path (``facesearch index``). Returns images/s."""
    photos = collect_photos(paths, person_from_folder=True).photos
    started = time.perf_counter()
    summary, _ = index_locally(settings, photos, progress=False)
    assert not summary.failures, summary.failures
    return len(paths) / (time.perf_counter() - started)


def stages(settings: Settings, paths: list[Path]) -> dict[str, float]:
    """Milliseconds per image (reading, detection) and per face (embedding, storing), one process."""
    pipeline = FacePipeline.from_settings(settings.models)
    index = create_index(settings.index, pipeline.embedder.info)
    index.ensure()
    key = pipeline.embedder.info.key
    spent = {"read": 0.0, "detect": 0.0, "embed": 0.0, "store": 0.0}
    faces = 0
    for batch in chunks(paths, settings.models.batch_size):
        t0 = time.perf_counter()
        images = [load_image(p, settings.models.max_image_pixels)[0] for p in batch]
        t1 = time.perf_counter()
        detections = pipeline.detector.detect(images)
        t2 = time.perf_counter()
        vectors = pipeline.embedder.embed(list(zip(images, detections)))
        t3 = time.perf_counter()
        records = [
            FaceRecord(face_id(key, str(p), n), str(p), n, d.box, d.probability, v, key)
            for p, dets, vecs in zip(batch, detections, vectors)
            for n, (d, v) in enumerate(zip(dets, vecs))
        ]
        index.upsert(records)
        t4 = time.perf_counter()
        faces += len(records)
        for name, seconds in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            spent[name] += seconds
    return {
        "read+decode (ms/img)": 1000 * spent["read"] / len(paths),
        "detect (ms/img)": 1000 * spent["detect"] / len(paths),
        "embed (ms/face)": 1000 * spent["embed"] / max(faces, 1),
        "store (ms/face)": 1000 * spent["store"] / max(faces, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--images", type=int, default=2000, help="sample size (spread over all of LFW)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument(
        "--default-only",
        action="store_true",
        help="only facesearch index's default (one process per core), no stage breakdown: for runs "
        "over all of LFW, where the naive loop alone would take 20 minutes a run",
    )
    args = parser.parse_args()

    every = sorted(args.lfw.rglob("*.jpg"))
    paths = every[:: max(1, len(every) // args.images)][: args.images]
    cores = os.cpu_count() or 1
    base = Settings.from_env().replace(embedder=args.embedder, es_url=None)

    def fresh(**changes) -> Settings:
        return base.replace(data_dir=Path(tempfile.mkdtemp(prefix="facesearch-bench-")), **changes)

    modes = {}
    if not args.default_only:
        modes[f"naive loop, 1 process, {cores} torch threads"] = lambda: naive(
            fresh(workers=1, torch_threads=cores), paths
        )
        modes[f"batched, 1 process, {cores} torch threads"] = lambda: batched(
            fresh(workers=1, torch_threads=cores), paths
        )
    for workers in range(cores if args.default_only else 2, cores + 1):
        modes[f"batched, {workers} processes, {max(1, cores // workers)} torch thread(s) each"] = lambda w=workers: (
            batched(fresh(workers=w), paths)
        )
    results = {name: [run() for _ in range(args.runs)] for name, run in modes.items()}
    stage = {} if args.default_only else stages(fresh(workers=1, torch_threads=cores), paths)

    print(f"\nIngest throughput: {len(paths)} LFW images, embedder {args.embedder}, median of {args.runs} runs")
    print(f"machine: {cpu_name()}, {cores} cores, Python {platform.python_version()}")
    print("| mode | images/s (median) | runs |\n|---|---|---|")
    for name, rates in results.items():
        print(f"| {name} | {statistics.median(rates):.1f} | {', '.join(f'{r:.1f}' for r in rates)} |")
    if stage:
        print("\n| stage (batched, 1 process) | cost |\n|---|---|")
        for name, value in stage.items():
            print(f"| {name} | {value:.1f} |")


if __name__ == "__main__":
    main()
