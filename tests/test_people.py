"""Grouping faces into people, through the embedded store's own kNN, on constructed vectors whose
true people are known."""

from __future__ import annotations

import numpy as np
import pytest

from search_engine.config import Settings
from search_engine.errors import ConfigError
from search_engine.ids import face_id, labelled_person_id
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.people import cluster_index, grouping_threshold, list_people
from search_engine.types import Box, EmbedderInfo, FaceRecord

MODEL = EmbedderInfo("people", "r1", 32)
THRESHOLD = 0.6


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def person_faces(rng, n: int, spread: float = 0.35, centre: np.ndarray | None = None) -> np.ndarray:
    """``n`` faces of one person: unit vectors about a centre (cosine to each other about 0.9)."""
    centre = unit(rng.normal(size=MODEL.dim)) if centre is None else centre
    return unit(centre + spread * rng.normal(size=(n, MODEL.dim)) / np.sqrt(MODEL.dim))


def record(name: str, vector: np.ndarray, person: str | None = None) -> FaceRecord:
    return FaceRecord(
        face_id=face_id(MODEL.key, f"/photos/{name}.jpg", 0),
        source=f"/photos/{name}.jpg",
        face_no=0,
        box=Box(0, 0, 50, 50),
        probability=0.99,
        embedding=vector,
        model=MODEL.key,
        person=person,
    )


@pytest.fixture
def index(tmp_path):
    store = EmbeddedFaceIndex(tmp_path / "lancedb", MODEL)
    store.ensure()
    yield store
    store.drop()


@pytest.fixture
def crowd():
    """Four people of 6 faces each and 6 strangers seen once: (name, vector, true person)."""
    rng = np.random.default_rng(7)
    faces = []
    for p in range(4):
        faces += [(f"p{p}_{i}", v, f"person{p}") for i, v in enumerate(person_faces(rng, 6))]
    faces += [(f"stranger{i}", v, None) for i, v in enumerate(unit(rng.normal(size=(6, MODEL.dim))))]
    return faces


def clusters(index) -> dict[str, str | None]:
    """Each face's stored person, by the file name of its photo."""
    by_id = {}
    for batch in index.scan():
        by_id.update(zip(batch.face_ids, batch.clusters))
    return by_id


def by_name(faces, index) -> dict[str, str | None]:
    stored = clusters(index)
    return {name: stored[record(name, vector).face_id] for name, vector, _ in faces}


def test_each_person_becomes_one_group_and_strangers_stay_alone(index, crowd):
    index.upsert([record(name, vector) for name, vector, _ in crowd])
    report = cluster_index(index, THRESHOLD)
    assert (report.faces, report.examined, report.people, report.grouped, report.alone) == (30, 30, 4, 24, 6)
    assigned = by_name(crowd, index)
    for p in range(4):
        ids = {assigned[name] for name, _, truth in crowd if truth == f"person{p}"}
        assert len(ids) == 1 and None not in ids
    assert len({assigned[n] for n, _, t in crowd if t}) == 4
    assert all(assigned[name] is None for name, _, truth in crowd if truth is None)
    people = list_people(index)
    assert [p.face_count for p in people] == [6, 6, 6, 6] and all(p.name is None for p in people)


def test_a_rerun_changes_nothing_and_a_full_run_keeps_the_ids(index, crowd):
    index.upsert([record(name, vector) for name, vector, _ in crowd])
    cluster_index(index, THRESHOLD)
    before = clusters(index)
    again = cluster_index(index, THRESHOLD)
    assert again.changed == 0 and again.examined == 6
    full = cluster_index(index, THRESHOLD, full=True)
    assert full.examined == 30 and full.changed == 0
    assert clusters(index) == before


def test_new_faces_join_the_people_found_before(index, crowd):
    first = [face for i, face in enumerate(crowd) if i % 6 < 4 or face[2] is None]
    later = [face for i, face in enumerate(crowd) if not (i % 6 < 4 or face[2] is None)]
    index.upsert([record(name, vector) for name, vector, _ in first])
    cluster_index(index, THRESHOLD)
    before = by_name(first, index)
    index.upsert([record(name, vector) for name, vector, _ in later])
    report = cluster_index(index, THRESHOLD)
    assert report.examined == len(later) + 6
    after = by_name(crowd, index)
    assert {name: after[name] for name in before} == before
    for name, _, truth in later:
        assert after[name] == before[f"{truth}_0".replace("person", "p")]


def test_a_thin_chain_of_faces_does_not_join_two_people(index):
    rng = np.random.default_rng(3)
    a, b = person_faces(rng, 8, spread=0.2), person_faces(rng, 8, spread=0.2)
    # Bridges between the two: each one as close to the last as the faces of a person are.
    steps = np.linspace(0, 1, 7)[1:-1]
    bridge = unit(np.outer(1 - steps, a.mean(0)) + np.outer(steps, b.mean(0)))
    faces = [(f"a{i}", v, "a") for i, v in enumerate(a)] + [(f"b{i}", v, "b") for i, v in enumerate(b)]
    faces += [(f"bridge{i}", v, None) for i, v in enumerate(bridge)]
    # Connected components would make one person of them all: every link is an edge.
    links = [max(a @ bridge[0]), *(x @ y for x, y in zip(bridge, bridge[1:])), max(b @ bridge[-1])]
    assert min(links) >= 0.8 and float(a.mean(0) @ b.mean(0)) < 0.3
    index.upsert([record(name, vector) for name, vector, _ in faces])
    cluster_index(index, 0.8)
    assigned = by_name(faces, index)
    assert len({assigned[f"a{i}"] for i in range(8)}) == 1
    assert len({assigned[f"b{i}"] for i in range(8)}) == 1
    assert assigned["a0"] != assigned["b0"]


def test_labelled_faces_keep_their_person_and_two_names_never_merge(index):
    rng = np.random.default_rng(11)
    ada, twin = person_faces(rng, 10), None
    centre = unit(rng.normal(size=MODEL.dim))
    twin = person_faces(rng, 8, centre=centre)
    faces = [record(f"ada{i}", v, "Ada" if i < 2 else None) for i, v in enumerate(ada)]
    # One person's faces under two names: a human said they are two people.
    faces += [record(f"twin{i}", v, ("Tia" if i < 4 else "Tamera") if i < 6 else None) for i, v in enumerate(twin)]
    index.upsert(faces)
    cluster_index(index, THRESHOLD)
    stored = clusters(index)
    assert {stored[f.face_id] for f in faces[:10]} == {labelled_person_id("Ada")}
    assert {stored[f.face_id] for f in faces[10:14]} == {labelled_person_id("Tia")}
    assert {stored[f.face_id] for f in faces[14:16]} == {labelled_person_id("Tamera")}
    assert {stored[f.face_id] for f in faces[16:]} <= {labelled_person_id("Tia"), labelled_person_id("Tamera")}
    names = {p.person_id: p.name for p in list_people(index)}
    assert names[labelled_person_id("Ada")] == "Ada" and names[labelled_person_id("Tamera")] == "Tamera"
    assert cluster_index(index, THRESHOLD, full=True).changed == 0


def test_the_threshold_is_the_calibrated_verdict_or_the_fixed_one(index):
    with pytest.raises(ConfigError, match="facesearch calibrate"):
        grouping_threshold(Settings.of().search, index)
    assert grouping_threshold(Settings.of(same_person_threshold=0.7).search, index) == 0.7
