"""``facesearch``: index photos, search them from the command line, and serve the web search page.

Exit codes: 0 success; 1 error (bad query file, no face, index or model unavailable);
2 bad usage; 3 an index run or job finished but some files failed (each is listed with its reason).
"""

from __future__ import annotations

import os

# numpy's BLAS would start a thread per core and fight torch for the two cores we have; this must
# be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from search_engine.calibration import POSSIBLE, SAME_PERSON  # noqa: E402
from search_engine.config import EMBEDDERS, Settings  # noqa: E402
from search_engine.errors import FaceSearchError, InvalidRequestError  # noqa: E402
from search_engine.types import SearchFilters  # noqa: E402

EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 1, 2, 3
#: Request threads per ``serve`` process: enough to read uploads and answer health checks while
#: one search holds the models (see bench/web_load.py).
SERVE_THREADS = 4


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--embedder", choices=EMBEDDERS, help="embedding model (env FACESEARCH_EMBEDDER)")
    common.add_argument("--data-dir", type=Path, help="embedded index directory (env FACESEARCH_DATA_DIR)")
    common.add_argument("--es-url", help="use this Elasticsearch cluster (env FACESEARCH_ES_URL)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")

    labels = argparse.ArgumentParser(add_help=False)
    labels.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photo files or folders (recursive)")
    who = labels.add_mutually_exclusive_group()
    who.add_argument("--person", help="name of the person these photos are of (labels each photo's subject face)")
    who.add_argument(
        "--person-from-folder", action="store_true", help="label each photo's subject with its folder's name"
    )

    parser = argparse.ArgumentParser(prog="facesearch", description="Reverse face search over your photos.")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", parents=[common, labels], help="index the faces in photos and folders")
    index.add_argument("--batch-size", type=int, help="images per model batch (env FACESEARCH_BATCH_SIZE)")
    index.add_argument(
        "--workers", type=int, help="processes detecting and embedding in parallel (env FACESEARCH_WORKERS; 0 = per core)"
    )
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")

    search = commands.add_parser("search", parents=[common], help="find the faces most like one in a photo or clip")
    search.add_argument("image", type=Path, metavar="QUERY", help="query photo, or video clip (its people are tracked)")
    search.add_argument("--k", type=int, default=20, help="number of hits (default 20)")
    search.add_argument("--person", help="only faces labelled with this person")
    search.add_argument("--video", help="only faces from this video")
    search.add_argument("--media-type", choices=("photo", "video"), help="only photos or only video frames")
    search.add_argument("--min-score", type=float, help="cosine similarity floor in [-1, 1]")
    search.add_argument("--collapse", choices=("person", "video", "source"), help="best hit per person/video/file")
    search.add_argument("--by-video", action="store_true", help="each video once, with its best-matching moments")
    search.add_argument(
        "--face", type=int, help="which face of the query to use (0-based; default: the largest, or a clip's longest track)"
    )
    search.add_argument("--json", action="store_true", help="print one JSON object")

    submit = commands.add_parser("submit", parents=[common, labels], help="index photos on the Celery workers")
    submit.add_argument("--chunk-size", type=int, default=32, help="photos per task (default 32)")
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    submit.add_argument("--json", action="store_true", help="print the job id (and with --wait the summary) as JSON")

    job = commands.add_parser("job", parents=[common], help="status of a submitted job, with its failed files")
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--json", action="store_true", help="print one JSON object")

    worker = commands.add_parser("worker", parents=[common], help="run a Celery worker that indexes submitted photos")
    worker.add_argument("--concurrency", type=int, help="worker processes (default: FACESEARCH_WORKERS, or one per core)")
    worker.add_argument("--loglevel", default="INFO")

    serve = commands.add_parser("serve", parents=[common], help="run the web search page and JSON API (gunicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--workers", type=int, help="server processes, each with its own models (env FACESEARCH_WORKERS; 0 = per core)"
    )
    serve.add_argument(
        "--threads", type=int, default=SERVE_THREADS, help=f"request threads per process (default {SERVE_THREADS})"
    )
    serve.add_argument(
        "--media-root",
        type=Path,
        action="append",
        dest="media_roots",
        metavar="DIR",
        help="folder whose files the web app may serve; repeat for several (env FACESEARCH_MEDIA_ROOTS)",
    )

    stats = commands.add_parser("stats", parents=[common], help="counts of faces, people and videos in the index")
    stats.add_argument("--json", action="store_true", help="print one JSON object")

    kibana = argparse.ArgumentParser(add_help=False)
    kibana.add_argument(
        "--web-url",
        help="the web app's address as a browser reaches it, for Kibana's thumbnails (env FACESEARCH_WEB_URL)",
    )

    init = commands.add_parser(
        "init",
        parents=[common, kibana],
        help="create the Elasticsearch index and import the Kibana saved objects (waits for both)",
    )
    init.add_argument("--kibana-url", help="Kibana to import the saved objects into (env FACESEARCH_KIBANA_URL)")
    init.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for Elasticsearch, then Kibana (default 300)"
    )

    commands.add_parser(
        "kibana-export",
        parents=[common, kibana],
        help="print the Kibana saved objects (ndjson) for Stack Management > Saved objects > Import",
    )

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
    calibrate.add_argument("--reset", action="store_true", help="remove the stored calibration (back to the shipped one)")
    calibrate.add_argument("--json", action="store_true", help="print one JSON object")

    commands.add_parser(
        "fetch-models",
        parents=[common],
        help="fetch the offline models' weights into the model cache now (setup does it once)",
    )

    health = commands.add_parser(
        "healthcheck", parents=[common], help="exit 0 if this machine's worker answers a ping (or --url answers)"
    )
    health.add_argument("--url", help="check this HTTP address instead (the web app)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment settings with the command line's overrides."""
    overrides = {
        "embedder": args.embedder,
        "data_dir": args.data_dir,
        "es_url": args.es_url,
        "batch_size": getattr(args, "batch_size", None),
        "workers": getattr(args, "workers", None),
        "web_url": getattr(args, "web_url", None),
        "kibana_url": getattr(args, "kibana_url", None),
        "media_roots": tuple(args.media_roots) if getattr(args, "media_roots", None) else None,
    }
    return Settings.from_env().replace(**{k: v for k, v in overrides.items() if v is not None})


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.local import index_locally
    from ingest.sources import collect_photos

    collected = collect_photos(args.paths, person=args.person, person_from_folder=args.person_from_folder)
    if not collected.photos and not collected.videos:
        print("facesearch: no photos or videos found under the given paths", file=sys.stderr)
        return EXIT_ERROR
    summary, index = index_locally(
        settings, collected.photos, progress=not (args.quiet or args.json), videos=collected.videos
    )
    result = summary.to_dict() | {"ignored_other_files": collected.ignored, "index_total_faces": index.count()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ignored = f"; {collected.ignored} other files ignored" if collected.ignored else ""
        print(_summary_text(summary) + ignored)
        print(f"index now holds {result['index_total_faces']} faces ({index.model.key})")
        _print_failures(summary)
    return EXIT_PARTIAL if summary.failures else 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.service import SearchService

    service = SearchService.from_settings(settings)
    filters = SearchFilters(person=args.person, video=args.video, media_type=args.media_type, min_score=args.min_score)
    try:
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
        print(f"{len(result.query_faces)} faces in {args.image}; searching face {result.face} (--face N picks another):")
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
    for rank, hit in enumerate(result.hits, 1):
        where = hit.source if hit.start is None else f"{hit.source} {_span(hit.start, hit.end)}"
        verdict = VERDICT_WORDS.get(hit.verdict, "")
        print(f"{rank:3d}  {hit.score:.3f}  {verdict:<12} {hit.person or '-':<28} {where}  box {hit.box.as_list()}")
    print(_verdict_note(result))
    return 0


VERDICT_WORDS = {SAME_PERSON: "same person", POSSIBLE: "possible"}


def _verdict_note(result) -> str:
    """One line on what the verdicts rest on, and whether any hit is a confident match."""
    v = result.verdicts
    if v is None:
        return "(this model is not calibrated: scores rank the hits but give no verdict)"
    if v.fixed:
        basis = f"same person from {v.same_person:.3f} (FACESEARCH_SAME_PERSON_THRESHOLD)"
    else:
        basis = (
            f"same person from {v.same_person:.3f}, possible from {v.possible:.3f}: calibrated so that at most "
            f"{v.target_fpir:.2%} of searches for someone not among these {v.gallery_size:,} faces get a same-person hit"
        )
    return ("" if result.confident_match else "no confident match: this person may not be in the index; ") + basis


def cmd_calibrate(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.calibration import calibrate_on_index, calibration_and_origin, verdicts
    from search_engine.embedding import embedder_info
    from search_engine.index import create_index

    if (args.pairs is None) != (args.images is None):
        print("facesearch: error: --pairs and --images go together: the pairs file and its images", file=sys.stderr)
        return EXIT_USAGE
    if args.reset and (args.pairs or args.dry_run):
        print("facesearch: error: --reset removes the stored calibration; it takes no --pairs or --dry-run", file=sys.stderr)
        return EXIT_USAGE
    if args.reset:
        index = create_index(settings, embedder_info(settings))
        index.put_calibration(None)
        calibration, _ = calibration_and_origin(index)
        shipped = f"the shipped one ({calibration.measured_on})" if calibration else "none: this model gives no verdicts"
        print(f"removed the calibration stored for {index.model.key}; searches now use {shipped}")
        return 0
    if args.pairs is not None:
        from search_engine.service import SearchService

        service = SearchService.from_settings(settings)
        index = service.index
        report = service.calibrate_on_pairs(args.pairs, args.images, progress=not args.json)
    else:
        index = create_index(settings, embedder_info(settings))
        index.ensure()
        report = calibrate_on_index(index)
    # Before storing: an index too large for this calibration to vouch for is refused here.
    judged = verdicts(report.calibration, index.count(), settings.target_fpir)
    if not args.dry_run:
        index.put_calibration(report.calibration)
    if args.json:
        fit = {
            "pairs": report.pairs.pairs,
            "accuracy": round(report.pairs.accuracy, 4),
            "accuracy_std": round(report.pairs.accuracy_std, 4),
        }
        print(
            json.dumps(
                {
                    "calibration": report.calibration.to_dict(),
                    "pairs": fit,
                    "verdicts": judged.to_dict(),
                    "stored": not args.dry_run,
                    "skipped": list(report.skipped),
                },
                indent=2,
            )
        )
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


def cmd_fetch_models(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.embedding.mobilefacenet import MobileFaceNetEmbedder

    folder = MobileFaceNetEmbedder(weights=settings.mobilefacenet_weights).weights_dir()
    print(f"MobileFaceNet weights ready in {folder}")
    return 0


def _span(start: float, end: float) -> str:
    """A time range as ``m:ss.s-m:ss.s``."""

    def clock(seconds: float) -> str:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}:{rest:04.1f}"

    return f"{clock(start)}-{clock(end)}"


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.embedding import embedder_info
    from search_engine.index import create_index

    index = create_index(settings, embedder_info(settings))
    index.ensure()
    stats = {
        "model": index.model.key,
        "faces": index.count(),
        "people": [{"person": f.value, "faces": f.count} for f in index.facets("person", size=20)],
        "videos": [{"video": f.value, "faces": f.count} for f in index.facets("video", size=20)],
    }
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"{stats['faces']} faces indexed with {stats['model']}")
        for row in stats["people"]:
            print(f"  {row['faces']:6d}  {row['person']}")
    return 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.celery_app import celery_client
    from ingest.jobs import submit_photos
    from ingest.sources import collect_photos

    collected = collect_photos(args.paths, person=args.person, person_from_folder=args.person_from_folder)
    if not collected.photos and not collected.videos:
        print("facesearch: no photos or videos found under the given paths", file=sys.stderr)
        return EXIT_ERROR
    with celery_client(settings) as app:
        job_id = submit_photos(app, collected.photos, args.chunk_size, videos=collected.videos)
        if not args.wait:
            print(json.dumps({"job_id": job_id}) if args.json else job_id)
            return 0
        if not args.json:
            print(f"job {job_id}: {len(collected.photos)} photos and {len(collected.videos)} videos submitted")
        total = len(collected.photos) + len(collected.videos)
        status = _follow(app, job_id, total, progress=not args.json)
    return _report(status, args.json)


def _follow(app, job_id: str, total: int, progress: bool):
    import time

    from tqdm import tqdm

    from ingest.jobs import job_status

    with tqdm(total=total, unit="file", disable=not progress, dynamic_ncols=True) as bar:
        while True:
            status = job_status(app, job_id)
            bar.update(status.summary.files - bar.n)
            bar.set_postfix(faces=status.summary.faces, failed=len(status.summary.failures), refresh=False)
            if status.finished:
                return status
            time.sleep(0.5)


def _report(status, as_json: bool) -> int:
    if as_json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(f"job {status.job_id}: {status.state}; {_summary_text(status.summary)}")
        _print_failures(status.summary)
    return EXIT_PARTIAL if status.summary.failures else 0


def _summary_text(summary) -> str:
    return (
        f"{summary.files} files: {summary.indexed} indexed, {summary.skipped} unchanged (skipped), "
        f"{summary.no_face} with no face, {len(summary.failures)} failed; {summary.faces} faces"
    )


def _print_failures(summary) -> None:
    for source, reason in summary.failures:
        print(f"  failed: {source}: {reason}")


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.celery_app import celery_client
    from ingest.jobs import job_status

    with celery_client(settings) as app:
        status = job_status(app, args.job_id)
    return _report(status, args.json)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.celery_app import create_celery

    concurrency = args.concurrency or settings.worker_count
    app = create_celery(_share_cores(settings, concurrency))
    app.worker_main(
        ["worker", f"--concurrency={concurrency}", f"--loglevel={args.loglevel}", "--pool=prefork", "-n", "facesearch@%h"]
    )
    return 0


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.stack import init_stack

    result = init_stack(settings, timeout_s=args.timeout)
    names = result.names
    print(f"Elasticsearch: {names.faces_alias} ready ({result.model}, {result.faces} faces)")
    print(f"Elasticsearch: file records in {names.sources_alias}")
    if result.kibana_objects is None:
        print("Kibana: not configured (FACESEARCH_KIBANA_URL), nothing imported")
    else:
        print(
            f"Kibana: {result.kibana_objects} saved objects imported; "
            f"dashboard {settings.kibana_url.rstrip('/')}/app/dashboards#/view/{result.dashboard_id}"
        )
    return 0


def cmd_kibana_export(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.embedding import embedder_info
    from search_engine.index.kibana import saved_objects, to_ndjson
    from search_engine.index.mapping import index_names

    names = index_names(settings.es_index_prefix, embedder_info(settings))
    sys.stdout.write(to_ndjson(saved_objects(names, settings.web_url)))
    return 0


def cmd_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    if args.url:
        import urllib.request

        # With API keys configured the web app answers 401 to anyone without one, itself included.
        headers = {"X-API-Key": settings.api_keys[0]} if settings.api_keys else {}
        try:
            # Raises HTTPError (an OSError) for any 4xx/5xx answer.
            with urllib.request.urlopen(urllib.request.Request(args.url, headers=headers), timeout=args.timeout):
                return 0
        except OSError as exc:
            print(f"facesearch: {args.url} does not answer well: {exc}", file=sys.stderr)
            return EXIT_ERROR
    import socket

    from ingest.celery_app import celery_client

    # `facesearch worker` names its node facesearch@<hostname>; in a container that is the container's.
    node = f"facesearch@{socket.gethostname()}"
    with celery_client(settings) as app:
        answered = app.control.ping(destination=[node], timeout=args.timeout)
    if answered:
        return 0
    print(f"facesearch: worker {node} did not answer a ping within {args.timeout} s", file=sys.stderr)
    return EXIT_ERROR
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from web.server import serve

    if args.threads < 1:
        print("facesearch: error: --threads must be 1 or more", file=sys.stderr)
        return EXIT_USAGE
    workers = settings.worker_count
    serve(_share_cores(settings, workers), args.host, args.port, workers, args.threads)
    return 0


def _share_cores(settings: Settings, processes: int) -> Settings:
    """Unless set, torch threads = cores / processes: more only makes the processes' pools fight."""
    if settings.torch_threads:
        return settings
    return settings.replace(torch_threads=max(1, (os.cpu_count() or 1) // processes))


COMMANDS = {
    "index": cmd_index,
    "search": cmd_search,
    "stats": cmd_stats,
    "submit": cmd_submit,
    "job": cmd_job,
    "worker": cmd_worker,
    "init": cmd_init,
    "kibana-export": cmd_kibana_export,
    "healthcheck": cmd_healthcheck,
    "fetch-models": cmd_fetch_models,
    "calibrate": cmd_calibrate,
    "serve": cmd_serve,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="facesearch: %(levelname)s: %(message)s"
    )
    try:
        settings = settings_from(args)
        return COMMANDS[args.command](args, settings)
    except FaceSearchError as exc:
        print(f"facesearch: error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
