"""How small can a face be and still be recognised? LFW faces shrunk to a given width, compared with
full-size photos.

The same-person pairs of ``pairs.txt`` give the test faces: the second photo of each pair is scaled
down (area averaging) so that its subject face box is ``SIZE`` pixels wide, as a face far away in a
video or a group photo, and goes through the real pipeline (MTCNN at that size, alignment,
embedding) as a stored face. It is compared with the first photo of its pair at full size as a query: the
share at or above the embedder's same-person threshold is the *true accept* rate. It is also
compared with the full-size first photo of every other pair showing someone else: the share of
those at or above the threshold is the *false accept* rate, the chance that a stranger's face of
that size is called a match.

    .venv/bin/python bench/face_size.py --lfw ../shared/data/lfw --pairs ../shared/data/lfw_pairs.txt
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from ingest_throughput import cpu_name  # noqa: E402
from tqdm import tqdm  # noqa: E402

from search_engine.calibration import shipped_calibration  # noqa: E402
from search_engine.calibration_fit import read_lfw_pairs  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.detection import MIN_DETECTED_FACE  # noqa: E402
from search_engine.imageio import load_image  # noqa: E402
from search_engine.pipeline import EmbeddedFace, FacePipeline, subject_index  # noqa: E402

SIZES = (0, 80, 64, 56, 48, 40, 32, 24)
PAIRS_PER_SET = 600


def subject(pipeline: FacePipeline, image: np.ndarray, query: bool = False) -> EmbeddedFace | None:
    faces = pipeline.analyse([image], query=query)[0]
    chosen = subject_index([f.detection for f in faces], image.shape[1], image.shape[0])
    return None if chosen is None else faces[chosen]


def shrunk(image: np.ndarray, face_width: float, size: int) -> np.ndarray:
    """``image`` scaled so a face ``face_width`` pixels wide becomes ``size`` wide (0: unchanged)."""
    if not size or size >= face_width:
        return image
    factor = size / face_width
    height, width = image.shape[:2]
    return cv2.resize(
        image, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (one sub-folder per person)")
    parser.add_argument("--pairs", type=Path, required=True, help="LFW pairs.txt")
    parser.add_argument(
        "--sets", type=int, default=10, help="how many of pairs.txt's 10 sets to use (300 same-person pairs each)"
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="face widths in pixels (0: full size)")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    args = parser.parse_args()
    settings = Settings.from_env().replace(embedder=args.embedder, min_face_size=MIN_DETECTED_FACE, es_url=None)
    pipeline = FacePipeline.from_settings(settings.models)
    # Two photos compared with each other: the 1:1 (pair) threshold, as a video track links faces.
    threshold = shipped_calibration(pipeline.embedder.info).pair_threshold
    pairs = [(p.first, p.second) for p in read_lfw_pairs(args.pairs, args.lfw)[: args.sets * PAIRS_PER_SET] if p.same]
    sizes = [int(s) for s in args.sizes.split(",")]

    def load_rgb(path: str) -> np.ndarray:
        return load_image(Path(path), settings.models.max_image_pixels)[0]

    references, targets, people = [], [], []
    for a, b in tqdm(pairs, desc="full-size faces", unit="pair"):
        reference, target = subject(pipeline, load_rgb(a), query=True), subject(pipeline, load_rgb(b))
        if reference is not None and target is not None:
            references.append(reference.embedding)
            targets.append((b, target.detection.box.x2 - target.detection.box.x1))
            people.append(Path(a).parent.name)
    references = np.stack(references)
    strangers = np.array(people)[:, None] != np.array(people)[None, :]

    print(
        f"\n{len(targets)} LFW same-person pairs with faces at full size, {int(strangers.sum())} stranger comparisons; "
        f"{pipeline.embedder.info.key} embedder, pair threshold {threshold}; machine: {cpu_name()}"
    )
    print("| face width (px) | face found | true accepts | false accepts |")
    print("|---|---|---|---|")
    for size in sizes:
        vectors = np.zeros_like(references)
        found = np.zeros(len(targets), dtype=bool)
        for i, (path, width) in enumerate(
            tqdm(targets, desc=f"faces {size or 'full'} px wide", unit="face", leave=False)
        ):
            face = subject(pipeline, shrunk(load_rgb(path), width, size))
            if face is not None:
                vectors[i], found[i] = face.embedding, True
        scores = vectors @ references.T
        genuine = np.diag(scores)[found]
        impostor = scores[found][strangers[found]]
        print(
            f"| {size or 'full size'} | {found.mean():.3f} | {np.mean(genuine >= threshold):.3f} | "
            f"{np.mean(impostor >= threshold):.4f} |"
        )


if __name__ == "__main__":
    main()
