"""The Elasticsearch backend's pure parts: names, mappings, documents, request bodies, client factory.

None of this needs a cluster; the behaviour against a real one is tests/test_index_contract.py's job.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from search_engine.config import Settings
from search_engine.errors import ConfigError, IndexUnavailableError
from search_engine.index.base import FaceIndex
from search_engine.index.elastic import ElasticFaceIndex
from search_engine.index.elastic_client import create_client
from search_engine.index.mapping import (
    EMBEDDING_FIELD,
    IMAGE_BITS_FIELD,
    MAPPING_VERSION,
    MIN_SERVER_VERSION,
    TEMPLATE_PRIORITY,
    calibration_from_mappings,
    copy_field_body,
    decision_document,
    decision_from_document,
    decisions_mapping,
    embedding_dims,
    face_document,
    faces_mapping,
    faces_meta,
    hit_from_document,
    index_names,
    index_settings,
    index_template,
    knows_exclude_source_vectors,
    missing_properties,
    people_mapping,
    person_document,
    person_from_document,
    record_from_document,
    server_version,
    source_document,
    source_record_from_document,
    sources_mapping,
)
from search_engine.index.queries import (
    COLLAPSE_OVERSAMPLE,
    MAX_KNN,
    MIN_CANDIDATES,
    cosine_from_score,
    count_body,
    every_document_body,
    facets_body,
    filter_clauses,
    knn_search_body,
    labelled_faces_body,
    near_duplicates_body,
    neighbours_searches,
    people_updates,
    query_vector,
    scan_body,
    source_faces_body,
)
from search_engine.photo_hash import HASH_BITS
from search_engine.types import (
    FACET_FIELDS,
    Box,
    EmbedderInfo,
    FaceDecision,
    FaceRecord,
    Grouping,
    PersonRecord,
    SearchFilters,
    SourceRecord,
)

MODEL = EmbedderInfo("facenet", "vggface2", 512)


def unit(dim: int = 512, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def video_face() -> FaceRecord:
    return FaceRecord(
        face_id="f" * 32,
        source="/videos/talk.mp4",
        face_no=2,
        box=Box(10.5, 20.25, 110.5, 140.0),
        probability=0.987,
        embedding=unit(),
        model=MODEL.key,
        person="Ada_Lovelace",
        media_type="video",
        video="talk.mp4",
        frame=1250,
        timestamp=50.04,
        start=48.5,
        end=61.0,
        image_width=1920,
        image_height=1080,
        content_hash="abc123",
        indexed_at="2024-05-01T12:00:00+00:00",
    )


# --- names and mappings -------------------------------------------------------------------------


def test_names_are_a_versioned_index_behind_a_per_model_alias():
    names = index_names("facesearch", MODEL)
    assert names.faces_alias == "facesearch-faces-facenet-vggface2"
    assert names.faces_index == f"facesearch-faces-facenet-vggface2-v{MAPPING_VERSION}"
    assert names.sources_alias == "facesearch-sources-facenet-vggface2"
    assert names.sources_index == f"facesearch-sources-facenet-vggface2-v{MAPPING_VERSION}"
    assert names.people_alias == "facesearch-people-facenet-vggface2"
    assert names.index_of(names.decisions_alias) == f"facesearch-decisions-facenet-vggface2-v{MAPPING_VERSION}"
    assert len(set(names.aliases)) == 4


def test_names_are_lowercase_and_safe():
    names = index_names("My.Prefix", EmbedderInfo("Net/X", "R 1", 128))
    assert names.faces_alias == "my.prefix-faces-net_x-r_1"


@pytest.mark.parametrize("prefix", ["", "_hidden", "-dash", "has space", "a*b", "x" * 101])
def test_unusable_prefix_is_a_config_error(prefix):
    with pytest.raises(ConfigError, match="FACESEARCH_ES_INDEX_PREFIX"):
        index_names(prefix, MODEL)


def test_faces_mapping_vector_field():
    mapping = faces_mapping(512)
    vector = mapping["properties"][EMBEDDING_FIELD]
    assert vector == {
        "type": "dense_vector",
        "dims": 512,
        "index": True,
        "similarity": "dot_product",
        "index_options": {"type": "int8_hnsw"},
    }
    assert faces_mapping(128, vector_index="hnsw")["properties"][EMBEDDING_FIELD]["index_options"] == {"type": "hnsw"}
    assert embedding_dims(mapping) == 512


def test_faces_mapping_fields_and_strictness():
    mapping = faces_mapping(128)
    props = mapping["properties"]
    assert mapping["dynamic"] == "strict"
    for name in ("face_id", "person", "source", "media_type", "video", "model", "content_hash"):
        assert props[name] == {"type": "keyword"}, name
    for name in ("face_no", "frame", "image_width", "image_height"):
        assert props[name]["type"] == "integer", name
    assert props["probability"]["type"] == "float"
    assert props["timestamp"]["type"] == "double"
    assert props["indexed_at"]["type"] == "date"
    assert props["box"]["properties"] == {edge: {"type": "float"} for edge in ("x1", "y1", "x2", "y2")}
    # Every collapse and facet field must be a single-valued keyword with doc values.
    for name in FACET_FIELDS:
        assert props[name] == {"type": "keyword"}


def test_sources_mapping_is_strict_and_keeps_errors_unindexed():
    mapping = sources_mapping()
    assert mapping["dynamic"] == "strict"
    assert set(mapping["properties"]) == {f.name for f in dataclasses.fields(SourceRecord)} | {IMAGE_BITS_FIELD}
    assert mapping["properties"]["error"] == {"type": "text", "index": False}
    bits = mapping["properties"][IMAGE_BITS_FIELD]
    assert (bits["element_type"], bits["dims"], bits["similarity"]) == ("bit", HASH_BITS, "l2_norm")
    assert bits["index_options"] == {"type": "flat"}


def test_embedding_dims_of_a_foreign_mapping():
    assert embedding_dims({}) is None
    assert embedding_dims({"properties": {EMBEDDING_FIELD: {"type": "float"}}}) is None


def test_index_settings():
    assert index_settings() == {"index.number_of_shards": 1, "index.auto_expand_replicas": "0-1"}
    fixed = index_settings(shards=3, replicas=2, keep_source_vectors=True)
    assert fixed == {
        "index.number_of_shards": 3,
        "index.number_of_replicas": 2,
        "index.mapping.exclude_source_vectors": False,
    }
    with pytest.raises(ValueError):
        index_settings(shards=0)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("8.15.3", False),
        ("8.19.4", False),
        ("9.1.7", False),
        ("9.2.0", True),
        ("9.3.0-SNAPSHOT", True),
        ("10.0.1", True),
        ("serverless", False),
    ],
)
def test_exclude_source_vectors_is_known_from_9_2(version, expected):
    assert knows_exclude_source_vectors(version) is expected


def test_server_versions_read_as_major_and_minor():
    assert server_version("8.15.0") == (8, 15) and server_version("9.5.4") == (9, 5)
    assert server_version("8.14.3") < MIN_SERVER_VERSION <= server_version("8.15.1")
    assert server_version("serverless") is None


def test_index_template_covers_later_versions():
    body = index_template("facesearch-faces-x", faces_mapping(8), index_settings())
    assert body["index_patterns"] == ["facesearch-faces-x-v*"]
    assert body["priority"] == TEMPLATE_PRIORITY
    assert body["template"]["mappings"] == faces_mapping(8)
    assert body["template"]["settings"] == index_settings()
    assert body["_meta"]["mapping_version"] == MAPPING_VERSION


# --- documents ----------------------------------------------------------------------------------


def test_face_document_round_trip():
    face = video_face()
    doc = face_document(face)
    json.dumps(doc)  # plain JSON types only, no numpy scalars
    assert doc["box"] == {"x1": 10.5, "y1": 20.25, "x2": 110.5, "y2": 140.0}
    assert len(doc[EMBEDDING_FIELD]) == 512
    back = record_from_document(json.loads(json.dumps(doc)))
    assert back.embedding.dtype == np.float32
    np.testing.assert_array_equal(back.embedding, face.embedding)
    for name in FaceRecord.__dataclass_fields__:
        if name != "embedding":
            assert getattr(back, name) == getattr(face, name), name


def test_face_document_leaves_out_unset_fields():
    photo = FaceRecord("p" * 32, "/p.jpg", np.int64(0), Box(0, 0, 1, 1), np.float32(0.9), unit(), MODEL.key)
    doc = face_document(photo)
    json.dumps(doc)
    for name in ("person", "video", "frame", "timestamp", "start", "end", "image_width", "content_hash", "indexed_at"):
        assert name not in doc
    assert doc["media_type"] == "photo"
    back = record_from_document(doc)
    assert back.person is None and back.frame is None and back.media_type == "photo"


def test_record_without_its_vector_says_why():
    doc = face_document(video_face())
    del doc[EMBEDDING_FIELD]
    with pytest.raises(ValueError, match="exclude_source_vectors"):
        record_from_document(doc)


def test_hit_from_document():
    face = video_face()
    doc = face_document(face)
    del doc[EMBEDDING_FIELD]  # searches leave it out
    hit = hit_from_document(doc, 0.8)
    assert (hit.face_id, hit.score, hit.source, hit.box) == (face.face_id, 0.8, face.source, face.box)
    assert (hit.person, hit.video, hit.frame, hit.timestamp) == ("Ada_Lovelace", "talk.mp4", 1250, 50.04)
    assert (hit.start, hit.end) == (48.5, 61.0)
    assert hit.embedding is None


def test_hit_from_document_with_its_vector():
    face = video_face()
    hit = hit_from_document(face_document(face), 0.8, with_embedding=True)
    assert hit.embedding.dtype == np.float32
    np.testing.assert_allclose(hit.embedding, face.embedding, atol=1e-6)
    assert hit == hit_from_document({k: v for k, v in face_document(face).items() if k != EMBEDDING_FIELD}, 0.8)
    doc = face_document(face)
    del doc[EMBEDDING_FIELD]
    with pytest.raises(ValueError, match="exclude_source_vectors"):
        hit_from_document(doc, 0.8, with_embedding=True)


def test_source_document_round_trip():
    for record in (
        SourceRecord("/a.jpg", "h", MODEL.key, 3),
        SourceRecord("/b.mp4", "", MODEL.key, 0, "failed", "bad", "video"),
        SourceRecord("/c.jpg", "h", MODEL.key, 1, image_hash="ab" * 32),
    ):
        doc = source_document(record)
        assert ("error" in doc) == (record.error is not None)
        assert ("image_hash" in doc) == (record.image_hash is not None)
        assert source_record_from_document(doc) == record
        assert doc.get(IMAGE_BITS_FIELD) == record.image_hash


def test_near_duplicates_body_is_an_exhaustive_knn_bounded_by_the_distance():
    value = "ab" * 32
    body = near_duplicates_body(value, 48, 50, exclude_source="/self.jpg")
    knn = body["knn"]
    assert knn["field"] == IMAGE_BITS_FIELD and knn["query_vector"] == value
    assert (knn["k"], knn["num_candidates"], knn["similarity"], body["size"]) == (50, 50, 48, 50)
    assert knn["filter"] == [{"bool": {"must_not": [{"term": {"source": "/self.jpg"}}]}}]
    assert body["_source"] == ["source", "image_hash"]
    assert "filter" not in near_duplicates_body(value, 0, 1)["knn"]
    for limit in (0, MAX_KNN + 1):
        with pytest.raises(ValueError, match="limit"):
            near_duplicates_body(value, 48, limit)


# --- queries ------------------------------------------------------------------------------------


def test_filter_clauses():
    assert filter_clauses(None) == []
    assert filter_clauses(SearchFilters(min_score=0.5)) == []
    clauses = filter_clauses(
        SearchFilters(person="Ada", video="v.mp4", media_type="video", exclude_sources=("/a", "/b"), cluster="p1")
    )
    assert clauses == [
        {"term": {"person": "Ada"}},
        {"term": {"video": "v.mp4"}},
        {"term": {"media_type": "video"}},
        {"term": {"cluster": "p1"}},
        {"bool": {"must_not": [{"terms": {"source": ["/a", "/b"]}}]}},
    ]
    assert filter_clauses(SearchFilters(exclude_cluster="p2")) == [
        {"bool": {"must_not": [{"term": {"cluster": "p2"}}]}}
    ]


def test_knn_body_puts_filters_inside_knn():
    body = knn_search_body(unit(), 20, SearchFilters(person="Ada", exclude_sources=("/x.jpg",)))
    knn = body["knn"]
    assert knn["field"] == EMBEDDING_FIELD
    assert knn["filter"] == filter_clauses(SearchFilters(person="Ada", exclude_sources=("/x.jpg",)))
    # Pre-filtering only: a top-level query or post_filter would filter after the k were chosen.
    assert "query" not in body and "post_filter" not in body
    assert body["size"] == 20 and knn["k"] == 20
    assert body["_source"] == {"excludes": [EMBEDDING_FIELD]}
    assert "collapse" not in body
    assert knn_search_body(unit(), 20, with_embeddings=True)["_source"] is True


def test_knn_body_without_filters_has_no_filter_or_floor():
    knn = knn_search_body(unit(), 5)["knn"]
    assert "filter" not in knn and "similarity" not in knn


def test_similarity_floor_only_with_min_score():
    assert knn_search_body(unit(), 5, SearchFilters(min_score=0.42))["knn"]["similarity"] == 0.42
    assert knn_search_body(unit(), 5, SearchFilters(min_score=-0.5))["knn"]["similarity"] == -0.5
    assert "similarity" not in knn_search_body(unit(), 5, SearchFilters(person="Ada"))["knn"]


def test_num_candidates_default_and_caps():
    assert knn_search_body(unit(), 10)["knn"]["num_candidates"] == MIN_CANDIDATES
    assert knn_search_body(unit(), 300)["knn"]["num_candidates"] == 600
    assert knn_search_body(unit(), 8000)["knn"]["num_candidates"] == MAX_KNN
    assert knn_search_body(unit(), 50, num_candidates=20)["knn"]["num_candidates"] == 50
    assert knn_search_body(unit(), 50, num_candidates=50_000)["knn"]["num_candidates"] == MAX_KNN
    for k in (0, MAX_KNN + 1):
        with pytest.raises(ValueError):
            knn_search_body(unit(), k)


def test_query_vector_is_sent_unit_length():
    sent = np.asarray(knn_search_body(3.0 * unit(128), 5)["knn"]["query_vector"])
    assert sent.shape == (128,)
    assert np.linalg.norm(sent) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(sent, unit(128), atol=1e-6)
    for bad in (np.zeros(4), np.array([np.nan, 1.0]), np.array([])):
        with pytest.raises(ValueError):
            query_vector(bad)


def test_collapse_body_gathers_more_faces_than_it_returns():
    body = knn_search_body(unit(), 10, collapse="person")
    assert body["collapse"] == {"field": "person"}
    assert body["size"] == 10
    assert body["knn"]["k"] == 10 * COLLAPSE_OVERSAMPLE
    assert body["knn"]["num_candidates"] >= body["knn"]["k"]
    wider = knn_search_body(unit(), 10, collapse="person", knn_k=320)
    assert wider["knn"]["k"] == 320 and wider["knn"]["num_candidates"] == 640
    assert knn_search_body(unit(), 5000, collapse="video")["knn"]["k"] == MAX_KNN
    with pytest.raises(ValueError, match="collapse"):
        knn_search_body(unit(), 10, collapse="embedding")


def test_cosine_from_score():
    assert cosine_from_score(1.0) == 1.0
    assert cosine_from_score(0.5) == 0.0
    assert cosine_from_score(0.0) == -1.0
    assert cosine_from_score(0.85) == pytest.approx(0.7)
    assert cosine_from_score(1.0000001) == 1.0


def test_count_body_ignores_only_the_floor():
    assert count_body() == {"query": {"match_all": {}}}
    assert count_body(SearchFilters(min_score=0.9)) == {"query": {"match_all": {}}}
    assert count_body(SearchFilters(person="Ada", exclude_sources=("/a",))) == {
        "query": {
            "bool": {"filter": [{"term": {"person": "Ada"}}, {"bool": {"must_not": [{"terms": {"source": ["/a"]}}]}}]}
        }
    }


def test_facets_body():
    body = facets_body("video", 25, SearchFilters(media_type="video"))
    assert body["size"] == 0
    assert body["aggs"] == {"values": {"terms": {"field": "video", "size": 25}}}
    assert body["query"] == {"bool": {"filter": [{"term": {"media_type": "video"}}]}}
    with pytest.raises(ValueError):
        facets_body("embedding")
    with pytest.raises(ValueError):
        facets_body("person", 0)


def test_source_faces_body_pages_in_frame_then_face_order():
    first = source_faces_body("/v.mp4", 1000)
    assert first["query"] == {"bool": {"filter": [{"term": {"source": "/v.mp4"}}]}}
    assert [next(iter(s)) for s in first["sort"]] == ["frame", "face_no", "face_id"]
    assert "search_after" not in first and "_source" not in first
    assert source_faces_body("/v.mp4", 1000, [12, 0, "abc"])["search_after"] == [12, 0, "abc"]


# --- client factory and construction --------------------------------------------------------------


def settings(**changes) -> Settings:
    return Settings.of(**({"es_url": "https://es.example:9200"} | changes))


def test_create_client_with_api_key():
    client = create_client(settings(es_api_key="a2V5OnNlY3JldA==").index)
    assert client._headers["authorization"].startswith("ApiKey ")
    assert [node.base_url for node in client.transport.node_pool.all()] == ["https://es.example:9200"]
    client.close()


def test_create_client_with_basic_auth_and_ca(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder; read only when a TLS connection is made\n")
    client = create_client(settings(es_user="elastic", es_password="changeme", es_ca_cert=ca).index)
    assert client._headers["authorization"].startswith("Basic ")
    assert client.transport.node_pool.all()[0].config.ca_certs == str(ca)
    client.close()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"es_url": None}, "FACESEARCH_ES_URL is not set"),
        ({"es_url": "es.example:9200"}, "FACESEARCH_ES_URL"),
        ({"es_api_key": "k", "es_user": "u", "es_password": "p"}, "not both"),
        ({"es_user": "u"}, "set together"),
        ({"es_ca_cert": Path("/no/such/ca.pem")}, "FACESEARCH_ES_CA_CERT"),
    ],
)
def test_create_client_refuses_unusable_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        create_client(settings(**changes).index)


def test_ca_with_plain_http_is_a_config_error(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(ConfigError, match="https"):
        create_client(Settings.of(es_url="http://es.example:9200", es_ca_cert=ca).index)


def test_index_fits_the_contract_without_connecting():
    index = ElasticFaceIndex(create_client(settings().index), MODEL, prefix="unit")
    assert isinstance(index, FaceIndex)
    assert index.names.faces_alias == "unit-faces-facenet-vggface2"
    for name, method in inspect.getmembers(FaceIndex, inspect.isfunction):
        if name.startswith("_"):
            continue
        ours = inspect.signature(getattr(ElasticFaceIndex, name)).parameters
        theirs = inspect.signature(method).parameters
        assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()], name
    index.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_cluster_is_index_unavailable():
    url = f"http://127.0.0.1:{closed_port()}"
    index = ElasticFaceIndex.from_settings(Settings.of(es_url=url).index, MODEL)
    started = time.monotonic()
    with pytest.raises(IndexUnavailableError, match=f"cannot reach Elasticsearch at {url}"):
        index.count()
    assert time.monotonic() - started < 30
    index.close()


def test_the_calibration_lives_in_the_faces_mapping_meta():
    calibration = {"model": "dlib-r1", "location": 0.93, "scale": 0.006}
    assert faces_mapping(128)["_meta"] == faces_meta(None) == {"mapping_version": MAPPING_VERSION}
    meta = faces_meta(calibration)
    assert meta == {"mapping_version": MAPPING_VERSION, "calibration": calibration}
    response = {"facesearch-faces-dlib-r1-v1": {"mappings": {"_meta": meta, "properties": {}}}}
    assert calibration_from_mappings(response) == calibration
    assert calibration_from_mappings({"i": {"mappings": {"_meta": faces_meta(None)}}}) is None
    assert calibration_from_mappings({"i": {"mappings": {}}}) is None


def test_labelled_faces_body_pages_by_face_id_and_reads_only_the_label():
    body = labelled_faces_body(1000)
    assert body["query"] == {"bool": {"filter": [{"exists": {"field": "label"}}]}}
    assert body["_source"] == ["label"] and body["sort"] == [{"face_id": {"order": "asc"}}]
    assert "search_after" not in body
    assert labelled_faces_body(10, ["abc"])["search_after"] == ["abc"]


def test_scan_body_pages_every_face_by_id_with_vector_and_labels_only():
    body = scan_body(500)
    assert body["query"] == {"match_all": {}} and body["size"] == 500
    assert body["_source"] == [EMBEDDING_FIELD, "person", "label", "cluster"]
    assert body["sort"] == [{"face_id": {"order": "asc"}}] and "search_after" not in body
    assert scan_body(10, ["abc"])["search_after"] == ["abc"]
    assert scan_body(10, vectors=False)["_source"] == ["person", "label", "cluster"]
    assert scan_body(10, filters=SearchFilters(cluster="p1"))["query"] == {
        "bool": {"filter": [{"term": {"cluster": "p1"}}]}
    }


def test_neighbours_searches_alternate_headers_and_unfiltered_knn_bodies_without_source():
    vectors = np.stack([unit(seed=1), unit(seed=2)])
    searches = neighbours_searches(vectors, 5)
    assert searches[0] == {} and searches[2] == {}
    for body, vector in zip(searches[1::2], vectors):
        assert body["_source"] is False and body["size"] == 5 and body["knn"]["k"] == 5
        assert "filter" not in body["knn"]
        assert body["knn"]["query_vector"] == pytest.approx(vector.tolist(), abs=1e-6)


def test_people_updates_are_partial_updates_through_the_alias():
    actions = people_updates("faces", {"a": Grouping("p1", "Ada"), "b": Grouping(None, None)})
    assert actions == [
        {"_op_type": "update", "_index": "faces", "_id": "a", "doc": {"cluster": "p1", "person": "Ada"}},
        {"_op_type": "update", "_index": "faces", "_id": "b", "doc": {"cluster": None, "person": None}},
    ]


def test_every_document_body_pages_by_its_key():
    assert every_document_body("person_id", 100) == {
        "size": 100,
        "query": {"match_all": {}},
        "sort": [{"person_id": {"order": "asc"}}],
    }
    assert every_document_body("face_id", 10, ["x"])["search_after"] == ["x"]


def test_people_and_decisions_mappings_are_strict_and_round_trip():
    assert people_mapping()["dynamic"] == decisions_mapping()["dynamic"] == "strict"
    assert decisions_mapping()["properties"]["not_person"] == {"type": "keyword"}
    record = PersonRecord("p1", "Ada", True, "f9")
    assert set(person_document(record)) == set(people_mapping()["properties"])
    assert person_from_document(person_document(record)) == record
    assert person_from_document({"person_id": "p2"}) == PersonRecord("p2")
    decision = FaceDecision("f1", None, ("p1", "p2"))
    assert set(decision_document(decision)) == set(decisions_mapping()["properties"])
    assert decision_from_document(decision_document(decision)) == decision


def test_copying_a_field_only_touches_documents_that_have_it():
    body = copy_field_body("person", "label")
    assert body["query"] == {"bool": {"filter": [{"exists": {"field": "person"}}]}}
    assert body["script"]["params"] == {"source": "person", "target": "label"}


def test_missing_properties_are_the_fields_an_older_index_lacks():
    current = faces_mapping(MODEL.dim)
    assert missing_properties(current, current) == {}
    older = {"properties": {k: v for k, v in current["properties"].items() if k != "cluster"}}
    assert missing_properties(older, current) == {"cluster": {"type": "keyword"}}
    sources = sources_mapping()
    older = {"properties": {k: v for k, v in sources["properties"].items() if k != IMAGE_BITS_FIELD}}
    assert missing_properties(older, sources) == {IMAGE_BITS_FIELD: sources["properties"][IMAGE_BITS_FIELD]}


# --- the similar-photo index ---------------------------------------------------------------------

IMAGE_MODEL = EmbedderInfo("resnet50", "imagenet1k-v1", 2048)


def test_image_index_names_mapping_and_documents():
    from search_engine.index.mapping import image_document, image_hit_from_document, images_alias, images_mapping
    from search_engine.types import ImageRecord

    assert images_alias(" Unit ", IMAGE_MODEL) == "unit-images-resnet50-imagenet1k-v1"
    with pytest.raises(ConfigError):
        images_alias("-bad", IMAGE_MODEL)
    mapping = images_mapping(2048)
    assert mapping["dynamic"] == "strict" and embedding_dims(mapping) == 2048
    vector = mapping["properties"][EMBEDDING_FIELD]
    assert (vector["similarity"], vector["index_options"]["type"]) == ("dot_product", "int8_hnsw")
    record = ImageRecord("/photos/a.jpg", np.ones(2048, np.float32) / np.sqrt(2048), "abc", 640, 480)
    doc = image_document(record, record.embedding, "2026-12-02T00:00:00+00:00")
    assert set(doc) == set(mapping["properties"]) - {"timestamp"}  # a photo has no time
    assert doc["image_id"] == "/photos/a.jpg" and doc["indexed_at"] == "2026-12-02T00:00:00+00:00"
    assert len(doc[EMBEDDING_FIELD]) == 2048 and json.loads(json.dumps(doc)) == doc
    hit = image_hit_from_document({k: v for k, v in doc.items() if k != EMBEDDING_FIELD}, 0.75)
    assert (hit.source, hit.score, hit.width, hit.height, hit.timestamp) == ("/photos/a.jpg", 0.75, 640, 480, None)
    keyframe = ImageRecord("/videos/v.mp4", record.embedding, "def", 1280, 720, timestamp=12.5)
    doc = image_document(keyframe, keyframe.embedding, "2026-12-02T00:00:00+00:00")
    assert set(doc) == set(mapping["properties"]) and doc["image_id"] == "/videos/v.mp4#t=12.500"
    hit = image_hit_from_document(doc, 0.5)
    assert hit.timestamp == 12.5 and hit.to_dict()["media_type"] == "video" and hit.image_id == doc["image_id"]


def test_image_sources_body_asks_one_picture_per_file():
    from search_engine.index.queries import image_sources_body

    body = image_sources_body(["/videos/v.mp4", "/photos/a.jpg"])
    assert body["query"] == {"bool": {"filter": [{"terms": {"source": ["/videos/v.mp4", "/photos/a.jpg"]}}]}}
    assert body["collapse"] == {"field": "source"} and body["size"] == 2
    assert body["_source"] == ["source", "content_hash"]


def test_image_knn_body_filters_before_ranking_and_leaves_vectors_out():
    from search_engine.index.queries import MAX_KNN, image_knn_body

    body = image_knn_body(np.full(4, 2.0), k=20, exclude_sources=["/photos/a.jpg"])
    knn = body["knn"]
    assert knn["field"] == EMBEDDING_FIELD and knn["k"] == 20 and knn["num_candidates"] == 100
    assert np.allclose(knn["query_vector"], 0.5)
    assert knn["filter"] == [{"bool": {"must_not": [{"terms": {"source": ["/photos/a.jpg"]}}]}}]
    assert body["size"] == 20 and body["_source"] == {"excludes": [EMBEDDING_FIELD]}
    assert "filter" not in image_knn_body(np.ones(4), k=3)["knn"]
    with pytest.raises(ValueError):
        image_knn_body(np.ones(4), k=MAX_KNN + 1)


def test_image_indexes_fit_their_contract_without_connecting(tmp_path):
    from search_engine.index.image_base import ImageIndex
    from search_engine.index.image_elastic import ElasticImageIndex
    from search_engine.index.image_embedded import EmbeddedImageIndex

    elastic = ElasticImageIndex(create_client(settings().index), IMAGE_MODEL, prefix="unit")
    embedded = EmbeddedImageIndex(tmp_path, IMAGE_MODEL)
    assert elastic.alias == "unit-images-resnet50-imagenet1k-v1"
    for store in (elastic, embedded):
        assert isinstance(store, ImageIndex)
        for name, method in inspect.getmembers(ImageIndex, inspect.isfunction):
            if name.startswith("_"):
                continue
            ours = inspect.signature(getattr(type(store), name)).parameters
            theirs = inspect.signature(method).parameters
            assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()]
    elastic.close()
