"""Only files inside the media roots are served, uploads are capped and not kept, API keys are enforced."""

from __future__ import annotations

import io
import logging
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from web import create_app

from .test_api import error_of, search


@pytest.fixture()
def outside(library):
    """A real photo next to the media root, reachable by a symlink from inside it."""
    secret = library.root.parent / "secret.jpg"
    secret.write_bytes((library.root / "Cameraman" / "Cameraman_0001.jpg").read_bytes())
    link = library.root / "Cameraman" / "escape.jpg"
    link.symlink_to(secret)
    inside = library.root / "group" / "alias.jpg"
    inside.symlink_to(library.root / "Cameraman" / "Cameraman_0001.jpg")
    (library.root / "group" / "notes.txt").write_text("not media")
    yield secret
    for path in (link, inside, library.root / "group" / "notes.txt", secret):
        path.unlink()


def test_nothing_outside_the_media_roots_is_served(client, library, outside):
    root = str(library.root).lstrip("/")
    attempts = [
        f"/media/{root}/../secret.jpg",
        f"/media/{root}/Cameraman/../../secret.jpg",
        f"/media/{root}/%2e%2e/secret.jpg",
        f"/media/{root}/%2e%2e%2fsecret.jpg",
        f"/media/{root}/..%2Fsecret.jpg",
        f"/media/{root}/%2E%2E%2F%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/media/etc/passwd",
        "/media//etc/passwd",
        f"/media/%2F{str(outside).lstrip('/')}",
        f"/media/{str(outside).lstrip('/')}",
        f"/media/{root}/Cameraman/escape.jpg",  # a symlink leading out of the root
        f"/media/{root}/group/notes.txt",  # inside, but not a photo or video
        f"/media/{root}/Cameraman",  # a folder
        f"/media/{root}/Cameraman/Cameraman_0001.jpg%00.txt",
        f"/media/{root}/Cameraman/missing.jpg",
    ]
    for url in attempts:
        with client.get(url) as response:
            assert response.status_code == 404, url
            assert outside.read_bytes() != response.data
    with client.get(f"/media/{root}/group/alias.jpg") as allowed:  # a symlink that stays inside
        assert allowed.status_code == 200 and allowed.mimetype == "image/jpeg"


def test_without_media_roots_no_file_or_thumbnail_is_served(library, service):
    client = create_app(library.settings.replace(media_roots=()), service=service).test_client()
    hit = search(client, library.queries / "eileen.jpg", k=1).get_json()["hits"][0]
    assert hit["media_url"] is None and hit["thumbnail_url"] is None
    assert error_of(client.get(f"/api/v1/faces/{hit['face_id']}/thumbnail"))[:2] == (404, "not_found")
    assert client.get("/media" + hit["source"]).status_code == 404


def test_oversized_uploads_get_413(library, service):
    client = create_app(library.settings.replace(max_upload_bytes=50_000), service=service).test_client()
    photo = (library.queries / "pair.jpg").read_bytes()
    assert len(photo) > 50_000
    response = client.post("/api/v1/search", data={"image": (io.BytesIO(photo), "pair.jpg")})
    status, code, message = error_of(response)
    assert (status, code) == (413, "too_large") and "0.05 MB" in message


def test_non_images_get_400(client):
    for name, data in (("photo.jpg", b"<html>hello</html>"), ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(50))):
        status, code, message = error_of(client.post("/api/v1/search", data={"image": (io.BytesIO(data), name)}))
        assert (status, code) == (400, "invalid_image") and message.startswith(f"{name}: ")


def test_uploads_are_kept_only_when_asked(tmp_path, library, service):
    search(create_app(library.settings, service=service).test_client(), library.queries / "eileen.jpg")
    assert library.settings.web.keep_uploads is None
    kept = tmp_path / "kept"
    client = create_app(library.settings.replace(keep_uploads=kept), service=service).test_client()
    assert search(client, library.queries / "eileen.jpg").status_code == 200
    (copy,) = kept.iterdir()
    assert copy.suffix == ".jpg" and copy.read_bytes() == (library.queries / "eileen.jpg").read_bytes()


@pytest.fixture()
def keyed(library, service):
    return create_app(library.settings.replace(api_keys=("k-one", "k-two")), service=service).test_client()


def test_api_keys_guard_every_call(keyed, library):
    for url in (
        "/api/v1/health",
        "/api/v1/people",
        "/api/v1/persons",
        "/api/v1/persons/p1",
        "/api/v1/persons/p1/more",
        "/api/v1/videos",
        "/api/v1/duplicates",
        "/api/v1/openapi.json",
        "/api/v1/faces/x",
    ):
        response = keyed.get(url)
        assert error_of(response)[:2] == (401, "unauthorized"), url
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for url in ("/api/v1/persons/p1/name", "/api/v1/persons/p1/merge", "/api/v1/faces/x/person"):
        assert error_of(keyed.post(url, json={"name": "x"}))[:2] == (401, "unauthorized"), url
    for page in ("/people", "/people/p1"):
        assert keyed.get(page).status_code == 401
    assert error_of(search(keyed, library.queries / "eileen.jpg"))[:2] == (401, "unauthorized")
    status, code, message = error_of(keyed.get("/api/v1/health", headers={"X-API-Key": "k-three"}))
    assert (status, code) == (401, "unauthorized") and "not valid" in message
    assert keyed.get("/api/v1/health", headers={"Authorization": "Basic k-one"}).status_code == 401

    assert keyed.get("/api/v1/health", headers={"X-API-Key": "k-one"}).status_code == 200
    assert keyed.get("/api/v1/health", headers={"Authorization": "Bearer k-two"}).status_code == 200
    assert keyed.get("/api/v1/people?key=k-one").status_code == 200


def test_a_browser_keeps_its_key_in_a_cookie(keyed, library):
    page = keyed.get("/")
    assert page.status_code == 401 and page.mimetype == "text/html" and b'name="key"' in page.data
    with keyed.get("/static/app.js") as script:  # static files hold nothing private
        assert script.status_code == 200
    source = library.root / "Cameraman" / "Cameraman_0001.jpg"
    assert keyed.get(f"/media{source}").status_code == 401

    opened = keyed.get("/?key=k-two&x=1")
    assert opened.status_code == 302 and opened.headers["Location"] == "/?x=1"
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith("facesearch_key=k-two;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie

    # The test client now sends the cookie, as a browser would for the page, its API calls and media.
    assert keyed.get("/").status_code == 200
    assert keyed.get("/api/v1/health").status_code == 200
    with keyed.get(f"/media{source}") as photo:
        assert photo.status_code == 200
    hit = search(keyed, library.queries / "eileen.jpg", k=1).get_json()["hits"][0]
    with keyed.get(hit["thumbnail_url"]) as thumbnail:
        assert thumbnail.status_code == 200

    keyed.set_cookie("facesearch_key", "stale")
    assert keyed.get("/").status_code == 401


def test_media_is_served_as_its_name_says_never_as_a_page(client, library):
    """A .jpg in a media root that holds HTML is still image/jpeg, with nosniff: no browser runs it
    as a page. The file is named in a Content-Disposition that cannot be broken out of, and a
    format browsers do not play is offered as a download."""
    folder = library.root / "group"
    trap = folder / 'tr"ap; name=évil.jpg'
    trap.write_bytes(b"<html><script>alert(document.cookie)</script></html>")
    clip = folder / "clip.mkv"
    clip.write_bytes(b"\x1aE\xdf\xa3 not much of a video")
    try:
        root = str(folder).lstrip("/")
        with client.get(f"/media/{root}/{urllib.parse.quote(trap.name)}") as response:
            assert response.status_code == 200 and response.mimetype == "image/jpeg"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            kind, options = parse_options_header(response.headers["Content-Disposition"])
            assert (kind, options) == ("inline", {"filename": trap.name})
        with client.get(f"/media/{root}/clip.mkv") as response:
            assert response.status_code == 200 and response.mimetype == "video/x-matroska"
            assert response.headers["Content-Disposition"] == "attachment; filename=clip.mkv"
    finally:
        trap.unlink()
        clip.unlink()


def test_state_changing_calls_take_json_only(client):
    """What another site's page can send without the browser asking first (a form, or text/plain
    holding JSON) is refused before anything changes."""
    for url in ("/api/v1/persons/p1/name", "/api/v1/persons/p1/merge", "/api/v1/faces/x/person"):
        as_text = client.post(url, data='{"name": "x", "into": "p2", "person_id": "p2"}', content_type="text/plain")
        assert error_of(as_text)[:2] == (415, "unsupported_media_type"), url
        as_form = client.post(url, data={"name": "x", "into": "p2", "person_id": "p2"})
        assert error_of(as_form)[:2] == (415, "unsupported_media_type"), url


def test_keys_are_never_logged(keyed, library, caplog):
    caplog.set_level(logging.DEBUG)
    keyed.get("/api/v1/health", headers={"X-API-Key": "k-one"})
    keyed.get("/api/v1/health", headers={"X-API-Key": "k-three"})
    keyed.get("/?key=k-two")
    keyed.get("/api/v1/nothing-here", headers={"Authorization": "Bearer k-one"})
    with open(library.queries / "eileen.jpg", "rb") as photo:
        keyed.post("/api/v1/search", data={"image": (photo, "eileen.jpg")}, headers={"X-API-Key": "k-one"})
    assert not any(key in caplog.text for key in ("k-one", "k-two", "k-three"))


TRAVERSAL_PIECES = (
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "%252e%252e",
    "..%2f",
    "..%5c",
    "..\\",
    "\\",
    "%5c",
    "%2f",
    "%00",
    "%00.jpg",
    "/",
    "//",
    "Cameraman",
    "leak.jpg",
    "private.jpg",
    "Cameraman_0001.jpg",
    "etc",
    "passwd",
)


@pytest.fixture()
def private(library):
    """A photo-named file next to the media root, with bytes no file inside holds, and a symlink
    to it from inside the root."""
    secret = library.root.parent / "private.jpg"
    secret.write_bytes((library.root / "Cameraman" / "Cameraman_0001.jpg").read_bytes() + b"private")
    link = library.root / "Cameraman" / "leak.jpg"
    link.symlink_to(secret)
    yield secret
    link.unlink()
    secret.unlink()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pieces=st.lists(st.sampled_from(TRAVERSAL_PIECES), min_size=1, max_size=8), join=st.sampled_from(["/", ""]))
def test_traversal_variants_never_leave_the_media_roots(client, library, private, pieces, join):
    """Encoded, double-encoded, NUL-byte, Windows-separator and symlink paths, in any order after
    the root: an answer is a 404 or a file inside the root, never the file outside it."""
    root = str(library.root).lstrip("/")
    with client.get(f"/media/{root}/" + join.join(pieces)) as response:
        assert response.status_code in (200, 404)
        assert response.data != private.read_bytes()
