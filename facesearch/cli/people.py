"""``people``: group the faces of the index into people, list them, and record what humans decide
about them (names, merges, splits, moves, hiding, covers)."""

from __future__ import annotations

import argparse
import json

from search_engine.config import Settings


def register(commands, common: argparse.ArgumentParser) -> None:
    people = commands.add_parser(
        "people",
        parents=[common],
        help="group the faces into people, list, name, merge and split them",
        description=(
            "Faces are grouped into people where a search would call them the same person (the calibrated "
            "verdict threshold). What you decide (names, merges, splits, moves) is kept apart from the faces "
            "and always wins over the grouping; faces labelled by --person or --person-from-folder stay with "
            "the person of that name. See search_engine/people.py."
        ),
    )
    verbs = people.add_subparsers(dest="verb", required=True)

    def verb(name: str, run, help: str) -> argparse.ArgumentParser:
        parser = verbs.add_parser(name, parents=[common], help=help, description=help)
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(run=run)
        return parser

    cluster = verb("cluster", cmd_cluster, "group the faces not yet in a person (all of them with --full)")
    cluster.add_argument("--full", action="store_true", help="examine every face again, not only the new ones")
    listing = verb("list", cmd_list, "the people, the most faces first (--json: one array)")
    listing.add_argument("--all", action="store_true", help="hidden people too")
    show = verb("show", cmd_show, "one person and their faces")
    show.add_argument("person_id")
    name = verb("name", cmd_name, 'name a person (an empty NAME, "", takes the name away)')
    name.add_argument("person_id")
    name.add_argument("name")
    merge = verb("merge", cmd_merge, "make one person of several: the others' faces join the first")
    merge.add_argument("person_id")
    merge.add_argument("others", nargs="+", metavar="other_id")
    split = verb("split", cmd_split, "take some faces out of a person into a new person")
    split.add_argument("person_id")
    split.add_argument("face_ids", nargs="+", metavar="face_id")
    move = verb("move", cmd_move, "put a face in another person (--to) or in no one (--out: not this person)")
    move.add_argument("face_id")
    where = move.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="PERSON_ID", help="the person the face belongs to")
    where.add_argument("--out", action="store_true", help="the face is not its person's")
    hide = verb("hide", cmd_hide, "leave a person out of the people lists (--show: back in)")
    hide.add_argument("person_id")
    hide.add_argument("--show", action="store_true", help="show the person again")
    cover = verb("cover", cmd_cover, "show a person by this face of theirs")
    cover.add_argument("person_id")
    cover.add_argument("face_id")


def _index(settings: Settings):
    from search_engine.embedding import embedder_info
    from search_engine.index import create_index

    index = create_index(settings.index, embedder_info(settings.models))
    index.ensure()
    return index


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from search_engine.people import cluster_index, grouping_threshold

    index = _index(settings)
    threshold = grouping_threshold(settings.search, index)
    with tqdm(unit="face", desc="grouping", disable=args.json, dynamic_ncols=True) as bar:
        report = cluster_index(index, threshold, full=args.full, progress=bar.update)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(
        f"{report.faces} faces, {report.examined} examined (similarity >= {report.threshold:.3f} joins two): "
        f"{report.people} people holding {report.grouped} faces, {report.alone} faces alone; "
        f"{report.changed} faces changed person in {report.seconds:.1f} s"
    )
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import list_people

    people = list_people(_index(settings), include_hidden=args.all, covers=args.json)
    if args.json:
        print(json.dumps([person.to_dict() for person in people]))
        return 0
    if not people:
        print("no people yet: run `facesearch people cluster`")
    for person in people:
        hidden = "  (hidden)" if person.hidden else ""
        print(f"{person.person_id}  {person.face_count:6d} faces  {person.name or '(unnamed)'}{hidden}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import get_person

    index = _index(settings)
    person = get_person(index, args.person_id)
    records = index.records(person.face_ids)
    faces = [records[face_id] for face_id in person.face_ids if face_id in records]
    if args.json:
        rows = [
            {"face_id": f.face_id, "source": f.source, "box": f.box.as_list(), "timestamp": f.timestamp} for f in faces
        ]
        print(json.dumps(person.to_dict() | {"faces": rows}))
        return 0
    print(
        f"{person.person_id}  {person.name or '(unnamed)'}: {person.face_count} faces{'  (hidden)' if person.hidden else ''}"
    )
    for face in faces:
        when = f" at {face.timestamp:.1f} s" if face.timestamp is not None else ""
        cover = "  (cover)" if face.face_id == person.cover_face_id else ""
        print(f"  {face.face_id}  {face.source}{when}  box {face.box.as_list()}{cover}")
    return 0


def _done(args: argparse.Namespace, person, text: str) -> int:
    print(json.dumps(person.to_dict()) if args.json else text)
    return 0


def cmd_name(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import name_person

    person = name_person(_index(settings), args.person_id, args.name)
    return _done(args, person, f"{person.person_id} is {person.name or 'unnamed'} ({person.face_count} faces)")


def cmd_merge(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import merge_people

    person = merge_people(_index(settings), args.person_id, args.others)
    return _done(args, person, f"{person.person_id} now holds {person.face_count} faces")


def cmd_split(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import split_person

    person = split_person(_index(settings), args.person_id, args.face_ids)
    return _done(args, person, f"{person.face_count} faces are now person {person.person_id}")


def cmd_move(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import get_person, move_face

    index = _index(settings)
    move_face(index, args.face_id, None if args.out else args.to)
    if args.out:
        print(json.dumps({"face_id": args.face_id, "person_id": None}) if args.json else f"{args.face_id} is in no one")
        return 0
    person = get_person(index, args.to)
    return _done(args, person, f"{args.face_id} is in {person.person_id} ({person.face_count} faces)")


def cmd_hide(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import get_person, hide_person

    index = _index(settings)
    hide_person(index, args.person_id, hidden=not args.show)
    person = get_person(index, args.person_id)
    return _done(args, person, f"{person.person_id} is {'hidden' if person.hidden else 'shown'}")


def cmd_cover(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.people import get_person, set_cover

    index = _index(settings)
    set_cover(index, args.person_id, args.face_id)
    person = get_person(index, args.person_id)
    return _done(args, person, f"{person.person_id} is shown by {person.cover_face_id}")
