"""The Celery application: Redis broker and result backend, settings for long CPU-bound tasks.

Callers submit tasks by name (:data:`INDEX_CHUNK`, :data:`INDEX_VIDEO`, :data:`CLUSTER_PEOPLE`), so the CLI and the web
app never import torch.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

from search_engine.config import Settings

INDEX_CHUNK = "facesearch.index_chunk"
INDEX_VIDEO = "facesearch.index_video"
CLUSTER_PEOPLE = "facesearch.cluster_people"


def create_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.queue.broker_url``; builds no connection until it is used."""
    app = Celery(
        "facesearch", broker=settings.queue.broker_url, backend=settings.queue.broker_url, include=["ingest.tasks"]
    )
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
        # How long a task of a worker that died outright (SIGKILL, lost machine) waits before another
        # worker gets it: short enough to recover soon, longer than any chunk takes. Workers look
        # for such tasks every few seconds (a fraction of the timeout, at most 10 s): kombu's
        # default looks every 100 s (10 s, with 9 of 10 looks skipped), which left a task of a
        # killed worker waiting 90 s past a 5 s timeout.
        broker_transport_options={
            "visibility_timeout": settings.queue.visibility_timeout,
            "unacked_restore_interval": min(10, max(1, settings.queue.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        },
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        # A task that ends while Redis is down keeps trying to store its result until Redis is
        # back (with backoff), instead of being recorded as failed: its files were indexed.
        # (Short-lived clients turn it off: see celery_client.)
        result_backend_always_retry=True,
        worker_hijack_root_logger=False,
    )
    app.conf.facesearch_settings = settings
    return app


@contextmanager
def celery_client(settings: Settings) -> Iterator[Celery]:
    """:func:`create_celery` for a short-lived client (the CLI), its connections closed after:
    the broker pool by ``Celery.close``, the Redis result backend's pool explicitly, and the
    connections ``control.ping`` opens and drops (kombu leaves them to the garbage collector)
    collected right here rather than at some random later point in the process."""
    app = create_celery(settings)
    # A client does not wait inside Celery for a broker that is away (with a traceback logged at
    # each try): it is told at once, and `submit --wait` says so and polls again.
    app.conf.result_backend_always_retry = False
    try:
        yield app
    finally:
        app.close()
        client = getattr(app.backend, "client", None)
        if client is not None:
            client.connection_pool.disconnect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()
