"""Batch jobs on the Celery workers: submit photos as chunk tasks and videos as video tasks, follow
them, summarise them.

A job is a Celery group of :data:`~ingest.celery_app.INDEX_CHUNK` and
:data:`~ingest.celery_app.INDEX_VIDEO` tasks, saved in the result
backend under the group id, which is the job id users see. A job that groups the faces into people
afterwards is a chord: when every task is done, one :data:`~ingest.celery_app.CLUSTER_PEOPLE` task
runs, saved with the job as its last result under an id starting with :data:`PEOPLE_TASK_PREFIX`. Everything here is client side: it
sends tasks by name and reads results, never importing the models.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from uuid import uuid4

from celery import Celery, chord, group, states
from celery.result import GroupResult

from search_engine.errors import FaceSearchError
from search_engine.indexing import BatchSummary, PhotoInput, source_name

from .celery_app import CLUSTER_PEOPLE, INDEX_CHUNK, INDEX_VIDEO

log = logging.getLogger(__name__)

#: The id of a job's people task starts with this, which tells it from the job's indexing tasks.
PEOPLE_TASK_PREFIX = "people-"


class JobNotFoundError(FaceSearchError):
    """No job with that id is known to the result backend (never submitted, or expired)."""


@dataclass
class JobStatus:
    """Where a job stands: chunks done of total, and the totals and failures of the chunks done."""

    job_id: str
    chunks_total: int
    chunks_done: int = 0
    chunks_failed: int = 0
    summary: BatchSummary = field(default_factory=BatchSummary)
    #: For a job that groups the faces into people afterwards: "pending", the run's
    #: :meth:`~search_engine.people.ClusterReport.to_dict`, or {"error": why}. None: no such step.
    people: dict | str | None = None

    @property
    def finished(self) -> bool:
        return self.chunks_done + self.chunks_failed >= self.chunks_total and self.people != "pending"

    @property
    def state(self) -> str:
        if not self.finished:
            return "running" if self.chunks_done or self.chunks_failed else "pending"
        return "finished with failures" if self.summary.failures else "finished"

    def to_dict(self) -> dict:
        chunks = {"total": self.chunks_total, "done": self.chunks_done, "failed": self.chunks_failed}
        body = {"job_id": self.job_id, "state": self.state, "chunks": chunks} | self.summary.to_dict()
        return body if self.people is None else body | {"people": self.people}


def submit_photos(
    app: Celery, photos: Sequence[PhotoInput], chunk_size: int, videos: Sequence[Path] = (), cluster: bool = False
) -> str:
    """Send ``photos`` as chunk tasks and each of ``videos`` as a video task, and with ``cluster``
    a people task once they are all done; returns the job id. Paths are made absolute first."""
    signatures = [
        app.signature(
            INDEX_CHUNK,
            args=(
                [source_name(p.path) for p in photos[i : i + chunk_size]],
                [p.person for p in photos[i : i + chunk_size]],
            ),
        )
        for i in range(0, len(photos), chunk_size)
    ]
    signatures += [app.signature(INDEX_VIDEO, args=(source_name(path),)) for path in videos]
    if cluster:
        people = app.signature(CLUSTER_PEOPLE).set(task_id=PEOPLE_TASK_PREFIX + str(uuid4()))
        last = chord(group(signatures))(people)
        result = GroupResult(last.parent.id, [*last.parent.results, last], app=app)
    else:
        result = group(signatures).apply_async()
    result.save()
    log.info("submitted job %s: %d photos, %d videos in %d tasks", result.id, len(photos), len(videos), len(signatures))
    return result.id


def job_status(app: Celery, job_id: str) -> JobStatus:
    """The current status of a job, read from the result backend.

    The finished chunks' results come in one round trip (``get_many``), and the backend keeps
    them cached, so polling a job of hundreds of chunks stays cheap for the machine that also
    runs the workers.
    """
    result = GroupResult.restore(job_id, app=app)
    if result is None:
        raise JobNotFoundError(f"no job {job_id} (unknown id, or its results expired)")
    everything = [task.id for task in result.results]
    finished = dict(app.backend.get_many(everything, interval=0, max_iterations=1))
    ids = [task_id for task_id in everything if not task_id.startswith(PEOPLE_TASK_PREFIX)]
    status = JobStatus(job_id, chunks_total=len(ids))
    for task_id in set(everything) - set(ids):
        meta = finished.get(task_id, {})
        if meta.get("status") == states.SUCCESS:
            status.people = meta["result"]
        elif meta.get("status") == states.FAILURE:
            status.people = {"error": f"{type(meta['result']).__name__}: {meta['result']}"}
        else:
            status.people = "pending"
    for task_id in ids:
        meta = finished.get(task_id, {})
        if meta.get("status") == states.SUCCESS:
            status.chunks_done += 1
            status.summary.merge(BatchSummary.from_dict(meta["result"]))
        elif meta.get("status") == states.FAILURE:
            # The whole chunk failed (e.g. the index stayed unreachable through every retry).
            status.chunks_failed += 1
            first = (meta.get("args") or [[]])[0]
            paths = [first] if isinstance(first, str) else first  # a video task's one path, or a chunk's
            error = meta["result"]
            reason = f"chunk task failed: {type(error).__name__}: {error}"
            status.summary.files += len(paths)
            status.summary.failures.extend((path, reason) for path in paths)
    return status
