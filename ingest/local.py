"""In-process indexing of many photos: batches, optional worker processes, a progress bar.

With ``workers > 1`` each worker process loads its own detector and embedder (torch threads set so
that workers x threads stays at the core count) and only analyses; this process alone writes to
the index, so the embedded store never sees two writers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm

from search_engine.config import Settings
from search_engine.embedding import build_embedder, resolve_embedder_name
from search_engine.index import FaceIndex, create_index
from search_engine.indexing import BatchSummary, PhotoAnalysis, PhotoInput, analyse_photos, source_name, store_analyses
from search_engine.pipeline import FacePipeline
from search_engine.types import SourceRecord

log = logging.getLogger(__name__)

#: Chunks handed out ahead of the writer per worker, so no worker waits for work.
_IN_FLIGHT_PER_WORKER = 2

_pipeline: FacePipeline | None = None


def chunks(items: Sequence, size: int) -> list[Sequence]:
    """``items`` cut into consecutive slices of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def _init_worker(settings: Settings) -> None:
    global _pipeline
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    _pipeline = FacePipeline.from_settings(settings)


def _analyse_in_worker(
    items: Sequence[PhotoInput], known: dict[str, SourceRecord], max_pixels: int
) -> list[PhotoAnalysis]:
    return analyse_photos(_pipeline, items, known, max_pixels)


def index_locally(
    settings: Settings, photos: Sequence[PhotoInput], progress: bool = True
) -> tuple[BatchSummary, FaceIndex]:
    """Index ``photos`` in batches of ``settings.batch_size`` with ``settings.worker_count`` processes;
    never stops on a bad file. Returns the summary and the (open) index the faces went to.
    """
    workers = settings.worker_count
    resolved = settings.replace(embedder=resolve_embedder_name(settings))
    if workers > 1 and not settings.torch_threads:
        threads = max(1, (os.cpu_count() or 1) // workers)
        resolved = resolved.replace(torch_threads=threads)
    index = create_index(resolved, build_embedder(resolved.embedder, resolved).info)
    index.ensure()
    summary = BatchSummary()
    with tqdm(total=len(photos), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for analyses in _analysed(resolved, index, photos, workers):
            summary.add(store_analyses(index, analyses))
            bar.update(len(analyses))
            bar.set_postfix(faces=summary.faces, failed=len(summary.failures), refresh=False)
    index.refresh()
    return summary, index


def _analysed(
    settings: Settings, index: FaceIndex, photos: Sequence[PhotoInput], workers: int
) -> Iterator[list[PhotoAnalysis]]:
    """Analyses of each chunk, in order, computed here or by a pool of worker processes."""
    batches = chunks(photos, settings.batch_size)

    def known(batch: Sequence[PhotoInput]) -> dict[str, SourceRecord]:
        return index.get_sources([source_name(item.path) for item in batch])

    if workers <= 1:
        pipeline = FacePipeline.from_settings(settings)
        for batch in batches:
            yield analyse_photos(pipeline, batch, known(batch), settings.max_image_pixels)
        return
    # spawn, not fork: this process already runs LanceDB's and torch's threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(settings,)) as pool:
        pending = []
        for batch in batches:
            pending.append(pool.submit(_analyse_in_worker, batch, known(batch), settings.max_image_pixels))
            if len(pending) >= workers * _IN_FLIGHT_PER_WORKER:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()
