"""Reading the index: ``search`` with a photo or clip, and ``stats``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from search_engine.config import Settings
from search_engine.errors import InvalidRequestError
from search_engine.photo_hash import COPIES_LISTED, DEFAULT_MAX_DISTANCE, HASH_BITS
from search_engine.types import FACET_FIELDS, MEDIA_TYPES, SearchFilters

from .common import EXIT_USAGE, usage_error


def register(commands, common: argparse.ArgumentParser) -> None:
    search = commands.add_parser("search", parents=[common], help="find the faces most like one in a photo or clip")
    search.add_argument(
        "image", type=Path, nargs="?", metavar="QUERY", help="query photo, or video clip (its people are tracked)"
    )
    search.add_argument(
        "--person-id",
        help="instead of a photo, more of this person (facesearch people list): the faces not yet theirs most like them",
    )
    search.add_argument("--k", type=int, default=20, help="number of hits (default 20)")
    search.add_argument("--person", help="only faces of the person of this name (a label or a person's name)")
    search.add_argument("--video", help="only faces from this video")
    search.add_argument("--media-type", choices=MEDIA_TYPES, help="only photos or only video frames")
    search.add_argument("--min-score", type=float, help="cosine similarity floor in [-1, 1]")
    search.add_argument("--collapse", choices=FACET_FIELDS, help="only the best hit per value of this field")
    search.add_argument("--by-video", action="store_true", help="each video once, with its best-matching moments")
    search.add_argument(
        "--face",
        type=int,
        help="which face of the query to use (0-based; default: the largest, or a clip's longest track)",
    )
    search.add_argument("--json", action="store_true", help="print one JSON object")
    search.set_defaults(run=cmd_search)

    duplicates = commands.add_parser(
        "duplicates",
        parents=[common],
        help="groups of near-identical photos (resized, recompressed or cropped copies), or one photo's copies",
    )
    duplicates.add_argument(
        "image",
        type=Path,
        nargs="?",
        metavar="PHOTO",
        help="list only the indexed copies of this photo (it need not be indexed itself)",
    )
    duplicates.add_argument(
        "--max-distance",
        type=int,
        default=DEFAULT_MAX_DISTANCE,
        help=f"differing bits of the {HASH_BITS}-bit perceptual hashes still called a copy (default {DEFAULT_MAX_DISTANCE})",
    )
    duplicates.add_argument(
        "--k", type=int, default=COPIES_LISTED, help=f"with PHOTO: copies listed at most (default {COPIES_LISTED})"
    )
    duplicates.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array: of groups of source paths, or with PHOTO of {source, distance} objects",
    )
    duplicates.set_defaults(run=cmd_duplicates)

    similar = commands.add_parser(
        "similar", parents=[common], help="the indexed photos that look most like a photo as a whole (not its faces)"
    )
    similar.add_argument("image", type=Path, metavar="PHOTO", help="query photo")
    similar.add_argument("--k", type=int, default=20, help="number of photos (default 20)")
    similar.add_argument("--json", action="store_true", help="print one JSON object")
    similar.set_defaults(run=cmd_similar)

    stats = commands.add_parser("stats", parents=[common], help="counts of faces, people and videos in the index")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.set_defaults(run=cmd_stats)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.calibration import POSSIBLE, SAME_PERSON
    from search_engine.service import SearchService

    if (args.image is None) == (args.person_id is None):
        return usage_error("search with a QUERY photo or clip, or with --person-id, one of the two")
    if args.person_id is not None and (args.face is not None or args.collapse or args.by_video):
        return usage_error("--person-id takes no --face, --collapse or --by-video")
    service = SearchService.from_settings(settings)
    filters = SearchFilters(person=args.person, video=args.video, media_type=args.media_type, min_score=args.min_score)
    try:
        if args.person_id is not None:
            result = service.search_person(args.person_id, k=args.k, filters=filters)
        else:
            result = service.search_file(
                args.image, k=args.k, filters=filters, face=args.face, collapse=args.collapse, by_video=args.by_video
            )
    except InvalidRequestError as exc:
        print(f"facesearch: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    if len(result.query_faces) > 1:
        print(
            f"{len(result.query_faces)} faces in {args.image}; searching face {result.face} (--face N picks another):"
        )
        for n, det in enumerate(result.query_faces):
            when = f" {_span(*result.query_times[n])}" if result.query_times else ""
            print(f"  face {n}:{when} box {det.box.as_list()} probability {det.probability:.3f}")
    if not result.hits:
        print("no matching faces")
    if result.groups is not None:
        for rank, group in enumerate(result.groups, 1):
            print(f"{rank:3d}  {group.score:.3f}  {group.video}")
            for hit in group.hits:
                print(f"       {hit.score:.3f}  {_span(hit.start, hit.end)}  box {hit.box.as_list()}")
        return 0
    words = {SAME_PERSON: "same person", POSSIBLE: "possible"}
    for rank, hit in enumerate(result.hits, 1):
        where = hit.source if hit.start is None else f"{hit.source} {_span(hit.start, hit.end)}"
        verdict = words.get(hit.verdict, "")
        print(f"{rank:3d}  {hit.score:.3f}  {verdict:<12} {hit.person or '-':<28} {where}  box {hit.box.as_list()}")
    print(_verdict_note(result))
    return 0


def _verdict_note(result) -> str:
    """One line on what the verdicts rest on, and whether any hit is a confident match."""
    v = result.verdicts
    if v is None:
        return "(this model is not calibrated: scores rank the hits but give no verdict; see facesearch calibrate)"
    if v.fixed:
        basis = f"same person from {v.same_person:.3f} (FACESEARCH_SAME_PERSON_THRESHOLD)"
    else:
        basis = (
            f"same person from {v.same_person:.3f}, possible from {v.possible:.3f}: calibrated so that at most "
            f"{v.target_fpir:.2%} of searches for someone not among these {v.gallery_size:,} faces get a same-person hit"
        )
    return ("" if result.confident_match else "no confident match: this person may not be in the index; ") + basis


def _clock(seconds: float) -> str:
    """A time as ``m:ss.s``."""
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def _span(start: float, end: float) -> str:
    """A time range as ``m:ss.s-m:ss.s``."""
    return f"{_clock(start)}-{_clock(end)}"


def cmd_duplicates(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from search_engine.embedding import embedder_info
    from search_engine.index import create_index
    from search_engine.photo_hash import near_duplicate_groups

    if not 0 <= args.max_distance < HASH_BITS:
        return usage_error(f"--max-distance must be from 0 to {HASH_BITS - 1}")
    if args.k < 1:
        return usage_error("--k must be at least 1")
    index = create_index(settings.index, embedder_info(settings.models))
    index.ensure()
    if args.image is not None:
        return _copies_of(index, args, settings)
    hashes = index.image_hashes()
    # Every pair is compared: minutes for a large archive (README, "Near-duplicates").
    with tqdm(total=len(hashes), unit="photo", desc="comparing", disable=args.json, dynamic_ncols=True) as bar:
        groups = near_duplicate_groups(hashes, args.max_distance, progress=bar.update)
    if args.json:
        print(json.dumps(groups, indent=2))
        return 0
    for number, group in enumerate(groups, 1):
        print(f"group {number}: {len(group)} photos")
        for source in group:
            print(f"  {source}")
    copies = sum(len(group) for group in groups)
    print(f"{len(groups)} groups of near-identical photos ({copies} of the {len(hashes)} photos with a hash)")
    return 0


def _copies_of(index, args: argparse.Namespace, settings: Settings) -> int:
    """``duplicates PHOTO``: the indexed photos whose hashes lie within ``--max-distance`` of PHOTO's."""
    from search_engine.imageio import decode_image, read_file
    from search_engine.photo_hash import photo_hash

    image = decode_image(read_file(args.image), str(args.image), settings.models.max_image_pixels)
    copies = index.near_duplicates(photo_hash(image), args.max_distance, args.k)
    if args.json:
        print(json.dumps([{"source": source, "distance": bits} for source, bits in copies], indent=2))
        return 0
    for source, bits in copies:
        print(f"{bits:4d}  {source}")
    print(f"{len(copies)} indexed photos within {args.max_distance} of {HASH_BITS} hash bits of {args.image}")
    return 0


def cmd_similar(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.similar import SimilarPhotos

    if args.k < 1:
        return usage_error("--k must be at least 1")
    photos = SimilarPhotos.open(settings)
    stored = photos.images.count()
    hits = photos.similar_file(args.image, k=args.k)
    if args.json:
        print(
            json.dumps(
                {"model": photos.model.info.key, "photos": stored, "hits": [h.to_dict() for h in hits]}, indent=2
            )
        )
        return 0
    if not stored:
        print(
            "the image index is empty: index photos with facesearch index --image-search (or FACESEARCH_IMAGE_SEARCH=1)"
        )
        return 0
    for rank, hit in enumerate(hits, 1):
        when = "" if hit.timestamp is None else f" at {_clock(hit.timestamp)}"
        print(f"{rank:3d}  {hit.score:.3f}  {hit.source}{when}  ({hit.width}x{hit.height})")
    print(
        f"(whole-photo similarity, {photos.model.info.key}, among {stored:,} photos: how alike they look, not who is in them)"
    )
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.calibration import calibration_and_origin, verdicts
    from search_engine.embedding import embedder_info
    from search_engine.index import FACET_LIMIT, create_index

    index = create_index(settings.index, embedder_info(settings.models))
    index.ensure()
    faces = index.count()
    calibration, stored = calibration_and_origin(index)
    judged = verdicts(calibration, faces, settings.search.target_fpir, settings.search.same_person_threshold)
    # Every person the faces were grouped into (facesearch people cluster), whether named or not.
    grouped = index.facets("cluster", size=FACET_LIMIT)
    stats = {
        "model": index.model.key,
        "faces": faces,
        "grouped": {"people": len(grouped), "faces": sum(f.count for f in grouped)},
        "vector_index": index.vector_index().to_dict(),
        "people": [{"person": f.value, "faces": f.count} for f in index.facets("person", size=20)],
        "videos": [{"video": f.value, "faces": f.count} for f in index.facets("video", size=20)],
        "verdicts": None if judged is None else judged.to_dict(),
        "calibration": None if calibration is None else calibration.to_dict() | {"stored_with_index": stored},
        "similar_photos": _image_index_stats(settings),
    }
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{faces} faces indexed with {stats['model']}")
    vectors = stats["vector_index"]
    if vectors["kind"] == "exact":
        print("nearest faces: exact scan of every face (FACESEARCH_VECTOR_INDEX_FACES)")
    else:
        size = f", {vectors['size_bytes'] / 1e6:.1f} MB" if vectors["size_bytes"] is not None else ""
        print(
            f"nearest faces: {vectors['kind']} index of {vectors['indexed']} faces{size}, {vectors['unindexed']} not yet in it"
        )
    if grouped:
        print(f"{stats['grouped']['faces']} of them grouped into {len(grouped)} people (facesearch people list)")
    if judged is None:
        print("verdicts: none (this model is not calibrated; see facesearch calibrate)")
    elif judged.fixed:
        print(f"verdicts: same person from {judged.same_person:.3f} (FACESEARCH_SAME_PERSON_THRESHOLD)")
    else:
        where = "stored with this index" if stored else "shipped with facesearch"
        print(
            f"verdicts: same person from {judged.same_person:.3f}, possible from {judged.possible:.3f} "
            f"at target FPIR {judged.target_fpir:.1%} ({where}: {calibration.measured_on})"
        )
    if stats["similar_photos"] is not None:
        described = stats["similar_photos"]
        print(
            f"similar photos: {described['pictures']} pictures (photos and video keyframes) described with {described['model']}"
        )
    for row in stats["people"]:
        print(f"  {row['faces']:6d}  {row['person']}")
    return 0


def _image_index_stats(settings: Settings) -> dict | None:
    """The image index's model and picture count where similar-photo search is on, else None
    (its model is not loaded: counting needs only the index)."""
    from search_engine.embedding import image_embedder_info
    from search_engine.index import create_image_index

    if not settings.models.image_search:
        return None
    images = create_image_index(settings.index, image_embedder_info())
    images.ensure()
    return {"model": images.model.key, "pictures": images.count()}
