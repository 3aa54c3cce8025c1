"""Similar-photo search: the ResNet50 wrapper with the real architecture, the image index in both
engines (Elasticsearch when ``FACESEARCH_ES_URL`` names a real cluster, skipped otherwise), and
ingest filling it.

ImageNet's weights cannot be downloaded on the machines these tests run on, so the network carries
torchvision's own random initialisation, saved as a state-dict file the way a user would point
``FACESEARCH_RESNET50_WEIGHTS`` at the real one: shapes, batching, preprocessing, loading and
storage are those of the product; what the scores mean is not tested here (bench/whole_image.py).
"""

from __future__ import annotations

import urllib.error
import uuid

import cv2
import numpy as np
import pytest

from search_engine.config import Settings
from search_engine.embedding import image_embedder_info
from search_engine.errors import DimensionMismatchError, ModelUnavailableError
from search_engine.types import EmbedderInfo, ImageRecord

from .conftest import elastic_settings

MODEL = EmbedderInfo("imagecontract", "r1", 16)


# --- the wrapper -------------------------------------------------------------------------------


def test_descriptions_are_unit_2048_d_rows_whatever_the_batching(image_embedder, astronaut, cameraman):
    photos = [astronaut, cameraman, astronaut[:300, :200], cv2.resize(cameraman, (90, 60))]
    together = image_embedder.embed_images(photos)
    assert together.shape == (4, 2048) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.concatenate([image_embedder.embed_images([photo]) for photo in photos])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert image_embedder.embed_images([]).shape == (0, 2048)


def test_preprocessing_is_the_weights_own(image_embedder, astronaut):
    import torch
    from torchvision.models import ResNet50_Weights

    reference = ResNet50_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(astronaut).permute(2, 0, 1))
    prepared = image_embedder.prepare(astronaut)
    assert prepared.shape == (3, 224, 224)
    torch.testing.assert_close(prepared, reference)
    # A photo far larger than the network's input is shrunk by OpenCV first; what reaches the
    # network differs from torchvision's one-step resize by a fraction of a grey level.
    big = cv2.resize(astronaut, (3000, 2400), interpolation=cv2.INTER_CUBIC)
    one_step = ResNet50_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(big).permute(2, 0, 1))
    assert float((image_embedder.prepare(big) - one_step).abs().mean()) < 0.02
    # A 3:2 photo is cut to its central square first, which holds everything the crop keeps.
    wide = np.ascontiguousarray(cv2.resize(astronaut, (600, 400), interpolation=cv2.INTER_AREA))
    reference = ResNet50_Weights.IMAGENET1K_V1.transforms()(torch.from_numpy(wide).permute(2, 0, 1))
    assert float((image_embedder.prepare(wide) - reference).abs().mean()) < 0.02


def test_a_hostile_strip_of_a_photo_is_described_without_blowing_up(image_embedder):
    strip = np.random.default_rng(2).integers(0, 256, (2, 20_000, 3), dtype=np.uint8)
    assert image_embedder.prepare(strip).shape == (3, 224, 224)
    assert image_embedder.embed_images([strip, strip.transpose(1, 0, 2)]).shape == (2, 2048)


def test_missing_or_unusable_weights_name_both_ways_to_provide_them(tmp_path, monkeypatch):
    from search_engine.embedding.resnet50 import ResNet50ImageEmbedder

    with pytest.raises(ModelUnavailableError, match="FACESEARCH_RESNET50_WEIGHTS points to"):
        ResNet50ImageEmbedder(weights=tmp_path / "absent.pth").load()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="cannot read ResNet50 weights"):
        ResNet50ImageEmbedder(weights=junk).load()

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    from torchvision.models import ResNet50_Weights

    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(ModelUnavailableError) as caught:
        ResNet50ImageEmbedder().load()
    assert "download.pytorch.org/models/resnet50-0676ba61.pth" in str(caught.value)
    assert "FACESEARCH_RESNET50_WEIGHTS" in str(caught.value)


# --- the image index contract --------------------------------------------------------------------


def make_image_index(kind: str, tmp_path, model: EmbedderInfo = MODEL, prefix: str | None = None):
    if kind == "embedded":
        from search_engine.index.image_embedded import EmbeddedImageIndex

        return EmbeddedImageIndex(tmp_path / "lancedb", model)
    from search_engine.index.image_elastic import ElasticImageIndex

    store = ElasticImageIndex.from_settings(elastic_settings(prefix), model)
    store.refresh_on_write = True
    return store


@pytest.fixture(params=["embedded", "elasticsearch"])
def images(request, tmp_path):
    store = make_image_index(request.param, tmp_path)
    store.ensure()
    yield store
    store.drop()
    store.close()


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def make_images(n: int = 12, seed: int = 0, dim: int = MODEL.dim) -> list[ImageRecord]:
    rng = np.random.default_rng(seed)
    return [
        ImageRecord(f"/photos/p{i:02d}.jpg", unit(rng.normal(size=dim)), f"hash{i}", 640 + i, 480) for i in range(n)
    ]


def test_image_index_starts_empty_and_finds_the_nearest_photos(images):
    images.ensure()
    assert images.count() == 0 and images.search(unit(np.ones(MODEL.dim)), k=3) == []
    stored = make_images()
    result = images.upsert(stored)
    assert result.indexed == len(stored) and not result.failed
    images.refresh()
    assert images.count() == len(stored)
    vectors = np.stack([r.embedding for r in stored])
    query = unit(stored[4].embedding + 0.3 * stored[7].embedding)
    hits = images.search(query, k=5)
    assert [h.source for h in hits] == [stored[j].source for j in np.argsort(-(vectors @ query))[:5]]
    assert hits[0].score == pytest.approx(float(vectors[4] @ query), abs=0.01)
    assert (hits[0].width, hits[0].height) == (644, 480)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    kept = images.search(stored[4].embedding, k=3, exclude_sources=(stored[4].source, stored[7].source))
    assert stored[4].source not in {h.source for h in kept} and stored[7].source not in {h.source for h in kept}
    assert len(kept) == 3


def test_image_index_overwrites_by_source_and_reads_back(images):
    stored = make_images(4)
    images.upsert(stored)
    changed = ImageRecord(stored[1].source, stored[3].embedding, "newhash", 10, 20)
    images.upsert([changed])
    images.refresh()
    assert images.count() == 4
    assert images.content_hashes([s.source for s in stored] + ["/photos/absent.jpg"]) == {
        stored[0].source: "hash0",
        stored[1].source: "newhash",
        stored[2].source: "hash2",
        stored[3].source: "hash3",
    }
    np.testing.assert_allclose(images.embedding(stored[1].source), stored[3].embedding, atol=1e-6)
    assert images.embedding("/photos/absent.jpg") is None
    assert images.delete_source(stored[1].source) == 1
    assert images.delete_source(stored[1].source) == 0
    images.refresh()
    assert images.count() == 3 and stored[1].source not in images.content_hashes([stored[1].source])


def test_image_index_refuses_bad_vectors_per_photo(images):
    good, wrong_size, not_finite = make_images(3)
    wrong_size.embedding = np.ones(MODEL.dim + 1, np.float32)
    not_finite.embedding = np.full(MODEL.dim, np.nan, np.float32)
    result = images.upsert([good, wrong_size, not_finite])
    assert result.indexed == 1
    assert {source for source, _ in result.failed} == {wrong_size.source, not_finite.source}
    with pytest.raises(DimensionMismatchError):
        images.search(np.ones(MODEL.dim + 2, np.float32), k=1)


def test_image_index_holds_a_video_s_keyframes_beside_photos(images):
    vectors = make_images(3, seed=4)
    keyframes = [
        ImageRecord("/videos/v.mp4", r.embedding, "vhash", 1280, 720, timestamp=t)
        for r, t in zip(vectors, (0.0, 10.0, 20.5))
    ]
    photo = make_images(1, seed=5)[0]
    assert images.upsert([*keyframes, photo]).indexed == 4
    images.refresh()
    assert images.count() == 4
    assert images.content_hashes(["/videos/v.mp4", photo.source]) == {"/videos/v.mp4": "vhash", photo.source: "hash0"}
    hit = images.search(keyframes[1].embedding, k=1)[0]
    assert (hit.source, hit.timestamp, hit.image_id) == ("/videos/v.mp4", 10.0, "/videos/v.mp4#t=10.000")
    assert images.search(photo.embedding, k=1)[0].timestamp is None
    np.testing.assert_allclose(images.embedding(keyframes[2].image_id), keyframes[2].embedding, atol=1e-6)
    assert images.embedding("/videos/v.mp4") is None
    assert images.delete_source("/videos/v.mp4") == 3
    images.refresh()
    assert images.count() == 1


@pytest.mark.parametrize("kind", ["embedded", "elasticsearch"])
def test_image_index_of_another_dimension_is_refused(kind, tmp_path):
    prefix = f"facesearch-test-{uuid.uuid4().hex[:8]}"
    first = make_image_index(kind, tmp_path, prefix=prefix)
    first.upsert(make_images(2))
    other = make_image_index(kind, tmp_path, EmbedderInfo(MODEL.name, MODEL.version, MODEL.dim * 2), prefix=prefix)
    try:
        with pytest.raises(DimensionMismatchError, match=f"{MODEL.dim}-d"):
            other.ensure()
    finally:
        first.drop()
        first.close()
        other.close()


def test_embedded_image_index_builds_its_vector_index_and_finds_new_photos_at_once(tmp_path):
    from search_engine.index.image_embedded import EmbeddedImageIndex

    stored = make_images(600, seed=3)
    store = EmbeddedImageIndex(tmp_path / "lancedb", MODEL, vector_index_rows=500)
    store.upsert(stored[:400])
    store.optimize()
    assert not store._indexed
    store.upsert(stored[400:])
    store.optimize()
    assert store._indexed
    vectors = np.stack([r.embedding for r in stored])
    for query in stored[::41]:
        exact = [stored[j].source for j in np.argsort(-(vectors @ query.embedding))[:5]]
        assert [h.source for h in store.search(query.embedding, k=5)] == exact
    newcomer = make_images(1, seed=99)[0]
    newcomer.source = "/photos/new.jpg"
    store.upsert([newcomer])
    assert store.search(newcomer.embedding, k=1)[0].source == "/photos/new.jpg"
    store.close()


# --- ingest and search -------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path, astronaut, cameraman):
    from PIL import Image

    from search_engine.indexing import PhotoInput

    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(1)
    files = {
        "astronaut.jpg": astronaut,
        "astronaut_small.png": cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA),
        "cameraman.jpg": cameraman,
        "noise.png": rng.integers(0, 256, (200, 300, 3), dtype=np.uint8),
    }
    for name, image in files.items():
        Image.fromarray(image).save(root / name)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a JPEG")
    return [PhotoInput(root / name) for name in (*files, "broken.jpg")]


def counting(monkeypatch, owner, name: str) -> list[int]:
    """Count the calls of ``owner.name`` (each call's first argument's length)."""
    calls: list[int] = []
    original = getattr(owner, name)

    def counted(batch, *args, **kwargs):
        calls.append(len(batch))
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_ingest_describes_each_photo_once_and_completes_an_older_index(
    photos, tmp_path, monkeypatch, detector, dlib_embedder, image_embedder
):
    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.index.image_embedded import EmbeddedImageIndex
    from search_engine.indexing import index_photos
    from search_engine.pipeline import FacePipeline
    from search_engine.types import Status

    max_pixels = Settings.from_env({}).models.max_image_pixels
    faces = EmbeddedFaceIndex(tmp_path / "db", dlib_embedder.info)
    # An index built with similar-photo search off.
    first = index_photos(FacePipeline(detector, dlib_embedder), faces, photos, max_pixels)
    assert [o.status for o in first] == [Status.INDEXED] * 3 + [Status.NO_FACE, Status.FAILED]

    images = EmbeddedImageIndex(tmp_path / "db", image_embedder.info)
    pipeline = FacePipeline(detector, dlib_embedder, image_embedder)
    detected = counting(monkeypatch, detector, "detect")
    described = counting(monkeypatch, image_embedder, "embed_images")
    second = index_photos(pipeline, faces, photos, max_pixels, images)
    # Turned on, it describes the photos already indexed without detecting their faces again.
    assert [o.status for o in second[:4]] == [Status.SKIPPED] * 4 and detected == []
    assert second[4].status == Status.FAILED and "broken.jpg" in second[4].source
    assert sum(described) == 4 and images.count() == 4
    sources = [str(p.path) for p in photos]
    stored = faces.get_sources(sources)
    assert images.content_hashes(sources) == {s: stored[s].content_hash for s in sources[:4]}

    # Unchanged photos are not described again.
    index_photos(pipeline, faces, photos, max_pixels, images)
    assert sum(described) == 4

    # A photo whose bytes changed is detected and described again; one that broke keeps what was
    # found in it before, its description as its faces.
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(photos[2].path))[:, ::-1])).save(photos[2].path)
    photos[3].path.write_bytes(b"broken now")
    third = index_photos(pipeline, faces, photos, max_pixels, images)
    assert third[2].status == Status.INDEXED and third[3].status == Status.FAILED
    assert sum(described) == 5 and images.count() == 4
    assert images.content_hashes([sources[2]])[sources[2]] == faces.get_sources([sources[2]])[sources[2]].content_hash


def test_service_finds_similar_photos_and_says_when_the_search_is_off(
    photos, tmp_path, detector, dlib_embedder, image_embedder, astronaut
):
    from search_engine.errors import NotFoundError
    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.pipeline import FacePipeline
    from search_engine.service import SearchService
    from search_engine.similar import SimilarPhotos

    settings = Settings.of(data_dir=tmp_path / "data")
    faces = EmbeddedFaceIndex(tmp_path / "data" / "lancedb", dlib_embedder.info)
    similar = SimilarPhotos.open(settings, image_embedder)
    service = SearchService(settings, FacePipeline(detector, dlib_embedder, image_embedder), faces, similar)
    service.index_photos(photos)
    hits = service.similar_photos().similar_image(astronaut, k=3)
    # The same photo, recompressed, is the nearest: whatever the weights, its description is almost its own.
    assert hits[0].source == str(photos[0].path) and hits[0].score > 0.99 and len(hits) == 3
    others = similar.similar_to_source(str(photos[0].path), k=10)
    assert str(photos[0].path) not in {h.source for h in others} and len(others) == 3
    assert similar.similar_file(photos[1].path, k=1)[0].source == str(photos[1].path)
    with pytest.raises(NotFoundError, match="not in the image index"):
        similar.similar_to_source(str(photos[4].path))
    # A process opened on the same data finds what the first one stored.
    again = SimilarPhotos.open(settings.replace(resnet50_weights=image_embedder.weights))
    assert again.similar_image(astronaut, k=1)[0].source == str(photos[0].path)
    off = SearchService(settings, FacePipeline(detector, dlib_embedder), faces)
    with pytest.raises(ModelUnavailableError, match="FACESEARCH_IMAGE_SEARCH=1"):
        off.similar_photos()


def test_cli_indexes_photos_for_similar_search_and_lists_them(photos, tmp_path, monkeypatch, capsys, resnet50_weights):
    import json

    from facesearch.cli import EXIT_ERROR, EXIT_PARTIAL, main

    data = ["--data-dir", str(tmp_path / "data"), "--embedder", "dlib"]
    monkeypatch.setenv("FACESEARCH_RESNET50_WEIGHTS", str(resnet50_weights))
    assert main(["similar", str(photos[0].path), *data]) == 0
    assert "the image index is empty" in capsys.readouterr().out
    folder = str(photos[0].path.parent)
    # The broken file fails the run (listed), the others are indexed and described.
    assert main(["index", folder, *data, "--image-search", "--quiet", "--workers", "1"]) == EXIT_PARTIAL
    capsys.readouterr()
    assert main(["similar", str(photos[1].path), *data, "--json", "--k", "2"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["model"] == "resnet50-imagenet1k-v1" and found["photos"] == 4
    assert [hit["source"] for hit in found["hits"]][0] == str(photos[1].path) and len(found["hits"]) == 2
    assert main(["similar", str(photos[0].path), *data]) == 0
    assert "among 4 photos" in capsys.readouterr().out
    assert main(["stats", *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["similar_photos"] is None  # off in this environment
    monkeypatch.setenv("FACESEARCH_IMAGE_SEARCH", "1")
    assert main(["stats", *data, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["similar_photos"] == {"model": "resnet50-imagenet1k-v1", "pictures": 4}
    assert main(["stats", *data]) == 0
    assert "similar photos: 4 pictures" in capsys.readouterr().out
    monkeypatch.delenv("FACESEARCH_IMAGE_SEARCH")
    assert main(["similar", str(photos[4].path), *data]) == EXIT_ERROR
    assert "broken.jpg" in capsys.readouterr().err

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    from torchvision.models import ResNet50_Weights

    monkeypatch.delenv("FACESEARCH_RESNET50_WEIGHTS")
    monkeypatch.setattr(type(ResNet50_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    assert main(["similar", str(photos[0].path), *data]) == EXIT_ERROR
    assert "FACESEARCH_RESNET50_WEIGHTS" in capsys.readouterr().err


def test_videos_give_their_keyframes_and_an_older_index_gains_them(scene, tmp_path, resnet50_weights):
    from ingest.local import index_locally
    from search_engine.index.image_embedded import EmbeddedImageIndex

    settings = Settings.of(
        embedder="dlib", data_dir=tmp_path / "data", workers=1, resnet50_weights=resnet50_weights, video_fps=2.0
    )
    summary, faces = index_locally(settings, [], progress=False, videos=[scene])
    assert summary.indexed == 1
    tracks = sorted(f.face_id for f in faces.faces_of_source(str(scene)))
    faces.close()
    # Image search turned on: the unchanged video is analysed again for its keyframes, its tracks kept.
    on = settings.replace(image_search=True)
    summary, faces = index_locally(on, [], progress=False, videos=[scene])
    assert summary.indexed == 1 and sorted(f.face_id for f in faces.faces_of_source(str(scene))) == tracks
    images = EmbeddedImageIndex(tmp_path / "data" / "lancedb", image_embedder_info())
    # A 12 s clip sampled at 2 frames a second: keyframes at 0 and 10 s.
    described = images.search(images.embedding(f"{scene}#t=10.000"), k=5)
    assert sorted(h.timestamp for h in described) == [0.0, 10.0] and {h.source for h in described} == {str(scene)}
    assert (described[0].width, described[0].height) == (640, 360)
    summary, _ = index_locally(on, [], progress=False, videos=[scene])
    assert summary.skipped == 1 and images.count() == 2


def test_the_celery_segment_steps_store_a_video_s_keyframes_once(
    scene, tmp_path, detector, dlib_embedder, image_embedder
):
    """What the worker's ``index_video`` task runs, step by step as it replaces itself, with
    similar-photo search on: each segment's keyframes stored with its tracks, none twice."""
    from ingest.tasks import index_video_segment
    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.pipeline import FacePipeline
    from search_engine.service import SearchService
    from search_engine.similar import SimilarPhotos
    from search_engine.types import Status

    settings = Settings.of(embedder="dlib", data_dir=tmp_path / "data", video_segment_seconds=5.0, image_search=True)
    faces = EmbeddedFaceIndex(tmp_path / "data" / "lancedb", dlib_embedder.info)
    similar = SimilarPhotos.open(settings, image_embedder)
    service = SearchService(settings, FacePipeline(detector, dlib_embedder, image_embedder), faces, similar)
    step, steps = index_video_segment(service, str(scene), 0.0, "", 0), 1
    while step.outcome is None:
        step, steps = index_video_segment(service, str(scene), step.next_start, step.digest, step.faces), steps + 1
    assert steps == 3 and step.outcome.status == Status.INDEXED
    stored = similar.images.search(similar.images.embedding(f"{scene}#t=0.000"), k=10)
    # Keyframes fall on the multiples of 10 s whichever segment holds them: 0 s in the first, 10 s in the third.
    assert sorted(h.timestamp for h in stored) == [0.0, 10.0]
    again = index_video_segment(service, str(scene), 0.0, "", 0)
    assert again.outcome.status == Status.SKIPPED and similar.images.count() == 2
