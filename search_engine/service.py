"""``SearchService``: the Python API the CLI, the web app and the workers share."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .calibration import SAME_PERSON, Calibration, Verdicts, calibration_for, verdicts
from .calibration_fit import CalibrationReport, fit_calibration, fit_pairs, read_lfw_pairs
from .config import Settings
from .errors import ImageError, ModelUnavailableError, NoFaceError
from .expansion import rank
from .imageio import decode_image, read_file
from .index import FaceIndex, create_index
from .indexing import FileOutcome, PhotoInput, index_photos
from .media_types import is_video
from .people import person_query
from .pipeline import EmbeddedFace, FacePipeline, largest_index, subject_index
from .similar import SimilarPhotos
from .types import VIDEO, Detection, Hit, SearchFilters
from .video_indexing import VideoOptions, analyse_segment

#: Moments listed per video when results are grouped by video.
MOMENTS_PER_VIDEO = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoGroup:
    """One video's best-matching moments (best first); ``score`` is the best of them."""

    video: str
    score: float
    hits: tuple[Hit, ...]

    def to_dict(self) -> dict:
        return {"video": self.video, "score": round(self.score, 4), "moments": [h.to_dict() for h in self.hits]}

    def judged(self, verdicts: Verdicts) -> VideoGroup:
        return dataclasses.replace(self, hits=judge(self.hits, verdicts))


@dataclass(frozen=True)
class SearchResult:
    """The faces found in the query, which one was searched with, and the hits (best first).

    For a query video, each query face is a track and ``query_times`` holds its (start, end)
    seconds. With results grouped by video, ``groups`` holds them and ``hits`` each group's best.
    ``verdicts`` are the thresholds each hit's ``verdict`` was decided by (None: the model is
    uncalibrated and no threshold is set, so no hit has a verdict).
    """

    query_faces: tuple[Detection, ...]
    face: int | None
    hits: tuple[Hit, ...]
    query_times: tuple[tuple[float, float], ...] = ()
    groups: tuple[VideoGroup, ...] | None = None
    verdicts: Verdicts | None = None

    @property
    def confident_match(self) -> bool:
        """Whether any hit is a "same person" verdict (False: the person may not be in the index)."""
        return any(hit.verdict == SAME_PERSON for hit in self.hits)

    def to_dict(self) -> dict:
        faces = []
        for n, d in enumerate(self.query_faces):
            entry = {"face": n, "box": d.box.as_list(), "probability": round(d.probability, 4)}
            if self.query_times:
                entry["start"], entry["end"] = self.query_times[n]
            faces.append(entry)
        result = {
            "query_faces": faces,
            "face": self.face,
            "verdicts": None if self.verdicts is None else self.verdicts.to_dict(),
            "confident_match": self.confident_match,
            "hits": [hit.to_dict() for hit in self.hits],
        }
        if self.groups is not None:
            result["videos"] = [group.to_dict() for group in self.groups]
        return result


class SearchService:
    """Detect, embed, index and search faces with one pipeline and one index, and, where
    similar-photo search is on, photos as wholes (``photos``, with the pipeline's image model).

    Build it once per process with :meth:`from_settings`; it is safe to share between requests.
    """

    def __init__(
        self, settings: Settings, pipeline: FacePipeline, index: FaceIndex, photos: SimilarPhotos | None = None
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.index = index
        self.photos = photos

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchService:
        """Load the detector and embedder, open (and create if needed) the index for that embedder,
        and with ``FACESEARCH_IMAGE_SEARCH`` the whole-photo model and its image index."""
        pipeline = FacePipeline.from_settings(settings.models)
        index = create_index(settings.index, pipeline.embedder.info)
        index.ensure()
        photos = None
        if pipeline.image_embedder is not None:
            photos = SimilarPhotos.open(settings, pipeline.image_embedder)
        return cls(settings, pipeline, index, photos)

    def index_photos(self, items: Sequence[PhotoInput]) -> list[FileOutcome]:
        """Index one batch of photos (see :func:`search_engine.indexing.index_photos`)."""
        images = None if self.photos is None else self.photos.images
        return index_photos(self.pipeline, self.index, items, self.settings.models.max_image_pixels, images)

    def similar_photos(self) -> SimilarPhotos:
        """Similar-photo search over this service's image index.

        Raises:
            ModelUnavailableError: similar-photo search is off (``FACESEARCH_IMAGE_SEARCH``).
        """
        if self.photos is None:
            raise ModelUnavailableError(
                "similar-photo search is off: set FACESEARCH_IMAGE_SEARCH=1 and index the photos again "
                "(photos indexed before are only described, not detected again)"
            )
        return self.photos

    def faces_in(self, image: np.ndarray) -> list[EmbeddedFace]:
        """Every face of one (H, W, 3) uint8 RGB image with its embedding as a query."""
        return self.pipeline.analyse([image], query=True)[0]

    def search_image(
        self,
        image: np.ndarray,
        k: int = 20,
        filters: SearchFilters | None = None,
        face: int | None = None,
        collapse: str | None = None,
        by_video: bool = False,
    ) -> SearchResult:
        """Search with one face of an RGB image: the largest, or number ``face`` (0-based, as listed).

        Raises:
            NoFaceError: the image holds no detectable face, or none numbered ``face``.
        """
        detections = self.pipeline.detector.detect([image])[0]
        if not detections:
            raise NoFaceError(f"no face found in the query image (smallest face looked for: {self._min_face} px wide)")
        chosen = largest_index(detections) if face is None else face
        _check_face(chosen, len(detections), "image")
        # Only the face searched with is embedded: in a group photo each other face would cost as much.
        (vector,) = self.pipeline.embedder.embed([(image, [detections[chosen]])], query=True)[0]
        hits, groups, judged = self._search(vector, k, filters, collapse, by_video)
        return SearchResult(tuple(detections), chosen, hits, groups=groups, verdicts=judged)

    def search_video(
        self,
        path: Path,
        k: int = 20,
        filters: SearchFilters | None = None,
        face: int | None = None,
        collapse: str | None = None,
        by_video: bool = False,
    ) -> SearchResult:
        """Search with one person of a query clip: its faces are tracked, and the track longest on
        screen (or number ``face``, in order of appearance) is searched with.

        Raises:
            ImageError: the clip cannot be decoded.
            NoFaceError: no face appears in it, or none numbered ``face``.
        """
        options = VideoOptions.from_settings(self.settings.video, self.index)
        analysis = analyse_segment(self.pipeline, Path(path), 0.0, None, options, query=True)
        if analysis.error:
            raise ImageError(str(path), analysis.error)
        tracks = analysis.records
        if not tracks:
            raise NoFaceError(f"no face found in the query video (smallest face looked for: {self._min_face} px wide)")
        chosen = max(range(len(tracks)), key=lambda i: tracks[i].end - tracks[i].start) if face is None else face
        _check_face(chosen, len(tracks), "video")
        hits, groups, judged = self._search(tracks[chosen].embedding, k, filters, collapse, by_video)
        detections = tuple(Detection(t.box, t.probability, ()) for t in tracks)
        times = tuple((t.start, t.end) for t in tracks)
        return SearchResult(detections, chosen, hits, query_times=times, groups=groups, verdicts=judged)

    def search_file(self, path: Path, **options) -> SearchResult:
        """:meth:`search_video` for a file named like a video, else :meth:`search_image` on the photo
        (an :class:`ImageError` names the file if it is unusable)."""
        if is_video(Path(path)):
            return self.search_video(path, **options)
        image = decode_image(read_file(Path(path)), str(path), self.settings.models.max_image_pixels)
        return self.search_image(image, **options)

    def search_person(self, person_id: str, k: int = 20, filters: SearchFilters | None = None) -> SearchResult:
        """More of one person: the faces not grouped with them that are most like them, to confirm.

        Queries with their mean face and a spread of their faces (:func:`~search_engine.people.person_query`).
        Each hit's ``score`` is its similarity to the nearest of those faces, face to face, so its
        verdict means what a photo search's does; ``rank_score``, the order, is its similarity to
        their mean face. No query faces are listed (``face`` is None).

        Raises:
            NotFoundError: no such person.
        """
        query = person_query(self.index, person_id)
        base = dataclasses.replace(filters or SearchFilters(), exclude_cluster=person_id)
        found: dict[str, Hit] = {}
        for vector in (query.centroid, *query.exemplars):
            for hit in self.index.search(vector, k=k, filters=base):
                found.setdefault(hit.face_id, hit)
        stored = self.index.embeddings(list(found))
        ranked = sorted(
            (
                dataclasses.replace(
                    hit,
                    score=float(np.max(query.exemplars @ stored[face_id])),
                    rank_score=float(query.centroid @ stored[face_id]),
                )
                for face_id, hit in found.items()
                if face_id in stored
            ),
            key=lambda hit: -hit.rank_score,
        )
        judged = self.verdicts()
        return SearchResult((), None, judge(ranked[:k], judged), verdicts=judged)

    def group_by_video(
        self, vector: np.ndarray, videos: int, filters: SearchFilters | None = None, moments: int = MOMENTS_PER_VIDEO
    ) -> tuple[VideoGroup, ...]:
        """The ``videos`` videos that best match ``vector``, each with its best ``moments`` tracks."""
        base = dataclasses.replace(filters or SearchFilters(), media_type=VIDEO)
        groups = []
        for top in self.index.search(vector, k=videos, filters=base, collapse="video"):
            hits = self.index.search(vector, k=moments, filters=dataclasses.replace(base, video=top.video))
            groups.append(VideoGroup(top.video, top.score, tuple(hits) or (top,)))
        return tuple(groups)

    def verdicts(self) -> Verdicts | None:
        """The thresholds a search of the index as it is now is judged by (see :meth:`judged_by`),
        with the index's own calibration."""
        return self.judged_by(calibration_for(self.index))

    def judged_by(self, calibration: Calibration | None) -> Verdicts | None:
        """The thresholds ``calibration`` gives a search of the number of faces stored now (all of
        them: a filter narrows what is shown, and counting every face keeps the verdict on the safe
        side), or the fixed threshold set; None when neither is there."""
        return verdicts(
            calibration,
            self.index.count(),
            self.settings.search.target_fpir,
            self.settings.search.same_person_threshold,
        )

    def calibrate_on_pairs(self, pairs_file: Path, images: Path, progress: bool = False) -> CalibrationReport:
        """Fit the model's calibration on LFW-format pairs (not stored): the 1:1 threshold on the
        pairs as listed, the stranger law on every image they name (the subject face of each,
        its folder's name its person). An image that cannot be read or shows no face leaves its
        pairs out and is listed in the report.

        Raises:
            InvalidRequestError: the pairs file is unusable, or too few faces or pairs remain.
        """
        from tqdm import tqdm

        pairs = read_lfw_pairs(pairs_file, images)
        files = sorted({path for pair in pairs for path in (pair.first, pair.second)})
        # Each face as it would be stored and as a query of a search (see Embedder.embed).
        vectors: dict[Path, np.ndarray] = {}
        queries: dict[Path, np.ndarray] = {}
        skipped = []
        batch = self.settings.models.batch_size
        for start in tqdm(
            range(0, len(files), batch), desc="embedding pair images", unit="batch", disable=not progress
        ):
            images_read, paths = [], []
            for path in files[start : start + batch]:
                try:
                    images_read.append(decode_image(read_file(path), str(path), self.settings.models.max_image_pixels))
                    paths.append(path)
                except ImageError as exc:
                    skipped.append(str(exc))
            # Only each photo's subject is embedded: the other faces in it have no label.
            subjects = []
            for path, image, detections in zip(paths, images_read, self.pipeline.detector.detect(images_read)):
                subject = subject_index(detections, image.shape[1], image.shape[0])
                if subject is None:
                    skipped.append(f"{path}: no face found")
                else:
                    subjects.append((path, image, detections[subject]))
            faces = [(image, [face]) for _, image, face in subjects]
            for found, query in ((vectors, False), (queries, True)):
                embedded = self.pipeline.embedder.embed(faces, query=query)
                found.update((path, rows[0]) for (path, _, _), rows in zip(subjects, embedded))
        usable = [pair for pair in pairs if pair.first in vectors and pair.second in vectors]
        # A pair is scored as a search with its first image would score the second.
        fit = fit_pairs(
            np.array([float(queries[p.first] @ vectors[p.second]) for p in usable]), np.array([p.same for p in usable])
        )
        faces = sorted(vectors)
        people = [path.parent.name for path in faces]
        measured_on = (
            f"the {len(faces):,} images of {Path(pairs_file).name} ({len(set(people)):,} people): each image's best "
            f"score as a query among the other people's images as stored; pair threshold: 10-fold on its "
            f"{fit.pairs:,} pairs, the first image as a query"
        )
        # fit_pairs has refused an empty set already, so there are faces to stack.
        calibration = fit_calibration(
            self.index.model,
            np.stack([vectors[f] for f in faces]),
            people,
            fit,
            measured_on,
            probes=np.stack([queries[f] for f in faces]),
        )
        return CalibrationReport(calibration, fit, tuple(skipped))

    def _search(
        self, vector: np.ndarray, k: int, filters: SearchFilters | None, collapse: str | None, by_video: bool
    ) -> tuple[tuple[Hit, ...], tuple[VideoGroup, ...] | None, Verdicts | None]:
        calibration = calibration_for(self.index)
        judged = self.judged_by(calibration)
        if by_video:
            groups = self.group_by_video(vector, k, filters)
            if judged is not None:
                groups = tuple(group.judged(judged) for group in groups)
            return tuple(g.hits[0] for g in groups), groups, judged
        hits = rank(self.settings.search, self.index, vector, k, filters, collapse, calibration=calibration)
        return judge(hits, judged), None, judged

    @property
    def _min_face(self) -> int:
        return self.pipeline.detector.min_face_size

    def close(self) -> None:
        self.index.close()
        if self.photos is not None:
            self.photos.close()


def judge(hits: Sequence[Hit], verdicts: Verdicts | None) -> tuple[Hit, ...]:
    """The hits with their ``verdict`` set by ``verdicts`` (left None where there are none)."""
    if verdicts is None:
        return tuple(hits)
    return tuple(dataclasses.replace(hit, verdict=verdicts.of(hit.score)) for hit in hits)


def _check_face(chosen: int, count: int, what: str) -> None:
    if not 0 <= chosen < count:
        raise NoFaceError(f"the query {what} has {count} face(s); face {chosen} does not exist")
