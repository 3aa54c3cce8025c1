"""Fitting a model's calibration (:class:`~search_engine.calibration.Calibration`) on labelled faces:
the stranger law of each face's best score among other people's faces, and the 1:1 threshold on
balanced same/different pairs. ``facesearch calibrate`` fits on the index's labelled faces or on
LFW-format pairs; ``bench/lfw_retrieval.py`` fits the shipped calibrations the same way.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .calibration import Calibration
from .errors import InvalidRequestError
from .types import EmbedderInfo

if TYPE_CHECKING:
    from .index.base import FaceIndex

#: The quantiles of the best-stranger scores the Gumbel law is fitted to.
_FIT_QUANTILES = (0.5, 0.95)

#: Fewer probes than this leave the 95th percentile of their best stranger scores to chance.
MIN_PROBES = 100
#: Fewer same-person pairs than this leave the 1:1 threshold to chance.
MIN_SAME_PAIRS = 20
#: Labelled faces a calibration from the index reads at most (a deterministic sample beyond):
#: every probe is compared with all of them, and the law carries to larger archives.
MAX_CALIBRATION_FACES = 20_000
#: Same-person pairs (and as many different-person pairs) the 1:1 threshold is fitted on at most.
MAX_PAIRS = 100_000
#: Folds of the 1:1 threshold: each fold's threshold is chosen on the others, as LFW's protocol does.
FOLDS = 10
#: Probes scored against the whole calibration set at once (bounds memory: block x faces floats).
_BLOCK = 512


def fit_best_stranger(best: np.ndarray) -> tuple[float, float]:
    """``(location, scale)`` of the Gumbel law through the median and 95th percentile of the
    probes' best stranger scores (Gumbel quantile: ``location - scale * ln(-ln p)``)."""
    low, high = np.quantile(np.asarray(best, dtype=np.float64), _FIT_QUANTILES)
    ln_low, ln_high = (math.log(-math.log(p)) for p in _FIT_QUANTILES)
    scale = float((high - low) / (ln_low - ln_high))
    return float(low + scale * ln_low), scale


def best_stranger_scores(scores: np.ndarray, strangers: np.ndarray) -> np.ndarray:
    """Each probe's highest score among the faces of other people.

    Args:
        scores: (probes, faces) cosine similarities of each probe to every calibration face.
        strangers: a boolean mask of the same shape, True where the face is another person's.
    """
    return np.where(strangers, scores, -np.inf).max(axis=1)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The score from which pairs are called "same person" with the highest accuracy on these
    pairs (the lowest such score where several tie)."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    order = np.argsort(scores, kind="stable")
    ranked, ranked_same = scores[order], same[order]
    candidates, first = np.unique(ranked, return_index=True)
    # Calling every pair from candidate t up "same": right are the same pairs at or above t and
    # the different pairs below it.
    same_below = np.concatenate([[0], np.cumsum(ranked_same)])[first]
    different_below = first - same_below
    correct = (ranked_same.sum() - same_below) + different_below
    return float(candidates[int(np.argmax(correct))])


@dataclass(frozen=True)
class PairFit:
    """A 1:1 threshold: the mean of each fold's accuracy-optimal threshold on the other folds, and
    the accuracy (mean and standard deviation over folds) each fold gets with its own."""

    threshold: float
    accuracy: float
    accuracy_std: float
    pairs: int


def fit_pairs(scores: np.ndarray, same: np.ndarray, folds: int = FOLDS) -> PairFit:
    """10-fold 1:1 threshold of pairs in the order given (fold ``f`` is the ``f``-th tenth).

    Raises:
        InvalidRequestError: fewer than :data:`MIN_SAME_PAIRS` same-person or different-person pairs.
    """
    scores, same = np.asarray(scores, dtype=np.float64), np.asarray(same, dtype=bool)
    if min(same.sum(), (~same).sum()) < MIN_SAME_PAIRS:
        raise InvalidRequestError(
            f"too few pairs to calibrate on: {int(same.sum())} same-person and {int((~same).sum())} "
            f"different-person pairs, at least {MIN_SAME_PAIRS} of each needed"
        )
    fold_of = np.arange(len(scores)) * folds // len(scores)
    thresholds, accuracies = [], []
    for fold in range(folds):
        train, test = fold_of != fold, fold_of == fold
        threshold = best_threshold(scores[train], same[train])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((scores[test] >= threshold) == same[test])))
    return PairFit(float(np.mean(thresholds)), float(np.mean(accuracies)), float(np.std(accuracies)), len(scores))


def stranger_law(vectors: np.ndarray, labels: Sequence[str], probes: np.ndarray | None = None) -> tuple[float, float]:
    """``(location, scale)`` of the best stranger score of each labelled face among the faces of
    everyone else.

    Args:
        vectors: (n, dim) unit vectors of labelled faces, as stored.
        labels: the person of each.
        probes: the same n faces embedded as queries (see :meth:`Embedder.embed`), scored against
            ``vectors``; None: ``vectors`` themselves.

    Raises:
        InvalidRequestError: fewer than :data:`MIN_PROBES` faces, or only one person.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    probes = vectors if probes is None else np.asarray(probes, dtype=np.float32)
    labels = np.asarray(labels)
    if len(labels) < MIN_PROBES or len(np.unique(labels)) < 2:
        raise InvalidRequestError(
            f"too few labelled faces to calibrate on: {len(labels)} faces of {len(np.unique(labels))} people, "
            f"at least {MIN_PROBES} faces of two or more people needed"
        )
    best = [
        best_stranger_scores(probes[start : start + _BLOCK] @ vectors.T, labels[start : start + _BLOCK, None] != labels)
        for start in range(0, len(labels), _BLOCK)
    ]
    return fit_best_stranger(np.concatenate(best))


def labelled_pairs(
    labels: Sequence[str], limit: int = MAX_PAIRS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced 1:1 pairs among labelled faces: every same-person pair (``limit`` drawn at random
    where there are more) and as many different-person pairs drawn at random, shuffled.

    Returns:
        ``(first, second, same)``: index arrays into ``labels`` and whether each pair is one person.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        members[label].append(i)
    groups = [faces for faces in members.values() if len(faces) >= 2]
    weights = np.array([len(g) * (len(g) - 1) / 2 for g in groups])
    if weights.sum() <= limit:
        same_pairs = [pair for group in groups for pair in itertools.combinations(group, 2)]
    else:
        same_pairs = []
        for g in rng.choice(len(groups), size=limit, p=weights / weights.sum()):
            same_pairs.append(tuple(rng.choice(groups[g], size=2, replace=False)))
    label_array = np.asarray(labels)
    different: list[tuple[int, int]] = []
    while len(different) < len(same_pairs) and len(members) >= 2:
        a, b = rng.integers(0, len(labels), size=(2, 2 * len(same_pairs)))
        different.extend((int(x), int(y)) for x, y in zip(a, b) if label_array[x] != label_array[y])
    pairs = np.array(same_pairs + different[: len(same_pairs)], dtype=np.int64).reshape(-1, 2)
    same = np.arange(len(pairs)) < len(same_pairs)
    order = rng.permutation(len(pairs))
    return pairs[order, 0], pairs[order, 1], same[order]


@dataclass(frozen=True)
class CalibrationReport:
    """A fitted calibration and what it was fitted on, for the person who asked for it.

    ``pairs`` is the 1:1 fit; ``skipped`` names the files left out, each with the reason.
    """

    calibration: Calibration
    pairs: PairFit
    skipped: tuple[str, ...] = ()


def fit_calibration(
    model: EmbedderInfo,
    vectors: np.ndarray,
    labels: Sequence[str],
    pairs: PairFit,
    measured_on: str,
    probes: np.ndarray | None = None,
) -> Calibration:
    """A model's calibration from labelled faces (the stranger law, see :func:`stranger_law`,
    whose ``probes`` these are) and a 1:1 fit; every labelled face given is a probe, and they are
    the calibration gallery."""
    location, scale = stranger_law(vectors, labels, probes)
    # Rounded as stored, so a calibration read back equals the one fitted.
    return Calibration(
        model=model.key,
        location=round(location, 5),
        scale=round(scale, 5),
        gallery=len(labels),
        probes=len(labels),
        pair_threshold=round(pairs.threshold, 4),
        measured_on=measured_on,
    )


def sample_labelled(labels: dict[str, str], limit: int = MAX_CALIBRATION_FACES) -> list[str]:
    """Up to ``limit`` of the labelled faces (face id to person): all of them, or the same
    pseudo-random choice on every run (by a hash of the face id)."""
    ranked = sorted(labels, key=lambda face: hashlib.blake2b(face.encode(), digest_size=8).digest())
    return sorted(ranked[:limit])


def calibrate_on_index(index: FaceIndex, limit: int = MAX_CALIBRATION_FACES) -> CalibrationReport:
    """Fit the index model's calibration on the faces in the index that carry a person label
    (folder labels, ``--person``): same label is the same person, different labels are strangers.
    The result is returned, not stored (see :meth:`FaceIndex.put_calibration`). Stored vectors are
    the probes too, the index keeping no query vectors: for MobileFaceNet, whose queries are
    flip-averaged and stored faces not, that put LFW's threshold 0.003 higher, on the safe side.

    Raises:
        InvalidRequestError: too few labelled faces or pairs.
    """
    labels = index.labels()
    faces = sample_labelled(labels, limit)
    stored = index.embeddings(faces)
    faces = [face for face in faces if face in stored]
    if not faces:
        raise InvalidRequestError(
            "no face in the index carries a person label: index labelled photos "
            "(--person-from-folder or --person) or calibrate with --pairs"
        )
    vectors = np.stack([stored[face] for face in faces])
    people = [labels[face] for face in faces]
    first, second, same = labelled_pairs(people)
    pairs = fit_pairs(np.einsum("ij,ij->i", vectors[first], vectors[second]), same)
    measured_on = (
        f"{len(faces):,} labelled faces of {len(set(people)):,} people in this index"
        + (f" (a sample of {len(labels):,})" if len(labels) > len(faces) else "")
        + f": each face's best score among the other people's faces; pair threshold: 10-fold on "
        f"{pairs.pairs:,} balanced same/different pairs of them"
    )
    return CalibrationReport(fit_calibration(index.model, vectors, people, pairs, measured_on), pairs)


@dataclass(frozen=True)
class LfwPair:
    """One line of LFW's ``pairs.txt``: two image files and whether they show one person (each
    image's person is the name of its folder)."""

    first: Path
    second: Path
    same: bool


def read_lfw_pairs(path: Path, images: Path) -> list[LfwPair]:
    """The pairs of an LFW-format pairs file (``name n1 n2`` for one person, ``name1 n1 name2 n2``
    for two; other lines, such as the ``folds pairs`` header, are skipped), as files under
    ``images`` (``<name>/<name>_<nnnn>.jpg``).

    Raises:
        InvalidRequestError: the file cannot be read, a line is malformed, or it holds no pair.
    """

    def image(name: str, number: str) -> Path:
        return images / name / f"{name}_{int(number):04d}.jpg"

    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"cannot read the pairs file {path}: {exc}") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        try:
            if len(parts) == 3:
                pairs.append(LfwPair(image(parts[0], parts[1]), image(parts[0], parts[2]), True))
            elif len(parts) == 4:
                pairs.append(LfwPair(image(parts[0], parts[1]), image(parts[2], parts[3]), False))
        except ValueError:
            raise InvalidRequestError(f"{path}, line {number}: image numbers must be integers: {line!r}") from None
    if not pairs:
        raise InvalidRequestError(f"{path} holds no pair in LFW's pairs.txt format")
    return pairs
