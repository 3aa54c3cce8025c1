"""What the commands share: exit codes, common options, settings from the command line, reports."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from search_engine.config import EMBEDDERS, Settings

EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 1, 2, 3


def common_options() -> argparse.ArgumentParser:
    """The options every command takes: which model and which index."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--embedder", choices=EMBEDDERS, help="embedding model (env FACESEARCH_EMBEDDER)")
    common.add_argument("--data-dir", type=Path, help="embedded index directory (env FACESEARCH_DATA_DIR)")
    common.add_argument("--es-url", help="use this Elasticsearch cluster (env FACESEARCH_ES_URL)")
    common.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    return common


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
        "image_search": True if getattr(args, "image_search", False) else None,
    }
    return Settings.from_env().replace(**{k: v for k, v in overrides.items() if v is not None})


def share_cores(settings: Settings, processes: int) -> Settings:
    """Unless set, torch threads = cores / processes: more only makes the processes' pools fight."""
    if settings.models.torch_threads:
        return settings
    return settings.replace(torch_threads=max(1, (os.cpu_count() or 1) // processes))


def usage_error(message: str) -> int:
    """Say what is wrong with the command line; the exit status for it."""
    print(f"facesearch: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def summary_text(summary) -> str:
    """One line on an index run or job: files by outcome, and faces."""
    return (
        f"{summary.files} files: {summary.indexed} indexed, {summary.skipped} unchanged (skipped), "
        f"{summary.no_face} with no face, {len(summary.failures)} failed; {summary.faces} faces"
    )


def print_failures(summary) -> None:
    for source, reason in summary.failures:
        print(f"  failed: {source}: {reason}")
