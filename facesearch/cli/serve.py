"""``serve``: the web search page and JSON API under gunicorn."""

from __future__ import annotations

import argparse
from pathlib import Path

from search_engine.config import Settings

from .common import share_cores, usage_error

#: Request threads per ``serve`` process: enough to read uploads and answer health checks while
#: one search holds the models (see bench/web_load.py).
SERVE_THREADS = 4


def register(commands, common: argparse.ArgumentParser) -> None:
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
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from web.server import serve

    if args.threads < 1:
        return usage_error("--threads must be 1 or more")
    workers = settings.models.worker_count
    serve(share_cores(settings, workers), args.host, args.port, workers, args.threads)
    return 0
