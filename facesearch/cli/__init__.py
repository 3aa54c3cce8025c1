"""``facesearch``: index photos, search them from the command line, and serve the web search page.

One module per group of commands, each adding its own parsers (:func:`register`) and running its
commands; :func:`main` composes them. Exit codes: 0 success; 1 error (bad query file, no face,
index or model unavailable); 2 bad usage; 3 an index run or job finished but some files failed
(each is listed with its reason).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from search_engine.errors import FaceSearchError

from . import calibrate, indexing, models, people, searching, serve, stack
from .common import EXIT_ERROR, EXIT_PARTIAL, EXIT_USAGE, common_options, settings_from

__all__ = ["EXIT_ERROR", "EXIT_PARTIAL", "EXIT_USAGE", "build_parser", "main", "settings_from"]

#: In the order ``facesearch --help`` lists them.
GROUPS = (indexing, searching, people, calibrate, serve, stack, models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facesearch", description="Reverse face search over your photos.")
    commands = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for group in GROUPS:
        group.register(commands, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    # numpy's BLAS would start a thread per core and fight torch for the cores; it reads this when
    # numpy first loads, which no command has done yet.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    args = build_parser().parse_args(argv)
    if not args.verbose:
        # OpenCV, and FFmpeg inside it, print their own lines for every file they cannot open and
        # every damaged packet of a bad video; the file's failure line already says why it failed.
        # OpenCV reads both when it first opens a video.
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="facesearch: %(levelname)s: %(message)s"
    )
    try:
        return args.run(args, settings_from(args))
    except FaceSearchError as exc:
        print(f"facesearch: error: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
