"""The one object the views call (``app.extensions["facesearch"]``): the search service, built once
per process, and the operation behind each page and API call. Views only parse and render."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path

from flask import current_app, url_for

from search_engine import people
from search_engine.calibration import calibration_and_origin
from search_engine.config import Settings
from search_engine.errors import (
    ConfigError,
    DimensionMismatchError,
    ImageError,
    IndexUnavailableError,
    InvalidRequestError,
    ModelUnavailableError,
)
from search_engine.imageio import content_hash, decode_image, read_file
from search_engine.index import FACET_LIMIT, FaceIndex, create_index
from search_engine.media_types import MediaFormat, is_image_path, media_format
from search_engine.pipeline import FacePipeline
from search_engine.service import SearchService
from search_engine.similar import SimilarPhotos
from search_engine.types import VIDEO, FaceRecord, SearchFilters
from search_engine.video import read_frame

from .errors import WebError
from .media import MediaRoots, face_thumbnail

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchQuery:
    """A search's options: ``k`` hits, which query face (0-based, as listed; None = the largest),
    filters applied before ranking, and an optional ``collapse`` field (best hit per value)."""

    k: int
    face: int | None = None
    filters: SearchFilters = field(default_factory=SearchFilters)
    collapse: str | None = None


class Engine:
    """Settings, media roots and the lazily built :class:`SearchService` of one app.

    Args:
        settings: the app's settings.
        service: an already built service (tests share one); None builds it on first use.
    """

    def __init__(self, settings: Settings, service: SearchService | None = None) -> None:
        self.settings = settings
        self.media = MediaRoots(settings.web.media_roots)
        self._service = service
        self._pipeline = service.pipeline if service else None
        self._loading = threading.Lock()
        # One query through the models at a time per process: its torch threads already take its
        # share of the cores.
        self._inference = threading.Lock()

    @property
    def model_loaded(self) -> bool:
        return self._pipeline is not None

    def load(self) -> None:
        """Load the models now; open the index too if it answers (otherwise on a later request)."""
        try:
            self.service()
        except IndexUnavailableError as exc:
            log.warning("the index is not reachable yet (%s); retrying on the next request", exc.message)

    def service(self) -> SearchService:
        """The process's search service. The models load once; the index, if it does not answer,
        is tried again on the next call (Elasticsearch may come up after the web app)."""
        if self._service is None:
            with self._loading:
                if self._pipeline is None:
                    self._pipeline = FacePipeline.from_settings(self.settings.models)
                if self._service is None:
                    index = create_index(self.settings.index, self._pipeline.embedder.info)
                    index.ensure()
                    photos = None
                    if self._pipeline.image_embedder is not None:
                        photos = SimilarPhotos.open(self.settings, self._pipeline.image_embedder)
                    self._service = SearchService(self.settings, self._pipeline, index, photos)
        return self._service

    def _index(self) -> FaceIndex:
        return self.service().index

    def search(self, data: bytes, filename: str, query: SearchQuery) -> dict:
        """Search with one face of an uploaded photo: the faces found in it, which one was used,
        the model, its same-person threshold and the hits, each with its links and verdict."""
        image = decode_image(data, filename, self.settings.models.max_image_pixels)
        if self.settings.web.keep_uploads is not None:
            self._keep(data, filename)
        service = self.service()
        with self._inference:
            result = service.search_image(
                image, k=query.k, filters=query.filters, face=query.face, collapse=query.collapse
            )
        body = result.to_dict()
        for hit in body["hits"]:
            hit.update(self._links(hit["face_id"], hit["source"]))
        return {"model": service.index.model.key, **body}

    def similar(self, data: bytes, filename: str, k: int) -> dict:
        """The ``k`` indexed photos that look most like an uploaded photo as a whole, best first,
        each with its score (whole-image cosine similarity) and a link to its file where it may be
        served; ``photos``: how many the image index holds."""
        image = decode_image(data, filename, self.settings.models.max_image_pixels)
        photos = self.service().similar_photos()
        with self._inference:
            hits = photos.similar_image(image, k=k)
        return {
            "model": photos.model.info.key,
            "photos": photos.images.count(),
            "hits": [hit.to_dict() | {"media_url": self._media_url(hit.source)} for hit in hits],
        }

    def related_photos(self, source: str, similar: int = 8) -> dict:
        """What a photo's page lists beside it: its near-duplicates (photos whose perceptual hashes
        are within the default distance of its own, nearest first, with how many bits apart, at
        most :data:`~search_engine.photo_hash.COPIES_LISTED`) and, where similar-photo search is
        on, the ``similar`` other photos that look most like it (else None); each with a link to
        its file where it may be served."""
        from search_engine.photo_hash import COPIES_LISTED, DEFAULT_MAX_DISTANCE

        index = self._index()
        record = index.get_sources([source]).get(source)
        copies = []
        if record is not None and record.image_hash is not None:
            copies = index.near_duplicates(
                record.image_hash, DEFAULT_MAX_DISTANCE, COPIES_LISTED, exclude_source=source
            )
        found = None
        service = self.service()
        if service.photos is not None and service.photos.images.embedding(source) is not None:
            found = [
                hit.to_dict() | {"media_url": self._media_url(hit.source)}
                for hit in service.photos.similar_to_source(source, k=similar)
            ]
        return {"duplicates": self._copies(copies), "similar": found}

    def copies_of_upload(self, data: bytes, filename: str, max_distance: int, k: int) -> dict:
        """The indexed photos that are near-duplicates of an uploaded photo (perceptual hashes
        within ``max_distance`` bits of its own), nearest first, at most ``k``: "is this picture
        already in the archive, resized or recompressed?". No model runs."""
        from search_engine.photo_hash import photo_hash

        image = decode_image(data, filename, self.settings.models.max_image_pixels)
        copies = self._index().near_duplicates(photo_hash(image), max_distance, k)
        return {"max_distance": max_distance, "duplicates": self._copies(copies)}

    def _copies(self, copies: list[tuple[str, int]]) -> list[dict]:
        """Near-duplicates (source, bits apart) as the API and the pages show them, with links."""
        return [{"source": name, "distance": bits, "media_url": self._media_url(name)} for name, bits in copies]

    def _media_url(self, source: str) -> str | None:
        return url_for("pages.media", path=source.lstrip("/")) if self.media.resolve(source) is not None else None

    def _keep(self, data: bytes, filename: str) -> None:
        suffix = Path(filename).suffix.lower()
        name = content_hash(data) + (suffix if is_image_path(filename) else "")
        try:
            self.settings.web.keep_uploads.mkdir(parents=True, exist_ok=True)
            (self.settings.web.keep_uploads / name).write_bytes(data)
        except OSError as exc:
            # Keeping a copy is a convenience; the search itself still runs.
            log.warning("could not keep the upload %s: %s", name, exc)

    def _links(self, face_id: str, source: str) -> dict:
        """URLs of a face's page and thumbnail, and of its file when that may be served (else None)."""
        media_url = self._media_url(source)
        return {
            "face_url": url_for("pages.face", face_id=face_id),
            "thumbnail_url": url_for("api.face_thumbnail", face_id=face_id) if media_url else None,
            "media_url": media_url,
        }

    def people(self, contains: str | None, limit: int) -> dict:
        """Labelled people with their face counts, most faces first; ``contains`` keeps the names
        holding it, ignoring case and treating ``_`` as a space (LFW writes ``Ada_Lovelace``)."""
        facets = self._index().facets("person", size=FACET_LIMIT)
        if contains:
            needle = _loose(contains)
            facets = [f for f in facets if needle in _loose(f.value)]
        return {"people": [{"person": f.value, "faces": f.count} for f in facets[:limit]], "matching": len(facets)}

    def persons(self, limit: int, offset: int, include_hidden: bool) -> dict:
        """The people the faces were grouped into (``facesearch people cluster``), the unnamed
        first, each order by face count: the ones a human should look at come first."""
        index = self._index()
        found = people.list_people(index, include_hidden=include_hidden)
        found.sort(key=lambda p: (p.name is not None, -p.face_count, p.person_id))
        shown = people.with_covers(index, found[offset : offset + limit])
        return {"persons": [self._person(p) for p in shown], "total": len(found)}

    def person(self, person_id: str, limit: int, offset: int) -> dict:
        """One person, with one page of their faces (each with its links)."""
        index = self._index()
        found = people.get_person(index, person_id)
        shown = found.face_ids[offset : offset + limit]
        records = index.records(shown)
        faces = [self._face_summary(records[face_id]) for face_id in shown if face_id in records]
        return self._person(found) | {"faces": faces}

    def more_of(self, person_id: str, k: int) -> dict:
        """The faces not yet a person's most like them (:meth:`SearchService.search_person`), each
        with its links and verdict: candidates for a human to confirm."""
        body = self.service().search_person(person_id, k=k).to_dict()
        for hit in body["hits"]:
            hit.update(self._links(hit["face_id"], hit["source"]))
        return body

    def _person(self, person: people.Person) -> dict:
        return person.to_dict() | {
            "person_url": url_for("pages.person", person_id=person.person_id),
            "cover_url": url_for("api.face_thumbnail", face_id=person.cover_face_id),
        }

    def _face_summary(self, record: FaceRecord) -> dict:
        return {
            "face_id": record.face_id,
            "source": record.source,
            "media_type": record.media_type,
            "timestamp": record.timestamp,
            "box": record.box.as_list(),
            "label": record.label,
        } | self._links(record.face_id, record.source)

    def decide(self, verb: str, person_id: str | None, body: dict) -> dict:
        """Record one human decision (``verb``: name, merge, split, hide, cover, move) and answer
        with the person it leaves (for ``move`` out of everyone: the face and None)."""
        index = self._index()
        if verb == "name":
            changed = people.name_person(index, person_id, _text(body, "name", nullable=True))
        elif verb == "merge":
            changed = people.merge_people(index, person_id, _texts(body, "others"))
        elif verb == "split":
            changed = people.split_person(index, person_id, _texts(body, "face_ids"))
        elif verb == "hide":
            people.hide_person(index, person_id, hidden=_flag(body, "hidden"))
            changed = people.get_person(index, person_id)
        elif verb == "cover":
            people.set_cover(index, person_id, _text(body, "face_id"))
            changed = people.get_person(index, person_id)
        else:
            face_id, target = _text(body, "face_id"), _text(body, "person_id", nullable=True)
            people.move_face(index, face_id, target)
            if target is None:
                return {"face_id": face_id, "person": None}
            changed = people.get_person(index, target)
        return {"person": self._person(changed)}

    def videos(self, limit: int) -> dict:
        """Videos with their face (track) counts, most first."""
        facets = self._index().facets("video", size=min(limit, FACET_LIMIT))
        return {"videos": [{"video": f.value, "faces": f.count} for f in facets]}

    def duplicates(self, max_distance: int) -> dict:
        """Groups of near-identical photos (:func:`~search_engine.photo_hash.near_duplicate_groups`)."""
        from search_engine.photo_hash import near_duplicate_groups

        groups = near_duplicate_groups(self._index().image_hashes(), max_distance)
        return {"max_distance": max_distance, "groups": groups}

    def face(self, face_id: str) -> dict:
        """One stored face without its embedding, box ``[x1, y1, x2, y2]`` in source pixels, with links."""
        record = self._record(face_id)
        values = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "embedding"}
        values.update(box=record.box.as_list(), probability=round(record.probability, 4))
        return values | self._links(record.face_id, record.source)

    def _record(self, face_id: str) -> FaceRecord:
        record = self._index().get(face_id)
        if record is None:
            raise WebError(404, "not_found", f"no face with id {face_id!r}")
        return record

    def thumbnail(self, face_id: str) -> bytes:
        """A JPEG of one face cut from its photo or video frame (see :func:`face_thumbnail`)."""
        record = self._record(face_id)
        path = self.media.resolve(record.source)
        if path is None:
            raise WebError(404, "not_found", f"the file of face {face_id} is not inside a media root")
        try:
            if record.media_type == VIDEO:
                image = read_frame(path, record.frame or 0)
            else:
                image = decode_image(read_file(path), record.source, self.settings.models.max_image_pixels)
        except ImageError as exc:
            raise WebError(404, "unreadable", f"the file of face {face_id} cannot be read: {exc.reason}") from None
        return face_thumbnail(image, record.box)

    def media_file(self, path: str) -> tuple[Path, MediaFormat]:
        """The real file behind a requested absolute path and its format; 404 unless it may be served."""
        real = self.media.resolve(path)
        if real is None:
            raise WebError(404, "not_found", "no such file in the media roots")
        return real, media_format(real)

    def health(self) -> tuple[dict, bool]:
        """Whether the model is loaded and the index answers, with its counts, and what the
        similar-photo index holds where that search is on (else None); and whether all is well."""
        body: dict = {
            "status": "ok",
            "model": {"loaded": False},
            "index": {"reachable": False, "backend": self.settings.index.backend},
            "similar_photos": None,
        }
        judged = described = None
        try:
            index = self._index()
            counts = {
                "faces": index.count(),
                "people": len(index.facets("person", size=FACET_LIMIT)),
                "videos": len(index.facets("video", size=FACET_LIMIT)),
            }
            body["index"].update(reachable=True, **counts)
            photos = self._service.photos
            if photos is not None:
                body["similar_photos"] = {"model": photos.model.info.key, "pictures": photos.images.count()}
            calibration, stored = calibration_and_origin(index)
            if calibration is not None:
                described = calibration.to_dict() | {"stored_with_index": stored}
            judged = self._service.judged_by(calibration)
        except (ModelUnavailableError, IndexUnavailableError, DimensionMismatchError, ConfigError) as exc:
            body.update(status="unavailable", problem=exc.message)
        if self._service is not None:
            body["model"] = {
                "loaded": True,
                "name": self._service.index.model.key,
                "verdicts": None if judged is None else judged.to_dict(),
                "calibration": described,
            }
        return body, body["status"] == "ok"


def _text(body: dict, name: str, nullable: bool = False) -> str | None:
    """Field ``name`` of a JSON body: a non-empty string, or with ``nullable`` any string or null;
    required either way (a missing ``person_id`` must not read as "out of every person")."""
    if name not in body:
        raise InvalidRequestError(f"{name} is required{' (null for none)' if nullable else ''}")
    value = body[name]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or (not nullable and not value.strip()):
        raise InvalidRequestError(f"{name} must be a {'string or null' if nullable else 'non-empty string'}")
    return value


def _texts(body: dict, name: str) -> list[str]:
    value = body.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise InvalidRequestError(f"{name} must be a non-empty array of ids")
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, True)
    if not isinstance(value, bool):
        raise InvalidRequestError(f"{name} must be true or false")
    return value


def _loose(text: str) -> str:
    return text.replace("_", " ").casefold()


def current_engine() -> Engine:
    """The engine of the app handling the current request."""
    return current_app.extensions["facesearch"]
