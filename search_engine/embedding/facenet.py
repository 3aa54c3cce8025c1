"""FaceNet (InceptionResnetV1, VGGFace2 weights) from facenet-pytorch, 512-d.

Weights are either downloaded by facenet-pytorch into torch's hub cache (machines with internet)
or read from a local state-dict file (``FACESEARCH_FACENET_WEIGHTS``). Faces are cropped from the
detector box with facenet-pytorch's margin convention, resized to 160x160 and standardised to
``(x - 127.5) / 128`` as the model was trained; each vector averages the crop and its mirror.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelUnavailableError
from ..types import Detection, EmbedderInfo
from . import normalise

log = logging.getLogger(__name__)

IMAGE_SIZE = 160
#: Margin around the box, in pixels of the 160-pixel crop (facenet-pytorch's LFW evaluation uses 14).
MARGIN = 14
WEIGHTS_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"


def crop_face(image: np.ndarray, detection: Detection, size: int = IMAGE_SIZE, margin: int = MARGIN) -> np.ndarray:
    """A (size, size, 3) uint8 RGB crop of the box widened by ``margin`` crop pixels, clipped to the image."""
    box = detection.box
    pad_x = margin * box.width / (size - margin) / 2
    pad_y = margin * box.height / (size - margin) / 2
    height, width = image.shape[:2]
    x1, y1 = int(max(box.x1 - pad_x, 0)), int(max(box.y1 - pad_y, 0))
    x2, y2 = int(min(box.x2 + pad_x, width)), int(min(box.y2 + pad_y, height))
    crop = image[y1:max(y2, y1 + 1), x1:max(x2, x1 + 1)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class FacenetEmbedder:
    """InceptionResnetV1 with VGGFace2 weights.

    Args:
        weights: local state-dict file; when None, facenet-pytorch downloads (or reuses) its cached copy.
        device: torch device name.
        batch_size: crops per forward pass.
        flip: average each crop's vector with its mirror image's.
    """

    info = EmbedderInfo(name="facenet", version="vggface2-r1", dim=512)

    def __init__(self, weights: Path | None = None, device: str = "cpu", batch_size: int = 64, flip: bool = True):
        self.weights = Path(weights) if weights else None
        self.device = device
        self.batch_size = batch_size
        self.flip = flip
        self._model = None

    def load(self) -> FacenetEmbedder:
        if self._model is not None:
            return self
        try:
            import torch
            from facenet_pytorch import InceptionResnetV1
        except ImportError as exc:
            raise ModelUnavailableError(f"the facenet embedder needs facenet-pytorch and torchvision: {exc}") from exc
        if self.weights is not None:
            model = self._from_file(torch, InceptionResnetV1)
        else:
            model = self._downloaded(InceptionResnetV1)
        self._model = model.eval().to(self.device)
        return self

    def _from_file(self, torch, network):
        if not self.weights.is_file():
            raise ModelUnavailableError(f"FACESEARCH_FACENET_WEIGHTS points to {self.weights}, which is not a file")
        try:
            # weights_only: a state dict needs no code execution, and a user-supplied file gets none.
            state = torch.load(self.weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise ModelUnavailableError(f"cannot read FaceNet weights from {self.weights}: {exc}") from exc
        # The VGGFace2 checkpoint carries its 8631-class training head; we only use the embedding.
        state = {key: value for key, value in state.items() if not key.startswith("logits.")}
        model = network(pretrained=None, classify=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelUnavailableError(f"{self.weights} is not an InceptionResnetV1 state dict: {exc}") from exc
        return model

    def _downloaded(self, network):
        try:
            return network(pretrained="vggface2", classify=False)
        except (OSError, RuntimeError, EOFError) as exc:
            raise ModelUnavailableError(
                f"FaceNet weights could not be downloaded ({type(exc).__name__}: {exc}).\n"
                f"Either allow facenet-pytorch to fetch {WEIGHTS_URL} once, or download that file and set "
                "FACESEARCH_FACENET_WEIGHTS=/path/to/20180402-114759-vggface2.pt; "
                "or use the offline embedder with FACESEARCH_EMBEDDER=dlib."
            ) from exc

    def embed(self, batch: Sequence[tuple[np.ndarray, Sequence[Detection]]]) -> list[np.ndarray]:
        import torch

        self.load()
        crops = [crop_face(image, det) for image, detections in batch for det in detections]
        counts = [len(detections) for _, detections in batch]
        if not crops:
            return [np.zeros((0, self.info.dim), np.float32) for _ in batch]
        stacked = np.stack(crops).astype(np.float32)
        tensor = torch.from_numpy((stacked - 127.5) / 128.0).permute(0, 3, 1, 2)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(tensor), self.batch_size):
                part = tensor[start : start + self.batch_size].to(self.device)
                vectors = self._model(part)
                if self.flip:
                    vectors = vectors + self._model(torch.flip(part, dims=[3]))
                outputs.append(vectors.cpu().numpy())
        vectors = normalise(np.concatenate(outputs))
        out, start = [], 0
        for count in counts:
            out.append(vectors[start : start + count])
            start += count
        return out
