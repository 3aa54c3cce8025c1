"""File discovery and local indexing, in one process and with worker processes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from ingest.local import index_locally
from ingest.sources import collect_photos
from search_engine.config import Settings
from search_engine.imageio import load_image
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.indexing import index_photos
from search_engine.photo_hash import photo_hash
from search_engine.pipeline import FacePipeline
from search_engine.types import SearchFilters, Status


@pytest.fixture
def folder(tmp_path, astronaut, cameraman):
    root = tmp_path / "photos"
    for person, image in (("Eileen_Collins", astronaut), ("Cameraman", cameraman)):
        (root / person).mkdir(parents=True)
        Image.fromarray(image).save(root / person / f"{person}_0001.jpg")
    Image.fromarray(np.concatenate([astronaut, cameraman], axis=1)).save(root / "Cameraman" / "pair.png")
    (root / "Cameraman" / "notes.txt").write_text("x")
    return root


def test_collect_photos_labels_walks_and_dedupes(folder):
    collected = collect_photos([folder, folder / "Cameraman"], person_from_folder=True)
    names = [(p.path.name, p.person) for p in collected.photos]
    assert names == [
        ("Cameraman_0001.jpg", "Cameraman"),
        ("pair.png", "Cameraman"),
        ("Eileen_Collins_0001.jpg", "Eileen_Collins"),
    ]
    assert collected.ignored == 2  # notes.txt, seen through both paths
    explicit = collect_photos([folder / "Cameraman" / "notes.txt"], person="X")
    assert [(p.path.name, p.person) for p in explicit.photos] == [("notes.txt", "X")]
    with pytest.raises(ValueError):
        collect_photos([folder], person="X", person_from_folder=True)


def test_one_process_and_worker_processes_store_the_same_faces(folder, tmp_path):
    photos = collect_photos([folder], person_from_folder=True).photos
    stored = {}
    for workers in (1, 2):
        settings = Settings.from_env({}).replace(embedder="dlib", data_dir=tmp_path / f"w{workers}", workers=workers)
        summary, index = index_locally(settings, photos, progress=False)
        assert (summary.files, summary.indexed, summary.faces, summary.failures) == (3, 3, 4, [])
        stored[workers] = {(f.face_id, f.person) for p in photos for f in index.faces_of_source(str(p.path))}
        # The two-face photo in Cameraman's folder labels only its subject; the other face stays unnamed.
        assert index.count(SearchFilters(person="Cameraman")) == 2
    assert stored[1] == stored[2]


def test_photos_are_recorded_with_their_hash_and_an_older_record_gains_one(folder, tmp_path, detector, dlib_embedder):
    photos = collect_photos([folder], person_from_folder=True).photos
    pipeline = FacePipeline(detector, dlib_embedder)
    index = EmbeddedFaceIndex(tmp_path / "db", dlib_embedder.info)
    max_pixels = Settings.from_env({}).models.max_image_pixels
    index_photos(pipeline, index, photos, max_pixels)
    expected = {str(p.path): photo_hash(load_image(p.path, max_pixels)[0]) for p in photos}
    assert index.image_hashes() == expected
    # As an older version left it: the record of an unchanged photo without a hash.
    source = str(photos[0].path)
    index.record_sources([replace(index.get_sources([source])[source], image_hash=None)])
    faces = [(f.face_id, f.indexed_at) for f in index.faces_of_source(source)]
    outcomes = index_photos(pipeline, index, photos, max_pixels)
    assert [o.status for o in outcomes] == [Status.SKIPPED] * len(photos)
    assert index.image_hashes() == expected
    assert [(f.face_id, f.indexed_at) for f in index.faces_of_source(source)] == faces
    assert index.get_sources([source])[source].status == Status.INDEXED
