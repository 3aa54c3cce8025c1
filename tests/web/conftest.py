"""A small photo library indexed once per session with the real models (MTCNN + dlib), and the web
app on it. Every file lies under one media root; queries lie outside it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ingest.sources import collect_photos
from search_engine.config import Settings
from search_engine.index import create_index
from search_engine.pipeline import FacePipeline
from search_engine.service import SearchService
from web import create_app

from ..test_cli import save, variant

PEOPLE = ("Eileen_Collins", "Cameraman")
PHOTOS_EACH = 5


@dataclass(frozen=True)
class Library:
    """Where the indexed photos, the index and the query photos are."""

    root: Path
    data_dir: Path
    queries: Path

    @property
    def settings(self) -> Settings:
        return Settings.of(embedder="dlib", data_dir=self.data_dir, media_roots=(self.root,))


@pytest.fixture(scope="session")
def library(tmp_path_factory, astronaut, cameraman, detector, dlib_embedder) -> Library:
    """Five photos of each person (one folder each, labelled), a group photo of both (unlabelled),
    indexed; queries: one photo of each, the two side by side, a blank one and a text file."""
    base = tmp_path_factory.mktemp("web")
    root, queries = base / "media", base / "queries"
    faces = dict(zip(PEOPLE, (astronaut, cameraman)))
    for person, image in faces.items():
        for i in range(PHOTOS_EACH):
            save(variant(image, i), root / person / f"{person}_{i:04d}.{'png' if i == 0 else 'jpg'}")
    save(side_by_side(variant(astronaut, 7), variant(cameraman, 8)), root / "group" / "both.jpg")
    save(variant(astronaut, 11), queries / "eileen.jpg")
    save(variant(cameraman, 12), queries / "cameraman.jpg")
    save(side_by_side(cameraman, astronaut), queries / "pair.jpg")
    save(np.full((200, 300, 3), 200, np.uint8), queries / "blank.png")
    (queries / "notes.jpg").write_text("not a photo at all\n")

    data_dir = base / "data"
    service = service_for(Library(root, data_dir, queries).settings, detector, dlib_embedder)
    for person in PEOPLE:
        service.index_photos(collect_photos([root / person], person=person).photos)
    service.index_photos(collect_photos([root / "group"]).photos)
    service.close()
    return Library(root, data_dir, queries)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two photos pasted next to each other, cut to the shorter one's height."""
    height = min(left.shape[0], right.shape[0])
    return np.concatenate([left[:height], right[:height]], axis=1)


def service_for(settings: Settings, detector, embedder) -> SearchService:
    """A search service on the session's loaded models (loading them again would cost seconds)."""
    pipeline = FacePipeline(detector, embedder)
    index = create_index(settings.index, embedder.info)
    index.ensure()
    return SearchService(settings, pipeline, index)


@pytest.fixture(scope="session")
def service(library, detector, dlib_embedder) -> SearchService:
    return service_for(library.settings, detector, dlib_embedder)


@pytest.fixture()
def client(library, service):
    return create_app(library.settings, service=service).test_client()


@pytest.fixture(scope="session")
def described(library, tmp_path_factory, detector, dlib_embedder, image_embedder) -> SearchService:
    """The session's library indexed again, in its own data directory, with similar-photo search
    on: every photo's faces and its whole-image description (random ResNet50 weights, see
    tests/test_image_search.py). Its settings name that directory."""
    from search_engine.similar import SimilarPhotos

    settings = library.settings.replace(data_dir=tmp_path_factory.mktemp("described") / "data", image_search=True)
    faces = create_index(settings.index, dlib_embedder.info)
    faces.ensure()
    pipeline = FacePipeline(detector, dlib_embedder, image_embedder)
    service = SearchService(settings, pipeline, faces, SimilarPhotos.open(settings, image_embedder))
    service.index_photos(collect_photos([library.root]).photos)
    return service
