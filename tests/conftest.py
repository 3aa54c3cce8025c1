"""Shared fixtures: real models loaded once per session, real images, a clean environment per test."""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

#: Read before the per-test environment reset, so the Elasticsearch contract tests can find a
#: cluster and log in to it (URL, API key or user and password, CA bundle, index prefix).
ES_ENV = {name: value for name, value in os.environ.items() if name.startswith("FACESEARCH_ES_")}
ES_URL = ES_ENV.get("FACESEARCH_ES_URL")


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
