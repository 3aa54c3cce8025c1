"""HTML pages: the search page, one face in its photo or video, and the media files themselves."""

from __future__ import annotations

from flask import Blueprint, render_template, request, send_file

from search_engine.media_types import media_format
from search_engine.types import PHOTO

from .api import MAX_RESULTS
from .engine import current_engine

bp = Blueprint("pages", __name__)


@bp.get("/")
def search():
    settings = current_engine().settings
    return render_template(
        "search.html",
        per_page=settings.web.results_per_page,
        max_results=MAX_RESULTS,
        max_upload_bytes=settings.web.max_upload_bytes,
        similar_photos=settings.models.image_search,
    )


@bp.get("/faces/<face_id>")
def face(face_id: str):
    engine = current_engine()
    shown = engine.face(face_id)
    known = media_format(shown["source"])
    related = engine.related_photos(shown["source"]) if shown["media_type"] == PHOTO else None
    return render_template("face.html", face=shown, plays=known is not None and known.plays_in_browser, related=related)


#: People per page of the people grid.
PEOPLE_PER_PAGE = 200


@bp.get("/people")
def people():
    offset = request.args.get("offset", "0")
    offset = int(offset) if offset.isdigit() else 0
    shown = current_engine().persons(PEOPLE_PER_PAGE, offset, include_hidden=False)
    following = offset + PEOPLE_PER_PAGE
    return render_template(
        "people.html",
        persons=shown["persons"],
        total=shown["total"],
        next_offset=following if following < shown["total"] else None,
    )


@bp.get("/people/<person_id>")
def person(person_id: str):
    shown = current_engine().person(person_id, limit=1000, offset=0)
    return render_template("person.html", person=shown)


# merge_slashes off: "/media//etc/passwd" must be refused as it stands, not redirected.
@bp.get("/media/<path:path>", merge_slashes=False)
def media(path: str):
    real, found = current_engine().media_file("/" + path)
    # Served as what its name says (with nosniff, so a browser never reads a .jpg holding HTML as
    # a page), named in a Content-Disposition Werkzeug encodes safely, and offered as a download
    # where browsers do not play the format.
    response = send_file(
        real,
        mimetype=found.content_type,
        conditional=True,
        max_age=3600,
        download_name=real.name,
        as_attachment=not found.plays_in_browser,
    )
    # Werkzeug marks it public; these are someone's photos, so no shared cache may keep them.
    response.cache_control.public = False
    response.cache_control.private = True
    return response
