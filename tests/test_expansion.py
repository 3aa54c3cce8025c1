"""Query expansion: the pure blend, and ranking through the embedded store with made-up vectors."""

from __future__ import annotations

import numpy as np
import pytest

from search_engine.calibration import Calibration, calibration_for
from search_engine.config import Settings
from search_engine.embedding import EXPANSION_THRESHOLDS
from search_engine.expansion import expanded_query, rank, search_expanded
from search_engine.ids import face_id
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.types import Box, EmbedderInfo, FaceRecord, SearchFilters

MODEL = EmbedderInfo("dlib", "r1", 3)


def on_circle(degrees: float, tilt: float = 0.0) -> np.ndarray:
    """A unit vector at ``degrees`` from the x axis in the xy plane, ``tilt`` degrees towards z."""
    a, t = np.radians(degrees), np.radians(tilt)
    return np.array([np.cos(a) * np.cos(t), np.sin(a) * np.cos(t), np.sin(t)], dtype=np.float32)


def test_neighbours_join_by_how_far_above_the_threshold_they_are():
    query, near, far = on_circle(0), on_circle(10), on_circle(40)
    score = float(near @ query)
    expanded = expanded_query(query, [(score, near), (float(far @ query), far)], 0.95)
    weight = (score - 0.95) / 0.05
    expected = (query + weight * near) / np.linalg.norm(query + weight * near)
    assert expanded.dtype == np.float32 and np.allclose(expanded, expected, atol=1e-6)
    assert np.linalg.norm(expanded) == pytest.approx(1.0)


def test_no_neighbour_above_the_threshold_means_no_expansion():
    query, far = on_circle(0), on_circle(40)
    assert expanded_query(query, [(float(far @ query), far)], 0.95) is None
    assert expanded_query(query, [], 0.95) is None


@pytest.fixture
def index(tmp_path):
    """The query's person: a close photo (12 degrees off the query) and a hard one (34 degrees off
    the query, 22 off the close one); a stranger 30 degrees off the query, on the other side."""
    store = EmbeddedFaceIndex(tmp_path / "lancedb", MODEL)
    faces = {
        "close": ("Ada", on_circle(12)),
        "hard": ("Ada", on_circle(34)),
        "stranger": ("Bob", on_circle(-30)),
    }
    store.upsert(
        [
            FaceRecord(
                face_id=face_id(MODEL.key, f"/p/{name}.jpg", 0),
                source=f"/p/{name}.jpg",
                face_no=0,
                box=Box(0, 0, 10, 10),
                probability=0.99,
                embedding=vector,
                model=MODEL.key,
                person=person,
            )
            for name, (person, vector) in faces.items()
        ]
    )
    yield store
    store.drop()


def sources(hits):
    return [hit.source.rsplit("/", 1)[1].removesuffix(".jpg") for hit in hits]


def test_a_close_match_pulls_the_same_persons_harder_photo_above_a_stranger(index):
    query = on_circle(0)
    assert sources(index.search(query, k=3)) == ["close", "stranger", "hard"]
    threshold = float(on_circle(12) @ query) - 0.02
    hits = search_expanded(index, query, k=3, threshold=threshold, neighbours=3)
    assert sources(hits) == ["close", "hard", "stranger"]
    # Scores stay similarities to the query face; the order follows the expanded query.
    for hit, degrees in zip(hits, (12, 34, -30)):
        assert hit.score == pytest.approx(float(np.cos(np.radians(degrees))), abs=1e-5)
    assert [h.rank_score for h in hits] == sorted((h.rank_score for h in hits), reverse=True)
    assert hits[1].to_dict()["rank_score"] > hits[1].to_dict()["score"]


def test_without_a_close_enough_neighbour_the_ranking_is_plain_knn(index):
    query = on_circle(0)
    plain = index.search(query, k=2)
    hits = search_expanded(index, query, k=2, threshold=0.999, neighbours=3)
    assert hits == plain and all(hit.rank_score is None for hit in hits)
    assert hits[0].to_dict()["rank_score"] == hits[0].to_dict()["score"]


def test_a_similarity_floor_bounds_the_query_score_so_the_search_stays_plain(index):
    query = on_circle(0)
    floor = SearchFilters(min_score=float(np.cos(np.radians(31))))
    hits = search_expanded(index, query, k=3, threshold=0.9, neighbours=3, filters=floor)
    assert sources(hits) == ["close", "stranger"]


def test_collapse_and_filters_apply_to_the_expanded_search(index):
    query = on_circle(0)
    threshold = float(on_circle(12) @ query) - 0.02
    by_person = search_expanded(index, query, k=3, threshold=threshold, neighbours=3, collapse="person")
    assert sources(by_person) == ["close", "stranger"]
    only_ada = search_expanded(
        index, query, k=3, threshold=threshold, neighbours=3, filters=SearchFilters(person="Ada")
    )
    assert sources(only_ada) == ["close", "hard"]


def test_rank_follows_the_settings_and_the_calibration(index, monkeypatch):
    query = on_circle(0)
    assert sources(rank(Settings().search, index, query, k=3, calibration=calibration_for(index))) == [
        "close",
        "hard",
        "stranger",
    ]
    assert sources(
        rank(Settings.of(expansion_neighbours=0).search, index, query, k=3, calibration=calibration_for(index))
    ) == ["close", "stranger", "hard"]
    assert sources(
        rank(Settings.of(expansion_threshold=0.999).search, index, query, k=3, calibration=calibration_for(index))
    ) == [
        "close",
        "stranger",
        "hard",
    ]
    # Without a measured value, the calibration's Gumbel location decides: the shipped one
    # (0.934, below the close photo's 0.978), then one stored with the index (0.99, above it).
    monkeypatch.delitem(EXPANSION_THRESHOLDS, MODEL.key)
    assert sources(rank(Settings().search, index, query, k=3, calibration=calibration_for(index))) == [
        "close",
        "hard",
        "stranger",
    ]
    index.put_calibration(Calibration(MODEL.key, 0.99, 0.01, 100, 100, 0.9, "made up"))
    assert sources(rank(Settings().search, index, query, k=3, calibration=calibration_for(index))) == [
        "close",
        "stranger",
        "hard",
    ]
