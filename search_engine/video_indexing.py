"""Index videos: sample frames, skip unchanged ones, detect and embed faces, link them into tracks,
and store one face document per track (see :mod:`search_engine.tracking`); with similar-photo
search on, also describe a keyframe every ``VideoOptions.keyframe_seconds`` for the image index.

A video is processed in time segments (``VideoOptions.segment_seconds``) that can run in separate
processes or Celery tasks; a track that crosses a segment boundary becomes two tracks. Track ids are
deterministic (model, video, first frame of the track, rank among tracks starting on that frame),
so re-processing a segment overwrites its tracks rather than duplicating them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .calibration import calibration_for
from .config import VideoSettings
from .embedding import track_link_similarity
from .errors import ImageError
from .ids import face_id
from .imageio import file_hash
from .index.base import FaceIndex
from .index.image_base import ImageIndex
from .indexing import FileAnalysis, FileOutcome, source_name, store_analyses
from .pipeline import FacePipeline
from .tracking import FaceTracker, Track
from .types import VIDEO, FaceRecord, ImageRecord, SourceRecord, Status
from .video import ChangeDetector, Frame, VideoInfo, probe, sample_frames

log = logging.getLogger(__name__)

#: Frames analysed per detector call: MTCNN batches frames of one size.
_FRAMES_PER_BATCH = 8


@dataclass(frozen=True)
class VideoOptions:
    """How videos are sampled and cut.

    Attributes:
        link_similarity: cosine similarity a face needs to its track's last face to join the track
            (:func:`~search_engine.embedding.track_link_similarity`).
        rate: frames sampled per second of video.
        max_side: frames are downscaled so their longer side is at most this many pixels for
            detection (alignment and embedding use the full frame); 0 keeps full size.
        change_threshold: a sampled frame whose thumbnail differs from the last analysed one by no
            more than this (CIELAB, per cell) is not re-analysed; its tracks carry on.
        max_hold: seconds after which a frame is analysed even if it looks unchanged.
        segment_seconds: length of the pieces a video is processed in.
        track_embedding: ``"best"`` stores the embedding of a track's best face, ``"mean"`` the
            normalised mean over its faces.
        keyframe_seconds: with the pipeline's image model, the first sampled frame at or after
            each multiple of this many seconds is described as a picture (a keyframe).
    """

    link_similarity: float
    rate: float = 2.0
    max_side: int = 640
    change_threshold: float = 6.0
    max_hold: float = 2.0
    segment_seconds: float = 120.0
    track_embedding: str = "best"
    keyframe_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: VideoSettings, index: FaceIndex) -> VideoOptions:
        """The options the settings give, faces linked as the calibration of ``index`` decides."""
        return cls(
            link_similarity=track_link_similarity(index.model, calibration_for(index)),
            rate=settings.fps,
            max_side=settings.max_side,
            segment_seconds=settings.segment_seconds,
            track_embedding=settings.track_embedding,
            keyframe_seconds=settings.keyframe_seconds,
        )


@dataclass
class SegmentAnalysis:
    """The tracks of one segment of a video as face records, its keyframes as pictures for the image
    index (with the pipeline's image model), and counts for reports (picklable)."""

    source: str
    start: float
    end: float | None
    records: list[FaceRecord] = field(default_factory=list)
    images: list[ImageRecord] = field(default_factory=list)
    sampled: int = 0
    analysed: int = 0
    error: str | None = None


def _segment_count(info: VideoInfo, seconds: float) -> int:
    return max(1, math.ceil(info.duration / seconds - 1e-9)) if seconds > 0 else 1


def segments(info: VideoInfo, seconds: float) -> list[tuple[float, float | None]]:
    """``(start, end)`` seconds of consecutive pieces covering the video; the last one open-ended,
    so frames past the container's stated duration are not lost."""
    count = _segment_count(info, seconds)
    return [(i * seconds, (i + 1) * seconds if i + 1 < count else None) for i in range(count)]


def segment_end(info: VideoInfo, seconds: float, start: float) -> float | None:
    """Where the segment of :func:`segments` that begins at ``start`` ends (None: the last one)."""
    following = round(start / seconds) + 1 if seconds > 0 else 1
    return following * seconds if following < _segment_count(info, seconds) else None


def analyse_segment(
    pipeline: FacePipeline,
    path: Path,
    start: float,
    end: float | None,
    options: VideoOptions,
    digest: str = "",
    query: bool = False,
) -> SegmentAnalysis:
    """Detect, embed and track the faces of ``path`` between ``start`` and ``end`` seconds, and
    with the pipeline's image model describe its keyframes; ``query``: the faces are to search
    with, not to store (see :meth:`Embedder.embed`), and no keyframe is described.

    A file that cannot be decoded gives a segment with ``error`` set rather than raising.
    """
    source = source_name(path)
    result = SegmentAnalysis(source, start, end)
    tracker = FaceTracker(options.link_similarity)
    changes = ChangeDetector(options.change_threshold, options.max_hold)
    pending: list[Frame | float] = []
    size: tuple[int, int] = (0, 0)
    describing = pipeline.image_embedder is not None and not query
    # Keyframe slot n is [n, n + 1) x keyframe_seconds; its first sampled frame is its keyframe.
    # Slots begun before this segment are the earlier segment's.
    last_slot = math.ceil(start / options.keyframe_seconds - 1e-9) - 1

    def flush() -> None:
        frames = [item for item in pending if isinstance(item, Frame)]
        faces = iter(
            pipeline.analyse([f.image for f in frames], max_side=options.max_side, query=query) if frames else []
        )
        for item in pending:
            if isinstance(item, Frame):
                tracker.observe(item.index, item.timestamp, next(faces))
            else:
                tracker.hold(item)
        pending.clear()

    try:
        for frame in sample_frames(path, options.rate, start, end):
            result.sampled += 1
            size = (frame.image.shape[1], frame.image.shape[0])
            slot = math.floor(frame.timestamp / options.keyframe_seconds + 1e-9)
            if describing and slot > last_slot:
                result.images.append(_keyframe(pipeline, frame, source, digest))
                last_slot = slot
            if changes.changed(frame.image, frame.timestamp):
                result.analysed += 1
                pending.append(frame)
                if result.analysed % _FRAMES_PER_BATCH == 0:
                    flush()
            else:
                pending.append(frame.timestamp)
        flush()
    except ImageError as exc:
        result.error = exc.reason
        return result
    except (RuntimeError, ValueError) as exc:
        # The image model choking on a frame (the face models' failures are raised the same way).
        result.error = f"keyframe description failed: {exc}"
        return result
    model = pipeline.embedder.info.key
    result.records = track_records(tracker.finish(), source, model, size, digest, options.track_embedding)
    return result


def _keyframe(pipeline: FacePipeline, frame: Frame, source: str, digest: str) -> ImageRecord:
    """One sampled frame described whole, as a picture of the video at its time."""
    height, width = frame.image.shape[:2]
    (vector,) = pipeline.image_embedder.embed_images([frame.image])
    return ImageRecord(source, vector, digest, width, height, timestamp=round(frame.timestamp, 3))


def track_records(
    tracks: Sequence[Track],
    source: str,
    model: str,
    size: tuple[int, int],
    digest: str = "",
    embedding: str = "best",
) -> list[FaceRecord]:
    """One face record per track: the best face's box, frame and time, the track's start and end.

    Args:
        tracks: in :meth:`FaceTracker.finish` order (by start time).
        size: frame (width, height) in pixels.
        embedding: ``"best"`` or ``"mean"`` (see :class:`VideoOptions`).
    """
    records = []
    rank: dict[int, int] = {}
    for track in tracks:
        face_no = rank.get(track.first_frame, 0)
        rank[track.first_frame] = face_no + 1
        best = track.best
        records.append(
            FaceRecord(
                face_id=face_id(model, source, face_no, frame=track.first_frame),
                source=source,
                face_no=face_no,
                box=best.face.detection.box,
                probability=best.face.detection.probability,
                embedding=track.mean_embedding() if embedding == "mean" else best.face.embedding,
                model=model,
                media_type=VIDEO,
                video=os.path.basename(source),
                frame=best.frame,
                timestamp=round(best.timestamp, 3),
                start=round(track.start, 3),
                end=round(track.end, 3),
                image_width=size[0],
                image_height=size[1],
                content_hash=digest or None,
            )
        )
    return records


def plan_video(
    path: Path, known: Mapping[str, SourceRecord], described: Mapping[str, str] | None = None
) -> tuple[FileAnalysis | None, VideoInfo | None, str]:
    """Decide what to do with one video before analysing it.

    ``described``: with similar-photo search on, the content hash the image index holds the
    video's keyframes of (source to hash), else None; a video unchanged but not described yet is
    analysed again (its tracks keep their ids).

    Returns ``(done, info, digest)``: ``done`` is a finished analysis when there is nothing to do
    (unchanged since last indexed: skipped; unreadable: failed), otherwise None and ``info`` and
    the content ``digest`` describe the video to analyse.
    """
    source = source_name(path)
    try:
        digest = file_hash(Path(path))
        previous = known.get(source)
        unchanged = previous and previous.content_hash == digest and previous.status != Status.FAILED
        if unchanged and (described is None or described.get(source) == digest):
            return (
                FileAnalysis(FileOutcome(source, Status.SKIPPED, previous.faces), digest, media_type=VIDEO),
                None,
                digest,
            )
        return None, probe(Path(path)), digest
    except ImageError as exc:
        return FileAnalysis(FileOutcome(source, Status.FAILED, error=exc.reason), media_type=VIDEO), None, ""


def combine_segments(parts: Sequence[SegmentAnalysis], digest: str, replaces: bool) -> FileAnalysis:
    """The whole video's analysis from its segments' (a failed segment fails the video, naming it)."""
    source = parts[0].source
    failed = [p for p in parts if p.error]
    if failed:
        where = f"at {failed[0].start:.0f} s" if len(parts) > 1 else ""
        reason = " ".join(filter(None, [failed[0].error, where]))
        return FileAnalysis(FileOutcome(source, Status.FAILED, error=reason), digest, media_type=VIDEO)
    records = [record for part in parts for record in part.records]
    status = Status.INDEXED if records else Status.NO_FACE
    pictures = [picture for part in parts for picture in part.images]
    return FileAnalysis(FileOutcome(source, status, len(records)), digest, records, replaces, VIDEO, images=pictures)


@dataclass(frozen=True)
class VideoStep:
    """Where indexing a video one segment at a time stands: ``outcome`` once the video is done
    (indexed, skipped or failed), else the ``next_start`` second, the content ``digest`` and the
    tracks stored so far (``faces``), to be passed to the next step."""

    outcome: FileOutcome | None = None
    next_start: float | None = None
    digest: str = ""
    faces: int = 0


def index_video_step(
    pipeline: FacePipeline,
    index: FaceIndex,
    path: Path,
    options: VideoOptions,
    start: float = 0.0,
    digest: str = "",
    faces: int = 0,
    images: ImageIndex | None = None,
) -> VideoStep:
    """Index the segment of ``path`` that begins at ``start`` seconds and say what comes next;
    with ``images`` (and the pipeline's image model), its keyframes go there.

    The first step (``start == 0``) skips an unchanged video, records an unreadable one as failed,
    and removes the faces of an older version. Each step stores its tracks at once; the last one
    records the video in the index's list of files, so a video counts as indexed only when every
    segment is in. Steps of one video run one after another, so none races another's writes.
    """
    source = source_name(path)
    if start == 0.0:
        known = index.get_sources([source])
        described = None if images is None else images.content_hashes([source])
        done, info, digest = plan_video(path, known, described)
        if done is not None:
            return VideoStep(store_analyses(index, [done], images)[0])
        if known:
            index.delete_source(source)
        if described:
            images.delete_source(source)
    else:
        try:
            info = probe(path)
        except ImageError as exc:
            return VideoStep(_fail(index, source, digest, exc.reason, images))
    end = segment_end(info, options.segment_seconds, start)
    part = analyse_segment(pipeline, path, start, end, options, digest)
    if part.error:
        return VideoStep(_fail(index, source, digest, f"{part.error} at {start:.0f} s", images))
    result = index.upsert(part.records)
    if result.failed:
        face, reason = result.failed[0]
        return VideoStep(_fail(index, source, digest, f"could not store face {face}: {reason}", images))
    if images is not None:
        described = images.upsert(part.images)
        if described.failed:
            picture, reason = described.failed[0]
            return VideoStep(_fail(index, source, digest, f"could not store keyframe {picture}: {reason}", images))
    faces += len(part.records)
    # A segment after the first with no frame at all is past the video's real end (its stated
    # length was too long): the video is done.
    if end is not None and (part.sampled or start == 0.0):
        return VideoStep(next_start=end, digest=digest, faces=faces)
    outcome = FileOutcome(source, Status.INDEXED if faces else Status.NO_FACE, faces)
    index.record_sources([SourceRecord(source, digest, index.model.key, faces, outcome.status, media_type=VIDEO)])
    return VideoStep(outcome)


def _fail(index: FaceIndex, source: str, digest: str, reason: str, images: ImageIndex | None) -> FileOutcome:
    # replaces: the segments stored before this one go too; a failed video leaves no tracks.
    analysis = FileAnalysis(FileOutcome(source, Status.FAILED, error=reason), digest, replaces=True, media_type=VIDEO)
    return store_analyses(index, [analysis], images)[0]
