"""``people``: group the faces of the index into people, and list them."""

from __future__ import annotations

import argparse
import json

from search_engine.config import Settings


def register(commands, common: argparse.ArgumentParser) -> None:
    people = commands.add_parser(
        "people",
        parents=[common],
        help="group the faces into people and list them",
        description=(
            "Faces are grouped into people where a search would call them the same person (the calibrated "
            "verdict threshold); faces with a person label (--person, --person-from-folder) stay with the "
            "person of that name. See search_engine/people.py."
        ),
    )
    verbs = people.add_subparsers(dest="verb", required=True)
    cluster = verbs.add_parser(
        "cluster",
        parents=[common],
        help="group the faces not yet in a person (all of them with --full)",
    )
    cluster.add_argument("--full", action="store_true", help="group every face again, not only the new ones")
    cluster.add_argument("--json", action="store_true", help="print one JSON object")
    cluster.set_defaults(run=cmd_cluster)
    listing = verbs.add_parser("list", parents=[common], help="the people, the most faces first")
    listing.add_argument("--json", action="store_true", help="print one JSON array of people")
    listing.set_defaults(run=cmd_list)


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

    people = list_people(_index(settings))
    if args.json:
        print(json.dumps([person.to_dict() for person in people]))
        return 0
    if not people:
        print("no people yet: run `facesearch people cluster`")
    for person in people:
        print(f"{person.person_id}  {person.face_count:6d} faces  {person.name or '(unnamed)'}")
    return 0
