"""In-process indexing of many photos in batches, with a progress bar."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tqdm import tqdm

from search_engine.indexing import BatchSummary, PhotoInput
from search_engine.service import SearchService

log = logging.getLogger(__name__)


def chunks(items: Sequence, size: int) -> list[Sequence]:
    """``items`` cut into consecutive slices of at most ``size``."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def index_locally(service: SearchService, photos: Sequence[PhotoInput], progress: bool = True) -> BatchSummary:
    """Index ``photos`` in batches of ``settings.batch_size`` in this process; never stops on a bad file."""
    summary = BatchSummary()
    with tqdm(total=len(photos), unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in chunks(photos, service.settings.batch_size):
            summary.add(service.index_photos(batch))
            bar.update(len(batch))
            bar.set_postfix(faces=summary.faces, failed=len(summary.failures), refresh=False)
    service.index.refresh()
    return summary
