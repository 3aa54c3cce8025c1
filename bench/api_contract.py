"""The API against its own OpenAPI document, longer than the test suite's bounded run.

Copies the index (the run names, merges, splits and hides people), groups the copy's faces into
people (``facesearch people cluster``) so that the people routes have people to act on, starts
``facesearch serve`` on the copy with an API key configured, and runs schemathesis (every check, every phase) as a black
box: once with the key, ``--examples`` cases per operation, and once without it, where every
call must be refused with 401. Prints, for each run, the operations and cases tested and the
failures found, each with what was sent and what came back.

Usage: python bench/api_contract.py --data-dir /path/to/lfw-index --media-root ../shared/data/lfw
       [--embedder mobilefacenet] [--examples 25] [--seed 1]

``FACESEARCH_IMAGE_SEARCH`` and ``FACESEARCH_RESNET50_WEIGHTS`` are passed on to the server when
set: without them ``POST /similar`` answers 503 (similar-photo search off), reported as failures.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # harness.py, at the repository root

from ingest_throughput import cpu_name  # noqa: E402

from harness import SCHEMATHESIS_CONFIG_WITHOUT_KEY, api_contract_run, running_server  # noqa: E402
from search_engine.config import MODELS, Settings  # noqa: E402
from search_engine.embedding import embedder_info  # noqa: E402
from search_engine.index import create_index  # noqa: E402
from search_engine.people import cluster_index, grouping_threshold  # noqa: E402
from web.api import OPENAPI_PATH  # noqa: E402

KEY = "api-contract-bench-key"
IMAGE_SEARCH_VARIABLES = ("FACESEARCH_IMAGE_SEARCH", "FACESEARCH_RESNET50_WEIGHTS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="the index to copy and serve")
    parser.add_argument("--media-root", type=Path, required=True, help="where the indexed files are")
    parser.add_argument("--embedder", default="mobilefacenet", choices=MODELS)
    parser.add_argument("--examples", type=int, default=25, help="cases per operation, with the key")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="facesearch-contract-"))
    shutil.copytree(args.data_dir, scratch / "data")
    settings = Settings.from_env().replace(embedder=args.embedder, data_dir=scratch / "data", es_url=None)
    index = create_index(settings.index, embedder_info(settings.models))
    index.ensure()
    grouped = cluster_index(index, grouping_threshold(settings.search, index))
    index.close()
    env = {
        "FACESEARCH_EMBEDDER": args.embedder,
        "FACESEARCH_DATA_DIR": str(scratch / "data"),
        "FACESEARCH_MEDIA_ROOTS": str(args.media_root),
        "FACESEARCH_API_KEYS": KEY,
    }
    # POST /similar answers 503 where similar-photo search is off, which schemathesis reports as
    # a server error; with these set here, the served app has it on and the route is exercised.
    env.update({name: os.environ[name] for name in IMAGE_SEARCH_VARIABLES if name in os.environ})
    headers = {"X-API-Key": KEY}
    try:
        with running_server(["--workers", "1", "--threads", "2"], env, scratch / "serve.log", headers=headers) as url:
            runs = {
                f"with the key, {args.examples} cases per operation": api_contract_run(
                    url, scratch / "with-key", args.examples, headers=headers, seed=args.seed
                ),
                "without a key (all must be 401)": api_contract_run(
                    url,
                    scratch / "without-key",
                    max(2, args.examples // 5),
                    schema=OPENAPI_PATH,
                    config=SCHEMATHESIS_CONFIG_WITHOUT_KEY,
                    seed=args.seed,
                ),
            }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"\nfacesearch serve ({args.embedder}, {args.data_dir}: {grouped.faces:,} faces, {grouped.people:,} people) "
        f"on {cpu_name()}, {platform.machine()}"
    )
    print("| run | operations tested | cases generated | failures | errors | seconds |")
    print("|---|---|---|---|---|---|")
    for name, report in runs.items():
        failures = ", ".join(f"{f['code']} {f['title']} x{f['count']}" for f in report["failures"]) or "none"
        print(
            f"| {name} | {report['operations']['tested']}/{report['operations']['total']} | "
            f"{report['test_cases']['generated']} | {failures} | {len(report['errors'])} | {report['running_time']:.0f} |"
        )
    for name, report in runs.items():
        for text in report["failure_texts"]:
            print(f"\n--- {name}\n{text}")


if __name__ == "__main__":
    main()
