"""A folder of hostile files beside good photos, through ``facesearch index``: every good photo
indexed, every bad file reported once with its reason, the batch never stopped. The Celery path
is in test_celery.py; the full 1,000-file corpus is ``bench/fuzzed_media.py``."""

from __future__ import annotations

import json

import numpy as np

import hostile_media
from facesearch.cli import EXIT_PARTIAL, main
from search_engine import indexing
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.indexing import PhotoInput, analyse_photos, source_name

from .test_cli import variant

#: Every kind once (the corpus cycles through them); the huge-but-legal photo is 16 MP here.
HOSTILE = 44


def corpus(folder, astronaut, good=4):
    return hostile_media.write_corpus(folder, [variant(astronaut, i) for i in range(good)], HOSTILE, huge_side=4000)


def test_a_folder_of_hostile_files_indexes_the_good_ones_and_reports_the_rest(tmp_path, astronaut, capsys):
    files = corpus(tmp_path / "media", astronaut)
    assert {f.kind.rsplit("-", 1)[0] for f in files} >= {"empty", "truncated", "decompression-bomb", "svg-as-photo"}
    code = main(["index", str(tmp_path / "media"), "--embedder", "dlib", "--quiet", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert code == EXIT_PARTIAL
    assert summary["files"] == len(files) and summary["ignored_other_files"] == 0
    index = EmbeddedFaceIndex(tmp_path / "data" / "lancedb", DlibEmbedder.info)
    records = index.get_sources([source_name(f.path) for f in files])
    assert hostile_media.problems(files, records) == []
    failed = {line["source"]: line["error"] for line in summary["failures"]}
    assert len(failed) == len(summary["failures"]) == sum(r.status.value == "failed" for r in records.values())
    assert failed[source_name(tmp_path / "media" / "empty-0004.gif")] == "empty file (0 bytes)"

    # A second run reads every file again (failed ones are retried) and changes nothing.
    assert main(["index", str(tmp_path / "media"), "--embedder", "dlib", "--quiet", "--json"]) == EXIT_PARTIAL
    again = json.loads(capsys.readouterr().out)
    assert again["failed"] == summary["failed"] and again["index_total_faces"] == summary["index_total_faces"]


def test_big_photos_are_analysed_a_few_at_a_time(tmp_path, astronaut, monkeypatch, detector, dlib_embedder):
    """Decoded pixels held at once stay under the batch budget: with a budget below one photo's
    size, each photo goes to the models alone, and the faces found are the same."""
    from search_engine.pipeline import FacePipeline

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"p{i}.png")
        paths[-1].write_bytes(hostile_media.encode(variant(astronaut, i), "PNG"))
    items = [PhotoInput(p) for p in paths]
    pipeline = FacePipeline(detector, dlib_embedder)
    together = analyse_photos(pipeline, items, {}, 10**8)

    sizes = []
    original = pipeline.analyse
    monkeypatch.setattr(pipeline, "analyse", lambda images, **kw: sizes.append(len(images)) or original(images, **kw))
    monkeypatch.setattr(indexing, "BATCH_PIXELS", 1000)
    apart = analyse_photos(pipeline, items, {}, 10**8)
    assert sizes == [1, 1, 1]
    assert [a.outcome for a in apart] == [a.outcome for a in together]
    for one, other in zip(apart, together):
        assert np.allclose([r.embedding for r in one.records], [r.embedding for r in other.records], atol=1e-5)
