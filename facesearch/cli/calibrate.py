"""``calibrate``: fit what a model's scores mean on labelled faces, and store it with the index."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from search_engine.config import Settings

from .common import usage_error


def register(commands, common: argparse.ArgumentParser) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        parents=[common],
        help="fit the model's same-person verdicts on labelled faces and store them with the index",
        description=(
            "Fit what a score means for this model: the 1:1 threshold and how close the best stranger "
            "comes (search_engine/calibration.py), on the faces in the index that carry a person label "
            "(--person-from-folder, --person), or on LFW-format pairs (--pairs with --images). Stored with "
            "the index, it replaces the calibration shipped for the model; without one, a model gives no "
            "verdicts and no query expansion."
        ),
    )
    calibrate.add_argument("--pairs", type=Path, help="an LFW-format pairs.txt instead of the index's labelled faces")
    calibrate.add_argument("--images", type=Path, help="with --pairs: the folder of <name>/<name>_<nnnn>.jpg images")
    calibrate.add_argument("--dry-run", action="store_true", help="fit and print, store nothing")
    calibrate.add_argument(
        "--reset", action="store_true", help="remove the stored calibration (back to the shipped one)"
    )
    calibrate.add_argument("--json", action="store_true", help="print one JSON object")
    calibrate.set_defaults(run=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.calibration import verdicts
    from search_engine.calibration_fit import calibrate_on_index
    from search_engine.embedding import embedder_info
    from search_engine.index import create_index

    if (args.pairs is None) != (args.images is None):
        return usage_error("--pairs and --images go together: the pairs file and its images")
    if args.reset and (args.pairs or args.dry_run):
        return usage_error("--reset removes the stored calibration; it takes no --pairs or --dry-run")
    if args.reset:
        return _reset(create_index(settings.index, embedder_info(settings.models)))
    if args.pairs is not None:
        from search_engine.service import SearchService

        service = SearchService.from_settings(settings)
        index = service.index
        report = service.calibrate_on_pairs(args.pairs, args.images, progress=not args.json)
    else:
        index = create_index(settings.index, embedder_info(settings.models))
        index.ensure()
        report = calibrate_on_index(index)
    # Before storing: an index too large for this calibration to vouch for is refused here.
    judged = verdicts(report.calibration, index.count(), settings.search.target_fpir)
    if not args.dry_run:
        index.put_calibration(report.calibration)
    if args.json:
        fit = {
            "pairs": report.pairs.pairs,
            "accuracy": round(report.pairs.accuracy, 4),
            "accuracy_std": round(report.pairs.accuracy_std, 4),
        }
        document = {
            "calibration": report.calibration.to_dict(),
            "pairs": fit,
            "verdicts": judged.to_dict(),
            "stored": not args.dry_run,
            "skipped": list(report.skipped),
        }
        print(json.dumps(document, indent=2))
        return 0
    c, fit = report.calibration, report.pairs
    print(f"calibrated {c.model} on {c.measured_on}")
    print(
        f"  1:1 threshold {c.pair_threshold:.4f}: accuracy {fit.accuracy:.2%} ± {fit.accuracy_std:.2%} "
        f"over 10 folds of {fit.pairs:,} pairs"
    )
    print(
        f"  best stranger in {c.gallery:,} faces: Gumbel location {c.location:.4f}, scale {c.scale:.4f} "
        f"({c.probes:,} probes)"
    )
    print(
        f"  on this index ({judged.gallery_size:,} faces, target FPIR {judged.target_fpir:.1%}): "
        f"same person from {judged.same_person:.3f}, possible from {judged.possible:.3f}"
    )
    if report.skipped:
        print(f"  {len(report.skipped)} image(s) left out:")
        for reason in report.skipped:
            print(f"    {reason}")
    if args.dry_run:
        print("not stored (--dry-run)")
    else:
        print(f"stored with the {index.model.key} index: searches use it from now on (--reset goes back)")
    return 0


def _reset(index) -> int:
    from search_engine.calibration import calibration_and_origin

    index.put_calibration(None)
    calibration, _ = calibration_and_origin(index)
    shipped = f"the shipped one ({calibration.measured_on})" if calibration else "none: this model gives no verdicts"
    print(f"removed the calibration stored for {index.model.key}; searches now use {shipped}")
    return 0
