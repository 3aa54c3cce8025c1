"""Grouping faces into people on their kNN graph: the algorithm of :mod:`search_engine.people`.

1. **Edges** join two faces whose cosine similarity reaches the threshold (the index's "same
   person" verdict threshold), among each examined face's nearest faces, asked of the index itself.
2. **Label propagation** (Raghavan et al., igraph's, edges weighted by similarity): each face
   takes the label that weighs most among its neighbours', so a thin chain of single edges
   between two people does not join them, where connected components would.
3. **Centroid passes.** A face moves to a neighbouring group whose centroid (normalised mean vector)
   is closer to it than its own group's without it, and at least the threshold; two neighbouring
   groups whose centroids reach the threshold merge, most similar first. A centroid stands for a
   person better than any one face of them, which joins the profile and the frontal halves of one
   person. Candidates come from the kNN lists, so the cost is linear in faces.
4. A group of one face is no one: a stranger seen once stays alone.

Faces with a *fixed* id (pinned by a human, or grouped before and not examined again) keep it:
two fixed ids are never joined, and the faces of one are never split.
``bench/people_clustering.py`` measures it against connected components and dlib's Chinese
whispers on the same graph.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .embedding import normalise
from .ids import grouped_person_id
from .index.base import FaceIndex

#: Nearest faces each examined face asks the index for: more than any one person usually has
#: in a crowd of similar faces, few enough that the graph stays linear in faces.
NEIGHBOURS = 32

#: Centroid passes are repeated until nothing changes, at most this often.
MAX_PASSES = 5


@dataclass(frozen=True)
class Neighbourhoods:
    """The kNN lists of the examined faces: ``faces[r]`` is the position of the face of row ``r``;
    ``nearest[r]`` (positions, -1 past the end of a short list) and ``scores[r]`` (cosine
    similarities) are its nearest other faces, best first. Positions index the grouping's faces."""

    faces: np.ndarray
    nearest: np.ndarray
    scores: np.ndarray


def group_faces(
    face_ids: Sequence[str],
    vectors: np.ndarray,
    current: Sequence[str | None],
    pinned: Sequence[str | None],
    examined: np.ndarray,
    neighbourhoods: Neighbourhoods,
    threshold: float,
    rejected: Sequence[frozenset[str]] | None = None,
    seed: int = 0,
) -> list[str | None]:
    """The person id of every face, or None for a face grouped with no one.

    Args:
        face_ids: every face's id; ``vectors`` (n, dim) their unit vectors, in the same order.
        current: each face's person now (None: none).
        pinned: the person a human put each face in, or None; a pinned face never moves.
        examined: (n,) bool, the faces grouped again; the others keep ``current`` (which must be
            set for them) and draw the examined ones in.
        neighbourhoods: the kNN lists of the examined faces.
        threshold: the cosine similarity an edge, a move or a merge needs.
        rejected: per face, the people a human took it out of: it is left alone rather than put
            back in one of them.
        seed: of label propagation's random visiting order; the same inputs give the same groups.
    """
    n = len(face_ids)
    fixed_id: list[str | None] = [
        p if p is not None else (None if examined[i] else current[i]) for i, p in enumerate(pinned)
    ]
    if any(fixed is None and not examined[i] for i, fixed in enumerate(fixed_id)):
        raise ValueError("a face that is not examined must have a person")
    # A full run starts from the people as they were: one face pinned elsewhere does not pull a
    # whole person after it.
    groups = _propagate(n, fixed_id, list(current), neighbourhoods, threshold, seed)
    groups = _centroid_passes(groups, vectors, fixed_id, examined, neighbourhoods, threshold)
    named = _name_groups(groups, face_ids, current, fixed_id, examined)
    if rejected is not None:
        named = [None if person in refused else person for person, refused in zip(named, rejected)]
    return named


def _propagate(
    n: int,
    fixed_id: list[str | None],
    start_id: list[str | None],
    hoods: Neighbourhoods,
    threshold: float,
    seed: int,
) -> np.ndarray:
    """Label propagation over the edges at or above ``threshold``: (n,) group numbers, the faces
    of one fixed id in one group and two fixed ids never in one. The other faces start from
    ``start_id`` (their person before), or a label of their own where it is None."""
    import igraph

    rows = np.repeat(hoods.faces, hoods.nearest.shape[1])
    cols = hoods.nearest.reshape(-1)
    weights = hoods.scores.reshape(-1)
    keep = (cols >= 0) & (weights >= threshold) & (rows != cols)
    low, high = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    _, first = np.unique(low.astype(np.int64) * n + high, return_index=True)
    graph = igraph.Graph(n=n, edges=np.stack([low[first], high[first]], axis=1).tolist())
    # The faces of one id start with one label, the others with a label each; labels must lie in
    # [0, n), and there are no more of them than faces.
    label_of: dict[str, int] = {}
    initial = [
        label_of.setdefault(start, len(label_of)) if start is not None else -1
        for start in (fixed if fixed is not None else begun for fixed, begun in zip(fixed_id, start_id))
    ]
    free = len(label_of)
    for i, label in enumerate(initial):
        if label < 0:
            initial[i], free = free, free + 1
    previous = random.getstate()
    random.seed(seed)
    try:
        # igraph draws its random numbers from Python's random module.
        membership = graph.community_label_propagation(
            weights=weights[keep][first].tolist(), initial=initial, fixed=[f is not None for f in fixed_id]
        ).membership
    finally:
        random.setstate(previous)
    return np.asarray(membership, dtype=np.int64)


def _centroid_passes(
    groups: np.ndarray,
    vectors: np.ndarray,
    fixed_id: list[str | None],
    examined: np.ndarray,
    hoods: Neighbourhoods,
    threshold: float,
) -> np.ndarray:
    movable = examined & np.array([fixed is None for fixed in fixed_id], dtype=bool)
    _, groups = np.unique(groups, return_inverse=True)
    for _ in range(MAX_PASSES):
        changed = _merges(_moves(groups, vectors, movable, hoods, threshold), vectors, fixed_id, hoods, threshold)
        _, changed = np.unique(changed, return_inverse=True)
        if np.array_equal(changed, groups):
            break
        groups = changed
    return groups


def _sums(groups: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The sum of the vectors of each group, numbered 0 to max with none missing."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    return np.add.reduceat(vectors[order].astype(np.float64), starts, axis=0)


#: Examined faces whose candidate groups are scored at once (bounds the (rows, k, dim) block).
_MOVE_BATCH = 1024


def _moves(
    groups: np.ndarray, vectors: np.ndarray, movable: np.ndarray, hoods: Neighbourhoods, threshold: float
) -> np.ndarray:
    """Each movable face in the neighbouring group whose centroid is most similar to it, where
    that reaches ``threshold`` and beats its own group's centroid without it."""
    sums = _sums(groups, vectors)
    centroids = normalise(sums)
    moved = groups.copy()
    rows = np.flatnonzero(movable[hoods.faces])
    for start in range(0, rows.size, _MOVE_BATCH):
        chunk = rows[start : start + _MOVE_BATCH]
        faces, near = hoods.faces[chunk], hoods.nearest[chunk]
        candidates = np.where(near >= 0, groups[np.maximum(near, 0)], -1)
        similarity = np.einsum("rkd,rd->rk", centroids[np.maximum(candidates, 0)], vectors[faces])
        similarity[(candidates < 0) | (candidates == groups[faces][:, None])] = -np.inf
        best = similarity.argmax(axis=1)
        best_score = similarity[np.arange(chunk.size), best]
        rest = sums[groups[faces]] - vectors[faces]
        # A face alone in its group has no group without it to stay with.
        alone = np.linalg.norm(rest, axis=1) < 1e-6
        own_score = np.where(alone, -np.inf, np.einsum("rd,rd->r", normalise(rest), vectors[faces]))
        move = (best_score >= threshold) & (best_score > own_score)
        moved[faces[move]] = candidates[np.arange(chunk.size), best][move]
    return moved


def _merges(
    groups: np.ndarray, vectors: np.ndarray, fixed_id: list[str | None], hoods: Neighbourhoods, threshold: float
) -> np.ndarray:
    """Neighbouring groups whose centroids reach ``threshold``, merged most similar first, never
    joining two groups of different fixed ids (two names, or two people who are not examined)."""
    _, groups = np.unique(groups, return_inverse=True)
    centroids = normalise(_sums(groups, vectors))
    near = hoods.nearest
    left = np.repeat(groups[hoods.faces], near.shape[1])[near.reshape(-1) >= 0]
    right = groups[near[near >= 0]]
    count = int(groups.max()) + 1
    keys = np.unique(np.minimum(left, right) * count + np.maximum(left, right))
    pairs = np.stack([keys // count, keys % count], axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    similarity = np.einsum("pd,pd->p", centroids[pairs[:, 0]], centroids[pairs[:, 1]])
    order = np.argsort(-similarity, kind="stable")
    order = order[similarity[order] >= threshold]
    if order.size == 0:
        return groups
    owner = {int(groups[face]): fixed for face, fixed in enumerate(fixed_id) if fixed is not None}
    root = list(range(int(groups.max()) + 1))

    def find(group: int) -> int:
        while root[group] != group:
            root[group] = root[root[group]]
            group = root[group]
        return group

    for a, b in pairs[order].tolist():
        ra, rb = find(a), find(b)
        if ra == rb or (ra in owner and rb in owner):
            continue
        root[rb] = ra
        if rb in owner:
            owner[ra] = owner[rb]
    return np.array([find(g) for g in range(len(root))])[groups]


def _name_groups(
    groups: np.ndarray,
    face_ids: Sequence[str],
    current: Sequence[str | None],
    fixed_id: list[str | None],
    examined: np.ndarray,
) -> list[str | None]:
    """A person id per group: its fixed id; else the id most of its faces had, unless a larger
    group has it; else a new one. A group of one face without a fixed id is no one."""
    members: dict[int, list[int]] = {}
    for face, group in enumerate(groups.tolist()):
        members.setdefault(group, []).append(face)
    names: dict[int, str | None] = {}
    taken: set[str] = set()
    for group, faces in members.items():
        fixed = next((fixed_id[f] for f in faces if fixed_id[f] is not None), None)
        if fixed is not None:
            names[group] = fixed
            taken.add(fixed)
    for group, faces in sorted(members.items(), key=lambda item: -len(item[1])):
        if group in names:
            continue
        if len(faces) == 1:
            names[group] = None
            continue
        held = Counter(current[f] for f in faces if current[f] is not None)
        name = next((person for person, _ in held.most_common() if person not in taken), None)
        names[group] = name if name is not None else grouped_person_id(min(face_ids[f] for f in faces))
        taken.add(names[group])
    return [names[group] for group in groups.tolist()]


#: Faces per kNN batch asked of the index.
_KNN_BATCH = 1024


def neighbourhoods(
    index: FaceIndex,
    face_ids: Sequence[str],
    vectors: np.ndarray,
    examined: np.ndarray,
    k: int,
    progress: Callable[[int], None] | None,
) -> Neighbourhoods:
    """The ``k`` nearest other faces of each examined face, through the index's own kNN."""
    position = {face_id: i for i, face_id in enumerate(face_ids)}
    rows = np.flatnonzero(examined)
    nearest = np.full((rows.size, k), -1, dtype=np.int64)
    scores = np.full((rows.size, k), -np.inf, dtype=np.float32)
    for start in range(0, rows.size, _KNN_BATCH):
        chunk = rows[start : start + _KNN_BATCH]
        # One more than k: the face itself is usually its own nearest.
        for r, found in zip(range(start, start + chunk.size), index.neighbours(vectors[chunk], k + 1)):
            others = [(position[f], s) for f, s in found if f in position and position[f] != rows[r]][:k]
            if others:
                nearest[r, : len(others)] = [p for p, _ in others]
                scores[r, : len(others)] = [s for _, s in others]
        if progress is not None:
            progress(chunk.size)
    return Neighbourhoods(rows, nearest, scores)
