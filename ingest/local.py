"""In-process indexing of many photos and videos: batches, optional worker processes, progress bars.

With ``workers > 1`` each worker process loads its own detector and embedder (torch threads set so
that workers x threads stays at the core count) and only analyses; this process alone writes to
the index, so the embedded store never sees two writers. Photos go in batches; each video's time
segments are shared out to the workers and its tracks stored once the whole video is done.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

from tqdm import tqdm

from search_engine.config import Settings
from search_engine.embedding import build_embedder, image_embedder_info, resolve_embedder_name
from search_engine.index import FaceIndex, ImageIndex, create_image_index, create_index
from search_engine.indexing import BatchSummary, FileAnalysis, PhotoInput, analyse_photos, source_name, store_analyses
from search_engine.pipeline import FacePipeline
from search_engine.types import SourceRecord
from search_engine.video_indexing import (
    SegmentAnalysis,
    VideoOptions,
    analyse_segment,
    combine_segments,
    plan_video,
    segments,
)

log = logging.getLogger(__name__)

#: Chunks handed out ahead of the writer per worker, so no worker waits for work.
_IN_FLIGHT_PER_WORKER = 2

_pipeline: FacePipeline | None = None


def chunks(items: Sequence, size: int) -> list[Sequence]:
    """``items`` cut into consecutive slices of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _init_worker(settings: Settings, parent: int | None = None) -> None:
    global _pipeline
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    if parent is not None:
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    _pipeline = FacePipeline.from_settings(settings.models)


def _exit_when_orphaned(parent: int) -> None:
    """End this worker process once ``parent`` is gone. A parent killed outright (SIGKILL, the OOM
    killer) cannot stop its pool, and a worker waiting for work would otherwise live on, holding
    its models' memory and the parent's output pipes, for ever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _analyse_in_worker(
    items: Sequence[PhotoInput], known: dict[str, SourceRecord], max_pixels: int, known_images: dict[str, str]
) -> list[FileAnalysis]:
    return analyse_photos(_pipeline, items, known, max_pixels, known_images)


def analyse_segment_in_worker(
    path: Path, start: float, end: float | None, options: VideoOptions, digest: str = ""
) -> SegmentAnalysis:
    """:func:`analyse_segment` with this worker process's pipeline (see :func:`worker_pool`)."""
    return analyse_segment(_pipeline, path, start, end, options, digest)


def index_locally(
    settings: Settings, photos: Sequence[PhotoInput], progress: bool = True, videos: Sequence[Path] = ()
) -> tuple[BatchSummary, FaceIndex]:
    """Index ``photos`` in batches of ``settings.models.batch_size``, then ``videos`` segment by segment, with
    ``settings.models.worker_count`` processes; never stops on a bad file. With
    ``FACESEARCH_IMAGE_SEARCH`` each photo also goes to the image index. Returns the summary and the
    (open) index the faces went to.
    """
    workers = settings.models.worker_count
    resolved = settings.replace(embedder=resolve_embedder_name(settings.models))
    if workers > 1 and not settings.models.torch_threads:
        threads = max(1, (os.cpu_count() or 1) // workers)
        resolved = resolved.replace(torch_threads=threads)
    index = create_index(resolved.index, build_embedder(resolved.models.embedder, resolved.models).info)
    index.ensure()
    images = create_image_index(resolved.index, image_embedder_info()) if resolved.models.image_search else None
    if images is not None:
        images.ensure()
    summary = BatchSummary()
    with worker_pool(resolved, workers) as pool:
        if photos:
            with tqdm(total=len(photos), unit="img", disable=not progress, dynamic_ncols=True) as bar:
                for analyses in _analysed(resolved, index, images, photos, pool, workers):
                    summary.add(store_analyses(index, analyses, images))
                    bar.update(len(analyses))
                    bar.set_postfix(faces=summary.faces, failed=len(summary.failures), refresh=False)
        if videos:
            with tqdm(total=len(videos), unit="video", disable=not progress, dynamic_ncols=True) as bar:
                for video in videos:
                    analysis = _analyse_video(resolved, index, images, video, pool)
                    summary.add(store_analyses(index, [analysis], images))
                    bar.update(1)
                    bar.set_postfix(faces=summary.faces, failed=len(summary.failures), refresh=False)
    index.optimize()
    index.refresh()
    if images is not None:
        images.optimize()
        images.refresh()
        images.close()
    return summary, index


class _InProcess(Executor):
    """The executor interface run right here, for a single worker (no process to spawn)."""

    def __init__(self, settings: Settings) -> None:
        _init_worker(settings)

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def worker_pool(settings: Settings, workers: int):
    """An executor whose processes each hold a loaded pipeline: ``workers`` spawned processes, or
    this process alone when ``workers`` is 1 (use as a context manager)."""
    if workers <= 1:
        return nullcontext(_InProcess(settings))
    # spawn, not fork: this process already runs LanceDB's and torch's threads.
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings, os.getpid()))


def _analysed(
    settings: Settings,
    index: FaceIndex,
    images: ImageIndex | None,
    photos: Sequence[PhotoInput],
    pool: Executor,
    workers: int,
) -> Iterator[list[FileAnalysis]]:
    """Analyses of each chunk, in order, computed by the pool while the caller stores earlier ones."""
    pending = []
    for batch in chunks(photos, settings.models.batch_size):
        sources = [source_name(item.path) for item in batch]
        known = index.get_sources(sources)
        known_images = images.content_hashes(sources) if images is not None else {}
        pending.append(pool.submit(_analyse_in_worker, batch, known, settings.models.max_image_pixels, known_images))
        if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


def _analyse_video(
    settings: Settings, index: FaceIndex, images: ImageIndex | None, path: Path, pool: Executor
) -> FileAnalysis:
    """One video: skip or fail it at once, or share its segments out to the pool and combine them."""
    known = index.get_sources([source_name(path)])
    described = None if images is None else images.content_hashes([source_name(path)])
    done, info, digest = plan_video(path, known, described)
    if done is not None:
        return done
    options = VideoOptions.from_settings(settings.video, index)
    futures = [
        pool.submit(analyse_segment_in_worker, path, start, end, options, digest)
        for start, end in segments(info, options.segment_seconds)
    ]
    return combine_segments([f.result() for f in futures], digest, replaces=bool(known))
