"""People: the faces of an index grouped into persons, named by humans, merged and split.

Each face stores the id of its person (``cluster``, None while it is grouped with no one) and the
name it goes by (``person``, what filters, facets and Kibana see). The clustering job
(:func:`cluster_index`) groups the faces where a search would call them the same person, by
:mod:`search_engine.grouping`.

**Human decisions win, and are data.** What people decide is stored apart from the faces, keyed
by person id (:class:`~search_engine.types.PersonRecord`: name, hidden, cover) and by face id
(:class:`~search_engine.types.FaceDecision`: the person a human put a face in, the people they
took it out of), so re-indexing a photo, whose faces keep their deterministic ids, keeps them.
They bind the job:

* a face a human put in a person is *pinned*: it never moves, and two people holding pinned
  faces are never merged. Moving a face pins it; naming, merging, splitting, hiding a person or
  choosing their cover pins the faces they hold then (a human has looked at them), so a person
  a human acted on is found again, whole, after the photos are re-indexed;
* a face's label from indexing (``--person``, ``--person-from-folder``) pins it to the person of
  that name (:func:`~search_engine.ids.labelled_person_id`), unless a human moved it since;
* a face a human took out of a person never joins that person again;
* a person's name is what every face of theirs goes by, those that join later included.

**Incremental by default.** The faces already grouped keep their person; only the faces grouped
with no one (new ones, and those left alone before) are examined, and they join existing people
or form new ones. ``full=True`` examines every face again; a group keeps the id most of its faces
had, so a person keeps their id, their name and their decisions through a full run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .calibration import calibration_for, verdicts
from .config import SearchSettings
from .embedding import normalise
from .errors import ConfigError, ConflictError, NotFoundError
from .grouping import NEIGHBOURS, group_faces, neighbourhoods
from .ids import grouped_person_id, labelled_person_id
from .index.base import FaceIndex
from .types import FaceDecision, Grouping, PersonRecord, SearchFilters


@dataclass(frozen=True)
class ClusterReport:
    """What one clustering run did: ``faces`` stored, ``examined`` of them; ``people`` with at least
    one face afterwards, ``grouped`` faces in one, ``alone`` faces in none; ``changed`` faces whose
    person or name changed; the similarity ``threshold`` of an edge; ``seconds`` of wall time."""

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
        return dataclasses.asdict(self) | {"threshold": round(self.threshold, 4), "seconds": round(self.seconds, 1)}


@dataclass(frozen=True)
class Person:
    """One person of the index: ``person_id`` (their faces' ``cluster``), the ``name`` their faces
    go by (None: unnamed), their ``face_ids`` in order, whether a human ``hidden`` them, and the
    ``cover_face_id`` that shows them: a human's choice, else their most typical face (the one
    nearest their mean face), which :func:`list_people` leaves None for :func:`with_covers`."""

    person_id: str
    name: str | None
    face_ids: tuple[str, ...]
    hidden: bool
    cover_face_id: str | None

    @property
    def face_count(self) -> int:
        return len(self.face_ids)

    def to_dict(self) -> dict:
        return {
            "id": self.person_id,
            "name": self.name,
            "face_count": self.face_count,
            "face_ids": list(self.face_ids),
            "hidden": self.hidden,
            "cover_face_id": self.cover_face_id,
        }


@dataclass
class _Faces:
    """The faces of an index as scanned, row ``i`` of each list being one face."""

    face_ids: list[str]
    vectors: np.ndarray
    persons: list[str | None]
    labels: list[str | None]
    clusters: list[str | None]


def _read(index: FaceIndex, filters: SearchFilters | None = None, vectors: bool = True) -> _Faces:
    faces = _Faces([], np.zeros((0, index.model.dim if vectors else 0), dtype=np.float32), [], [], [])
    chunks = []
    for batch in index.scan(filters=filters, vectors=vectors):
        faces.face_ids.extend(batch.face_ids)
        faces.persons.extend(batch.persons)
        faces.labels.extend(batch.labels)
        faces.clusters.extend(batch.clusters)
        chunks.append(batch.vectors)
    if chunks:
        faces.vectors = np.concatenate(chunks)
    return faces


def names_of_people(records: Mapping[str, PersonRecord], labels: Iterable[str | None]) -> dict[str, str]:
    """The name of each person that has one: the name a human gave them, else the label a
    labelled person stands for."""
    names = {labelled_person_id(label): label for label in labels if label is not None}
    names.update((person_id, record.name) for person_id, record in records.items() if record.name)
    return names


def _pins(faces: _Faces, decisions: Mapping[str, FaceDecision]) -> list[str | None]:
    """The person a human put each face in: by a decision, else by its label; else None."""
    pins = []
    for face_id, label in zip(faces.face_ids, faces.labels):
        decision = decisions.get(face_id)
        if decision is not None and decision.person_id is not None:
            pins.append(decision.person_id)
        elif label is not None and not (decision and labelled_person_id(label) in decision.not_person):
            pins.append(labelled_person_id(label))
        else:
            pins.append(None)
    return pins


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
    """Group the faces of ``index`` into people and store each face's person and name.

    Args:
        threshold: the cosine similarity that joins two faces, the index's "same person" verdict
            threshold (:func:`grouping_threshold`).
        full: examine every face again, not only those grouped with no one.
        neighbours: nearest faces asked for per examined face.
        progress: called with the number of faces just examined, as kNN batches complete.
    """
    started = time.perf_counter()
    faces = _read(index)
    decisions = index.get_decisions()
    pinned = _pins(faces, decisions)
    examined = np.array(
        [full or c is None or (p is not None and c != p) for c, p in zip(faces.clusters, pinned)], dtype=bool
    )
    hoods = neighbourhoods(index, faces.face_ids, faces.vectors, examined, neighbours, progress)
    rejected = [frozenset(decisions[f].not_person) if f in decisions else frozenset() for f in faces.face_ids]
    assigned = group_faces(
        faces.face_ids, faces.vectors, faces.clusters, pinned, examined, hoods, threshold, rejected=rejected
    )
    names = names_of_people(index.get_people(), faces.labels)
    changes = {}
    for face_id, person_id, cluster, person in zip(faces.face_ids, assigned, faces.clusters, faces.persons):
        grouping = Grouping(person_id, names.get(person_id) if person_id is not None else None)
        if (grouping.cluster, grouping.person) != (cluster, person):
            changes[face_id] = grouping
    _store(index, changes)
    alone = sum(a is None for a in assigned)
    return ClusterReport(
        faces=len(faces.face_ids),
        examined=int(examined.sum()),
        people=len({a for a in assigned if a is not None}),
        grouped=len(assigned) - alone,
        alone=alone,
        changed=len(changes),
        threshold=threshold,
        full=full,
        seconds=time.perf_counter() - started,
    )


def _store(index: FaceIndex, changes: Mapping[str, Grouping]) -> None:
    if changes:
        index.set_people(changes)
        index.refresh()


# --- reading people -----------------------------------------------------------------------------


def list_people(index: FaceIndex, include_hidden: bool = False, covers: bool = False) -> list[Person]:
    """Every person of the index (hidden ones only with ``include_hidden``), the most faces first
    (ties by id). Without ``covers`` it reads no vectors, so a cover no human chose is None
    (:func:`with_covers` picks those of the people a page shows); with it, every person has one."""
    faces = _read(index, vectors=covers)
    records = index.get_people()
    people = _people(faces, records, names_of_people(records, faces.labels))
    return [p for p in people if include_hidden or not p.hidden]


def with_covers(index: FaceIndex, persons: Sequence[Person]) -> list[Person]:
    """``persons``, each with a cover: those without one get their most typical face (read from
    the index, the vectors of their faces only)."""
    uncovered = [face_id for person in persons if person.cover_face_id is None for face_id in person.face_ids]
    vectors = index.embeddings(uncovered) if uncovered else {}
    covered = []
    for person in persons:
        if person.cover_face_id is None:
            ids = [face_id for face_id in person.face_ids if face_id in vectors]
            if ids:
                person = dataclasses.replace(person, cover_face_id=_typical(ids, np.stack([vectors[i] for i in ids])))
        covered.append(person)
    return covered


def _typical(face_ids: Sequence[str], vectors: np.ndarray) -> str:
    """The face nearest the mean of ``vectors`` (row ``i`` is ``face_ids[i]``'s unit vector)."""
    return face_ids[int(np.argmax(vectors @ vectors.sum(axis=0)))]


def get_person(index: FaceIndex, person_id: str) -> Person:
    """One person with all their faces.

    Raises:
        NotFoundError: no face belongs to ``person_id``.
    """
    faces = _read(index, SearchFilters(cluster=person_id))
    if not faces.face_ids:
        raise NotFoundError(f"no person {person_id!r} in the {index.model.key} index")
    records = index.get_people()
    return _people(faces, records, names_of_people(records, faces.labels))[0]


def _people(faces: _Faces, records: Mapping[str, PersonRecord], names: Mapping[str, str]) -> list[Person]:
    rows: dict[str, list[int]] = {}
    for row, cluster in enumerate(faces.clusters):
        if cluster is not None:
            rows.setdefault(cluster, []).append(row)
    people = []
    for person_id, members in rows.items():
        record = records.get(person_id, PersonRecord(person_id))
        ids = [faces.face_ids[r] for r in members]
        cover = record.cover_face_id if record.cover_face_id in ids else None
        if cover is None and faces.vectors.shape[1]:
            cover = _typical(ids, faces.vectors[members])
        people.append(Person(person_id, names.get(person_id), tuple(sorted(ids)), record.hidden, cover))
    return sorted(people, key=lambda p: (-p.face_count, p.person_id))


#: Faces of a person a search for more of them queries with, besides their mean face.
EXEMPLARS = 8


@dataclass(frozen=True)
class PersonQuery:
    """What a search for more of one person queries with: ``centroid``, their mean face, (dim,)
    unit; ``exemplars``, (m, dim) unit rows, up to :data:`EXEMPLARS` of their faces as unlike each
    other as they come (so their profile and their younger self are asked about too)."""

    person_id: str
    centroid: np.ndarray
    exemplars: np.ndarray


def person_query(index: FaceIndex, person_id: str) -> PersonQuery:
    """The query for more of a person.

    Raises:
        NotFoundError: no face belongs to ``person_id``.
    """
    vectors = _read(index, SearchFilters(cluster=person_id)).vectors
    if len(vectors) == 0:
        raise NotFoundError(f"no person {person_id!r} in the {index.model.key} index")
    centroid = normalise(vectors.sum(axis=0, keepdims=True))[0]
    # Farthest-point sampling from the most typical face.
    chosen = [int(np.argmax(vectors @ centroid))]
    nearest = vectors @ vectors[chosen[0]]
    while len(chosen) < min(EXEMPLARS, len(vectors)):
        chosen.append(int(np.argmin(nearest)))
        nearest = np.maximum(nearest, vectors @ vectors[chosen[-1]])
    return PersonQuery(person_id, centroid, vectors[chosen])


# --- human decisions ----------------------------------------------------------------------------


def name_person(index: FaceIndex, person_id: str, name: str | None) -> Person:
    """Give a person a name (None or blank: take it away); every face of theirs goes by it, those
    that join later included. Naming pins the faces they hold now.

    Raises:
        NotFoundError: no such person.
        ConflictError: another person has that name (merge them instead).
    """
    person = get_person(index, person_id)
    name = (name or "").strip() or None
    if name is not None:
        holders = _read(index, SearchFilters(person=name)).clusters
        # A labelled face not grouped yet belongs to the person of its label.
        others = {c if c is not None else labelled_person_id(name) for c in holders} - {person_id}
        if others:
            raise ConflictError(f"{name!r} is the name of person {min(others)}; merge the two people instead")
    record = index.get_people().get(person_id, PersonRecord(person_id))
    index.put_people([dataclasses.replace(record, name=name)])
    if name is not None:
        _decide(index, person.face_ids, person_id)
    else:
        name = names_of_people({}, _read(index, SearchFilters(cluster=person_id)).labels).get(person_id)
    _place(index, person.face_ids, person_id, name)
    return get_person(index, person_id)


def merge_people(index: FaceIndex, into: str, others: Sequence[str]) -> Person:
    """Make one person of several: every face of ``others`` joins ``into``, and all their faces are
    pinned there (a human judged them one person). ``into`` keeps its name, or takes the first
    name among ``others``.

    Merging a person with no one but themselves changes nothing.

    Raises:
        NotFoundError: one of them does not exist.
    """
    target = get_person(index, into)
    others = [o for o in dict.fromkeys(others) if o != into]
    if not others:
        return target
    merged = [get_person(index, other) for other in others]
    records = index.get_people()
    name = target.name or next((m.name for m in merged if m.name), None)
    updates = [dataclasses.replace(records.get(into, PersonRecord(into)), name=name)]
    updates += [dataclasses.replace(records[m.person_id], name=None) for m in merged if m.person_id in records]
    index.put_people(updates)
    faces = [*target.face_ids, *(f for m in merged for f in m.face_ids)]
    _decide(index, faces, into)
    _place(index, faces, into, name)
    return get_person(index, into)


def split_person(index: FaceIndex, person_id: str, face_ids: Sequence[str]) -> Person:
    """Take some faces out of a person into a new, unnamed person of their own. Both sides are
    pinned, so the job never joins them again. Returns the new person.

    Raises:
        NotFoundError: no such person.
        ConflictError: a face is not theirs, or the split would take them all or none.
    """
    person = get_person(index, person_id)
    leaving = list(dict.fromkeys(face_ids))
    strangers = set(leaving) - set(person.face_ids)
    if strangers:
        raise ConflictError(f"face {min(strangers)} is not one of person {person_id}'s faces")
    if not leaving or len(leaving) == person.face_count:
        raise ConflictError("a split takes some of a person's faces, not none and not all")
    new_id = grouped_person_id(f"{person_id}/{min(leaving)}")
    _decide(index, [f for f in person.face_ids if f not in set(leaving)], person_id)
    _decide(index, leaving, new_id, took_out_of=person_id)
    _place(index, leaving, new_id, None)
    return get_person(index, new_id)


def move_face(index: FaceIndex, face_id: str, person_id: str | None) -> None:
    """Put one face in another person, or (``person_id`` None) in no one: "not this person". Either
    way it never joins the person it left again.

    Raises:
        NotFoundError: no such face or person.
    """
    face = index.get(face_id)
    if face is None:
        raise NotFoundError(f"no face {face_id!r} in the {index.model.key} index")
    name = get_person(index, person_id).name if person_id is not None else None
    _decide(index, [face_id], person_id, took_out_of=face.cluster if face.cluster != person_id else None)
    _place(index, [face_id], person_id, name)


def hide_person(index: FaceIndex, person_id: str, hidden: bool = True) -> None:
    """Leave a person out of the people lists (or show them again); their faces stay searchable.

    Raises:
        NotFoundError: no such person.
    """
    _decide(index, get_person(index, person_id).face_ids, person_id)
    record = index.get_people().get(person_id, PersonRecord(person_id))
    index.put_people([dataclasses.replace(record, hidden=hidden)])


def set_cover(index: FaceIndex, person_id: str, face_id: str) -> None:
    """Show a person by this face of theirs.

    Raises:
        NotFoundError: no such person.
        ConflictError: the face is not theirs.
    """
    person = get_person(index, person_id)
    if face_id not in person.face_ids:
        raise ConflictError(f"face {face_id} is not one of person {person_id}'s faces")
    _decide(index, person.face_ids, person_id)
    record = index.get_people().get(person_id, PersonRecord(person_id))
    index.put_people([dataclasses.replace(record, cover_face_id=face_id)])


def _decide(index: FaceIndex, face_ids: Sequence[str], person_id: str | None, took_out_of: str | None = None) -> None:
    """Record that a human put these faces in ``person_id`` (None: in no one) and took them out of
    ``took_out_of``; the people they were taken out of before stay refused."""
    known = index.get_decisions()
    decisions = []
    for face_id in face_ids:
        refused = set(known.get(face_id, FaceDecision(face_id)).not_person) | ({took_out_of} - {None})
        refused.discard(person_id)
        decisions.append(FaceDecision(face_id, person_id, tuple(sorted(refused))))
    index.put_decisions(decisions)


def _place(index: FaceIndex, face_ids: Sequence[str], person_id: str | None, name: str | None) -> None:
    """Store these faces in ``person_id`` under the name they now go by."""
    _store(index, dict.fromkeys(face_ids, Grouping(person_id, name if person_id is not None else None)))
