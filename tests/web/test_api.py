"""The JSON API through Flask's test client, on a real index searched with the real models."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import web.engine
from ingest.sources import collect_photos
from search_engine.calibration import shipped_calibration
from search_engine.errors import IndexUnavailableError
from search_engine.ids import face_id
from search_engine.service import SearchService
from search_engine.types import VIDEO, Box, EmbedderInfo, FaceRecord
from web import create_app

from .conftest import PEOPLE, PHOTOS_EACH, service_for


def search(client, photo, **fields):
    with open(photo, "rb") as handle:
        data = {"image": (handle, photo.name), **{k: str(v) for k, v in fields.items()}}
        return client.post("/api/v1/search", data=data, content_type="multipart/form-data")


def error_of(response) -> tuple[int, str, str]:
    body = response.get_json()
    return response.status_code, body["error"]["code"], body["error"]["message"]


def test_each_face_of_a_two_face_photo_finds_its_person(client, library):
    people = {}
    for face in (0, 1):
        response = search(client, library.queries / "pair.jpg", face=face, k=3)
        assert response.status_code == 200
        body = response.get_json()
        assert len(body["query_faces"]) == 2 and body["face"] == face
        assert all(len(f["box"]) == 4 and f["probability"] > 0.9 for f in body["query_faces"])
        assert len(body["hits"]) == 3
        # The group photo's faces are unlabelled: the best labelled hit names the person.
        people[face] = next(hit["person"] for hit in body["hits"] if hit["person"])
    assert sorted(people.values()) == sorted(PEOPLE)

    best = search(client, library.queries / "eileen.jpg").get_json()
    verdicts = best["verdicts"]
    assert best["model"] == "dlib-r1" and verdicts["gallery_size"] == PHOTOS_EACH * 2 + 2 and not verdicts["fixed"]
    assert verdicts["possible_threshold"] <= verdicts["same_person_threshold"] and verdicts["target_fpir"] == 0.01
    top = next(hit for hit in best["hits"] if hit["person"])
    assert top["person"] == "Eileen_Collins" and top["score"] >= verdicts["same_person_threshold"]
    assert top["same_person"] is True and top["verdict"] == "same_person" and best["confident_match"] is True
    assert top["media_type"] == "photo" and top["source"].startswith(str(library.root))
    assert top["thumbnail_url"] == f"/api/v1/faces/{top['face_id']}/thumbnail"
    assert top["face_url"] == f"/faces/{top['face_id']}"
    assert top["media_url"] == "/media" + top["source"]
    others = [hit for hit in best["hits"] if hit["person"] == "Cameraman"]
    assert others and all(hit["same_person"] is False and hit["verdict"] != "same_person" for hit in others)


def test_filters_k_and_collapse(client, library):
    query = library.queries / "eileen.jpg"
    everything = search(client, query).get_json()["hits"]
    assert len(everything) == PHOTOS_EACH * 2 + 2  # default k (20) exceeds the 12 faces indexed
    # Ordered by rank_score (the query expanded with its closest matches); score is the similarity to the query face.
    assert [h["rank_score"] for h in everything] == sorted((h["rank_score"] for h in everything), reverse=True)
    assert everything[0]["score"] > 0.912 and all(-1 <= h["score"] <= 1 for h in everything)

    cameraman = search(client, query, person="Cameraman").get_json()["hits"]
    assert [h["person"] for h in cameraman] == ["Cameraman"] * PHOTOS_EACH
    assert len(search(client, query, k=3).get_json()["hits"]) == 3
    close = search(client, query, min_score=0.95).get_json()["hits"]
    assert close and all(h["score"] >= 0.95 for h in close)
    assert search(client, query, media_type="video").get_json()["hits"] == []
    collapsed = [h["person"] for h in search(client, query, collapse="person").get_json()["hits"]]
    assert len(collapsed) == 3 and [p for p in collapsed if p] == ["Eileen_Collins", "Cameraman"]


@pytest.mark.parametrize(
    "fields, status, code, words",
    [
        ({"face": 5}, 422, "no_face", "face 5 does not exist"),
        ({"face": "first"}, 400, "invalid_request", "face must be a whole number"),
        ({"k": "many"}, 400, "invalid_request", "k must be a whole number from 1 to 1000, got 'many'"),
        ({"k": 0}, 400, "invalid_request", "k must be"),
        ({"min_score": 2}, 400, "invalid_request", "min_score must be a number from -1 to 1"),
        ({"media_type": "audio"}, 400, "invalid_request", "media_type must be one of photo, video"),
        ({"collapse": "colour"}, 400, "invalid_request", "collapse must be one of"),
    ],
)
def test_bad_search_fields_are_named(client, library, fields, status, code, words):
    status_, code_, message = error_of(search(client, library.queries / "pair.jpg", **fields))
    assert (status_, code_) == (status, code) and words in message


def test_bad_uploads_say_why(client, library):
    status, code, message = error_of(search(client, library.queries / "blank.png"))
    assert (status, code) == (422, "no_face")
    assert message.startswith("no face found in the query image (smallest face looked for: ")
    status, code, message = error_of(search(client, library.queries / "notes.jpg"))
    assert (status, code) == (400, "invalid_image") and "notes.jpg" in message and "not an image" in message
    response = client.post("/api/v1/search", data={"k": "3"}, content_type="multipart/form-data")
    assert error_of(response)[:2] == (400, "invalid_request") and "'image'" in error_of(response)[2]
    empty = client.post("/api/v1/search", data={"image": (io.BytesIO(b""), "empty.jpg")})
    assert error_of(empty)[:2] == (400, "invalid_image") and "empty file" in error_of(empty)[2]
    # A well-formed photo too small to hold a face has no face, like the blank one.
    for size in ((1, 1), (31, 200)):
        tiny = io.BytesIO()
        Image.new("RGB", size).save(tiny, format="PNG")
        tiny.seek(0)
        response = client.post("/api/v1/search", data={"image": (tiny, "tiny.png")})
        assert error_of(response)[:2] == (422, "no_face"), size


def test_people_and_videos_facets(client):
    people = client.get("/api/v1/people").get_json()
    assert people == {"people": [{"person": p, "faces": PHOTOS_EACH} for p in sorted(PEOPLE)], "matching": 2}
    # Case and LFW's underscores don't matter to the autocomplete.
    assert [p["person"] for p in client.get("/api/v1/people?q=eileen col").get_json()["people"]] == ["Eileen_Collins"]
    assert client.get("/api/v1/people?q=nobody").get_json() == {"people": [], "matching": 0}
    assert len(client.get("/api/v1/people?limit=1").get_json()["people"]) == 1
    assert error_of(client.get("/api/v1/people?limit=none"))[:2] == (400, "invalid_request")
    assert client.get("/api/v1/videos").get_json() == {"videos": []}


def test_duplicates_are_the_groups_of_the_stored_hashes(client, service):
    """The library's photos are edited copies of two pictures: scaled, shifted, lightened, some
    mirrored; the API groups them as the core groups the index's hashes."""
    from search_engine.photo_hash import DEFAULT_MAX_DISTANCE, near_duplicate_groups

    hashes = service.index.image_hashes()
    found = client.get("/api/v1/duplicates").get_json()
    assert found == {"max_distance": DEFAULT_MAX_DISTANCE, "groups": near_duplicate_groups(hashes)}
    assert found["groups"] and all(set(group) <= set(hashes) for group in found["groups"])
    assert client.get("/api/v1/duplicates?max_distance=0").get_json()["groups"] == near_duplicate_groups(hashes, 0)
    assert error_of(client.get("/api/v1/duplicates?max_distance=256"))[:2] == (400, "invalid_request")


def test_an_uploaded_photo_s_copies_in_the_archive(client, service, library):
    """The query photos are edited copies of the library's two pictures: each finds the copies of
    its own picture, nearest first, and a blank photo and a non-photo find nothing or a 400."""
    from search_engine.imageio import decode_image, read_file
    from search_engine.photo_hash import DEFAULT_MAX_DISTANCE, distances, photo_hash

    hashes = service.index.image_hashes()
    names = sorted(hashes)
    for query in ("eileen.jpg", "cameraman.jpg"):
        path = library.queries / query
        own = photo_hash(decode_image(read_file(path), str(path), 10**8))
        expected = sorted((int(b), n) for n, b in zip(names, distances(own, [hashes[n] for n in names])))
        expected = [(n, b) for b, n in expected if b <= DEFAULT_MAX_DISTANCE]
        with open(path, "rb") as handle:
            found = client.post("/api/v1/duplicates", data={"image": (handle, query)}).get_json()
        assert found["max_distance"] == DEFAULT_MAX_DISTANCE and expected
        assert [(copy["source"], copy["distance"]) for copy in found["duplicates"]] == expected
        assert all(copy["media_url"] for copy in found["duplicates"])
        nearest = found["duplicates"][0]["distance"]
        with open(path, "rb") as handle:
            fields = {"image": (handle, query), "k": "1", "max_distance": str(nearest)}
            one = client.post("/api/v1/duplicates", data=fields).get_json()
        assert one["max_distance"] == nearest and [copy["distance"] for copy in one["duplicates"]] == [nearest]
    with open(library.queries / "notes.jpg", "rb") as handle:
        assert error_of(client.post("/api/v1/duplicates", data={"image": (handle, "notes.jpg")}))[:2] == (
            400,
            "invalid_image",
        )
    assert error_of(client.post("/api/v1/duplicates", data={}))[:2] == (400, "invalid_request")
    with open(library.queries / "blank.png", "rb") as handle:
        fields = {"image": (handle, "blank.png"), "max_distance": "256"}
        assert error_of(client.post("/api/v1/duplicates", data=fields))[:2] == (400, "invalid_request")


def test_face_record_thumbnail_page_and_file(client, library):
    hit = search(client, library.queries / "cameraman.jpg", k=1, person="Cameraman").get_json()["hits"][0]
    face = client.get(f"/api/v1/faces/{hit['face_id']}").get_json()
    assert face["face_id"] == hit["face_id"] and face["person"] == "Cameraman" and "embedding" not in face
    assert face["box"] == hit["box"] and face["image_width"] > 0 and face["media_url"] == hit["media_url"]

    thumbnail = client.get(hit["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/jpeg"
    with Image.open(io.BytesIO(thumbnail.data)) as crop:
        assert crop.format == "JPEG" and max(crop.size) <= 160 and min(crop.size) > 40

    page = client.get(hit["face_url"])
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert hit["media_url"].encode() in page.data and b"Cameraman" in page.data

    # Files are streamed: closing each response closes its file.
    with client.get(hit["media_url"]) as photo:
        assert photo.status_code == 200 and photo.mimetype in ("image/jpeg", "image/png")
        assert photo.data == Path(hit["source"]).read_bytes()
    with client.get("/media" + str(library.root / "Cameraman" / "Cameraman_0000.png")) as png:
        assert png.status_code == 200 and png.mimetype == "image/png"
    with client.get(hit["media_url"], headers={"Range": "bytes=0-9"}) as part:
        assert part.status_code == 206 and len(part.data) == 10


def test_unknown_faces_and_routes_are_json_404s(client):
    assert error_of(client.get("/api/v1/faces/nope")) == (404, "not_found", "no face with id 'nope'")
    assert error_of(client.get("/api/v1/faces/nope/thumbnail"))[:2] == (404, "not_found")
    assert error_of(client.get("/api/v1/nothing"))[:2] == (404, "not_found")
    assert error_of(client.get("/api/v1/search"))[:2] == (405, "method_not_allowed")
    assert client.get("/faces/nope").status_code == 404


def test_a_method_not_allowed_says_which_are_allowed(client):
    """RFC 9110: a 405 carries Allow, as schemathesis checks."""
    for method, path, allowed in (("TRACE", "/api/v1/health", "GET"), ("GET", "/api/v1/search", "POST")):
        response = client.open(path, method=method)
        assert response.status_code == 405 and response.is_json
        assert allowed in {m.strip() for m in response.headers["Allow"].split(",")}


def test_health_reports_model_and_counts(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.get_json()
    verdicts = body["model"].pop("verdicts")
    calibration = body["model"].pop("calibration")
    assert body == {
        "status": "ok",
        "model": {"loaded": True, "name": "dlib-r1"},
        "index": {"reachable": True, "backend": "embedded", "faces": PHOTOS_EACH * 2 + 2, "people": 2, "videos": 0},
        "similar_photos": None,
    }
    assert verdicts["gallery_size"] == PHOTOS_EACH * 2 + 2 and verdicts["target_fpir"] == 0.01
    assert 0 < verdicts["possible_threshold"] <= verdicts["same_person_threshold"] < 1
    assert calibration == shipped_calibration(EmbedderInfo("dlib", "r1", 128)).to_dict() | {"stored_with_index": False}


class DownIndex:
    """An index whose engine does not answer."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        def unavailable(*args, **kwargs):
            raise IndexUnavailableError("cannot reach Elasticsearch at http://es:9200: connection refused")

        return unavailable


def test_an_unreachable_index_is_a_503_not_a_crash(library, service):
    app = create_app(
        library.settings, service=SearchService(library.settings, service.pipeline, DownIndex(service.index.model))
    )
    client = app.test_client()
    status, code, message = error_of(search(client, library.queries / "eileen.jpg"))
    assert (status, code) == (503, "index_unavailable") and "connection refused" in message
    assert error_of(client.get("/api/v1/people"))[:2] == (503, "index_unavailable")
    health = client.get("/api/v1/health")
    assert health.status_code == 503
    body = health.get_json()
    assert body["status"] == "unavailable" and body["index"]["reachable"] is False and body["model"]["loaded"] is True


def video_app(tmp_path, name, library, service, astronaut, detector, dlib_embedder):
    """An app whose index holds one video track of the astronaut, its (fake) clip ``name`` inside a media root."""
    clip = tmp_path / "media" / name
    clip.parent.mkdir(exist_ok=True)
    clip.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))
    settings = library.settings.replace(data_dir=tmp_path / f"data-{name}", media_roots=(clip.parent,))
    video_service = service_for(settings, detector, dlib_embedder)
    (face,) = service.faces_in(astronaut)
    key = service.index.model.key
    video_service.index.upsert(
        [
            FaceRecord(
                face_id=face_id(key, str(clip), 0),
                source=str(clip),
                face_no=0,
                box=Box(181, 62, 268, 172),
                probability=0.99,
                embedding=face.embedding,
                model=key,
                person="Eileen_Collins",
                media_type=VIDEO,
                video=clip.name,
                frame=300,
                timestamp=12.5,
                start=12.0,
                end=31.0,
            )
        ]
    )
    return create_app(settings, service=video_service).test_client()


@pytest.fixture()
def video_client(tmp_path, library, service, astronaut, detector, dlib_embedder):
    return video_app(tmp_path, "launch.mp4", library, service, astronaut, detector, dlib_embedder)


@pytest.mark.parametrize(
    "name, content_type", [("talk.mpg", "video/mpeg"), ("talk.wmv", "video/x-ms-wmv"), ("talk.avi", "video/x-msvideo")]
)
def test_every_video_format_indexed_is_served_and_one_browsers_cannot_play_is_a_download(
    tmp_path, library, service, astronaut, detector, dlib_embedder, name, content_type
):
    client = video_app(tmp_path, name, library, service, astronaut, detector, dlib_embedder)
    (hit,) = search(client, library.queries / "eileen.jpg").get_json()["hits"]
    assert hit["media_url"].endswith(name) and hit["thumbnail_url"] is not None
    with client.get(hit["media_url"]) as clip:
        assert clip.status_code == 200 and clip.mimetype == content_type
    page = client.get(hit["face_url"]).data.decode()
    assert "<video" not in page and f'href="{hit["media_url"]}" download' in page and "0:12" in page


def test_video_hits_carry_their_clip_and_time_range(video_client, library, monkeypatch, astronaut):
    (hit,) = search(video_client, library.queries / "eileen.jpg").get_json()["hits"]
    assert hit["media_type"] == "video" and hit["video"] == "launch.mp4"
    assert (hit["frame"], hit["timestamp"], hit["start"], hit["end"]) == (300, 12.5, 12.0, 31.0)
    assert hit["media_url"].endswith("/launch.mp4")
    with video_client.get(hit["media_url"]) as clip:
        assert clip.status_code == 200 and clip.mimetype == "video/mp4"
    assert video_client.get("/api/v1/videos").get_json() == {"videos": [{"video": "launch.mp4", "faces": 1}]}
    page = video_client.get(hit["face_url"]).data.decode()
    assert f'src="{hit["media_url"]}#t=12.0,31.0"' in page and "0:12–0:31" in page

    # The thumbnail is cut from the track's best frame.
    frames = []
    monkeypatch.setattr(web.engine, "read_frame", lambda path, frame: frames.append((path.name, frame)) or astronaut)
    thumbnail = video_client.get(hit["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.mimetype == "image/jpeg" and frames == [("launch.mp4", 300)]


def test_openapi_describes_every_route(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    routes = {
        (rule.rule.removeprefix("/api/v1").replace("<", "{").replace(">", "}"), method.lower())
        for rule in client.application.url_map.iter_rules()
        if rule.rule.startswith("/api/v1/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    described = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert routes == described
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and "200" in operation["responses"], (path, method)


def test_same_person_verdict_follows_the_setting(library, service):
    settings = library.settings.replace(same_person_threshold=0.999)
    client = create_app(settings, service=SearchService(settings, service.pipeline, service.index)).test_client()
    body = search(client, library.queries / "eileen.jpg", k=1).get_json()
    assert body["verdicts"]["same_person_threshold"] == 0.999 and body["verdicts"]["fixed"] is True
    assert body["hits"][0]["same_person"] is False and body["confident_match"] is False


def test_the_largest_face_is_searched_by_default(client, library):
    body = search(client, library.queries / "pair.jpg", k=1).get_json()
    boxes = [np.array(f["box"]) for f in body["query_faces"]]
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert body["face"] == int(np.argmax(areas)) and [f["face"] for f in body["query_faces"]] == [0, 1]


def test_kibana_loads_thumbnails_from_a_route_the_app_serves(client):
    from ingest.kibana.objects import THUMBNAIL_PATH

    adapter = client.application.url_map.bind("localhost")
    endpoint, values = adapter.match(THUMBNAIL_PATH.replace("{{value}}", "abc123"))
    assert endpoint == "api.face_thumbnail" and values == {"face_id": "abc123"}


def test_the_page_size_and_the_openapi_maximum_follow_the_api_limit(library, service):
    from search_engine.errors import ConfigError
    from web.api import MAX_RESULTS, OPENAPI_PATH

    with pytest.raises(ConfigError, match="FACESEARCH_RESULTS_PER_PAGE must be at most"):
        create_app(library.settings.replace(results_per_page=MAX_RESULTS + 1), service=service)
    doc = json.loads(OPENAPI_PATH.read_text())
    (k,) = [
        prop
        for content in doc["paths"]["/search"]["post"]["requestBody"]["content"].values()
        for name, prop in content["schema"]["properties"].items()
        if name == "k"
    ]
    assert k["maximum"] == MAX_RESULTS


def test_the_openapi_enums_are_the_values_the_code_accepts_and_answers():
    from search_engine.media_types import FORMATS
    from search_engine.types import FACET_FIELDS, PHOTO, VIDEO
    from web.api import OPENAPI_PATH
    from web.errors import ERROR_CODES

    doc = json.loads(OPENAPI_PATH.read_text())
    codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(ERROR_CODES)
    form = doc["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert form["collapse"]["enum"] == list(FACET_FIELDS)
    assert form["media_type"]["enum"] == [PHOTO, VIDEO]
    upload = doc["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]["image"]
    photos = dict.fromkeys(f.content_type for f in FORMATS.values() if f.kind == PHOTO)
    assert upload["contentType"].split(", ") == list(photos)


def test_similar_photos_over_the_api_and_a_clear_503_when_off(library, client, described):
    from search_engine.photo_hash import DEFAULT_MAX_DISTANCE, distances

    with open(library.queries / "eileen.jpg", "rb") as handle:
        off = client.post("/api/v1/similar", data={"image": (handle, "eileen.jpg")})
    assert off.status_code == 503 and off.get_json()["error"]["code"] == "model_unavailable"
    assert "FACESEARCH_IMAGE_SEARCH=1" in off.get_json()["error"]["message"]

    faces = described.index
    photos = collect_photos([library.root]).photos
    on = create_app(described.settings, service=described).test_client()
    indexed = sorted(library.root.rglob("*.jpg"))[0]
    with open(indexed, "rb") as handle:
        body = on.post("/api/v1/similar", data={"image": (handle, indexed.name), "k": "3"}).get_json()
    assert body["model"] == "resnet50-imagenet1k-v1" and body["photos"] == len(photos) and len(body["hits"]) == 3
    top = body["hits"][0]
    assert top["source"] == str(indexed) and top["score"] > 0.99
    with on.get(top["media_url"]) as served:
        assert served.status_code == 200
    assert on.post("/api/v1/similar", data={}).status_code == 400
    assert on.get("/api/v1/health").get_json()["similar_photos"] == {
        "model": "resnet50-imagenet1k-v1",
        "pictures": len(photos),
    }
    # A photo's page lists the photos that look like it, and its near-duplicates.
    page = on.get(f"/faces/{faces.faces_of_source(str(indexed))[0].face_id}").data.decode()
    assert 'id="similar"' in page and Path(body["hits"][1]["source"]).name in page
    hashes = faces.image_hashes()
    others = sorted(name for name in hashes if name != str(indexed))
    apart = dict(zip(others, distances(hashes[str(indexed)], [hashes[name] for name in others])))
    copies = sorted((bits, name) for name, bits in apart.items() if bits <= DEFAULT_MAX_DISTANCE)
    assert copies and all(f"{name}</a>" in page for _, name in copies)
    assert f"({copies[0][0]} of 256 hash bits apart)" in page
    with open(indexed, "rb") as handle:
        assert on.post("/api/v1/similar", data={"image": (handle, indexed.name), "k": "0"}).status_code == 400
