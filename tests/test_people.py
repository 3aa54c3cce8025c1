"""Grouping faces into people and the human decisions about them, on both engines (through each
one's own kNN), with constructed vectors whose true people are known."""

from __future__ import annotations

import numpy as np
import pytest

from search_engine.config import Settings
from search_engine.errors import ConfigError, ConflictError, NotFoundError
from search_engine.ids import face_id, labelled_person_id
from search_engine.people import (
    cluster_index,
    get_person,
    grouping_threshold,
    hide_person,
    list_people,
    merge_people,
    move_face,
    name_person,
    set_cover,
    split_person,
    with_covers,
)
from search_engine.types import Box, EmbedderInfo, FaceRecord, SearchFilters

from .test_index_contract import make_index

MODEL = EmbedderInfo("people", "r1", 32)
THRESHOLD = 0.6


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def person_faces(rng, n: int, spread: float = 0.35, centre: np.ndarray | None = None) -> np.ndarray:
    """``n`` faces of one person: unit vectors about a centre (cosine to each other about 0.9)."""
    centre = unit(rng.normal(size=MODEL.dim)) if centre is None else centre
    return unit(centre + spread * rng.normal(size=(n, MODEL.dim)) / np.sqrt(MODEL.dim))


def record(name: str, vector: np.ndarray, label: str | None = None) -> FaceRecord:
    return FaceRecord(
        face_id=face_id(MODEL.key, f"/photos/{name}.jpg", 0),
        source=f"/photos/{name}.jpg",
        face_no=0,
        box=Box(0, 0, 50, 50),
        probability=0.99,
        embedding=vector,
        model=MODEL.key,
        person=label,
        label=label,
    )


@pytest.fixture(params=["embedded", "elasticsearch"])
def index(request, tmp_path):
    store = make_index(request.param, tmp_path, MODEL)
    store.ensure()
    yield store
    store.drop()
    store.close()


def add(index, faces) -> None:
    index.upsert(faces)
    index.refresh()


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
    add(index, [record(name, vector) for name, vector, _ in crowd])
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
    # Listing reads no vectors; the people shown get their most typical face as cover.
    assert all(p.cover_face_id is None for p in people)
    covered = with_covers(index, people[:2])
    assert [p.cover_face_id for p in covered] == [get_person(index, p.person_id).cover_face_id for p in people[:2]]
    assert all(p.cover_face_id in p.face_ids for p in covered)
    assert [p.cover_face_id for p in list_people(index, covers=True)[:2]] == [p.cover_face_id for p in covered]


def test_a_rerun_changes_nothing_and_a_full_run_keeps_the_ids(index, crowd):
    add(index, [record(name, vector) for name, vector, _ in crowd])
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
    add(index, [record(name, vector) for name, vector, _ in first])
    cluster_index(index, THRESHOLD)
    before = by_name(first, index)
    add(index, [record(name, vector) for name, vector, _ in later])
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
    add(index, [record(name, vector) for name, vector, _ in faces])
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
    add(index, faces)
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


def test_human_decisions_survive_reruns_and_a_reindex(index, crowd):
    faces = [record(name, vector) for name, vector, _ in crowd]
    add(index, faces)
    cluster_index(index, THRESHOLD)
    stored = by_name(crowd, index)
    p0, p1, p2, p3 = (stored[f"p{p}_0"] for p in range(4))

    assert name_person(index, p0, "Ada").name == "Ada"
    assert index.count(SearchFilters(person="Ada")) == 6
    with pytest.raises(ConflictError, match="merge"):
        name_person(index, p1, "Ada")
    assert merge_people(index, p1, [p2]).face_count == 12
    twins = split_person(index, p1, [record(f"p2_{i}", v).face_id for i, v in enumerate(vectors(crowd, "person2"))])
    assert twins.face_count == 6 and twins.person_id not in (p1, p2)
    strays = [record(f"p3_{i}", v).face_id for i, v in enumerate(vectors(crowd, "person3"))]
    move_face(index, strays[0], None)
    move_face(index, strays[1], p0)
    hide_person(index, p3)
    set_cover(index, p0, strays[1])
    with pytest.raises(NotFoundError):
        get_person(index, "nobody")
    with pytest.raises(ConflictError, match="not one of"):
        split_person(index, p0, ["not-a-face-of-ada"])
    assert merge_people(index, p0, [p0]).face_ids == get_person(index, p0).face_ids  # with no one else: nothing

    def in_force() -> None:
        ada = get_person(index, p0)
        assert ada.name == "Ada" and ada.face_count == 7 and strays[1] in ada.face_ids
        assert ada.cover_face_id == strays[1]
        assert index.count(SearchFilters(person="Ada")) == 7
        assert index.get(strays[0]).cluster is None
        assert get_person(index, p1).face_count == 6 and get_person(index, twins.person_id).face_count == 6
        assert get_person(index, p3).face_count == 4
        assert p3 not in {p.person_id for p in list_people(index)}
        assert p3 in {p.person_id for p in list_people(index, include_hidden=True)}

    in_force()
    assert cluster_index(index, THRESHOLD).changed == 0
    cluster_index(index, THRESHOLD, full=True)
    in_force()
    for face in faces:
        index.delete_source(face.source)
    add(index, faces)
    assert index.count(SearchFilters(person="Ada")) == 0
    cluster_index(index, THRESHOLD)
    in_force()


def vectors(crowd, person: str) -> list[np.ndarray]:
    return [vector for _, vector, truth in crowd if truth == person]


def test_more_of_a_person_finds_their_faces_not_yet_grouped_first(index, crowd):
    from search_engine.service import SearchService

    rng = np.random.default_rng(5)
    add(index, [record(name, vector) for name, vector, _ in crowd])
    cluster_index(index, THRESHOLD)
    ada = by_name(crowd, index)["p0_0"]
    centre = unit(np.mean(vectors(crowd, "person0"), axis=0))
    later = [record(f"p0_new{i}", v) for i, v in enumerate(person_faces(rng, 3, centre=centre))]
    add(index, later)
    service = SearchService(Settings.of(same_person_threshold=THRESHOLD), pipeline=None, index=index)
    result = service.search_person(ada, k=5)
    assert result.face is None and result.query_faces == ()
    assert {h.face_id for h in result.hits[:3]} == {f.face_id for f in later}
    assert all(h.cluster != ada for h in result.hits)
    assert [h.verdict for h in result.hits[:3]] == ["same_person"] * 3
    ranks = [h.rank_score for h in result.hits]
    assert ranks == sorted(ranks, reverse=True)
    with pytest.raises(NotFoundError):
        service.search_person("nobody")
