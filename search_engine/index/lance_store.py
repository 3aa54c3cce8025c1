"""The embedded store's LanceDB database, as every table of it is opened, locked, compacted and
searched: the faces (:mod:`.embedded`) and the photos of similar-photo search (:mod:`.image_embedded`)."""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from ..errors import IndexUnavailableError

log = logging.getLogger(__name__)

#: :func:`optimize_table` deletes the files of table versions older than this. A search in another
#: process reads the version that was newest when it began, for well under a second. LanceDB's
#: default, a week, keeps every file a compaction replaced, and compactions rewrite the store's
#: growing data file (up to a million rows): filling 1M faces left 10 kB per face on disk, three
#: times the store itself (bench/scale.py).
KEEP_OLD_VERSIONS = timedelta(minutes=2)
#: Lance's file format for new tables. A search reads its hits' columns from scattered rows, which
#: 2.1 does in half the time of the 2.2 LanceDB defaults to (20 rows of 1M faces: 8-10 ms against
#: 18-21). A store made earlier keeps its format, and writes to it go on in that format.
FILE_FORMAT = "2.1"
#: The vector index: one IVF partition, so one HNSW graph (a partitioned index lost most of a
#: person-filtered search's hits at low nprobes, measured), over 8-bit scalar-quantised vectors.
VECTOR_INDEX_PARTITIONS = 1
#: How many times the hits asked for are re-ranked with the full vectors, and the HNSW candidates
#: per search: at least hits x refine (LanceDB requires it), ``EF``, and one per ``ROWS_PER_EF``
#: rows stored, as a larger graph needs a wider search. On faces shaped like MobileFaceNet's LFW
#: faces (bench/scale.py), recall@20 against exact search: at 100k, ef 300 0.990 at 14 ms (ef 100
#: with refine 2: 0.940); at 1M, ef 300 0.941, 600 0.980, 1,000 0.992 at p50 25, 26, 29 ms, where
#: refining 10 times instead of 4 changed nothing.
REFINE = 4
EF = 300
ROWS_PER_EF = 1000
#: The vector column of every table searched by similarity.
VECTOR_COLUMN = "embedding"


def open_database(path: Path):
    """The LanceDB database in ``path`` (created when missing).

    Raises:
        IndexUnavailableError: the folder cannot be made or opened.
    """
    import lancedb

    try:
        path.mkdir(parents=True, exist_ok=True)
        # Interval 0: every read sees what other processes (Celery workers) committed.
        return lancedb.connect(
            str(path),
            read_consistency_interval=timedelta(0),
            storage_options={"new_table_data_storage_version": FILE_FORMAT},
        )
    except OSError as exc:
        raise IndexUnavailableError(f"cannot open the embedded index at {path}: {exc}") from exc


@contextmanager
def write_lock(path: Path):
    """Hold the database's write lock: processes sharing the folder write one at a time, so their
    merges never race (reads need no lock)."""
    with open(path / ".write.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Another process is writing, or is stuck holding the lock (the OS releases it when
            # that process ends, however it ends): say why nothing moves, then wait.
            log.warning("another process is writing to the embedded index at %s; waiting for it", path)
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.warning("the embedded index at %s is free again", path)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class LanceDatabase:
    """What a store over one LanceDB folder holds: its ``path``, its connection, made on first
    use, and its write lock (:func:`write_lock`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = None

    def _connect(self):
        if self._db is None:
            self._db = open_database(self.path)
        return self._db

    @contextmanager
    def _writing(self):
        """Hold the database's write lock (see :func:`write_lock`)."""
        self._connect()
        with write_lock(self.path):
            yield


def optimize_table(table) -> None:
    """Compact the small files writes left, fold new rows into the table's indexes and delete the
    files of versions older than :data:`KEEP_OLD_VERSIONS` (call under :func:`write_lock`)."""
    table.optimize(cleanup_older_than=KEEP_OLD_VERSIONS)


def vector_index_of(table):
    """The table's vector index (LanceDB's description of it), or None."""
    return next((index for index in table.list_indices() if list(index.columns) == [VECTOR_COLUMN]), None)


def build_vector_index_once(table, rows_from: int, name: str) -> bool:
    """Build the table's vector index if it has none and holds at least ``rows_from`` rows (0:
    never); later rows join it at each :func:`optimize_table`, without retraining. Returns whether
    the table has a vector index now (call under :func:`write_lock`)."""
    if vector_index_of(table) is not None:
        return True
    if not rows_from or table.count_rows() < rows_from:
        return False
    from lancedb.index import IvfHnswSq

    log.info("building the vector index of %s (%d rows)", name, table.count_rows())
    table.create_index(VECTOR_COLUMN, config=IvfHnswSq(distance_type="cosine", num_partitions=VECTOR_INDEX_PARTITIONS))
    return True


def vector_search(table, query, limit: int, indexed: bool, exact: bool = False):
    """A cosine search of ``query`` (one vector, or a list of them) for ``limit`` rows: through the
    vector index when the table has one (``indexed``) and not ``exact``, with its per-search
    parameters; rows not in the index yet are searched exactly either way."""
    builder = table.search(query, vector_column_name=VECTOR_COLUMN).distance_type("cosine").limit(limit)
    if not indexed:
        return builder
    if exact:
        return builder.bypass_vector_index()
    ef = max(EF, limit * REFINE, table.count_rows() // ROWS_PER_EF)
    return builder.ef(ef).refine_factor(REFINE)


def unindexed(table, columns: Sequence[str]) -> list[str]:
    """Those of ``columns`` that have no index yet."""
    indexed = {column for index in table.list_indices() for column in index.columns}
    return [column for column in columns if column not in indexed]


def ensure_btree(table, columns: Sequence[str]) -> None:
    """B-tree indexes on ``columns`` where they have none: lookups by those columns (a face, a file,
    a person, a video) stop scanning the table (rows written since the last :func:`optimize_table`
    are scanned)."""
    from lancedb.index import BTree

    for column in unindexed(table, columns):
        table.create_index(column, config=BTree())
