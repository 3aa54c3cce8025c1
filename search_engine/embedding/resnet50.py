"""Whole-photo embeddings: torchvision's ResNet50 with its ImageNet weights, 2048-d, unit length.

This is the seed projects' baseline (a pretrained ResNet50 with its classifier removed) for "find
photos like this one": scenes, events, objects; it knows nothing of who is in a photo. The weights
are torchvision's ``IMAGENET1K_V1`` (He et al.'s original training recipe, the one the seeds'
Keras ResNet50 shares), not ``V2``: V2's label smoothing, mixup and cutmix lift ImageNet accuracy
but make penultimate-layer features transfer worse (Kornblith et al., 2021, "Why do better loss
functions lead to less transferable features?"), and retrieval uses only those features.

Weights are downloaded once into torch's hub cache by torchvision's own loader (its URL and
hash check), or read from a local state-dict file (``FACESEARCH_RESNET50_WEIGHTS``).
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import ModelUnavailableError
from ..types import EmbedderInfo
from . import normalise

log = logging.getLogger(__name__)

#: The weights' preprocessing resizes a photo's shorter side to 256 pixels. A photo whose shorter
#: side is more than this many times that is first shrunk by OpenCV's area average to this many
#: times, because torchvision's antialiased resize of a 24-megapixel photo costs more than the
#: network (the result differs from resizing in one step by a fraction of a grey level).
_PRESHRINK_FACTOR = 2


class ResNet50ImageEmbedder:
    """torchvision's ResNet50 (ImageNet-1k V1 weights), global-average-pooled, without its classifier.

    Args:
        weights: local state-dict file of torchvision's ``resnet50``; when None, torchvision
            downloads (or reuses) its cached copy.
        batch_size: photos per forward pass.
    """

    info = EmbedderInfo(name="resnet50", version="imagenet1k-v1", dim=2048)

    def __init__(self, weights: Path | None = None, batch_size: int = 16) -> None:
        self.weights = Path(weights) if weights else None
        self.batch_size = batch_size
        self._model = None
        self._preprocess = None

    @staticmethod
    def _torchvision_weights():
        from torchvision.models import ResNet50_Weights

        return ResNet50_Weights.IMAGENET1K_V1

    def _state_dict(self) -> dict:
        import torch

        if self.weights is not None:
            if not self.weights.is_file():
                raise ModelUnavailableError(
                    f"FACESEARCH_RESNET50_WEIGHTS points to {self.weights}, which is not a file"
                )
            try:
                # weights_only: a state dict needs no code execution, and a user-supplied file gets none.
                return torch.load(self.weights, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
                raise ModelUnavailableError(f"cannot read ResNet50 weights from {self.weights}: {exc}") from exc
        weights = self._torchvision_weights()
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError) as exc:
            name = weights.url.rsplit("/", 1)[1]
            raise ModelUnavailableError(
                f"ResNet50's ImageNet weights could not be downloaded ({type(exc).__name__}: {exc}).\n"
                f"Either let torchvision fetch {weights.url} once (into {cache}), or download that file "
                f"and set FACESEARCH_RESNET50_WEIGHTS=/path/to/{name}; or leave similar-photo search off "
                "(FACESEARCH_IMAGE_SEARCH unset)."
            ) from exc

    def load(self) -> ResNet50ImageEmbedder:
        """Build the network and read its weights. Idempotent.

        Raises:
            ModelUnavailableError: the weights can be neither downloaded nor read, naming both ways.
        """
        if self._model is not None:
            return self
        import torch
        from torchvision.models import resnet50

        state = self._state_dict()
        model = resnet50(weights=None)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelUnavailableError(f"{self.weights} is not a torchvision resnet50 state dict: {exc}") from exc
        # The penultimate layer (global average pool, 2048-d) is the photo's description.
        model.fc = torch.nn.Identity()
        self._model = model.eval().to(memory_format=torch.channels_last)
        self._preprocess = self._torchvision_weights().transforms()
        return self

    def prepare(self, image: np.ndarray):
        """The network's input for one (H, W, 3) uint8 RGB photo: the weights' own preprocessing
        (shorter side to 256 bilinear with antialiasing, centre crop 224, ImageNet mean and std)
        of its central square, a (3, 224, 224) float32 tensor."""
        import torch

        self.load()
        height, width = image.shape[:2]
        resize = self._preprocess.resize_size[0]
        shorter = min(height, width)
        if max(height, width) > shorter:
            # Only the centre (224/256 of the shorter side, squared) reaches the network, so the
            # central square is all the resize needs; resizing a 2 x 20,000 strip whole would make
            # it 256 x 2,560,000 pixels first (8 GB of floats).
            top, left = (height - shorter) // 2, (width - shorter) // 2
            image = image[top : top + shorter, left : left + shorter]
        if shorter > _PRESHRINK_FACTOR * resize:
            side = _PRESHRINK_FACTOR * resize
            image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        # torch wants a writable array; decoded photos may be read-only views.
        tensor = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
        return self._preprocess(tensor)

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """One description per photo.

        Args:
            images: (H, W, 3) uint8 RGB arrays, any sizes (each needs at least one pixel a side).

        Returns:
            (len(images), 2048) float32, rows of unit L2 norm, in order. The cosine similarity of
            two rows says how alike the photos look as wholes (scene, objects, layout), in [-1, 1]
            though, the features being non-negative, in practice [0, 1].
        """
        import torch

        self.load()
        if not images:
            return np.zeros((0, self.info.dim), np.float32)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.stack([self.prepare(image) for image in images[start : start + self.batch_size]])
                outputs.append(self._model(batch.contiguous(memory_format=torch.channels_last)).numpy())
        return normalise(np.concatenate(outputs))
