"""Several processes writing one embedded store (as Celery workers do) lose and duplicate nothing."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np

from search_engine.ids import face_id
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.types import Box, EmbedderInfo, FaceRecord, SearchFilters, SourceRecord

MODEL = EmbedderInfo("concurrency", "r1", 8)


def write(path: str, writer: int, batches: int = 15, per_batch: int = 10) -> None:
    index = EmbeddedFaceIndex(Path(path), MODEL)
    rng = np.random.default_rng(writer)
    for batch in range(batches):
        # Every writer also rewrites the shared file's faces: the same ids from two processes.
        sources = [f"/w{writer}/b{batch}.jpg", "/shared.jpg"]
        faces = [
            FaceRecord(
                face_id(MODEL.key, source, n),
                source,
                n,
                Box(0, 0, 10, 10),
                0.99,
                (v := rng.normal(size=MODEL.dim).astype(np.float32)) / np.linalg.norm(v),
                MODEL.key,
                person=f"writer{writer}" if source != "/shared.jpg" else None,
            )
            for source in sources
            for n in range(per_batch // 2)
        ]
        assert not index.upsert(faces).failed
        index.record_sources([SourceRecord(s, "hash", MODEL.key, per_batch // 2) for s in sources])


def test_two_processes_write_one_store(tmp_path):
    path = str(tmp_path / "lancedb")
    EmbeddedFaceIndex(Path(path), MODEL).ensure()
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=write, args=(path, w)) for w in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=300)
        assert process.exitcode == 0
    index = EmbeddedFaceIndex(Path(path), MODEL)
    assert index.count() == 2 * 15 * 5 + 5
    assert index.count(SearchFilters(person="writer0")) == index.count(SearchFilters(person="writer1")) == 75
    assert len(index.get_sources([f"/w{w}/b{b}.jpg" for w in range(2) for b in range(15)] + ["/shared.jpg"])) == 31
