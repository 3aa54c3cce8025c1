"""Near-duplicate photos on LFW: how many bits of the perceptual hash separate a photo's edited copies
from other photos?

Every LFW photo is hashed as ingest hashes it (``search_engine/photo_hash.py``). A sample of them is
edited as copies of a photo get edited: scaled to half and to a third, recompressed as JPEG at
quality 30, cropped by 5% and 10% on every side, made 30 levels brighter and darker. Then:

* recall at distance d: the share of (photo, edited copy) pairs whose hashes differ in at most d bits;
* false matches at d: the share of pairs of *different* LFW photos within d bits, and how many
  photos have at least one such stranger. LFW is a hard case for a whole-image hash: every photo is
  a 250x250 crop centred on a face, so unrelated photos share their layout. Its own duplicates (the
  same picture filed under two names) count as false matches here;
* the time ``near_duplicate_groups`` takes to group all of LFW's hashes.

With ``--scale N [N ...] --data-dir DIR``, also an archive of N photos in the embedded store
(``DIR/hashes-N``, kept for a re-run): LFW's hashes and N - 13,233 random ones, recorded as ingest
records them. A random hash stands for another photo's cost, not for its likeness (random hashes
lie about 128 bits apart). Measured there: what a photo's page pays for its near-duplicates
(``near_duplicates`` for LFW photos, checked against numpy over every hash), and what
``facesearch duplicates`` pays to read every hash and group them (one run: it grows with the
square of N).

Usage: python bench/near_duplicates.py --lfw ../shared/data/lfw [--sample 2000]
       [--scale 100000 1000000 --data-dir /tmp/near-dup-scale]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from ingest_throughput import cpu_name  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from search_engine.imageio import load_image  # noqa: E402
from search_engine.index.embedded import EmbeddedFaceIndex  # noqa: E402
from search_engine.photo_hash import (  # noqa: E402
    DEFAULT_MAX_DISTANCE,
    HASH_BITS,
    code_distances,
    distances,
    hash_codes,
    near_duplicate_groups,
    near_pairs,
    photo_hash,
)
from search_engine.types import EmbedderInfo, SourceRecord  # noqa: E402

DISTANCES = (16, 24, 32, 40, 48, 56, 64)


def scaled(image: np.ndarray, factor: float) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_AREA)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def cropped(image: np.ndarray, share: float) -> np.ndarray:
    height, width = image.shape[:2]
    dy, dx = round(height * share), round(width * share)
    return np.ascontiguousarray(image[dy : height - dy, dx : width - dx])


EDITS = {
    "half size": lambda im: scaled(im, 0.5),
    "third size": lambda im: scaled(im, 1 / 3),
    "JPEG quality 30": lambda im: jpeg(im, 30),
    "crop 2%": lambda im: cropped(im, 0.02),
    "crop 5%": lambda im: cropped(im, 0.05),
    "crop 10%": lambda im: cropped(im, 0.10),
    "brighter (+30)": lambda im: cv2.convertScaleAbs(im, alpha=1.0, beta=30),
    "darker (-30)": lambda im: cv2.convertScaleAbs(im, alpha=1.0, beta=-30),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (one sub-folder per person)")
    parser.add_argument("--sample", type=int, default=2000, help="photos edited (spread over all of LFW)")
    parser.add_argument("--runs", type=int, default=3, help="timings of the grouping (median reported)")
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="archive sizes to measure (photos)")
    parser.add_argument("--data-dir", type=Path, help="where the --scale archives are built (required with it)")
    parser.add_argument("--lookups", type=int, default=100, help="near-duplicate lookups per --scale archive")
    args = parser.parse_args()
    if args.scale and args.data_dir is None:
        parser.error("--scale needs --data-dir")

    photos = sorted(args.lfw.glob("*/*.jpg"))
    hashes, images = {}, {}
    picked = set(photos[:: max(1, len(photos) // args.sample)][: args.sample])
    for path in tqdm(photos, desc="hashing LFW", unit="photo"):
        image = load_image(path, 10**8)[0]
        hashes[str(path)] = photo_hash(image)
        if path in picked:
            images[str(path)] = image

    sources = sorted(hashes)
    codes = hash_codes([hashes[s] for s in sources])
    # Every pair of different photos up to the widest distance shown: how many lie at each
    # distance, and each photo's nearest other photo.
    firsts, seconds, apart = near_pairs(codes, max(DISTANCES))
    histogram = np.bincount(apart, minlength=HASH_BITS + 1)
    nearest = np.full(len(sources), HASH_BITS, dtype=np.int64)
    np.minimum.at(nearest, firsts, apart)
    np.minimum.at(nearest, seconds, apart)
    pairs = len(sources) * (len(sources) - 1) // 2

    edited: dict[str, list[int]] = {name: [] for name in EDITS}
    for source, image in tqdm(images.items(), desc="editing the sample", unit="photo"):
        copies = [photo_hash(edit(image)) for edit in EDITS.values()]
        for name, bits in zip(EDITS, distances(hashes[source], copies)):
            edited[name].append(int(bits))

    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        groups = near_duplicate_groups(hashes)
        timings.append(time.perf_counter() - started)

    threads = faiss_threads()
    print(f"\n{len(sources):,} LFW photos, {len(images):,} of them edited; machine: {cpu_name()}")
    print(f"hashing and edits in one thread; grouping in {threads} (faiss)")
    print("| max distance (bits) | " + " | ".join(EDITS) + " | different photos within it (pairs) | photos with one |")
    print("|---" * (len(EDITS) + 3) + "|")
    cumulative = np.cumsum(histogram)
    for d in DISTANCES:
        recalls = " | ".join(f"{np.mean(np.array(edited[name]) <= d):.3f}" for name in EDITS)
        marker = " (default)" if d == DEFAULT_MAX_DISTANCE else ""
        print(
            f"| {d}{marker} | {recalls} | {cumulative[d] / pairs:.2e} ({cumulative[d]:,}) | "
            f"{int(np.sum(nearest <= d)):,} |"
        )
    print(
        f"grouping all {len(sources):,} hashes at the default: {len(groups)} groups, "
        f"{statistics.median(timings):.2f} s (median of {args.runs})"
    )
    if args.scale:
        print("\n| photos | page lookup p50 / p95 ms | found as numpy | read every hash s | group them s | groups |")
        print("|---|---|---|---|---|---|")
    for size in args.scale:
        print(at_scale(hashes, size, args.data_dir / f"hashes-{size}", args.lookups))


def faiss_threads() -> int:
    import faiss

    return faiss.omp_get_max_threads()


#: The sources table these archives are in: it holds no faces, only file records.
ARCHIVE_MODEL = EmbedderInfo("near-dup-bench", "r1", 8)


def at_scale(lfw: dict[str, str], size: int, path: Path, lookups: int) -> str:
    """One table row: an archive of ``size`` photos (LFW's ``lfw`` hashes and random ones) built
    at ``path`` where missing, its near-duplicate lookups and its grouping timed."""
    if size < len(lfw):
        raise SystemExit(f"--scale {size} is smaller than LFW's {len(lfw):,} photos")
    index = EmbeddedFaceIndex(path, ARCHIVE_MODEL)
    if len(index.image_hashes()) != size:
        rng = np.random.default_rng(size)
        names = list(lfw) + [f"/archive/{number:07d}.jpg" for number in range(size - len(lfw))]
        batch = 50_000
        for start in tqdm(range(0, size, batch), desc=f"recording {size:,} photos", unit="batch"):
            chunk = names[start : start + batch]
            values = [lfw.get(name) or rng.bytes(HASH_BITS // 8).hex() for name in chunk]
            index.record_sources(
                [SourceRecord(n, n, ARCHIVE_MODEL.key, 1, image_hash=v) for n, v in zip(chunk, values)]
            )
        index.optimize()
    index.close()

    index = EmbeddedFaceIndex(path, ARCHIVE_MODEL)
    started = time.perf_counter()
    every = index.image_hashes()
    read = time.perf_counter() - started
    names = sorted(every)
    codes = hash_codes([every[name] for name in names])
    queries = sorted(lfw)[:: max(1, len(lfw) // lookups)][:lookups]
    timings, agree = [], 0
    for query in queries:
        started = time.perf_counter()
        found = index.near_duplicates(lfw[query], DEFAULT_MAX_DISTANCE, 50, exclude_source=query)
        timings.append(1000 * (time.perf_counter() - started))
        apart = code_distances(lfw[query], codes)
        near = np.flatnonzero(apart <= DEFAULT_MAX_DISTANCE)
        exact = sorted((int(apart[row]), names[row]) for row in near if names[row] != query)
        agree += [(name, bits) for bits, name in exact[:50]] == found
    started = time.perf_counter()
    groups = near_duplicate_groups(every)
    grouped = time.perf_counter() - started
    index.close()
    p50, p95 = np.percentile(timings, [50, 95])
    return (
        f"| {size:,} | {p50:.1f} / {p95:.1f} | {agree} of {len(queries)} | {read:.1f} | {grouped:.1f} | {len(groups)} |"
    )


if __name__ == "__main__":
    main()
