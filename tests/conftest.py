"""Shared fixtures: real models loaded once per session, real images, a clean environment per test."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

#: Frame rate of the generated test clip, and the default sampling interval (2 frames per second).
FPS = 10
STEP = 0.5

#: Read before the per-test environment reset, so the Elasticsearch contract tests can find a
#: cluster and log in to it (URL, API key or user and password, CA bundle, index prefix).
ES_ENV = {name: value for name, value in os.environ.items() if name.startswith("FACESEARCH_ES_")}
ES_URL = ES_ENV.get("FACESEARCH_ES_URL")


def elastic_settings(prefix: str | None = None):
    """Index settings for the cluster ``FACESEARCH_ES_URL`` names, with the credentials pytest
    started with (the per-test reset has removed them from the environment), under ``prefix`` or
    a fresh one; skips the test where no cluster is named (nothing imitates Elasticsearch)."""
    import uuid

    from search_engine.config import Settings

    if not ES_URL:
        pytest.skip("FACESEARCH_ES_URL is not set: no Elasticsearch cluster to run the contract against")
    return Settings.from_env(ES_ENV).replace(es_index_prefix=prefix or f"facesearch-test-{uuid.uuid4().hex[:8]}").index


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No FACESEARCH_* setting leaks into a test; each gets its own data directory."""
    for name in list(os.environ):
        if name.startswith("FACESEARCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FACESEARCH_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512x512 RGB, one face."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def cameraman() -> np.ndarray:
    """scikit-image's cameraman as 512x512 RGB: one face of another person."""
    from skimage import data

    return np.ascontiguousarray(np.stack([data.camera()] * 3, axis=-1))


@pytest.fixture(scope="session")
def lfw_faces() -> list[np.ndarray]:
    """A few of scikit-image's bundled 25x25 LFW crops (different people), upscaled to 100x100 RGB."""
    from skimage import data

    crops = data.lfw_subset()[:6]
    return [
        np.stack([cv2.resize((c * 255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC)] * 3, axis=-1)
        for c in crops
    ]


@pytest.fixture(scope="session")
def detector():
    from search_engine.detection import FaceDetector

    return FaceDetector().load()


@pytest.fixture(scope="session")
def dlib_embedder():
    from search_engine.embedding.dlib_resnet import DlibEmbedder

    return DlibEmbedder().load()


@pytest.fixture(scope="session")
def mobilefacenet_embedder():
    """MobileFaceNet from the model cache (scripts/setup.sh fetched its weights)."""
    from search_engine.embedding.mobilefacenet import MobileFaceNetEmbedder

    return MobileFaceNetEmbedder().load()


@pytest.fixture(scope="session")
def resnet50_weights(tmp_path_factory):
    """torchvision's ResNet50 with its own random initialisation (seed 0), as a state-dict file:
    ImageNet's weights cannot be downloaded here (tests/test_image_search.py)."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def image_embedder(resnet50_weights):
    from search_engine.embedding.resnet50 import ResNet50ImageEmbedder

    return ResNet50ImageEmbedder(weights=resnet50_weights, batch_size=2).load()


def write_video(path, frames, fps: int = FPS) -> None:
    """Write RGB frames as an MPEG-4 part 2 .mp4 (OpenCV's bundled FFmpeg always has that encoder)."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def face_crop(image: np.ndarray, size: int = 200) -> np.ndarray:
    """The face region of a 512x512 test photo (astronaut or cameraman), resized to ``size``."""
    return cv2.resize(image[20:300, 120:360], (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def scene(tmp_path_factory, astronaut, cameraman):
    """A 12 s, 640x360 clip: the astronaut on the left from 2 s to 7 s, the cameraman on the right
    from 5 s to 11 s, on a still grey background."""
    root = tmp_path_factory.mktemp("videos")
    left, right = face_crop(astronaut), face_crop(cameraman)
    frames = []
    for i in range(12 * FPS):
        t = i / FPS
        frame = np.full((360, 640, 3), 128, np.uint8)
        if 2.0 <= t < 7.0:
            frame[80:280, 40:240] = left
        if 5.0 <= t < 11.0:
            frame[80:280, 400:600] = right
        frames.append(frame)
    path = root / "scene.mp4"
    write_video(path, frames)
    return path
