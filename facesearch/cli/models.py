"""``fetch-models``: the offline models' weights, fetched into the model cache now."""

from __future__ import annotations

import argparse

from search_engine.config import Settings


def register(commands, common: argparse.ArgumentParser) -> None:
    fetch = commands.add_parser(
        "fetch-models",
        parents=[common],
        help="fetch the offline models' weights into the model cache now (setup does it once)",
    )
    fetch.set_defaults(run=cmd_fetch_models)


def cmd_fetch_models(args: argparse.Namespace, settings: Settings) -> int:
    from search_engine.embedding.mobilefacenet import MobileFaceNetEmbedder

    folder = MobileFaceNetEmbedder(weights=settings.models.mobilefacenet_weights).weights_dir()
    print(f"MobileFaceNet weights ready in {folder}")
    return 0
