"""The Celery application: Redis broker and result backend, settings for long CPU-bound tasks.

Callers submit tasks by name (:data:`INDEX_CHUNK`), so the CLI and the web app never import torch.
"""

from __future__ import annotations

from celery import Celery

from search_engine.config import Settings

INDEX_CHUNK = "facesearch.index_chunk"

#: Seconds Redis waits for an unacknowledged task before handing it to another worker. A chunk of
#: 32 photos takes seconds; this only has to exceed the longest task, with a wide margin.
VISIBILITY_TIMEOUT_S = 4 * 3600


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.broker_url``; builds no connection until it is used."""
    app = Celery("facesearch", broker=settings.broker_url, backend=settings.broker_url, include=["ingest.tasks"])
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # A task is acknowledged when done, so a worker killed mid-chunk gets it redelivered;
        # deterministic face ids make the second run overwrite, not duplicate.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        # Keep each task's arguments with its result, so a job can name the files of a failed chunk.
        result_extended=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        result_backend_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    app.conf.facesearch_settings = settings
    return app
