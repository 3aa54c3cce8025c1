"""Open-set verdicts: the stranger tail, thresholds for a gallery's size, and verdicts on real searches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search_engine.calibration import (
    POSSIBLE,
    SAME_PERSON,
    Calibration,
    best_stranger_scores,
    fit_best_stranger,
    shipped_calibration,
    verdicts,
)
from search_engine.config import Settings
from search_engine.errors import ConfigError
from search_engine.ids import face_id
from search_engine.index.embedded import EmbeddedFaceIndex
from search_engine.service import SearchService, judge
from search_engine.types import Box, EmbedderInfo, FaceRecord, Hit

#: Made-up stranger scores whose spread differs from probe to probe, as real ones do: means
#: around 0.02, standard deviations between 0.08 and 0.14 (MobileFaceNet's look alike).
RNG = np.random.default_rng(7)
MEANS, SPREADS = RNG.normal(0.02, 0.03, 4000), RNG.uniform(0.08, 0.14, 4000)


def best_of(gallery: int, probes: slice) -> np.ndarray:
    """Each probe's best score among ``gallery`` strangers drawn from its own normal law."""
    means, spreads = MEANS[probes], SPREADS[probes]
    return (
        means[:, None] + spreads[:, None] * RNG.standard_normal((len(means), gallery))
    ).max(axis=1)


@pytest.fixture(scope="module")
def calibration() -> Calibration:
    """Fitted on 2,000 probes against galleries of 1,000 strangers."""
    location, scale = fit_best_stranger(best_of(1_000, slice(0, 2000)))
    return Calibration("made-up-r1", location, scale, 1_000, 2_000, 0.3, "made up")


def test_the_best_stranger_is_the_highest_score_among_other_peoples_faces():
    scores = np.array([[1.0, 0.2, 0.4, 0.9], [0.2, 1.0, 0.0, 0.1]])
    strangers = np.array([[False, True, True, False], [True, False, True, True]])
    assert best_stranger_scores(scores, strangers).tolist() == [0.4, 0.2]


def test_a_threshold_keeps_the_stranger_hit_rate_of_a_gallery_at_the_target(
    calibration,
):
    """Checked on other probes than those fitted, at the calibration's gallery size, and at 2
    and 8 times it, where the law is carried by its max-stability."""
    for gallery, target in ((1_000, 0.05), (2_000, 0.05), (8_000, 0.02)):
        threshold = calibration.threshold(gallery, target)
        assert calibration.fpir(threshold, gallery) == pytest.approx(target)
        observed = float(np.mean(best_of(gallery, slice(2000, 4000)) >= threshold))
        assert observed == pytest.approx(target, abs=0.015)


def test_the_threshold_rises_as_the_archive_grows_and_refuses_to_guess_far_beyond_its_data(
    calibration,
):
    thresholds = [
        calibration.threshold(size, 0.01) for size in (1, 10, 1_000, 100_000, 1_000_000)
    ]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1] <= 1.0
    with pytest.raises(ConfigError, match="cannot vouch for an archive"):
        calibration.threshold(1_000 * 1000 + 1, 0.01)
    assert calibration.threshold(1_000, 0.05) < calibration.threshold(1_000, 0.01)


def test_verdict_levels_and_a_fixed_threshold(calibration):
    judged = verdicts(calibration, 10_000, 0.01)
    assert (
        judged.possible == pytest.approx(calibration.threshold(10_000, 0.1))
        and judged.possible < judged.same_person
    )
    assert judged.of(judged.same_person) == SAME_PERSON
    assert judged.of((judged.same_person + judged.possible) / 2) == POSSIBLE
    assert judged.of(judged.possible - 0.01) is None
    fixed = verdicts(calibration, 10_000, 0.01, fixed_threshold=0.6)
    assert fixed.fixed and fixed.same_person == fixed.possible == 0.6
    assert verdicts(None, 10_000, 0.01) is None
    assert verdicts(None, 10_000, 0.01, fixed_threshold=0.6).same_person == 0.6


def test_a_calibration_round_trips_and_a_malformed_one_is_refused(calibration):
    again = Calibration.from_dict(calibration.to_dict())
    assert again.threshold(5_000, 0.02) == pytest.approx(
        calibration.threshold(5_000, 0.02), abs=1e-4
    )
    with pytest.raises(ConfigError, match="must be positive"):
        Calibration("x", 0.5, 0.0, 10, 10, 0.3, "no spread")


@pytest.mark.parametrize("key", ["dlib-r1", "mobilefacenet-ms1m-r1"])
def test_shipped_calibrations_read_and_scale(key):
    name, version = key.split("-", 1)
    calibration = shipped_calibration(EmbedderInfo(name, version, 1))
    assert calibration is not None and calibration.model == key
    assert calibration.probes > 5_000 and calibration.gallery > 5_000
    small, large = (
        calibration.threshold(1_000, 0.01),
        calibration.threshold(1_000_000, 0.01),
    )
    assert calibration.pair_threshold < small < large <= 1.0
    assert shipped_calibration(EmbedderInfo("facenet", "vggface2-r1", 512)) is None


def test_a_search_service_judges_hits_for_the_index_as_it_grows(tmp_path):
    """The same score can be "same person" in a small archive and only "possible" in a large one."""
    model = EmbedderInfo("mobilefacenet", "ms1m-r1", 192)
    settings = Settings(data_dir=tmp_path)
    index = EmbeddedFaceIndex(tmp_path / "lancedb", model)
    index.ensure()
    service = SearchService(settings, pipeline=None, index=index)
    rng = np.random.default_rng(1)

    def add(count: int, offset: int) -> None:
        vectors = rng.normal(size=(count, model.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.upsert(
            [
                FaceRecord(
                    face_id(model.key, f"/p/{offset + n}.jpg", 0),
                    f"/p/{offset + n}.jpg",
                    0,
                    Box(0, 0, 9, 9),
                    0.99,
                    v,
                    model.key,
                )
                for n, v in enumerate(vectors)
            ]
        )

    add(10, 0)
    small = service.verdicts()
    add(2_000, 10)
    large = service.verdicts()
    assert (small.gallery_size, large.gallery_size) == (10, 2_010)
    assert small.same_person < large.same_person
    score = (small.same_person + large.same_person) / 2
    hit = Hit("f", score, "/p/x.jpg", Box(0, 0, 1, 1), 0.99, model.key)
    assert judge([hit], small)[0].verdict == SAME_PERSON
    assert judge([hit], large)[0].verdict in (POSSIBLE, None)
    assert judge([hit], None)[0].verdict is None
    assert math.isclose(service.verdicts().target_fpir, 0.01)
    assert (
        SearchService(settings.replace(same_person_threshold=0.5), None, index)
        .verdicts()
        .fixed
    )
