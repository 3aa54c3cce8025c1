"""Index a batch of photos: read, detect, embed, store — one bad file never spoils the batch.

Re-running is safe: face ids are deterministic, and a file whose bytes are unchanged since it was
last indexed with the same model is skipped. A file whose bytes changed has its old faces removed
before the new ones are stored. Where similar-photo search is on, each photo is also described as a
whole and stored in the image index, which skips photos it holds unchanged the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ImageError
from .ids import face_id
from .imageio import content_hash, decode_image, read_file
from .index.base import FaceIndex
from .index.image_base import ImageIndex
from .photo_hash import photo_hash
from .pipeline import EmbeddedFace, FacePipeline, subject_index
from .types import PHOTO, FaceRecord, ImageRecord, SourceRecord, Status

log = logging.getLogger(__name__)

#: Decoded pixels held at once while a batch is analysed: a batch of big photos (a camera's 45 MP
#: files decode to 135 MB each) is analysed in parts, so memory stays near this many pixels (3 bytes
#: each) plus one photo however large the batch. LFW-sized photos (0.06 MP) never reach it.
BATCH_PIXELS = 50_000_000


@dataclass(frozen=True)
class PhotoInput:
    """A photo to index; ``person`` labels its subject face (other faces stay unlabelled)."""

    path: Path
    person: str | None = None


@dataclass(frozen=True)
class FileOutcome:
    """What happened to one file, with its face count and, when it failed, why."""

    source: str
    status: Status
    faces: int = 0
    error: str | None = None


@dataclass
class BatchSummary:
    """Totals over many files, with every failure's file and reason."""

    files: int = 0
    indexed: int = 0
    faces: int = 0
    no_face: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, outcomes: Sequence[FileOutcome]) -> None:
        for outcome in outcomes:
            self.files += 1
            self.faces += outcome.faces
            if outcome.status == Status.INDEXED:
                self.indexed += 1
            elif outcome.status == Status.NO_FACE:
                self.no_face += 1
            elif outcome.status == Status.SKIPPED:
                self.skipped += 1
            else:
                self.failures.append((outcome.source, outcome.error or "unknown error"))

    def merge(self, other: BatchSummary) -> None:
        """Add another summary's totals (a worker's, read back with :meth:`from_dict`)."""
        self.files += other.files
        self.indexed += other.indexed
        self.faces += other.faces
        self.no_face += other.no_face
        self.skipped += other.skipped
        self.failures.extend(other.failures)

    @classmethod
    def from_dict(cls, data: dict) -> BatchSummary:
        """The summary :meth:`to_dict` wrote."""
        return cls(
            files=data["files"],
            indexed=data["indexed"],
            faces=data["faces"],
            no_face=data["no_face"],
            skipped=data["skipped_unchanged"],
            failures=[(f["source"], f["error"]) for f in data["failures"]],
        )

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "indexed": self.indexed,
            "faces": self.faces,
            "no_face": self.no_face,
            "skipped_unchanged": self.skipped,
            "failed": len(self.failures),
            "failures": [{"source": s, "error": e} for s, e in self.failures],
        }


@dataclass
class _Loaded:
    item: PhotoInput
    source: str
    digest: str
    image: np.ndarray
    image_hash: str


@dataclass
class FileAnalysis:
    """A file's outcome with the faces to store (picklable: it may come back from a worker process).

    ``replaces`` says the index holds an older version of this file whose faces must go first;
    ``media_type`` is ``photo`` or ``video``; ``image_hash`` is a photo's perceptual hash.
    ``completed`` is the record of an unchanged file that an older version stored without a hash,
    now with one: the file is skipped, its record written again. ``images`` are the pictures for
    the image index (similar-photo search on, and the image index not holding this version of the
    file): a photo's whole-image description, or a video's keyframes.
    """

    outcome: FileOutcome
    digest: str = ""
    records: list[FaceRecord] = field(default_factory=list)
    replaces: bool = False
    media_type: str = PHOTO
    image_hash: str | None = None
    completed: SourceRecord | None = None
    images: list[ImageRecord] = field(default_factory=list)


def source_name(path: Path) -> str:
    """How a file is named in the index: its absolute, normalised path (symlinks kept as named, so a
    dangling link is reported under its own name)."""
    return os.path.abspath(os.path.expanduser(path))


def index_photos(
    pipeline: FacePipeline,
    index: FaceIndex,
    items: Sequence[PhotoInput],
    max_pixels: int,
    images: ImageIndex | None = None,
) -> list[FileOutcome]:
    """Detect, embed and store every face of ``items`` (and, with ``images`` and the pipeline's
    image model, each photo's whole-image description); one outcome per item, in order."""
    sources = [source_name(item.path) for item in items]
    known = index.get_sources(sources)
    known_images = images.content_hashes(sources) if images is not None else {}
    return store_analyses(index, analyse_photos(pipeline, items, known, max_pixels, known_images), images)


def analyse_photos(
    pipeline: FacePipeline,
    items: Sequence[PhotoInput],
    known: Mapping[str, SourceRecord],
    max_pixels: int,
    known_images: Mapping[str, str] | None = None,
) -> list[FileAnalysis]:
    """Read, detect and embed ``items`` (no index access): files whose bytes match their ``known``
    record are skipped, unusable ones fail with a reason. Decoded photos go to the models together
    until they hold :data:`BATCH_PIXELS`. With the pipeline's image model, every photo is described
    whole too, but for those whose bytes match their content hash in ``known_images`` (source to
    hash: what the image index holds). One analysis per item, in order."""
    model = pipeline.embedder.info.key
    known_images = known_images or {}
    describing = pipeline.image_embedder is not None
    analyses: dict[int, FileAnalysis] = {}
    loaded: dict[int, _Loaded] = {}
    held = 0  # pixels of the decoded photos in ``loaded``

    def analyse_loaded() -> None:
        images = {i: entry.image for i, entry in loaded.items()}
        described = _describe(pipeline, images) if describing and images else {}
        for i, faces in _analyse(pipeline, loaded).items():
            entry = loaded[i]
            description = described.get(i)
            for error in (faces, description):
                if isinstance(error, str):
                    analyses[i] = FileAnalysis(FileOutcome(entry.source, Status.FAILED, error=error), entry.digest)
                    break
            else:
                analyses[i] = FileAnalysis(
                    FileOutcome(entry.source, Status.INDEXED if faces else Status.NO_FACE, len(faces)),
                    entry.digest,
                    _records(entry, faces, model),
                    replaces=entry.source in known,
                    image_hash=entry.image_hash,
                    images=[] if description is None else [_image_record(entry, description)],
                )
        loaded.clear()

    for i, item in enumerate(items):
        source = source_name(item.path)
        try:
            data = read_file(item.path)
            digest = content_hash(data)
            previous = known.get(source)
            if previous and previous.content_hash == digest and previous.status != Status.FAILED:
                analyses[i] = _unchanged(pipeline, item, data, previous, known_images.get(source), max_pixels)
                continue
            image = decode_image(data, str(item.path), max_pixels)
            loaded[i] = _Loaded(item, source, digest, image, photo_hash(image))
            held += loaded[i].image.shape[0] * loaded[i].image.shape[1]
        except ImageError as exc:
            analyses[i] = FileAnalysis(FileOutcome(source, Status.FAILED, error=exc.reason))
        if held >= BATCH_PIXELS:
            analyse_loaded()
            held = 0
    analyse_loaded()
    return [analyses[i] for i in range(len(items))]


def store_analyses(
    index: FaceIndex, analyses: Sequence[FileAnalysis], images: ImageIndex | None = None
) -> list[FileOutcome]:
    """Write analysed files to the index: old faces of changed files out, new faces in, one source
    record per file; with ``images``, each file's pictures in (a changed file's earlier ones out
    first). Returns the final outcomes (a face or picture the index refuses fails its file)."""
    outcomes = [a.outcome for a in analyses]
    position = {a.outcome.source: i for i, a in enumerate(analyses)}

    def fail(source: str, error: str) -> None:
        outcomes[position[source]] = FileOutcome(source, Status.FAILED, error=error)

    for analysis in analyses:
        if analysis.replaces:
            index.delete_source(analysis.outcome.source)
            if images is not None:
                # A changed video's keyframes fall at other times; a photo's is overwritten anyway.
                images.delete_source(analysis.outcome.source)
    records = [record for a in analyses for record in a.records]
    result = index.upsert(records)
    by_face = {r.face_id: r.source for r in records}
    for failed_id, reason in result.failed:
        fail(by_face[failed_id], f"could not store face {failed_id}: {reason}")
    if images is not None:
        pictures = [picture for a in analyses for picture in a.images]
        described = images.upsert(pictures)
        by_picture = {picture.image_id: picture.source for picture in pictures}
        for image_id, reason in described.failed:
            fail(by_picture[image_id], f"could not store the image description {image_id}: {reason}")
    index.record_sources(
        [
            SourceRecord(
                source=o.source,
                content_hash=a.digest,
                model=index.model.key,
                faces=o.faces,
                status=o.status,
                error=o.error,
                media_type=a.media_type,
                image_hash=a.image_hash,
            )
            for o, a in zip(outcomes, analyses)
            if o.status != Status.SKIPPED
        ]
        + [a.completed for a in analyses if a.completed is not None]
    )
    return outcomes


def _unchanged(
    pipeline: FacePipeline,
    item: PhotoInput,
    data: bytes,
    previous: SourceRecord,
    described_hash: str | None,
    max_pixels: int,
) -> FileAnalysis:
    """A file whose bytes match its ``previous`` record: skipped, but decoded to complete what an
    older run left out, its perceptual hash (older versions stored none) or, with the pipeline's
    image model, its description where the image index holds none of these bytes
    (``described_hash``)."""
    needs_hash = previous.image_hash is None
    needs_description = pipeline.image_embedder is not None and described_hash != previous.content_hash
    skipped = FileOutcome(previous.source, Status.SKIPPED, previous.faces)
    if not (needs_hash or needs_description):
        return FileAnalysis(skipped, previous.content_hash)
    image = decode_image(data, str(item.path), max_pixels)
    completed = replace(previous, image_hash=photo_hash(image)) if needs_hash else None
    pictures = []
    if needs_description:
        description = _describe(pipeline, {0: image})[0]
        if isinstance(description, str):
            return FileAnalysis(FileOutcome(previous.source, Status.FAILED, error=description), previous.content_hash)
        height, width = image.shape[:2]
        pictures.append(ImageRecord(previous.source, description, previous.content_hash, width, height))
    return FileAnalysis(skipped, previous.content_hash, completed=completed, images=pictures)


def _describe(pipeline: FacePipeline, images: dict[int, np.ndarray]) -> dict[int, np.ndarray | str]:
    """Each image's whole-image description (pipeline's image model), or the error text for the
    images it chokes on."""
    keys = list(images)
    try:
        return dict(zip(keys, pipeline.image_embedder.embed_images([images[i] for i in keys])))
    except (RuntimeError, ValueError) as exc:
        log.warning("batched image description failed (%s); retrying image by image", exc)
    out: dict[int, np.ndarray | str] = {}
    for i in keys:
        try:
            out[i] = pipeline.image_embedder.embed_images([images[i]])[0]
        except (RuntimeError, ValueError) as exc:
            out[i] = f"image description failed: {exc}"
    return out


def _image_record(entry: _Loaded, vector: np.ndarray) -> ImageRecord:
    height, width = entry.image.shape[:2]
    return ImageRecord(entry.source, vector, entry.digest, width, height)


def _analyse(pipeline: FacePipeline, loaded: dict[int, _Loaded]) -> dict[int, list[EmbeddedFace] | str]:
    """Faces per loaded item, or the error text for items the models choke on."""
    keys = list(loaded)
    if not keys:
        return {}
    try:
        results = pipeline.analyse([loaded[i].image for i in keys])
        return dict(zip(keys, results))
    except (RuntimeError, ValueError) as exc:
        # One odd image can fail a whole batched call; retry one at a time to isolate it.
        log.warning("batched analysis failed (%s); retrying image by image", exc)
    out: dict[int, list[EmbeddedFace] | str] = {}
    for i in keys:
        try:
            out[i] = pipeline.analyse([loaded[i].image])[0]
        except (RuntimeError, ValueError) as exc:
            out[i] = f"face analysis failed: {exc}"
    return out


def _records(entry: _Loaded, faces: list[EmbeddedFace], model: str) -> list[FaceRecord]:
    height, width = entry.image.shape[:2]
    subject = subject_index([f.detection for f in faces], width, height) if entry.item.person else None
    return [
        FaceRecord(
            face_id=face_id(model, entry.source, n),
            source=entry.source,
            face_no=n,
            box=face.detection.box,
            probability=face.detection.probability,
            embedding=face.embedding,
            model=model,
            person=entry.item.person if n == subject else None,
            label=entry.item.person if n == subject else None,
            media_type=PHOTO,
            image_width=width,
            image_height=height,
            content_hash=entry.digest,
        )
        for n, face in enumerate(faces)
    ]
