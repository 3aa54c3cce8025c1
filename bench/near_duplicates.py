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

Usage: python bench/near_duplicates.py --lfw ../shared/data/lfw [--sample 2000]
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
from search_engine.photo_hash import (  # noqa: E402
    DEFAULT_MAX_DISTANCE,
    HASH_BITS,
    bit_signs,
    distances,
    near_duplicate_groups,
    photo_hash,
)

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
    args = parser.parse_args()

    photos = sorted(args.lfw.glob("*/*.jpg"))
    hashes, images = {}, {}
    picked = set(photos[:: max(1, len(photos) // args.sample)][: args.sample])
    for path in tqdm(photos, desc="hashing LFW", unit="photo"):
        image = load_image(path, 10**8)[0]
        hashes[str(path)] = photo_hash(image)
        if path in picked:
            images[str(path)] = image

    sources = sorted(hashes)
    signs = bit_signs([hashes[s] for s in sources])
    # Every pair of different photos: the distance histogram, and each photo's nearest other photo.
    histogram = np.zeros(HASH_BITS + 1, dtype=np.int64)
    nearest = np.full(len(sources), HASH_BITS, dtype=np.int64)
    for start in range(0, len(sources), 1024):
        bits = np.rint((HASH_BITS - signs[start : start + 1024] @ signs.T) / 2).astype(np.int64)
        rows = start + np.arange(len(bits))
        later = np.arange(len(sources))[None, :] > rows[:, None]
        histogram += np.bincount(bits[later], minlength=HASH_BITS + 1)
        bits[np.arange(len(bits)), rows] = HASH_BITS
        nearest[rows] = bits.min(axis=1)
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

    print(f"\n{len(sources):,} LFW photos, {len(images):,} of them edited; machine: {cpu_name()}, one thread")
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


if __name__ == "__main__":
    main()
