"""The embedded similar-photo index: one LanceDB table, ``images_<image model key>``, in the face
index's database folder, one row per photo and per video keyframe. Searches are exact cosine kNN, or past
``FACESEARCH_VECTOR_INDEX_FACES`` photos through a vector index built the way the faces' is
(:mod:`.lance_store`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..config import IndexSettings
from ..errors import DimensionMismatchError
from ..types import BulkResult, EmbedderInfo, ImageHit, ImageRecord
from .base import query_vector
from .image_base import storable_images
from .lance_store import (
    VECTOR_COLUMN,
    LanceDatabase,
    build_vector_index_once,
    ensure_btree,
    optimize_table,
    unindexed,
    vector_index_of,
    vector_search,
)
from .lance_tables import sql_literal

#: The columns with a B-tree index: pictures are looked up by id and by file.
_LOOKED_UP = ["image_id", "source"]
#: Values per SQL ``IN`` list when looking pictures up.
_IN_LIST = 500
#: Written photos are compacted into fewer files after this many upserts.
_COMPACT_EVERY = 64


def images_schema(dim: int) -> pa.Schema:
    """Arrow schema of the photos table for ``dim``-dimensional descriptions (see :class:`ImageRecord`)."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("timestamp", pa.float64()),
            pa.field(VECTOR_COLUMN, pa.list_(pa.float32(), dim), nullable=False),
            pa.field("content_hash", pa.string(), nullable=False),
            pa.field("width", pa.int32(), nullable=False),
            pa.field("height", pa.int32(), nullable=False),
            pa.field("indexed_at", pa.string()),
        ]
    )


class EmbeddedImageIndex(LanceDatabase):
    """LanceDB implementation of :class:`~search_engine.index.image_base.ImageIndex`.

    Args:
        path: the database directory the face index uses too (created when missing).
        model: the image model whose descriptions this index holds.
        vector_index_rows: photos from which :meth:`optimize` builds the vector index; 0: never.
    """

    def __init__(self, path: Path, model: EmbedderInfo, vector_index_rows: int = 0) -> None:
        super().__init__(path)
        self.model = model
        self.vector_index_rows = vector_index_rows
        self.table_name = "images_" + re.sub(r"[^A-Za-z0-9_.-]", "_", model.key)
        self._table = None
        self._indexed = False
        self._writes = 0

    @classmethod
    def from_settings(cls, settings: IndexSettings, model: EmbedderInfo) -> EmbeddedImageIndex:
        return cls(Path(settings.data_dir) / "lancedb", model, settings.vector_index_faces)

    def ensure(self) -> None:
        if self._table is not None:
            return
        db = self._connect()
        try:
            table = db.open_table(self.table_name)
        except ValueError:
            with self._writing():
                # exist_ok: another process may have created it meanwhile.
                table = db.create_table(self.table_name, schema=images_schema(self.model.dim), exist_ok=True)
        if unindexed(table, _LOOKED_UP):
            with self._writing():
                ensure_btree(table, _LOOKED_UP)
        dim = table.schema.field(VECTOR_COLUMN).type.list_size
        if dim != self.model.dim:
            raise DimensionMismatchError(
                f"the embedded image index {self.path}/{self.table_name} holds {dim}-d vectors but the "
                f"{self.model.key} image model makes {self.model.dim}-d ones; drop that table or use a "
                "fresh data directory"
            )
        self._indexed = vector_index_of(table) is not None
        self._table = table

    def _open(self):
        self.ensure()
        return self._table

    def upsert(self, images: Sequence[ImageRecord]) -> BulkResult:
        if not images:
            return BulkResult(indexed=0)
        table = self._open()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        valid, failed = storable_images(self.model, images)
        if valid:
            rows = [
                {
                    "image_id": image.image_id,
                    "source": image.source,
                    "timestamp": image.timestamp,
                    VECTOR_COLUMN: vector,
                    "content_hash": image.content_hash,
                    "width": int(image.width),
                    "height": int(image.height),
                    "indexed_at": image.indexed_at or now,
                }
                for image, vector in valid
            ]
            data = pa.Table.from_pylist(rows, schema=images_schema(self.model.dim))
            with self._writing():
                table.merge_insert("image_id").when_matched_update_all().when_not_matched_insert_all().execute(data)
            self._writes += 1
            if self._writes % _COMPACT_EVERY == 0:
                self.optimize()
        return BulkResult(indexed=len(valid), failed=tuple(failed))

    def search(self, vector: np.ndarray, k: int = 20, exclude_sources: Sequence[str] = ()) -> list[ImageHit]:
        query = query_vector(self.model, vector)
        builder = vector_search(self._open(), query, k, self._indexed)
        if exclude_sources:
            listed = ", ".join(sql_literal(s) for s in exclude_sources)
            builder = builder.where(f"source NOT IN ({listed})", prefilter=True)
        rows = builder.select(["source", "timestamp", "width", "height", "_distance"]).to_list()
        # LanceDB's cosine distance is 1 - cosine similarity.
        return [
            ImageHit(row["source"], float(1.0 - row["_distance"]), row["width"], row["height"], row["timestamp"])
            for row in rows
        ]

    def _rows(self, column: str, values: Sequence[str], columns: list[str]) -> list[dict]:
        """``columns`` of the rows whose ``column`` is one of ``values``, a few hundred at a time."""
        table = self._open()
        unique = list(dict.fromkeys(values))
        rows: list[dict] = []
        for start in range(0, len(unique), _IN_LIST):
            where = f"{column} IN ({', '.join(sql_literal(v) for v in unique[start : start + _IN_LIST])})"
            rows.extend(table.search().where(where).select(columns).limit(max(1, table.count_rows(where))).to_list())
        return rows

    def content_hashes(self, sources: Sequence[str]) -> dict[str, str]:
        return {row["source"]: row["content_hash"] for row in self._rows("source", sources, ["source", "content_hash"])}

    def embedding(self, image_id: str) -> np.ndarray | None:
        rows = self._rows("image_id", [image_id], [VECTOR_COLUMN])
        return np.asarray(rows[0][VECTOR_COLUMN], dtype=np.float32) if rows else None

    def delete_source(self, source: str) -> int:
        table = self._open()
        predicate = f"source = {sql_literal(source)}"
        with self._writing():
            removed = table.count_rows(predicate)
            if removed:
                table.delete(predicate)
        return removed

    def count(self) -> int:
        return self._open().count_rows()

    def refresh(self) -> None:
        """Nothing to do: LanceDB makes each write visible when it returns."""

    def optimize(self) -> None:
        """Compact the table and build its vector index once it holds ``vector_index_rows`` pictures."""
        table = self._open()
        with self._writing():
            optimize_table(table)
            self._indexed = build_vector_index_once(table, self.vector_index_rows, self.table_name)

    def drop(self) -> None:
        db = self._connect()
        with self._writing():
            db.drop_table(self.table_name, ignore_missing=True)
        self._table = None
        self._indexed = False

    def close(self) -> None:
        self._table = self._db = None
