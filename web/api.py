"""The JSON API under ``/api/v1`` (described by ``openapi.json``, served at ``/api/v1/openapi.json``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from flask import Blueprint, Response, jsonify, request
from werkzeug.datastructures import MultiDict

from search_engine.errors import InvalidRequestError
from search_engine.index import FACET_FIELDS
from search_engine.photo_hash import COPIES_LISTED, DEFAULT_MAX_DISTANCE, HASH_BITS
from search_engine.types import PHOTO, VIDEO, SearchFilters

from .engine import SearchQuery, current_engine
from .errors import WebError

bp = Blueprint("api", __name__)

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
#: The most hits one search may ask for (``k``; the page's "more results" stops there, and
#: ``openapi.json`` states it as the maximum of ``k``).
MAX_RESULTS = 1000


def _number(form: MultiDict, name: str, kind: type, low: float, high: float):
    """Field ``name`` as a ``kind`` within [low, high], None when absent. Given empty or twice, it
    is refused, as the API's schema says, rather than read as absent or as its first value."""
    _once(form, name)
    if name not in form:
        return None
    raw = form[name].strip()
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        noun = "a whole number" if kind is int else "a number"
        raise InvalidRequestError(f"{name} must be {noun} from {low:g} to {high:g}, got {raw!r}")
    return value


def _choice(form: MultiDict, name: str, choices: tuple[str, ...]) -> str | None:
    """Field ``name``, one of ``choices``, or None when absent (given empty or twice: refused)."""
    _once(form, name)
    if name not in form:
        return None
    value = form[name].strip()
    if value not in choices:
        raise InvalidRequestError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _once(form: MultiDict, name: str) -> None:
    given = len(form.getlist(name))
    if given > 1:
        raise InvalidRequestError(f"{name} is given {given} times; give it once")


def parse_search(form: MultiDict, default_k: int) -> SearchQuery:
    """A search's options from its form fields; a bad one is an :class:`InvalidRequestError` naming it."""
    k = _number(form, "k", int, 1, MAX_RESULTS)
    return SearchQuery(
        k=default_k if k is None else k,
        face=_number(form, "face", int, 0, 10_000),
        filters=SearchFilters(
            person=form.get("person", "").strip() or None,
            video=form.get("video", "").strip() or None,
            media_type=_choice(form, "media_type", (PHOTO, VIDEO)),
            min_score=_number(form, "min_score", float, -1.0, 1.0),
        ),
        collapse=_choice(form, "collapse", FACET_FIELDS),
    )


@bp.post("/search")
def search():
    upload = request.files.get("image")
    if upload is None:
        raise InvalidRequestError("send the query photo as the multipart/form-data field 'image'")
    query = parse_search(request.form, current_engine().settings.web.results_per_page)
    return current_engine().search(upload.read(), upload.filename or "upload", query)


@bp.post("/similar")
def similar():
    upload = request.files.get("image")
    if upload is None:
        raise InvalidRequestError("send the query photo as the multipart/form-data field 'image'")
    k = _number(request.form, "k", int, 1, MAX_RESULTS)
    engine = current_engine()
    return engine.similar(
        upload.read(), upload.filename or "upload", engine.settings.web.results_per_page if k is None else k
    )


@bp.get("/people")
def people():
    limit = _number(request.args, "limit", int, 1, 10_000) or 100
    return current_engine().people(request.args.get("q", "").strip() or None, limit)


@bp.get("/persons")
def persons():
    limit = _number(request.args, "limit", int, 1, 10_000) or 100
    offset = _number(request.args, "offset", int, 0, 10_000_000) or 0
    hidden = _choice(request.args, "hidden", ("0", "1")) == "1"
    return current_engine().persons(limit, offset, hidden)


@bp.get("/persons/<person_id>")
def person(person_id: str):
    limit = _number(request.args, "limit", int, 1, 10_000) or 200
    offset = _number(request.args, "offset", int, 0, 10_000_000) or 0
    return current_engine().person(person_id, limit, offset)


@bp.get("/persons/<person_id>/more")
def more_of_person(person_id: str):
    k = _number(request.args, "k", int, 1, MAX_RESULTS) or current_engine().settings.web.results_per_page
    return current_engine().more_of(person_id, k)


#: What a person's POST routes decide, each its own route ``/persons/<id>/<verb>`` (see
#: :meth:`~web.engine.Engine.decide`).
PERSON_DECISIONS = ("name", "merge", "split", "hide", "cover")


def _decide_person(person_id: str, verb: str):
    return current_engine().decide(verb, person_id, _json_body())


for _verb in PERSON_DECISIONS:
    bp.add_url_rule(
        f"/persons/<person_id>/{_verb}",
        endpoint=f"person_{_verb}",
        view_func=_decide_person,
        methods=["POST"],
        defaults={"verb": _verb},
    )


@bp.post("/faces/<face_id>/person")
def move_face(face_id: str):
    return current_engine().decide("move", None, _json_body() | {"face_id": face_id})


def _json_body() -> dict:
    """The request's JSON object. State-changing calls take JSON only: a page of another site can
    send a form across sites, but not this content type without the browser asking first (CORS),
    and the key cookie is SameSite=Lax, never sent with another site's POST."""
    if not request.is_json:
        raise WebError(415, "unsupported_media_type", "send a JSON object with Content-Type: application/json")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    return body


@bp.get("/videos")
def videos():
    return current_engine().videos(_number(request.args, "limit", int, 1, 10_000) or 1000)


@bp.get("/duplicates")
def duplicates():
    chosen = _number(request.args, "max_distance", int, 0, HASH_BITS - 1)
    return current_engine().duplicates(DEFAULT_MAX_DISTANCE if chosen is None else chosen)


@bp.post("/duplicates")
def copies_of_upload():
    upload = request.files.get("image")
    if upload is None:
        raise InvalidRequestError("send the photo as the multipart/form-data field 'image'")
    chosen = _number(request.form, "max_distance", int, 0, HASH_BITS - 1)
    k = _number(request.form, "k", int, 1, MAX_RESULTS)
    return current_engine().copies_of_upload(
        upload.read(),
        upload.filename or "upload",
        DEFAULT_MAX_DISTANCE if chosen is None else chosen,
        COPIES_LISTED if k is None else k,
    )


@bp.get("/faces/<face_id>")
def face(face_id: str):
    return current_engine().face(face_id)


@bp.get("/faces/<face_id>/thumbnail")
def face_thumbnail(face_id: str):
    response = Response(current_engine().thumbnail(face_id), mimetype="image/jpeg")
    # A results grid asks again for the same faces on every "more results"; ten minutes is short
    # enough for a re-indexed file's new face to show soon.
    response.cache_control.private = True
    response.cache_control.max_age = 600
    return response


@bp.get("/health")
def health():
    body, healthy = current_engine().health()
    return jsonify(body), 200 if healthy else 503


@cache
def _openapi() -> dict:
    return json.loads(OPENAPI_PATH.read_text())


@bp.get("/openapi.json")
def openapi():
    return _openapi()
