"""One contract, two engines: every test runs against LanceDB, and against Elasticsearch when
``FACESEARCH_ES_URL`` names a real cluster (skipped otherwise; nothing imitates Elasticsearch)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from search_engine.calibration import Calibration
from search_engine.errors import DimensionMismatchError
from search_engine.ids import face_id
from search_engine.types import (
    Box,
    EmbedderInfo,
    FaceDecision,
    FaceRecord,
    Grouping,
    PersonRecord,
    SearchFilters,
    SourceRecord,
)

from .conftest import elastic_settings

MODEL = EmbedderInfo("contract", "r1", 8)
PEOPLE = ("Ada_Lovelace", "Grace_Hopper", None)


def make_index(kind: str, tmp_path, model: EmbedderInfo = MODEL, prefix: str | None = None):
    if kind == "embedded":
        from search_engine.index.embedded import EmbeddedFaceIndex

        return EmbeddedFaceIndex(tmp_path / "lancedb", model)
    from search_engine.index.elastic import ElasticFaceIndex

    return ElasticFaceIndex.from_settings(elastic_settings(prefix), model)


@pytest.fixture(params=["embedded", "elasticsearch"])
def kind(request):
    return request.param


@pytest.fixture
def index(kind, tmp_path):
    store = make_index(kind, tmp_path)
    store.ensure()
    yield store
    store.drop()
    store.close()


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def make_faces(n: int = 30, seed: int = 0) -> list[FaceRecord]:
    rng = np.random.default_rng(seed)
    faces = []
    for i in range(n):
        source = f"/photos/img_{i // 3:03d}.jpg" if i % 5 else f"/videos/clip_{i % 2}.mp4"
        is_video = source.endswith(".mp4")
        faces.append(
            FaceRecord(
                face_id=face_id(MODEL.key, source, i % 3, frame=i if is_video else None),
                source=source,
                face_no=i % 3,
                box=Box(10.0 * i, 5.0, 10.0 * i + 40, 45.0),
                probability=0.99,
                embedding=unit(rng.normal(size=MODEL.dim)),
                model=MODEL.key,
                person=PEOPLE[i % 3],
                label=PEOPLE[i % 3],
                media_type="video" if is_video else "photo",
                video=source.rsplit("/", 1)[1] if is_video else None,
                frame=i if is_video else None,
                timestamp=i * 0.5 if is_video else None,
                start=i * 0.5 - 1.0 if is_video else None,
                end=i * 0.5 + 2.5 if is_video else None,
            )
        )
    return faces


@pytest.fixture
def filled(index):
    faces = make_faces()
    result = index.upsert(faces)
    assert result.indexed == len(faces) and not result.failed
    index.refresh()
    return faces


def test_ensure_is_idempotent_and_starts_empty(index):
    index.ensure()
    assert index.count() == 0
    assert index.search(unit(np.ones(MODEL.dim)), k=5) == []


def test_exact_match_ranks_first_with_cosine_score(index, filled):
    target = filled[7]
    hits = index.search(target.embedding, k=10)
    assert hits[0].face_id == target.face_id
    assert hits[0].score == pytest.approx(1.0, abs=0.02)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    expected = sorted((float(f.embedding @ target.embedding) for f in filled), reverse=True)[:10]
    assert scores == pytest.approx(expected, abs=0.02)
    assert hits[0].box == target.box and hits[0].person == target.person and hits[0].source == target.source


def test_upsert_is_idempotent(index, filled):
    again = index.upsert(filled)
    index.refresh()
    assert again.indexed == len(filled)
    assert index.count() == len(filled)


def test_person_filter_applies_before_ranking(index, filled):
    target = next(f for f in filled if f.person is None)
    hits = index.search(target.embedding, k=5, filters=SearchFilters(person="Grace_Hopper"))
    assert len(hits) == 5
    assert {h.person for h in hits} == {"Grace_Hopper"}


def test_video_and_media_type_filters(index, filled):
    hits = index.search(filled[0].embedding, k=50, filters=SearchFilters(video="clip_0.mp4"))
    assert hits and all(h.video == "clip_0.mp4" and h.media_type == "video" for h in hits)
    assert len(hits) == sum(f.video == "clip_0.mp4" for f in filled)
    photos = index.search(filled[0].embedding, k=50, filters=SearchFilters(media_type="photo"))
    assert len(photos) == sum(f.media_type == "photo" for f in filled)
    assert all(h.timestamp is None and h.start is None and h.end is None for h in photos)
    video_hit = hits[0]
    stored = next(f for f in filled if f.face_id == video_hit.face_id)
    assert video_hit.frame == stored.frame and video_hit.timestamp == pytest.approx(stored.timestamp)
    assert (video_hit.start, video_hit.end) == pytest.approx((stored.start, stored.end))
    assert index.get(video_hit.face_id).end == pytest.approx(stored.end)


def test_min_score_is_a_floor(index, filled):
    target = filled[3]
    hits = index.search(target.embedding, k=30, filters=SearchFilters(min_score=0.3))
    assert hits[0].face_id == target.face_id
    assert all(h.score >= 0.3 - 1e-3 for h in hits)
    assert len(hits) == sum(float(f.embedding @ target.embedding) >= 0.3 for f in filled)


def test_hits_bring_their_stored_vectors_when_asked(index, filled):
    target = filled[5]
    plain = index.search(target.embedding, k=5)
    with_vectors = index.search(target.embedding, k=5, with_embeddings=True)
    assert with_vectors == plain and all(hit.embedding is None for hit in plain)
    stored = {face.face_id: face.embedding for face in filled}
    for hit in with_vectors:
        assert hit.embedding.dtype == np.float32
        np.testing.assert_allclose(hit.embedding, stored[hit.face_id], atol=1e-6)
        assert float(hit.embedding @ target.embedding) == pytest.approx(hit.score, abs=1e-3)
        assert "embedding" not in hit.to_dict()


def test_exclude_sources(index, filled):
    target = filled[4]
    hits = index.search(target.embedding, k=30, filters=SearchFilters(exclude_sources=(target.source,)))
    assert hits and all(h.source != target.source for h in hits)


def test_collapse_keeps_best_hit_per_person(index, filled):
    target = filled[1]
    hits = index.search(target.embedding, k=3, collapse="person")
    people = [h.person for h in hits]
    assert len(people) == len(set(people))
    assert hits[0].face_id == target.face_id
    for hit in hits:
        best = max((f for f in filled if f.person == hit.person), key=lambda f: float(f.embedding @ target.embedding))
        assert hit.face_id == best.face_id


def test_get_faces_of_source_and_delete_source(index, filled):
    target = filled[2]
    stored = index.get(target.face_id)
    assert stored is not None and stored.source == target.source and stored.person == target.person
    assert np.allclose(stored.embedding, target.embedding, atol=1e-6)
    assert index.get("no-such-face") is None
    same_source = [f for f in filled if f.source == target.source]
    listed = index.faces_of_source(target.source)
    assert sorted(f.face_id for f in listed) == sorted(f.face_id for f in same_source)
    assert index.delete_source(target.source) == len(same_source)
    index.refresh()
    assert index.count() == len(filled) - len(same_source)
    assert index.faces_of_source(target.source) == []


def test_embeddings_by_face_id(index, filled):
    wanted = [filled[4], filled[9], filled[4]]
    found = index.embeddings([f.face_id for f in wanted] + ["no-such-face"])
    assert set(found) == {filled[4].face_id, filled[9].face_id}
    for face in wanted:
        assert found[face.face_id].dtype == np.float32
        assert np.allclose(found[face.face_id], face.embedding, atol=1e-6)
    assert index.embeddings([]) == {}


def test_records_by_face_id_are_what_get_reads(index, filled):
    wanted = [filled[2], filled[5], filled[2]]
    found = index.records([f.face_id for f in wanted] + ["no-such-face"])
    assert set(found) == {filled[2].face_id, filled[5].face_id}
    for face in wanted:
        one = index.get(face.face_id)
        assert found[face.face_id].box == one.box and found[face.face_id].source == face.source
        assert (found[face.face_id].person, found[face.face_id].label) == (face.person, face.label)
        np.testing.assert_allclose(found[face.face_id].embedding, face.embedding, atol=1e-6)
    assert index.records([]) == {}


def test_counts_and_facets(index, filled):
    assert index.count() == len(filled)
    assert index.count(SearchFilters(person="Ada_Lovelace")) == sum(f.person == "Ada_Lovelace" for f in filled)
    people = index.facets("person")
    assert {f.value: f.count for f in people} == {
        p: sum(f.person == p for f in filled) for p in PEOPLE if p is not None
    }
    counts = [f.count for f in people]
    assert counts == sorted(counts, reverse=True)
    videos = index.facets("video")
    assert {f.value for f in videos} == {"clip_0.mp4", "clip_1.mp4"}
    assert len(index.facets("source", size=2)) == 2


def test_source_records_overwrite(index):
    index.record_sources(
        [SourceRecord("/a.jpg", "h1", MODEL.key, 2), SourceRecord("/b.jpg", "", MODEL.key, 0, "failed", "corrupt")]
    )
    index.record_sources([SourceRecord("/a.jpg", "h2", MODEL.key, 3)])
    index.refresh()
    found = index.get_sources(["/a.jpg", "/b.jpg", "/c.jpg"])
    assert set(found) == {"/a.jpg", "/b.jpg"}
    assert found["/a.jpg"].content_hash == "h2" and found["/a.jpg"].faces == 3
    assert found["/b.jpg"].status == "failed" and found["/b.jpg"].error == "corrupt"


def test_bad_vectors_are_reported_not_stored(index):
    good, bad = make_faces(2)
    bad.embedding = np.ones(MODEL.dim + 1, np.float32)
    result = index.upsert([good, bad])
    index.refresh()
    assert result.indexed == 1
    assert [face for face, _ in result.failed] == [bad.face_id]
    assert index.count() == 1


def test_other_dimension_is_refused(kind, tmp_path, index):
    with pytest.raises(DimensionMismatchError):
        index.search(np.ones(MODEL.dim * 2, np.float32), k=1)
    prefix = getattr(index, "prefix", None)
    other = make_index(kind, tmp_path, EmbedderInfo(MODEL.name, MODEL.version, MODEL.dim * 2), prefix=prefix)
    with pytest.raises(DimensionMismatchError):
        other.ensure()


def test_image_hashes_are_those_of_the_file_records_that_have_one(index):
    photo, other = "ab" * 32, "cd" * 32
    index.record_sources(
        [
            SourceRecord("/a.jpg", "h1", MODEL.key, 2, image_hash=photo),
            SourceRecord("/b.mp4", "h2", MODEL.key, 1, media_type="video"),
            SourceRecord("/c.jpg", "", MODEL.key, 0, "failed", "corrupt"),
        ]
    )
    index.record_sources([SourceRecord("/d.jpg", "h4", MODEL.key, 0, "no_face", image_hash=other)])
    index.refresh()
    assert index.image_hashes() == {"/a.jpg": photo, "/d.jpg": other}
    assert index.get_sources(["/a.jpg"])["/a.jpg"].image_hash == photo


def hash_with(*flipped: int) -> str:
    """A made-up 256-bit hash: all bits clear but those listed (bit 0 the first byte's highest)."""
    bits = np.zeros(256, dtype=np.uint8)
    bits[list(flipped)] = 1
    return np.packbits(bits).tobytes().hex()


def test_near_duplicates_are_every_photo_within_the_distance_nearest_first(index):
    near = {"/one.jpg": hash_with(5), "/b.jpg": hash_with(*range(3)), "/a.jpg": hash_with(*range(3, 6))}
    edge, beyond = hash_with(*range(48)), hash_with(*range(49))
    records = [SourceRecord(name, name, MODEL.key, 1, image_hash=value) for name, value in near.items()]
    records += [
        SourceRecord("/self.jpg", "s", MODEL.key, 1, image_hash=hash_with()),
        SourceRecord("/edge.jpg", "e", MODEL.key, 1, image_hash=edge),
        SourceRecord("/beyond.jpg", "f", MODEL.key, 0, "no_face", image_hash=beyond),
        SourceRecord("/clip.mp4", "v", MODEL.key, 3, media_type="video"),
        SourceRecord("/broken.jpg", "", MODEL.key, 0, "failed", "corrupt"),
    ]
    index.record_sources(records)
    index.refresh()
    found = index.near_duplicates(hash_with(), 48, limit=10, exclude_source="/self.jpg")
    assert found == [("/one.jpg", 1), ("/a.jpg", 3), ("/b.jpg", 3), ("/edge.jpg", 48)]
    assert index.near_duplicates(hash_with(), 48, limit=3, exclude_source="/self.jpg") == found[:3]
    assert index.near_duplicates(hash_with(), 0, limit=10) == [("/self.jpg", 0)]
    assert index.near_duplicates(hash_with(*range(200, 256)), 48, limit=10) == []


def test_embedded_sources_of_an_older_schema_gain_the_image_hash(tmp_path):
    import lancedb
    import pyarrow as pa

    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.index.lance_tables import IMAGE_BITS, SOURCES_SCHEMA

    old = pa.schema([f for f in SOURCES_SCHEMA if f.name != IMAGE_BITS.name])
    row = {"source": "/old.jpg", "content_hash": "h", "model": MODEL.key, "faces": 1, "status": "indexed"}
    table = pa.Table.from_pylist([row | {"error": None, "media_type": "photo"}], schema=old)
    lancedb.connect(tmp_path).create_table(f"sources_{MODEL.key}", data=table)
    index = EmbeddedFaceIndex(tmp_path, MODEL)
    assert index.get_sources(["/old.jpg"])["/old.jpg"].image_hash is None
    index.record_sources([SourceRecord("/new.jpg", "h2", MODEL.key, 1, image_hash="ef" * 32)])
    assert index.image_hashes() == {"/new.jpg": "ef" * 32}
    index.close()


def test_embedded_hashes_an_older_version_kept_as_text_become_searchable(tmp_path):
    """Hashes were hex text before the store searched them: opening moves them into the bits
    column and drops the text, whether or not the move had begun before (a crash between its steps)."""
    import lancedb
    import pyarrow as pa

    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.index.lance_tables import IMAGE_BITS, SOURCES_SCHEMA

    fields = [f for f in SOURCES_SCHEMA if f.name != IMAGE_BITS.name]
    row = {"content_hash": "h", "model": MODEL.key, "faces": 1, "status": "indexed", "error": None}
    rows = [
        row | {"source": "/a.jpg", "media_type": "photo", "image_hash": hash_with(1)},
        row | {"source": "/b.jpg", "media_type": "photo", "image_hash": hash_with(1, 2)},
        row | {"source": "/c.mp4", "media_type": "video", "image_hash": None},
    ]
    for begun, path in ((False, tmp_path / "fresh"), (True, tmp_path / "begun")):
        schema = pa.schema([*fields, pa.field("image_hash", pa.string()), *([IMAGE_BITS] if begun else [])])
        data = [r | ({IMAGE_BITS.name: None} if begun else {}) for r in rows]
        lancedb.connect(path).create_table(f"sources_{MODEL.key}", data=pa.Table.from_pylist(data, schema=schema))
        index = EmbeddedFaceIndex(path, MODEL)
        assert index.image_hashes() == {"/a.jpg": hash_with(1), "/b.jpg": hash_with(1, 2)}
        assert index.near_duplicates(hash_with(), 1, limit=5) == [("/a.jpg", 1)]
        assert index.get_sources(["/c.mp4"])["/c.mp4"].image_hash is None
        index.close()
        assert "image_hash" not in lancedb.connect(path).open_table(f"sources_{MODEL.key}").schema.names


def test_embedded_store_of_an_older_schema_gains_the_new_columns(tmp_path):
    import lancedb
    import pyarrow as pa

    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.index.lance_tables import faces_schema

    old = pa.schema([f for f in faces_schema(MODEL.dim) if f.name not in ("start", "end")])
    table_name = EmbeddedFaceIndex(tmp_path, MODEL).faces_table_name
    lancedb.connect(tmp_path).create_table(table_name, schema=old)
    index = EmbeddedFaceIndex(tmp_path, MODEL)
    faces = make_faces(10)
    assert index.upsert(faces).indexed == 10
    video = next(f for f in faces if f.media_type == "video")
    assert index.get(video.face_id).start == pytest.approx(video.start)
    index.close()


def test_an_older_store_s_person_labels_become_its_labels(tmp_path):
    import lancedb
    import pyarrow as pa

    from search_engine.index.embedded import EmbeddedFaceIndex
    from search_engine.index.lance_tables import face_row, faces_schema

    old = pa.schema([f for f in faces_schema(MODEL.dim) if f.name not in ("label", "cluster")])
    faces = make_faces(9)
    rows = [{k: v for k, v in face_row(f, f.embedding, "2026-01-01").items() if k in old.names} for f in faces]
    table_name = EmbeddedFaceIndex(tmp_path, MODEL).faces_table_name
    lancedb.connect(tmp_path).create_table(table_name, data=pa.Table.from_pylist(rows, schema=old))
    index = EmbeddedFaceIndex(tmp_path, MODEL)
    assert index.labels() == {f.face_id: f.person for f in faces if f.person is not None}
    assert all(index.get(f.face_id).cluster is None for f in faces)
    index.close()


def test_cluster_credentials_reach_the_client_despite_the_environment_reset(monkeypatch, tmp_path):
    """``FACESEARCH_ES_USER``/``PASSWORD`` given to pytest are used (building a client does not connect)."""
    import tests.conftest as conftest

    monkeypatch.setattr(conftest, "ES_URL", "http://127.0.0.1:9200")
    monkeypatch.setattr(
        conftest,
        "ES_ENV",
        {"FACESEARCH_ES_URL": "http://127.0.0.1:9200", "FACESEARCH_ES_USER": "elastic", "FACESEARCH_ES_PASSWORD": "pw"},
    )
    store = make_index("elasticsearch", tmp_path)
    assert store._client._headers["authorization"] == "Basic ZWxhc3RpYzpwdw=="
    assert store.prefix.startswith("facesearch-test-")
    store.close()


def test_labels_list_every_labelled_face_and_only_those(index, filled):
    assert index.labels() == {f.face_id: f.label for f in filled if f.label is not None}


def test_a_calibration_is_stored_with_the_index_and_goes_with_it(kind, tmp_path):
    store = make_index(kind, tmp_path)
    store.ensure()
    try:
        assert store.get_calibration() is None
        calibration = Calibration(MODEL.key, 0.51234, 0.0345, 9164, 9000, 0.392, "made up")
        store.put_calibration(calibration)
        assert store.get_calibration() == calibration
        # Writes to the index leave it in place.
        store.upsert(make_faces(5))
        assert store.get_calibration() == calibration
        with pytest.raises(ValueError, match="cannot judge"):
            store.put_calibration(Calibration("other-r1", 0.5, 0.03, 100, 100, 0.3, "another model"))
        store.put_calibration(None)
        assert store.get_calibration() is None
        store.put_calibration(calibration)
        store.put_people([PersonRecord("p1", "Ada")])
        store.put_decisions([FaceDecision("f1", "p1")])
        store.drop()
        store.ensure()
        assert store.get_calibration() is None
        assert store.get_people() == {} and store.get_decisions() == {}
    finally:
        store.drop()
        store.close()


def test_a_hit_carries_the_face_fields_declared_for_hits_and_only_its_own_besides():
    import dataclasses

    from search_engine.types import FIELD_KINDS, Hit, face_fields, hit_field_names

    assert all(f.metadata["kind"] in FIELD_KINDS for f in face_fields())
    # The embedding is a stored field too, but a hit carries it only when asked for it.
    computed = ("score", "rank_score", "verdict", "embedding")
    hit = [f.name for f in dataclasses.fields(Hit)]
    assert [name for name in hit if name not in computed] == list(hit_field_names())


def test_scan_reads_every_face_once_with_its_vector_and_names(index, filled):
    batches = list(index.scan(batch_size=7))
    assert all(len(b.face_ids) <= 7 for b in batches)
    seen = {
        fid: (vec, person, label, cluster)
        for b in batches
        for fid, vec, person, label, cluster in zip(b.face_ids, b.vectors, b.persons, b.labels, b.clusters)
    }
    assert sorted(seen) == sorted(f.face_id for f in filled)
    for face in filled:
        vector, person, label, cluster = seen[face.face_id]
        assert vector.dtype == np.float32 and vector.shape == (MODEL.dim,)
        np.testing.assert_allclose(vector, face.embedding, atol=1e-6)
        assert (person, label, cluster) == (face.person, face.label, None)
    grace = [fid for b in index.scan(filters=SearchFilters(person="Grace_Hopper")) for fid in b.face_ids]
    assert sorted(grace) == sorted(f.face_id for f in filled if f.person == "Grace_Hopper")
    bare = list(index.scan(vectors=False))
    assert all(b.vectors.shape == (len(b.face_ids), 0) for b in bare)
    assert sorted(fid for b in bare for fid in b.face_ids) == sorted(seen)


def test_neighbours_are_each_query_s_nearest_faces_best_first(index, filled):
    queries = np.stack([filled[3].embedding, filled[11].embedding, unit(np.ones(MODEL.dim))])
    found = index.neighbours(queries, k=4)
    assert len(found) == 3
    for query, row in zip(queries, found):
        expected = sorted(filled, key=lambda f: -float(f.embedding @ query))[:4]
        assert [face_id for face_id, _ in row] == [f.face_id for f in expected]
        assert [score for _, score in row] == pytest.approx([float(f.embedding @ query) for f in expected], abs=0.02)
    assert found[0][0][0] == filled[3].face_id
    assert index.neighbours(queries[:1], k=4) == found[:1]
    with pytest.raises(DimensionMismatchError):
        index.neighbours(np.ones((2, MODEL.dim + 1), dtype=np.float32), k=3)


def test_set_people_changes_those_fields_alone_and_passes_over_unknown_faces(index, filled):
    chosen = filled[:4]
    changes = {
        chosen[0].face_id: Grouping("p1", "Ada"),
        chosen[1].face_id: Grouping("p1", "Ada"),
        chosen[2].face_id: Grouping("p2", None),
        "nope": Grouping("p3", None),
    }
    assert index.set_people(changes) == 3
    index.refresh()
    stored = index.get(chosen[0].face_id)
    assert (stored.cluster, stored.person, stored.label) == ("p1", "Ada", chosen[0].label)
    assert stored.source == chosen[0].source and stored.box == chosen[0].box
    np.testing.assert_allclose(stored.embedding, chosen[0].embedding, atol=1e-6)
    assert index.count(SearchFilters(cluster="p1")) == 2 and index.count(SearchFilters(person="Ada")) == 2
    assert {f.value: f.count for f in index.facets("cluster")} == {"p1": 2, "p2": 1}
    hits = index.search(chosen[2].embedding, k=3, filters=SearchFilters(cluster="p2"))
    assert [h.face_id for h in hits] == [chosen[2].face_id] and hits[0].cluster == "p2" and hits[0].person is None
    assert index.get("nope") is None and index.count() == len(filled)
    others = index.search(chosen[0].embedding, k=len(filled), filters=SearchFilters(exclude_cluster="p1"))
    assert len(others) == len(filled) - 2 and all(h.cluster != "p1" for h in others)
    index.set_people({chosen[0].face_id: Grouping(None, None)})
    index.refresh()
    assert index.get(chosen[0].face_id).cluster is None
    assert index.count(SearchFilters(cluster="p1")) == 1


def test_person_records_and_face_decisions_round_trip_and_outlive_their_faces(index, filled):
    assert index.get_people() == {} and index.get_decisions() == {}
    index.put_people([PersonRecord("p1", "Ada"), PersonRecord("p2", hidden=True, cover_face_id=filled[0].face_id)])
    index.put_people([PersonRecord("p1", "Ada Lovelace")])
    assert index.get_people() == {
        "p1": PersonRecord("p1", "Ada Lovelace"),
        "p2": PersonRecord("p2", None, True, filled[0].face_id),
    }
    face = filled[3]
    index.put_decisions([FaceDecision(face.face_id, "p1", ("p2", "p3")), FaceDecision("gone", None, ("p1",))])
    index.put_decisions([FaceDecision(face.face_id, "p2", ("p3",))])
    assert index.get_decisions() == {
        face.face_id: FaceDecision(face.face_id, "p2", ("p3",)),
        "gone": FaceDecision("gone", None, ("p1",)),
    }
    index.delete_source(face.source)
    index.upsert([f for f in filled if f.source == face.source])
    index.refresh()
    assert index.get_decisions()[face.face_id].person_id == "p2"


def test_the_index_says_how_it_finds_the_nearest_faces(index, filled):
    info = index.vector_index()
    assert info.indexed + info.unindexed == len(filled)
    assert (info.kind == "exact") == (info.indexed == 0)


@pytest.mark.parametrize("exact_up_to", [0, 1000], ids=["filtered-through-the-index", "few-filtered-faces-scanned"])
def test_a_vector_index_finds_what_the_exact_scan_finds(tmp_path, monkeypatch, exact_up_to):
    from search_engine.index import embedded
    from search_engine.index.embedded import EmbeddedFaceIndex

    monkeypatch.setattr(embedded, "_EXACT_UP_TO", dict.fromkeys(embedded._EXACT_UP_TO, exact_up_to))

    rng = np.random.default_rng(4)
    centres = rng.normal(size=(120, MODEL.dim))
    faces = []
    for i in range(600):
        vector = unit(centres[i % 120] + 0.15 * rng.normal(size=MODEL.dim))
        source = f"/photos/p{i % 120}_{i // 120}.jpg"
        faces.append(
            FaceRecord(
                face_id=face_id(MODEL.key, source, 0),
                source=source,
                face_no=0,
                box=Box(0, 0, 10, 10),
                probability=0.99,
                embedding=vector,
                model=MODEL.key,
                person=f"p{i % 120}",
            )
        )
    store = EmbeddedFaceIndex(tmp_path / "lancedb", MODEL, vector_index_faces=500)
    store.upsert(faces[:400])
    store.optimize()
    assert store.vector_index().kind == "exact"  # below the size that pays for one
    store.upsert(faces[400:])
    store.optimize()
    info = store.vector_index()
    assert (info.kind, info.indexed, info.unindexed) == ("IVF_HNSW_SQ", 600, 0) and info.size_bytes > 0

    vectors = np.stack([f.embedding for f in faces])
    for query in faces[::37]:
        exact = [faces[j].face_id for j in np.argsort(-(vectors @ query.embedding))[:5]]
        assert [h.face_id for h in store.search(query.embedding, k=5)] == exact
        person = [h.person for h in store.search(query.embedding, k=5, filters=SearchFilters(person=query.person))]
        assert person == [query.person] * 5
    collapsed = store.search(faces[0].embedding, k=4, collapse="person")
    assert len({h.person for h in collapsed}) == 4 and collapsed[0].person == faces[0].person

    # A face written after the index was built is found before the next optimize.
    newcomer = FaceRecord(
        face_id="new",
        source="/photos/new.jpg",
        face_no=0,
        box=Box(0, 0, 10, 10),
        probability=0.99,
        embedding=unit(rng.normal(size=MODEL.dim)),
        model=MODEL.key,
    )
    store.upsert([newcomer])
    assert store.vector_index().unindexed == 1
    assert store.search(newcomer.embedding, k=1)[0].face_id == "new"
    assert store.neighbours(np.stack([newcomer.embedding]), k=1)[0][0][0] == "new"
    store.optimize()
    assert store.vector_index().unindexed == 0
    store.close()


def test_optimize_deletes_the_files_of_versions_older_than_it_keeps(tmp_path, monkeypatch):
    from search_engine.index import embedded, lance_store

    def data_files() -> int:
        return len(list((tmp_path / "lancedb" / f"{store.faces_table_name}.lance" / "data").glob("*.lance")))

    store = embedded.EmbeddedFaceIndex(tmp_path / "lancedb", MODEL)
    rng = np.random.default_rng(5)
    for i in range(4):
        source = f"/photos/{i}.jpg"
        face = FaceRecord(
            face_id(MODEL.key, source, 0), source, 0, Box(0, 0, 10, 10), 0.99, unit(rng.normal(size=8)), MODEL.key
        )
        store.upsert([face])
    assert data_files() == 4
    store.optimize()
    assert data_files() == 5  # the compacted file, and the replaced ones a reader may still be reading
    monkeypatch.setattr(lance_store, "KEEP_OLD_VERSIONS", timedelta(milliseconds=1))
    store.upsert([face])
    store.optimize()
    # What is left on disk is what the newest version reads: one file per fragment.
    assert data_files() == store._table().stats()["fragment_stats"]["num_fragments"] < 5
    assert store.count() == 4
    store.close()


def test_new_stores_are_written_in_file_format_2_1_and_older_ones_keep_working(tmp_path, monkeypatch):
    from search_engine.index import embedded, lance_store

    def formats(path) -> set[tuple[int, int]]:
        # A Lance file ends with its format version (major, minor: little-endian u16) and "LANC".
        folder = path / f"{store.faces_table_name}.lance" / "data"
        return {tuple(np.frombuffer(f.read_bytes()[-8:-4], "<u2").tolist()) for f in folder.glob("*.lance")}

    faces = make_faces(6)
    store = embedded.EmbeddedFaceIndex(tmp_path / "new", MODEL)
    store.upsert(faces[:3])
    assert formats(tmp_path / "new") == {(2, 1)}
    store.close()
    # A store made before (LanceDB's own default then: 2.2) goes on in its format.
    monkeypatch.setattr(lance_store, "FILE_FORMAT", "2.2")
    store = embedded.EmbeddedFaceIndex(tmp_path / "old", MODEL)
    store.upsert(faces[:3])
    store.close()
    monkeypatch.undo()
    store = embedded.EmbeddedFaceIndex(tmp_path / "old", MODEL)
    store.upsert(faces[3:])
    store.optimize()
    assert formats(tmp_path / "old") == {(2, 2)}
    assert store.count() == 6 and store.search(faces[4].embedding, k=1)[0].face_id == faces[4].face_id
    store.close()
