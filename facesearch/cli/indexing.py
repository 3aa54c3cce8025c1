"""Putting faces into the index: ``index`` here, ``submit``, ``job`` and ``worker`` on Celery."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from search_engine.config import Settings

from .common import EXIT_ERROR, EXIT_PARTIAL, print_failures, share_cores, summary_text


def register(commands, common: argparse.ArgumentParser) -> None:
    labels = argparse.ArgumentParser(add_help=False)
    labels.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="photo files or folders (recursive)")
    who = labels.add_mutually_exclusive_group()
    who.add_argument("--person", help="name of the person these photos are of (labels each photo's subject face)")
    who.add_argument(
        "--person-from-folder", action="store_true", help="label each photo's subject with its folder's name"
    )

    index = commands.add_parser("index", parents=[common, labels], help="index the faces in photos and folders")
    index.add_argument("--batch-size", type=int, help="images per model batch (env FACESEARCH_BATCH_SIZE)")
    index.add_argument(
        "--workers",
        type=int,
        help="processes detecting and embedding in parallel (env FACESEARCH_WORKERS; 0 = per core)",
    )
    index.add_argument("--cluster", action="store_true", help="then group the faces into people (people cluster)")
    index.add_argument(
        "--image-search",
        action="store_true",
        help="also describe each photo as a whole for facesearch similar (env FACESEARCH_IMAGE_SEARCH)",
    )
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--json", action="store_true", help="print the summary as JSON")
    index.set_defaults(run=cmd_index)

    submit = commands.add_parser("submit", parents=[common, labels], help="index photos on the Celery workers")
    submit.add_argument("--chunk-size", type=int, default=32, help="photos per task (default 32)")
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    submit.add_argument(
        "--cluster",
        action="store_true",
        help="then group the faces into people on a worker (facesearch people cluster)",
    )
    submit.add_argument("--json", action="store_true", help="print the job id (and with --wait the summary) as JSON")
    submit.set_defaults(run=cmd_submit)

    job = commands.add_parser("job", parents=[common], help="status of a submitted job, with its failed files")
    job.add_argument("job_id", metavar="ID")
    job.add_argument("--json", action="store_true", help="print one JSON object")
    job.set_defaults(run=cmd_job)

    worker = commands.add_parser("worker", parents=[common], help="run a Celery worker that indexes submitted photos")
    worker.add_argument(
        "--concurrency", type=int, help="worker processes (default: FACESEARCH_WORKERS, or one per core)"
    )
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(run=cmd_worker)


def _collect(args: argparse.Namespace):
    """The photos and videos under the command's paths, or None (and a message) when there are none."""
    from ingest.sources import collect_photos

    collected = collect_photos(args.paths, person=args.person, person_from_folder=args.person_from_folder)
    if not collected.photos and not collected.videos:
        print("facesearch: no photos or videos found under the given paths", file=sys.stderr)
        return None
    return collected


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.local import index_locally

    collected = _collect(args)
    if collected is None:
        return EXIT_ERROR
    summary, index = index_locally(
        settings, collected.photos, progress=not (args.quiet or args.json), videos=collected.videos
    )
    result = summary.to_dict() | {"ignored_other_files": collected.ignored, "index_total_faces": index.count()}
    if args.cluster:
        from search_engine.people import cluster_index, grouping_threshold

        result["people"] = cluster_index(index, grouping_threshold(settings.search, index)).to_dict()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        ignored = f"; {collected.ignored} other files ignored" if collected.ignored else ""
        print(summary_text(summary) + ignored)
        print(f"index now holds {result['index_total_faces']} faces ({index.model.key})")
        if args.cluster:
            people = result["people"]
            print(f"{people['people']} people, {people['alone']} faces alone; {people['changed']} faces changed person")
        print_failures(summary)
    return EXIT_PARTIAL if summary.failures else 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.celery_app import celery_client
    from ingest.jobs import submit_photos

    collected = _collect(args)
    if collected is None:
        return EXIT_ERROR
    with celery_client(settings) as app:
        job_id = submit_photos(app, collected.photos, args.chunk_size, videos=collected.videos, cluster=args.cluster)
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

    unreachable = False
    with tqdm(total=total, unit="file", disable=not progress, dynamic_ncols=True) as bar:
        while True:
            try:
                status = job_status(app, job_id)
            except app.backend.connection_errors as exc:
                # The job lives on in Redis (and the workers wait for it too): keep following.
                if not unreachable:
                    tqdm.write(f"facesearch: the broker does not answer ({exc}); waiting for it", file=sys.stderr)
                unreachable = True
                time.sleep(2.0)
                continue
            if unreachable:
                tqdm.write("facesearch: the broker answers again", file=sys.stderr)
                unreachable = False
            bar.update(status.summary.files - bar.n)
            bar.set_postfix(faces=status.summary.faces, failed=len(status.summary.failures), refresh=False)
            if status.finished:
                return status
            time.sleep(0.5)


def _report(status, as_json: bool) -> int:
    if as_json:
        print(json.dumps(status.to_dict(), indent=2))
    else:
        print(f"job {status.job_id}: {status.state}; {summary_text(status.summary)}")
        if isinstance(status.people, dict):
            people = status.people
            grouped = people.get("error") or f"{people['people']} people, {people['alone']} faces alone"
            print(f"people: {grouped}")
        print_failures(status.summary)
    return EXIT_PARTIAL if status.summary.failures else 0


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.celery_app import celery_client
    from ingest.jobs import job_status

    with celery_client(settings) as app:
        status = job_status(app, args.job_id)
    return _report(status, args.json)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.celery_app import create_celery

    concurrency = args.concurrency or settings.models.worker_count
    app = create_celery(share_cores(settings, concurrency))
    app.worker_main(
        [
            "worker",
            f"--concurrency={concurrency}",
            f"--loglevel={args.loglevel}",
            "--pool=prefork",
            "-n",
            "facesearch@%h",
        ]
    )
    return 0
