"""The zero-setup face index: an embedded LanceDB database in a directory on disk.

One table of faces per embedding model (``faces_<model key>``), one of ingested files
(``sources_<model key>``), and the human decisions about people (``people_<model key>``) and
faces (``decisions_<model key>``); the model's calibration, when one is stored, is the JSON file
``faces_<model key>.calibration.json`` beside them. Searches are exact (flat) cosine kNN with SQL
pre-filters, or, past ``FACESEARCH_VECTOR_INDEX_FACES`` faces, through a vector index built by
:meth:`EmbeddedFaceIndex.optimize` (faces written since are searched exactly until the next one).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..calibration import Calibration
from ..config import IndexSettings
from ..errors import DimensionMismatchError, IndexUnavailableError
from ..photo_hash import hash_bytes
from ..types import (
    FILLED_FROM,
    BulkResult,
    EmbedderInfo,
    FaceDecision,
    FaceRecord,
    Facet,
    Grouping,
    Hit,
    PersonRecord,
    SearchFilters,
    SourceRecord,
)
from .base import (
    COLLAPSE_GROWTH,
    COLLAPSE_OVERSAMPLE,
    FaceBatch,
    NearCopy,
    Neighbour,
    VectorIndexInfo,
    check_calibration,
    check_collapse,
    check_facet_field,
    nearest_first,
    query_matrix,
    query_vector,
    storable,
)
from .lance_store import (
    LanceDatabase,
    build_vector_index_once,
    ensure_btree,
    optimize_table,
    unindexed,
    vector_index_of,
    vector_search,
)
from .lance_tables import (
    DECISIONS_SCHEMA,
    HIT_COLUMNS,
    IMAGE_BITS,
    OLD_IMAGE_HASH,
    PEOPLE_SCHEMA,
    SOURCES_SCHEMA,
    face_row,
    faces_schema,
    hit_from_row,
    record_from_row,
    source_from_row,
    source_row,
    sql_literal,
    where_clause,
)

log = logging.getLogger(__name__)

#: Written faces are compacted into fewer files after this many small upserts.
_COMPACT_EVERY = 64
#: Values per SQL ``IN`` list: bounded lists keep the SQL small for folders of many thousand files.
_IN_LIST = 500
#: Query vectors per LanceDB search in :meth:`EmbeddedFaceIndex.neighbours`: one scan of the table
#: answers them all, about 15 times faster per query than one search each.
_QUERIES_PER_SCAN = 256
#: Faces per partial update of their clusters.
_UPDATES_PER_MERGE = 50_000
#: A search filtered by person, person id or video that leaves at most this many faces scans
#: them exactly instead of walking the graph with the filter (counting them costs 1-2 ms). How
#: many pay depends on where the faces lie: indexing a video writes its tracks together, so a
#: video's faces are neighbouring rows, while a person's are scattered through the table, and a
#: scattered row costs about ten times as much to read (README, "Scale", has the crossovers
#: measured at 1M faces). With several filters the faces left lie at least as close together as
#: one filter's, so the largest of their limits applies.
_EXACT_UP_TO = {"video": 10_000, "person": 2_000, "cluster": 2_000}


def _move_hashes_into_bits(sources) -> None:
    """Move the hashes of an older version's sources table from its hex text column into the
    searchable :data:`~.lance_tables.IMAGE_BITS` (added empty just before), then drop the text.
    Run again after a crash between the two steps, it moves the same hashes again."""
    where = f"{OLD_IMAGE_HASH} IS NOT NULL"
    rows = sources.search().where(where).select(["source", OLD_IMAGE_HASH]).limit(sources.count_rows(where)).to_arrow()
    log.info("moving %d image hashes of %s into %s", rows.num_rows, sources.name, IMAGE_BITS.name)
    if rows.num_rows:
        bits = [list(hash_bytes(value)) for value in rows[OLD_IMAGE_HASH].to_pylist()]
        moved = pa.table({"source": rows["source"], IMAGE_BITS.name: pa.array(bits, type=IMAGE_BITS.type)})
        sources.merge_insert("source").when_matched_update_all().execute(moved)
    sources.drop_columns([OLD_IMAGE_HASH])


def _table_name(kind: str, model: EmbedderInfo) -> str:
    return f"{kind}_" + re.sub(r"[^A-Za-z0-9_.-]", "_", model.key)


class EmbeddedFaceIndex(LanceDatabase):
    """LanceDB implementation of :class:`~search_engine.index.base.FaceIndex`.

    Args:
        path: the database directory (created when missing).
        model: the embedding model whose faces this index holds.
        vector_index_faces: faces from which :meth:`optimize` builds the vector index; 0: never.
    """

    def __init__(self, path: Path, model: EmbedderInfo, vector_index_faces: int = 0) -> None:
        super().__init__(path)
        self.model = model
        self.vector_index_faces = vector_index_faces
        self._indexed_vectors = False
        self._faces = None
        self._sources = None
        self._people = None
        self._decisions = None
        self._writes = 0

    @classmethod
    def from_settings(cls, settings: IndexSettings, model: EmbedderInfo) -> EmbeddedFaceIndex:
        return cls(Path(settings.data_dir) / "lancedb", model, settings.vector_index_faces)

    @property
    def faces_table_name(self) -> str:
        return _table_name("faces", self.model)

    def ensure(self) -> None:
        if self._faces is not None:
            return
        # A store that needs nothing created opens without the write lock, so searches go on
        # while another process writes, or is stuck holding the lock.
        if not self._open_tables(create=False):
            with self._writing():
                self._open_tables(create=True)

    def _open_tables(self, create: bool) -> bool:
        """Open the tables, creating and completing what is missing when ``create``; without it,
        False as soon as something would have to be written."""
        db = self._connect()
        try:
            faces = db.open_table(self.faces_table_name)
        except ValueError:
            if not create:
                return False
            # Not there yet; exist_ok covers another process creating it meanwhile.
            faces = db.create_table(self.faces_table_name, schema=faces_schema(self.model.dim), exist_ok=True)
        dim = faces.schema.field("embedding").type.list_size
        if dim != self.model.dim:
            raise DimensionMismatchError(
                f"the embedded index {self.path}/{self.faces_table_name} holds {dim}-d vectors but the "
                f"{self.model.key} embedder makes {self.model.dim}-d ones; re-index into a fresh data directory"
            )
        missing = [f for f in faces_schema(dim) if f.name not in faces.schema.names]
        if missing:
            if not create:
                return False
            # A store written by an older version: new columns are optional, so they start empty,
            # or as a copy of the column that held their values before.
            log.info("adding columns %s to %s", [f.name for f in missing], self.faces_table_name)
            copied = {f.name: FILLED_FROM[f.name] for f in missing if f.name in FILLED_FROM}
            empty = [f for f in missing if f.name not in copied]
            if empty:
                faces.add_columns(empty)
            if copied:
                faces.add_columns(copied)
        tables = {}
        for kind, schema in (("sources", SOURCES_SCHEMA), ("people", PEOPLE_SCHEMA), ("decisions", DECISIONS_SCHEMA)):
            try:
                tables[kind] = db.open_table(_table_name(kind, self.model))
            except ValueError:
                if not create:
                    return False
                tables[kind] = db.create_table(_table_name(kind, self.model), schema=schema, exist_ok=True)
            # Optional columns an older version's table lacks start empty.
            lacking = [f for f in schema if f.name not in tables[kind].schema.names]
            if lacking:
                if not create:
                    return False
                log.info("adding columns %s to %s", [f.name for f in lacking], _table_name(kind, self.model))
                tables[kind].add_columns(lacking)
        if OLD_IMAGE_HASH in tables["sources"].schema.names:
            if not create:
                return False
            _move_hashes_into_bits(tables["sources"])
        btrees = ((faces, _FILTERED_COLUMNS), (tables["sources"], ("source",)))
        if not create and any(unindexed(table, columns) for table, columns in btrees):
            return False
        for table, columns in btrees:
            ensure_btree(table, columns)
        self._sources, self._people, self._decisions = tables["sources"], tables["people"], tables["decisions"]
        self._indexed_vectors = vector_index_of(faces) is not None
        self._faces = faces
        return True

    def _table(self):
        self.ensure()
        return self._faces

    def upsert(self, faces: Sequence[FaceRecord]) -> BulkResult:
        if not faces:
            return BulkResult(indexed=0)
        table = self._table()
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        valid, failed = storable(self.model, faces)
        rows = [face_row(face, vector, face.indexed_at or now) for face, vector in valid]
        if rows:
            # Deduplicate within the batch: merge_insert refuses two source rows for one key.
            unique = list({row["face_id"]: row for row in rows}.values())
            data = pa.Table.from_pylist(unique, schema=faces_schema(self.model.dim))
            with self._writing():
                table.merge_insert("face_id").when_matched_update_all().when_not_matched_insert_all().execute(data)
            self._after_write()
        return BulkResult(indexed=len(rows), failed=tuple(failed))

    def _after_write(self) -> None:
        self._writes += 1
        if self._writes % _COMPACT_EVERY == 0:
            self.optimize()

    def optimize(self) -> None:
        """Compact small files left by many upserts, fold new rows into the scalar indexes, delete
        the files of old versions (:func:`.lance_store.optimize_table`), and build the vector
        index once the faces reach ``vector_index_faces``."""
        with self._writing():
            for table in (self._faces, self._sources, self._people, self._decisions):
                if table is not None:
                    optimize_table(table)
            if self._faces is not None:
                self._indexed_vectors = build_vector_index_once(
                    self._faces, self.vector_index_faces, self.faces_table_name
                )

    def search(
        self,
        vector: np.ndarray,
        k: int = 20,
        filters: SearchFilters | None = None,
        collapse: str | None = None,
        with_embeddings: bool = False,
    ) -> list[Hit]:
        check_collapse(collapse)
        query = query_vector(self.model, vector)
        columns = [*HIT_COLUMNS, "embedding"] if with_embeddings else HIT_COLUMNS
        table = self._table()
        where = where_clause(filters)
        min_score = filters.min_score if filters else None
        limit = k if collapse is None else k * COLLAPSE_OVERSAMPLE
        exact = self._few(table, filters, where)
        while True:
            rows = self._nearest(table, query, where, limit, exact, columns)
            hits = [hit_from_row(row) for row in rows]
            if min_score is not None:
                hits = [hit for hit in hits if hit.score >= min_score]
            if collapse is None:
                return hits[:k]
            best: dict[object, Hit] = {}
            for hit in hits:
                best.setdefault(getattr(hit, collapse), hit)
            exhausted = len(rows) < limit or (min_score is not None and len(hits) < len(rows))
            if len(best) >= k or exhausted:
                return list(best.values())[:k]
            limit *= COLLAPSE_GROWTH

    def _vector_search(self, table, query, limit: int, exact: bool = False):
        return vector_search(table, query, limit, self._indexed_vectors, exact)

    def _few(self, table, filters: SearchFilters | None, where: str | None) -> bool:
        """Whether a filtered search leaves few enough faces to scan them exactly (checked only
        for the filters that can: counting the faces of a media type costs more than it saves)."""
        limits = [limit for name, limit in _EXACT_UP_TO.items() if filters and getattr(filters, name)]
        if not (self._indexed_vectors and limits):
            return False
        return table.count_rows(where) <= max(limits)

    def _nearest(
        self, table, query: np.ndarray, where: str | None, limit: int, exact: bool, columns: list[str]
    ) -> list[dict]:
        builder = self._vector_search(table, query, limit, exact)
        if where:
            builder = builder.where(where, prefilter=True)
        return builder.select(columns).to_list()

    def _rows(self, where: str | None, columns: list[str] | None = None) -> pa.Table:
        table = self._table()
        query = table.search()
        if where:
            query = query.where(where)
        if columns is not None:
            query = query.select(columns)
        return query.limit(table.count_rows(where)).to_arrow()

    def get(self, face_id: str) -> FaceRecord | None:
        rows = self._rows(f"face_id = {sql_literal(face_id)}").to_pylist()
        return record_from_row(rows[0]) if rows else None

    def _by_ids(self, face_ids: Sequence[str], columns: list[str] | None) -> Iterator[pa.Table]:
        """The rows of these faces (those that exist), ``columns`` of them (None: all), a few
        hundred ids per query."""
        table = self._table()
        unique = list(dict.fromkeys(face_ids))
        for start in range(0, len(unique), _IN_LIST):
            chunk = unique[start : start + _IN_LIST]
            query = table.search().where(f"face_id IN ({', '.join(sql_literal(f) for f in chunk)})")
            if columns is not None:
                query = query.select(columns)
            # Face ids are unique, so the list's length bounds the rows: no count query first.
            yield query.limit(len(chunk)).to_arrow()

    def records(self, face_ids: Sequence[str]) -> dict[str, FaceRecord]:
        return {
            row["face_id"]: record_from_row(row) for rows in self._by_ids(face_ids, None) for row in rows.to_pylist()
        }

    def embeddings(self, face_ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for rows in self._by_ids(face_ids, ["face_id", "embedding"]):
            vectors = rows["embedding"].combine_chunks().flatten().to_numpy().reshape(-1, self.model.dim)
            found.update(zip(rows["face_id"].to_pylist(), vectors))
        return found

    def labels(self) -> dict[str, str]:
        rows = self._rows("label IS NOT NULL", ["face_id", "label"])
        return dict(zip(rows["face_id"].to_pylist(), rows["label"].to_pylist()))

    def scan(
        self, batch_size: int = 10_000, filters: SearchFilters | None = None, vectors: bool = True
    ) -> Iterator[FaceBatch]:
        table = self._table()
        columns = ["face_id", "person", "label", "cluster", *(["embedding"] if vectors else [])]
        where = where_clause(filters)
        query = table.search().select(columns)
        if where:
            query = query.where(where)
        reader = query.limit(max(table.count_rows(where), 1)).to_batches(batch_size)
        for batch in reader:
            if batch.num_rows == 0:
                continue
            if vectors:
                matrix = batch.column("embedding").flatten().to_numpy().reshape(-1, self.model.dim)
            else:
                matrix = np.zeros((batch.num_rows, 0))
            yield FaceBatch(
                tuple(batch.column("face_id").to_pylist()),
                np.ascontiguousarray(matrix, dtype=np.float32),
                tuple(batch.column("person").to_pylist()),
                tuple(batch.column("label").to_pylist()),
                tuple(batch.column("cluster").to_pylist()),
            )

    def neighbours(self, vectors: np.ndarray, k: int) -> list[list[Neighbour]]:
        queries = query_matrix(self.model, vectors)
        table = self._table()
        found: list[list[Neighbour]] = [[] for _ in range(len(queries))]
        for start in range(0, len(queries), _QUERIES_PER_SCAN):
            chunk = queries[start : start + _QUERIES_PER_SCAN]
            rows = self._vector_search(table, list(chunk), k).select(["face_id", "_distance"]).to_arrow()
            # One query comes back without LanceDB's query_index column.
            positions = rows["query_index"].to_pylist() if "query_index" in rows.column_names else [0] * rows.num_rows
            for position, face_id, distance in zip(
                positions, rows["face_id"].to_pylist(), rows["_distance"].to_pylist()
            ):
                found[start + position].append((face_id, 1.0 - distance))
        for row in found:
            row.sort(key=lambda neighbour: -neighbour[1])
        return found

    def set_people(self, changes: Mapping[str, Grouping]) -> int:
        table = self._table()
        schema = pa.schema(
            [
                pa.field("face_id", pa.string(), nullable=False),
                pa.field("cluster", pa.string()),
                pa.field("person", pa.string()),
            ]
        )
        items = list(changes.items())
        updated = 0
        for start in range(0, len(items), _UPDATES_PER_MERGE):
            chunk = items[start : start + _UPDATES_PER_MERGE]
            data = pa.table(
                {
                    "face_id": [face_id for face_id, _ in chunk],
                    "cluster": [grouping.cluster for _, grouping in chunk],
                    "person": [grouping.person for _, grouping in chunk],
                },
                schema=schema,
            )
            with self._writing():
                # Matched faces only, and only these columns: a face deleted meanwhile is not revived.
                result = table.merge_insert("face_id").when_matched_update_all().execute(data)
            updated += result.num_updated_rows
            self._after_write()
        return updated

    def get_people(self) -> dict[str, PersonRecord]:
        self.ensure()
        rows = self._people.search().limit(self._people.count_rows()).to_list()
        return {row["person_id"]: PersonRecord(**{name: row[name] for name in PEOPLE_SCHEMA.names}) for row in rows}

    def put_people(self, records: Sequence[PersonRecord]) -> None:
        if records:
            self.ensure()
            rows = {r.person_id: dataclasses.asdict(r) for r in records}
            self._merge(self._people, "person_id", pa.Table.from_pylist(list(rows.values()), schema=PEOPLE_SCHEMA))

    def get_decisions(self) -> dict[str, FaceDecision]:
        self.ensure()
        rows = self._decisions.search().limit(self._decisions.count_rows()).to_list()
        return {
            row["face_id"]: FaceDecision(row["face_id"], row["person_id"], tuple(row["not_person"])) for row in rows
        }

    def put_decisions(self, decisions: Sequence[FaceDecision]) -> None:
        if decisions:
            self.ensure()
            rows = {d.face_id: dataclasses.asdict(d) | {"not_person": list(d.not_person)} for d in decisions}
            self._merge(self._decisions, "face_id", pa.Table.from_pylist(list(rows.values()), schema=DECISIONS_SCHEMA))

    def _merge(self, table, key: str, data: pa.Table) -> None:
        with self._writing():
            table.merge_insert(key).when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._after_write()

    def faces_of_source(self, source: str) -> list[FaceRecord]:
        rows = self._rows(f"source = {sql_literal(source)}").to_pylist()
        return sorted((record_from_row(row) for row in rows), key=lambda r: (r.frame or 0, r.face_no))

    def delete_source(self, source: str) -> int:
        table = self._table()
        predicate = f"source = {sql_literal(source)}"
        with self._writing():
            removed = table.count_rows(predicate)
            if removed:
                table.delete(predicate)
            self._sources.delete(predicate)
        return removed

    def count(self, filters: SearchFilters | None = None) -> int:
        return self._table().count_rows(where_clause(filters))

    def facets(self, field: str, size: int = 100, filters: SearchFilters | None = None) -> list[Facet]:
        check_facet_field(field)
        where = " AND ".join(p for p in (where_clause(filters), f"{field} IS NOT NULL") if p)
        column = self._rows(where, [field])
        if column.num_rows == 0:
            return []
        counts = column.group_by(field).aggregate([(field, "count")]).to_pylist()
        ranked = sorted(counts, key=lambda row: (-row[f"{field}_count"], row[field]))
        return [Facet(row[field], row[f"{field}_count"]) for row in ranked[:size]]

    def record_sources(self, sources: Sequence[SourceRecord]) -> None:
        if not sources:
            return
        self.ensure()
        unique = {s.source: source_row(s) for s in sources}
        data = pa.Table.from_pylist(list(unique.values()), schema=SOURCES_SCHEMA)
        self._merge(self._sources, "source", data)

    def get_sources(self, sources: Sequence[str]) -> dict[str, SourceRecord]:
        if not sources:
            return {}
        self.ensure()
        found: dict[str, SourceRecord] = {}
        for start in range(0, len(sources), _IN_LIST):
            chunk = sources[start : start + _IN_LIST]
            where = f"source IN ({', '.join(sql_literal(s) for s in chunk)})"
            for row in self._sources.search().where(where).limit(len(chunk)).to_list():
                found[row["source"]] = source_from_row(row)
        return found

    def image_hashes(self) -> dict[str, str]:
        self.ensure()
        where = f"{IMAGE_BITS.name} IS NOT NULL"
        query = self._sources.search().where(where).select(["source", IMAGE_BITS.name])
        rows = query.limit(self._sources.count_rows(where)).to_arrow()
        codes = rows[IMAGE_BITS.name].combine_chunks().flatten().to_numpy()
        codes = codes.reshape(rows.num_rows, IMAGE_BITS.type.list_size)
        return {source: code.tobytes().hex() for source, code in zip(rows["source"].to_pylist(), codes)}

    def near_duplicates(
        self, image_hash: str, max_distance: int, limit: int, exclude_source: str | None = None
    ) -> list[NearCopy]:
        self.ensure()
        # An exhaustive Hamming scan of the hashes (README, "Near-duplicates", has its time at a
        # million photos); the distance range's upper bound is exclusive.
        query = (
            self._sources.search(
                np.frombuffer(hash_bytes(image_hash), dtype=np.uint8), vector_column_name=IMAGE_BITS.name
            )
            .distance_type("hamming")
            .distance_range(upper_bound=max_distance + 1)
            .select(["source", "_distance"])
            .limit(limit)
        )
        if exclude_source is not None:
            query = query.where(f"source != {sql_literal(exclude_source)}", prefilter=True)
        rows = query.to_arrow()
        return nearest_first(zip(rows["source"].to_pylist(), (round(bits) for bits in rows["_distance"].to_pylist())))

    @property
    def _calibration_path(self) -> Path:
        return self.path / f"{self.faces_table_name}.calibration.json"

    def get_calibration(self) -> Calibration | None:
        try:
            text = self._calibration_path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise IndexUnavailableError(f"cannot read the calibration {self._calibration_path}: {exc}") from exc
        return Calibration.from_dict(json.loads(text))

    def put_calibration(self, calibration: Calibration | None) -> None:
        check_calibration(self.model, calibration)
        with self._writing():
            if calibration is None:
                self._calibration_path.unlink(missing_ok=True)
                return
            # Written aside and renamed, so a reader never sees half a file.
            partial = self._calibration_path.with_suffix(".json.partial")
            partial.write_text(json.dumps(calibration.to_dict(), indent=1) + "\n")
            os.replace(partial, self._calibration_path)

    def vector_index(self) -> VectorIndexInfo:
        table = self._table()
        index = vector_index_of(table)
        if index is None:
            return VectorIndexInfo("exact", 0, table.count_rows())
        stats = table.index_stats(index.name)
        return VectorIndexInfo(stats.index_type, stats.num_indexed_rows, stats.num_unindexed_rows, index.size_bytes)

    def refresh(self) -> None:
        """Nothing to do: LanceDB makes each write visible when it returns."""

    def drop(self) -> None:
        db = self._connect()
        with self._writing():
            for kind in ("faces", "sources", "people", "decisions"):
                db.drop_table(_table_name(kind, self.model), ignore_missing=True)
            self._calibration_path.unlink(missing_ok=True)
        self._faces = self._sources = self._people = self._decisions = None

    def close(self) -> None:
        self._faces = self._sources = self._people = self._decisions = self._db = None


#: The faces' columns searches filter on, each with a B-tree index.
_FILTERED_COLUMNS = ("face_id", "source", "person", "video", "cluster")
