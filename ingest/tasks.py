"""Celery tasks, as thin as views: paths in, a small summary out; the work is in plain functions."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from celery import Task, shared_task

from search_engine.config import Settings
from search_engine.errors import IndexUnavailableError
from search_engine.indexing import BatchSummary, PhotoInput
from search_engine.people import cluster_index, grouping_threshold
from search_engine.service import SearchService
from search_engine.video_indexing import VideoOptions, VideoStep, index_video_step

from .celery_app import CLUSTER_PEOPLE, INDEX_CHUNK, INDEX_VIDEO

log = logging.getLogger(__name__)


class ServiceTask(Task):
    """Holds this worker process's :class:`SearchService`, built on first use (not in a
    ``worker_process_init`` handler, which Celery kills after 4 seconds)."""

    _service: SearchService | None = None

    @property
    def service(self) -> SearchService:
        if ServiceTask._service is None:
            settings = getattr(self.app.conf, "facesearch_settings", None) or Settings.from_env()
            ServiceTask._service = SearchService.from_settings(settings)
        return ServiceTask._service


#: Options of every indexing task. Only the index being unreachable is worth retrying (with backoff
#: and jitter); a bad file is a recorded failure, never a retry.
_INDEXING_TASK = {
    "base": ServiceTask,
    "bind": True,
    "autoretry_for": (IndexUnavailableError,),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}


def index_chunk_files(service: SearchService, paths: Sequence[str], persons: Sequence[str | None]) -> dict:
    """Index one chunk of photos with ``service``; returns :meth:`BatchSummary.to_dict`."""
    summary = BatchSummary()
    # No refresh per chunk: LanceDB shows each write at once (and compacts every so many writes),
    # Elasticsearch within its refresh interval; compacting the embedded store after every chunk
    # made a full LFW job 37% slower than in-process indexing.
    summary.add(service.index_photos([PhotoInput(Path(path), person) for path, person in zip(paths, persons)]))
    return summary.to_dict()


@shared_task(name=INDEX_CHUNK, **_INDEXING_TASK)
def index_chunk(self, paths: list[str], persons: list[str | None]) -> dict:
    """Index photos ``paths`` (absolute, on a file system the worker sees), labelling their subjects
    with ``persons`` (one name or None per path)."""
    return index_chunk_files(self.service, paths, persons)


def index_video_segment(service: SearchService, path: str, start: float, digest: str, faces: int) -> VideoStep:
    """One segment of a video into ``service``'s index (see :func:`index_video_step`)."""
    options = VideoOptions.from_settings(service.settings.video, service.index)
    images = None if service.photos is None else service.photos.images
    return index_video_step(service.pipeline, service.index, Path(path), options, start, digest, faces, images)


@shared_task(name=INDEX_VIDEO, **_INDEXING_TASK)
def index_video(self, path: str, start: float = 0.0, digest: str = "", faces: int = 0) -> dict:
    """Index a video (absolute path) one segment per task: each task does the segment at ``start``
    seconds and replaces itself with the next, so no task outlives the broker's visibility timeout
    and the job sees one result, the video's summary, when the last segment is in."""
    step = index_video_segment(self.service, path, start, digest, faces)
    if step.outcome is None:
        raise self.replace(self.app.signature(INDEX_VIDEO, args=(path, step.next_start, step.digest, step.faces)))
    summary = BatchSummary()
    summary.add([step.outcome])
    return summary.to_dict()


def cluster_people_of(service: SearchService, full: bool = False) -> dict:
    """Group the faces of ``service``'s index into people; returns :meth:`ClusterReport.to_dict`."""
    index = service.index
    return cluster_index(index, grouping_threshold(service.settings.search, index), full=full).to_dict()


@shared_task(name=CLUSTER_PEOPLE, **_INDEXING_TASK)
def cluster_people(self, chunk_results: list | None = None, full: bool = False) -> dict:
    """Group the index's faces into people. Run after a job's tasks (a chord), it is handed their
    results first, which it does not need."""
    return cluster_people_of(self.service, full=full)
