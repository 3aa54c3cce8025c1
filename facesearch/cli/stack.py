"""The docker stack's commands: ``init`` (Elasticsearch index and Kibana objects), ``kibana-export``
and ``healthcheck``."""

from __future__ import annotations

import argparse
import sys

from search_engine.config import Settings

from .common import EXIT_ERROR


def register(commands, common: argparse.ArgumentParser) -> None:
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
    init.set_defaults(run=cmd_init)

    export = commands.add_parser(
        "kibana-export",
        parents=[common, kibana],
        help="print the Kibana saved objects (ndjson) for Stack Management > Saved objects > Import",
    )
    export.set_defaults(run=cmd_kibana_export)

    health = commands.add_parser(
        "healthcheck", parents=[common], help="exit 0 if this machine's worker answers a ping (or --url answers)"
    )
    health.add_argument("--url", help="check this HTTP address instead (the web app)")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")
    health.set_defaults(run=cmd_healthcheck)


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
            f"dashboard {settings.web.kibana_url.rstrip('/')}/app/dashboards#/view/{result.dashboard_id}"
        )
    return 0


def cmd_kibana_export(args: argparse.Namespace, settings: Settings) -> int:
    from ingest.kibana.objects import saved_objects, to_ndjson
    from search_engine.embedding import embedder_info
    from search_engine.index.mapping import index_names

    names = index_names(settings.index.es_index_prefix, embedder_info(settings.models))
    sys.stdout.write(to_ndjson(saved_objects(names, settings.web.web_url)))
    return 0


def cmd_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    if args.url:
        import urllib.request

        # With API keys configured the web app answers 401 to anyone without one, itself included.
        headers = {"X-API-Key": settings.web.api_keys[0]} if settings.web.api_keys else {}
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
