"""People: every face of an index grouped into persons, or left alone.

How faces are grouped (``bench/people_clustering.py`` measures it against connected components and
dlib's Chinese whispers on the same graph):

1. **A kNN graph through the index.** Each face examined asks the index for its nearest faces; an
   edge joins two faces whose similarity reaches the *threshold*: the calibrated "same person"
   verdict of a search of this index (:mod:`search_engine.calibration`), so two faces are grouped
   only where a search would call them the same person.
2. **Label propagation** (Raghavan et al., igraph's, edges weighted by similarity): each face
   takes the label that weighs most among its neighbours', so a thin chain of single edges
   between two people does not join them, where connected components would.
3. **Centroid passes.** A face moves to a neighbouring group whose centroid (normalised mean vector)
   is closer to it than its own group's without it, and at least the threshold; two neighbouring
   groups whose centroids are at least the threshold apart merge, most similar first. A centroid
   stands for a person better than any one face of them, which joins the profile and the
   frontal halves of one person. Candidates come from the kNN lists, so the cost is linear in faces.
4. A group of one face is no one: a stranger seen once stays alone (``cluster`` None).

**Human decisions win.** A face whose ``person`` a human gave (a folder label, ``--person``) is
pinned to the person of that name (:func:`~search_engine.ids.labelled_person_id`): it never moves,
and groups of two different names never merge.

**Incremental by default.** The faces already grouped keep their person; only the faces grouped
with no one (new ones, and those left alone before) are examined, and they join existing people
or form new ones. ``full=True`` examines every face again; groups keep the id most of their faces
had, so a person keeps their id through a full run.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .calibration import calibration_for, verdicts
from .config import SearchSettings
from .errors import ConfigError
from .ids import grouped_person_id, labelled_person_id
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


@dataclass(frozen=True)
class ClusterReport:
    """What one clustering run did: ``faces`` stored, ``examined`` of them; ``people`` with at least
    one face afterwards, ``grouped`` faces in one, ``alone`` faces in none; ``changed`` faces whose
    person changed; the similarity ``threshold`` of an edge; ``seconds`` of wall time."""

    faces: int
    examined: int
    people: int
    grouped: int
    alone: int
    changed: int
    threshold: float
    full: bool
    seconds: float

    def to_dict(self) -> dict:
        return {
            "faces": self.faces,
            "examined": self.examined,
            "people": self.people,
            "grouped": self.grouped,
            "alone": self.alone,
            "changed": self.changed,
            "threshold": round(self.threshold, 4),
            "full": self.full,
            "seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Person:
    """One person of the index: ``person_id`` (the faces' ``cluster``), the ``name`` most of their
    faces carry as ``person`` (None when none does), and their ``face_ids`` in order."""

    person_id: str
    name: str | None
    face_ids: tuple[str, ...]

    @property
    def face_count(self) -> int:
        return len(self.face_ids)

    def to_dict(self) -> dict:
        return {"id": self.person_id, "name": self.name, "face_count": self.face_count, "face_ids": list(self.face_ids)}


def list_people(index: FaceIndex) -> list[Person]:
    """Every person of the index, the most faces first (ties by id)."""
    faces: dict[str, list[str]] = {}
    names: dict[str, Counter] = {}
    for batch in index.scan():
        for face_id, person, cluster in zip(batch.face_ids, batch.persons, batch.clusters):
            if cluster is not None:
                faces.setdefault(cluster, []).append(face_id)
                if person is not None:
                    names.setdefault(cluster, Counter())[person] += 1
    people = [
        Person(cluster, names[cluster].most_common(1)[0][0] if cluster in names else None, tuple(sorted(ids)))
        for cluster, ids in faces.items()
    ]
    return sorted(people, key=lambda p: (-p.face_count, p.person_id))


def group_faces(
    face_ids: Sequence[str],
    vectors: np.ndarray,
    current: Sequence[str | None],
    pinned: Sequence[str | None],
    examined: np.ndarray,
    neighbourhoods: Neighbourhoods,
    threshold: float,
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
        seed: of label propagation's random visiting order; the same inputs give the same groups.
    """
    n = len(face_ids)
    fixed_id: list[str | None] = [
        p if p is not None else (None if examined[i] else current[i]) for i, p in enumerate(pinned)
    ]
    if any(fixed is None and not examined[i] for i, fixed in enumerate(fixed_id)):
        raise ValueError("a face that is not examined must have a person")
    groups = _propagate(n, fixed_id, neighbourhoods, threshold, seed)
    groups = _centroid_passes(groups, vectors, fixed_id, examined, neighbourhoods, threshold)
    return _name_groups(groups, face_ids, current, fixed_id, examined)


def _propagate(n: int, fixed_id: list[str | None], hoods: Neighbourhoods, threshold: float, seed: int) -> np.ndarray:
    """Label propagation over the edges at or above ``threshold``: (n,) group numbers, the faces
    of one fixed id in one group and two fixed ids never in one."""
    import igraph

    rows = np.repeat(hoods.faces, hoods.nearest.shape[1])
    cols = hoods.nearest.reshape(-1)
    weights = hoods.scores.reshape(-1)
    keep = (cols >= 0) & (weights >= threshold) & (rows != cols)
    low, high = np.minimum(rows, cols)[keep], np.maximum(rows, cols)[keep]
    _, first = np.unique(low.astype(np.int64) * n + high, return_index=True)
    graph = igraph.Graph(n=n, edges=np.stack([low[first], high[first]], axis=1).tolist())
    # Every face starts with a label of its own, those of one fixed id with that id's label; labels
    # must lie in [0, n), and there are no more of them than faces.
    label_of: dict[str, int] = {}
    initial = [label_of.setdefault(fixed, len(label_of)) if fixed is not None else -1 for fixed in fixed_id]
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


def _unit(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


#: Examined faces whose candidate groups are scored at once (bounds the (rows, k, dim) block).
_MOVE_BATCH = 1024


def _moves(
    groups: np.ndarray, vectors: np.ndarray, movable: np.ndarray, hoods: Neighbourhoods, threshold: float
) -> np.ndarray:
    """Each movable face in the neighbouring group whose centroid is most similar to it, where
    that reaches ``threshold`` and beats its own group's centroid without it."""
    sums = _sums(groups, vectors)
    centroids = _unit(sums)
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
        own_score = np.where(alone, -np.inf, np.einsum("rd,rd->r", _unit(rest), vectors[faces]))
        move = (best_score >= threshold) & (best_score > own_score)
        moved[faces[move]] = candidates[np.arange(chunk.size), best][move]
    return moved


def _merges(
    groups: np.ndarray, vectors: np.ndarray, fixed_id: list[str | None], hoods: Neighbourhoods, threshold: float
) -> np.ndarray:
    """Neighbouring groups whose centroids reach ``threshold``, merged most similar first, never
    joining two groups of different fixed ids (two names, or two people who are not examined)."""
    _, groups = np.unique(groups, return_inverse=True)
    centroids = _unit(_sums(groups, vectors))
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


def grouping_threshold(search: SearchSettings, index: FaceIndex) -> float:
    """The similarity that joins two faces of ``index``: its "same person" verdict threshold now
    (calibrated for its size, or ``FACESEARCH_SAME_PERSON_THRESHOLD``).

    Raises:
        ConfigError: the model is uncalibrated and no threshold is set.
    """
    judged = verdicts(calibration_for(index), index.count(), search.target_fpir, search.same_person_threshold)
    if judged is None:
        raise ConfigError(
            f"{index.model.key} has no calibration to group faces by: run `facesearch calibrate` "
            "or set FACESEARCH_SAME_PERSON_THRESHOLD"
        )
    return judged.same_person


def cluster_index(
    index: FaceIndex,
    threshold: float,
    full: bool = False,
    neighbours: int = NEIGHBOURS,
    progress: Callable[[int], None] | None = None,
) -> ClusterReport:
    """Group the faces of ``index`` into people and store each face's person (``cluster``).

    Args:
        threshold: the cosine similarity that joins two faces, the index's "same person" verdict
            threshold (see the module's docstring).
        full: examine every face again, not only those grouped with no one.
        neighbours: nearest faces asked for per examined face.
        progress: called with the number of faces just examined, as kNN batches complete.
    """
    started = time.perf_counter()
    face_ids: list[str] = []
    chunks, persons, current = [], [], []
    for batch in index.scan():
        face_ids.extend(batch.face_ids)
        chunks.append(batch.vectors)
        persons.extend(batch.persons)
        current.extend(batch.clusters)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, index.model.dim), dtype=np.float32)
    pinned = [labelled_person_id(person) if person is not None else None for person in persons]
    examined = np.array([full or c is None or (p is not None and c != p) for c, p in zip(current, pinned)], dtype=bool)
    hoods = neighbourhoods(index, face_ids, vectors, examined, neighbours, progress)
    assigned = group_faces(face_ids, vectors, current, pinned, examined, hoods, threshold)
    changes = {f: a for f, a, c in zip(face_ids, assigned, current) if a != c}
    if changes:
        index.set_clusters(changes)
        index.refresh()
    people = {a for a in assigned if a is not None}
    alone = sum(a is None for a in assigned)
    return ClusterReport(
        faces=len(face_ids),
        examined=int(examined.sum()),
        people=len(people),
        grouped=len(face_ids) - alone,
        alone=alone,
        changed=len(changes),
        threshold=threshold,
        full=full,
        seconds=time.perf_counter() - started,
    )


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
