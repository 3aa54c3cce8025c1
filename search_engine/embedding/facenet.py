"""FaceNet (InceptionResnetV1, VGGFace2 weights) from facenet-pytorch, 512-d.

Weights are either downloaded once from facenet-pytorch's release into torch's hub cache, where
facenet-pytorch itself keeps them (machines with internet), or read from a local state-dict file (``FACESEARCH_FACENET_WEIGHTS``). Faces are cropped from the
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
from . import normalise, split_rows

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
    crop = image[y1 : max(y2, y1 + 1), x1 : max(x2, x1 + 1)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class FacenetEmbedder:
    """InceptionResnetV1 with VGGFace2 weights.

    Args:
        weights: local state-dict file; when None, facenet-pytorch downloads (or reuses) its cached copy.
        device: torch device name.
        batch_size: crops per forward pass.
        flip: average each crop's vector with its mirror image's, queries and stored faces alike
            (not measured here, where the weights cannot be had).
    """

    info = EmbedderInfo(name="facenet", version="vggface2-r1", dim=512)

    def __init__(self, weights: Path | None = None, device: str = "cpu", batch_size: int = 64, flip: bool = True):
        self.weights = Path(weights) if weights else None
        self.device = device
        self.batch_size = batch_size
        self.flip = flip
        self._model = None

    def weights_file(self) -> Path:
        """The state-dict file to load: the configured one, or facenet-pytorch's cached download
        (fetched now, from the same URL and into the same torch hub folder facenet-pytorch uses).

        Raises:
            ModelUnavailableError: naming both ways to provide the weights.
        """
        if self.weights is not None:
            if not self.weights.is_file():
                raise ModelUnavailableError(f"FACESEARCH_FACENET_WEIGHTS points to {self.weights}, which is not a file")
            return self.weights
        from torch.hub import download_url_to_file, get_dir

        cached = Path(get_dir()).parent / "checkpoints" / WEIGHTS_URL.rsplit("/", 1)[1]
        if not cached.is_file():
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                log.info("downloading FaceNet weights to %s", cached)
                download_url_to_file(WEIGHTS_URL, str(cached))
            except OSError as exc:
                raise ModelUnavailableError(
                    f"FaceNet weights could not be downloaded ({type(exc).__name__}: {exc}).\n"
                    f"Either let facesearch fetch {WEIGHTS_URL} once (into {cached.parent}), or download that "
                    "file and set FACESEARCH_FACENET_WEIGHTS=/path/to/20180402-114759-vggface2.pt; "
                    "or use the offline embedder with FACESEARCH_EMBEDDER=dlib."
                ) from exc
        return cached

    def load(self) -> FacenetEmbedder:
        if self._model is not None:
            return self
        try:
            import torch
            from facenet_pytorch import InceptionResnetV1
        except ImportError as exc:
            raise ModelUnavailableError(f"the facenet embedder needs facenet-pytorch and torchvision: {exc}") from exc
        path = self.weights_file()
        try:
            # weights_only: a state dict needs no code execution, and a user-supplied file gets none.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            raise ModelUnavailableError(f"cannot read FaceNet weights from {path}: {exc}") from exc
        # The VGGFace2 checkpoint carries its 8631-class training head; we only use the embedding.
        state = {key: value for key, value in state.items() if not key.startswith("logits.")}
        model = InceptionResnetV1(pretrained=None, classify=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelUnavailableError(f"{path} is not an InceptionResnetV1 state dict: {exc}") from exc
        self._model = model.eval().to(self.device, memory_format=torch.channels_last)
        return self

    def embed(self, batch: Sequence[tuple[np.ndarray, Sequence[Detection]]], query: bool = False) -> list[np.ndarray]:
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
        return split_rows(normalise(np.concatenate(outputs)), counts)
