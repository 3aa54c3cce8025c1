"""Open-set verdicts: the stranger tail, thresholds for a gallery's size, and verdicts on real searches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from search_engine.calibration import (
    POSSIBLE,
    SAME_PERSON,
    Calibration,
    calibration_for,
    shipped_calibration,
    verdicts,
)
from search_engine.calibration_fit import (
    best_stranger_scores,
    best_threshold,
    calibrate_on_index,
    fit_best_stranger,
    fit_calibration,
    fit_pairs,
    labelled_pairs,
    read_lfw_pairs,
    stranger_law,
)
from search_engine.config import Settings
from search_engine.errors import ConfigError, InvalidRequestError
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
    return (means[:, None] + spreads[:, None] * RNG.standard_normal((len(means), gallery))).max(axis=1)


def store_faces(index: EmbeddedFaceIndex, vectors, labels, offset: int = 0) -> None:
    """One face per made-up photo ``/p/<n>.jpg``, labelled as given (None: unlabelled)."""
    key = index.model.key
    index.upsert(
        [
            FaceRecord(
                face_id(key, f"/p/{offset + n}.jpg", 0),
                f"/p/{offset + n}.jpg",
                0,
                Box(0, 0, 9, 9),
                0.99,
                v,
                key,
                person=label,
                label=label,
            )
            for n, (v, label) in enumerate(zip(vectors, labels))
        ]
    )


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
    thresholds = [calibration.threshold(size, 0.01) for size in (1, 10, 1_000, 100_000, 1_000_000)]
    assert thresholds == sorted(thresholds) and thresholds[0] < thresholds[-1] <= 1.0
    with pytest.raises(ConfigError, match="cannot vouch for an archive"):
        calibration.threshold(1_000 * 1000 + 1, 0.01)
    assert calibration.threshold(1_000, 0.05) < calibration.threshold(1_000, 0.01)


def test_verdict_levels_and_a_fixed_threshold(calibration):
    judged = verdicts(calibration, 10_000, 0.01)
    assert judged.possible == pytest.approx(calibration.threshold(10_000, 0.1)) and judged.possible < judged.same_person
    assert judged.of(judged.same_person) == SAME_PERSON
    assert judged.of((judged.same_person + judged.possible) / 2) == POSSIBLE
    assert judged.of(judged.possible - 0.01) is None
    fixed = verdicts(calibration, 10_000, 0.01, fixed_threshold=0.6)
    assert fixed.fixed and fixed.same_person == fixed.possible == 0.6
    assert verdicts(None, 10_000, 0.01) is None
    assert verdicts(None, 10_000, 0.01, fixed_threshold=0.6).same_person == 0.6


def test_a_calibration_round_trips_and_a_malformed_one_is_refused(calibration):
    again = Calibration.from_dict(calibration.to_dict())
    assert again.threshold(5_000, 0.02) == pytest.approx(calibration.threshold(5_000, 0.02), abs=1e-4)
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
    settings = Settings.of(data_dir=tmp_path)
    index = EmbeddedFaceIndex(tmp_path / "lancedb", model)
    index.ensure()
    service = SearchService(settings, pipeline=None, index=index)
    rng = np.random.default_rng(1)

    def add(count: int, offset: int) -> None:
        vectors = rng.normal(size=(count, model.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store_faces(index, vectors, [None] * count, offset)

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
    assert SearchService(settings.replace(same_person_threshold=0.5), None, index).verdicts().fixed


def people_faces(people: int, per_person: int, dim: int = 32, spread: float = 0.6, seed: int = 3):
    """Made-up labelled faces: each person a random direction, their faces scattered around it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    vectors = np.repeat(centres, per_person, axis=0) + spread * rng.normal(size=(people * per_person, dim))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels = [f"person_{p:03d}" for p in range(people) for _ in range(per_person)]
    return vectors.astype(np.float32), labels


def test_the_pair_threshold_is_the_most_accurate_score_and_chosen_on_other_folds():
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.normal(0.7, 0.1, 300), rng.normal(0.1, 0.1, 300)])
    same = np.arange(600) < 300
    best = best_threshold(scores, same)
    accuracy = [np.mean((scores >= t) == same) for t in np.unique(scores)]
    assert best == np.unique(scores)[int(np.argmax(accuracy))]
    order = rng.permutation(600)
    fit = fit_pairs(scores[order], same[order])
    assert 0.3 < fit.threshold < 0.5 and fit.accuracy > 0.97 and fit.pairs == 600
    with pytest.raises(InvalidRequestError, match="too few pairs"):
        fit_pairs(scores[:310], same[:310])


def test_labelled_pairs_are_balanced_and_every_same_pair_is_kept_when_few():
    labels = ["a"] * 4 + ["b"] * 3 + ["c"]
    first, second, same = labelled_pairs(labels)
    assert same.sum() == 6 + 3 == (~same).sum()
    for i, j, s in zip(first, second, same):
        assert (labels[i] == labels[j]) == s and (i != j or not s)
    _, _, capped = labelled_pairs(labels, limit=4)
    assert capped.sum() == 4 == (~capped).sum()


def test_a_calibration_fitted_on_labelled_faces_keeps_its_promise_on_new_people():
    """Fitted on 150 people, then searched for 150 others who are absent from a gallery of the
    first: the share of those searches whose best hit reaches the threshold is near the target."""
    vectors, labels = people_faces(300, 5)
    known, absent = slice(0, 750), slice(750, 1500)
    first, second, same = labelled_pairs(labels[known])
    pairs = fit_pairs(np.einsum("ij,ij->i", vectors[known][first], vectors[known][second]), same)
    model = EmbedderInfo("made", "up-r1", 32)
    calibration = fit_calibration(model, vectors[known], labels[known], pairs, "made up")
    assert calibration.gallery == 750 and calibration.probes == 750 and calibration.model == "made-up-r1"
    threshold = calibration.threshold(750, 0.05)
    best = (vectors[absent] @ vectors[known].T).max(axis=1)
    assert float(np.mean(best >= threshold)) == pytest.approx(0.05, abs=0.03)
    assert calibration.pair_threshold < threshold
    with pytest.raises(InvalidRequestError, match="too few labelled faces"):
        fit_calibration(model, vectors[:50], labels[:50], pairs, "too few")


def test_the_stranger_law_scores_query_probes_against_the_stored_faces():
    """A model may embed a query unlike a stored face: each probe's best stranger score is then
    its query vector's among the other people's stored vectors, never stored against stored."""
    vectors, labels = people_faces(40, 5)
    probes, _ = people_faces(40, 5, seed=9)
    strangers = np.asarray(labels)[:, None] != np.asarray(labels)
    assert stranger_law(vectors, labels, probes) == pytest.approx(
        fit_best_stranger(best_stranger_scores(probes @ vectors.T, strangers))
    )
    assert stranger_law(vectors, labels) == pytest.approx(
        fit_best_stranger(best_stranger_scores(vectors @ vectors.T, strangers))
    )


def test_lfw_pairs_files_are_read_and_a_malformed_one_is_named(tmp_path):
    good = tmp_path / "pairs.txt"
    good.write_text("10\t300\nAbel_Pacheco\t1\t4\nAbdullah\t1\tAbdullah_Gul\t13\n")
    first, second = read_lfw_pairs(good, tmp_path / "lfw")
    assert first.same and first.first == tmp_path / "lfw" / "Abel_Pacheco" / "Abel_Pacheco_0001.jpg"
    assert not second.same and second.second.name == "Abdullah_Gul_0013.jpg"
    bad = tmp_path / "bad.txt"
    bad.write_text("Abel_Pacheco\t1\tfour\n")
    with pytest.raises(InvalidRequestError, match=r"bad.txt, line 1"):
        read_lfw_pairs(bad, tmp_path)
    with pytest.raises(InvalidRequestError, match="no pair"):
        read_lfw_pairs(_header_only(tmp_path), tmp_path)
    with pytest.raises(InvalidRequestError, match="cannot read"):
        read_lfw_pairs(tmp_path / "nowhere.txt", tmp_path)


def _header_only(tmp_path):
    path = tmp_path / "header.txt"
    path.write_text("10\t300\n")
    return path


def labelled_index(tmp_path, vectors, labels, model) -> EmbeddedFaceIndex:
    index = EmbeddedFaceIndex(tmp_path / "lancedb", model)
    store_faces(index, vectors, labels)
    return index


def test_an_index_calibrated_on_its_labelled_faces_judges_by_that_calibration(tmp_path):
    """The stored calibration outranks the shipped one, and removing it brings the shipped one back."""
    model = EmbedderInfo("mobilefacenet", "ms1m-r1", 32)
    vectors, labels = people_faces(60, 4)
    index = labelled_index(tmp_path, vectors, labels, model)
    shipped = shipped_calibration(model)
    assert calibration_for(index) == shipped
    report = calibrate_on_index(index)
    assert report.calibration.probes == 240 and "240 labelled faces of 60 people" in report.calibration.measured_on
    index.put_calibration(report.calibration)
    assert calibration_for(index) == report.calibration
    service = SearchService(Settings.of(data_dir=tmp_path), pipeline=None, index=index)
    assert service.verdicts().same_person == pytest.approx(report.calibration.threshold(240, 0.01))
    index.put_calibration(None)
    assert calibration_for(index) == shipped


def test_too_few_labelled_faces_are_refused_with_the_counts(tmp_path):
    model = EmbedderInfo("made", "up-r1", 32)
    vectors, labels = people_faces(10, 3)
    with pytest.raises(InvalidRequestError, match="30 faces of 10 people"):
        calibrate_on_index(labelled_index(tmp_path, vectors, labels, model))
    with pytest.raises(InvalidRequestError, match="no face in the index carries a person label"):
        calibrate_on_index(EmbeddedFaceIndex(tmp_path / "empty", model))
