"""Face embedders: one wrapper per model, one instance per process (see :func:`create_embedder`);
and the whole-photo model of similar-photo search (:func:`create_image_embedder`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..calibration import Calibration
from ..config import ModelSettings, SearchSettings
from ..errors import ModelUnavailableError
from ..types import Detection, EmbedderInfo

if TYPE_CHECKING:
    from .resnet50 import ResNet50ImageEmbedder

log = logging.getLogger(__name__)

#: Cosine similarity from which a stored face is close enough to the query to join it in ranking
#: (query expansion, :mod:`search_engine.expansion`), per embedder key. Chosen on LFW retrieval by
#: ``bench/lfw_retrieval.py``. dlib: 0.92 to 0.94 give the same mAP@20; lower lets other people in.
#: MobileFaceNet (mAP@20 strict, 2026-12-01): 0.4 0.9802, 0.5 0.9806, 0.6 0.9793, 0.7 0.9773, off 0.9747.
#: Both lie within 0.015 of their calibration's Gumbel location (the most likely best stranger score
#: in a gallery of ~9k faces), which is the value a model calibrated elsewhere gets.
EXPANSION_THRESHOLDS: dict[str, float] = {"dlib-r1": 0.93, "mobilefacenet-ms1m-r1": 0.5}


class Embedder(Protocol):
    """Aligns and embeds faces. ``embed`` returns unit-length float32 vectors of ``info.dim``."""

    info: EmbedderInfo

    def load(self) -> Embedder:
        """Load weights once; later calls return at once."""

    def embed(self, batch: Sequence[tuple[np.ndarray, Sequence[Detection]]], query: bool = False) -> list[np.ndarray]:
        """Embed every detected face of every image.

        Args:
            batch: pairs of an (H, W, 3) uint8 RGB image and its detections (source pixels).
            query: the faces are what a search looks for, not faces to store. A query is embedded
                once per search and a stored face once per ingest, so a model may spend more on
                queries (each model says what, with the measurement that decided it).

        Returns:
            One (len(detections), dim) float32 array per image, rows of unit L2 norm, in detection order.
        """


#: For a model without a calibration, the similarity that links faces into one video track:
#: facenet-pytorch's VGGFace2 model separates LFW pairs at a Euclidean distance of about 1.1 between
#: unit vectors, i.e. cosine 1 - 1.1**2 / 2 (published, not measured here: no weights here).
_PUBLISHED_SAME_PERSON = {"facenet": 0.395}


def track_link_similarity(model: EmbedderInfo, calibration: Calibration | None) -> float:
    """The cosine similarity a face needs to its track's last face to join it: a 1:1 decision, so
    the pair threshold of the model's calibration where there is one, else the published one."""
    if calibration is not None:
        return calibration.pair_threshold
    return _PUBLISHED_SAME_PERSON.get(model.name, 0.5)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def split_rows(vectors: np.ndarray, counts: Sequence[int]) -> list[np.ndarray]:
    """``vectors`` cut into consecutive blocks of ``counts`` rows (one block per image)."""
    return np.split(vectors, np.cumsum(counts)[:-1]) if counts else []


def run_in_batches(network, inputs: np.ndarray, batch_size: int, dim: int) -> np.ndarray:
    """A torch ``network``'s (N, dim) float32 outputs for N ``inputs``, ``batch_size`` at a time."""
    import torch

    with torch.inference_mode():
        parts = [
            network(torch.from_numpy(inputs[start : start + batch_size])).numpy()
            for start in range(0, len(inputs), batch_size)
        ]
    return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)


def embed_aligned(
    batch: Sequence[tuple[np.ndarray, Sequence[Detection]]],
    align: Callable[[np.ndarray, Sequence[tuple[float, float]]], np.ndarray],
    describe: Callable[[np.ndarray], np.ndarray],
    dim: int,
    flip: bool,
) -> list[np.ndarray]:
    """:meth:`Embedder.embed` for a model on landmark-aligned chips: every face cut by ``align``
    (image, landmarks) into a uint8 RGB chip, all chips (and, with ``flip``, their mirror images,
    whose vectors are added to theirs) described at once by ``describe`` ((N, H, W, 3) uint8 chips
    to (N, dim) vectors), then scaled to unit length and split per image."""
    chips = [align(image, det.landmarks) for image, detections in batch for det in detections]
    counts = [len(detections) for _, detections in batch]
    if not chips:
        return [np.zeros((0, dim), np.float32) for _ in batch]
    stacked = np.stack(chips)
    if flip:
        stacked = np.concatenate([stacked, stacked[:, :, ::-1]])
    vectors = describe(np.ascontiguousarray(stacked))
    if flip:
        vectors = vectors[: len(chips)] + vectors[len(chips) :]
    return split_rows(normalise(vectors), counts)


def expansion_threshold(settings: SearchSettings, model: EmbedderInfo, calibration: Calibration | None) -> float | None:
    """``FACESEARCH_EXPANSION_THRESHOLD`` when set, else ``model``'s value measured on LFW, else
    its calibration's Gumbel location, else None (no query expansion for an uncalibrated model)."""
    if settings.expansion_threshold is not None:
        return settings.expansion_threshold
    if model.key in EXPANSION_THRESHOLDS:
        return EXPANSION_THRESHOLDS[model.key]
    return None if calibration is None else round(calibration.location, 3)


def build_embedder(name: str, settings: ModelSettings) -> Embedder:
    """A (not yet loaded) embedder by name: ``facenet``, ``mobilefacenet`` or ``dlib``."""
    if name == "dlib":
        from .dlib_resnet import DlibEmbedder

        return DlibEmbedder()
    if name == "mobilefacenet":
        from .mobilefacenet import MobileFaceNetEmbedder

        return MobileFaceNetEmbedder(weights=settings.mobilefacenet_weights)
    if name == "facenet":
        from .facenet import FacenetEmbedder

        return FacenetEmbedder(weights=settings.facenet_weights, device=settings.device)
    raise ModelUnavailableError(f"unknown embedder {name!r}; choose facenet, mobilefacenet or dlib")


def resolve_embedder_name(settings: ModelSettings) -> str:
    """The embedder the settings mean. ``auto`` takes the first whose weights are at hand
    (configured, cached, or fetchable now), with a one-line notice for each one passed over:

    1. ``facenet``: the design's model (VGGFace2; LFW verification 99.65% as published), where
       its weights can be downloaded;
    2. ``mobilefacenet``: measured and calibrated here (README), fetched with npm;
    3. ``dlib``: always there (a PyPI package), the weakest.

    Loads no model, so a parent process can decide for its workers."""
    if settings.embedder != "auto":
        return settings.embedder
    from .facenet import FacenetEmbedder
    from .mobilefacenet import MobileFaceNetEmbedder

    candidates = (
        ("facenet", lambda: FacenetEmbedder(weights=settings.facenet_weights).weights_file()),
        ("mobilefacenet", lambda: MobileFaceNetEmbedder(weights=settings.mobilefacenet_weights).weights_dir()),
    )
    for name, find_weights in candidates:
        try:
            find_weights()
        except ModelUnavailableError as exc:
            log.warning("%s unavailable: %s", name, exc.message.splitlines()[0])
            continue
        return name
    log.warning("Using the offline dlib embedder (FACESEARCH_EMBEDDER names one and skips these checks).")
    return "dlib"


def embedder_info(settings: ModelSettings) -> EmbedderInfo:
    """Name, version and dimension of the embedder the settings mean, without loading its model
    (``auto`` is resolved as :func:`resolve_embedder_name` does, which may fetch FaceNet's weights)."""
    return build_embedder(resolve_embedder_name(settings), settings).info


def create_embedder(settings: ModelSettings) -> Embedder:
    """The loaded embedder the settings ask for (see :func:`resolve_embedder_name` for ``auto``).

    An embedder named explicitly either loads or raises :class:`ModelUnavailableError`.
    """
    return build_embedder(resolve_embedder_name(settings), settings).load()


def image_embedder_info() -> EmbedderInfo:
    """Name, version and dimension of the whole-photo model, without loading it."""
    from .resnet50 import ResNet50ImageEmbedder

    return ResNet50ImageEmbedder.info


def create_image_embedder(settings: ModelSettings) -> ResNet50ImageEmbedder | None:
    """The loaded whole-photo model when ``FACESEARCH_IMAGE_SEARCH`` is on, else None.

    Raises:
        ModelUnavailableError: it is on and the weights can be neither downloaded nor read.
    """
    if not settings.image_search:
        return None
    from .resnet50 import ResNet50ImageEmbedder

    return ResNet50ImageEmbedder(weights=settings.resnet50_weights).load()
