"""``facesearch init``: prepare a stack's Elasticsearch index and Kibana objects, waiting for both.

Elasticsearch gets exactly what the Elasticsearch backend's ``ensure()`` creates for the
configured model (index templates, versioned indices, aliases) and nothing else. Kibana, when
``FACESEARCH_KIBANA_URL`` is set, gets the saved objects of :mod:`ingest.kibana.objects`
through its import API, authenticated with the Elasticsearch credentials (Kibana checks them
against Elasticsearch). Both steps are idempotent, so ``init`` may run on every start.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from search_engine.config import Settings
from search_engine.errors import IndexUnavailableError

from .kibana.client import RETRY_STATUSES, KibanaClient, KibanaError, NotReady, import_failures

if TYPE_CHECKING:
    from search_engine.index.mapping import IndexNames

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds ``init`` waits for Elasticsearch, then for Kibana, before giving up.
DEFAULT_TIMEOUT_S = 300.0
#: Pause between attempts.
RETRY_INTERVAL_S = 5.0


@dataclasses.dataclass(frozen=True)
class InitResult:
    """What ``facesearch init`` prepared: the model's index names and face count, and in Kibana
    the number of saved objects imported and the dashboard's id (None when Kibana was not asked)."""

    model: str
    names: IndexNames
    faces: int
    kibana_objects: int | None = None
    dashboard_id: str | None = None


def retry(
    action: Callable[[], T],
    what: str,
    transient: Callable[[BaseException], bool],
    timeout_s: float,
    interval_s: float = RETRY_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``action()``'s result, calling it again while it raises an error ``transient`` accepts.

    Raises:
        The last transient error once ``timeout_s`` has passed (at least one attempt is made);
        any other error at once.
    """
    deadline = clock() + timeout_s
    attempt = 1
    while True:
        try:
            return action()
        except Exception as exc:
            if not transient(exc) or clock() >= deadline:
                raise
            log.info("%s: not ready (attempt %d: %s); trying again", what, attempt, exc)
        attempt += 1
        sleep(max(0.0, min(interval_s, deadline - clock())))


def _elasticsearch_transient(exc: BaseException) -> bool:
    """Unreachable or busy clusters (503 while its security index starts, say) are worth waiting for."""
    if isinstance(exc, IndexUnavailableError):
        return True
    from elasticsearch import ApiError

    return isinstance(exc, ApiError) and exc.meta.status in RETRY_STATUSES


def _kibana_transient(exc: BaseException) -> bool:
    return isinstance(exc, NotReady)


def _prepare_index(settings: Settings, timeout_s: float, sleep: Callable[[float], None]) -> InitResult:
    """Wait for the cluster, then create what the configured model's index lacks."""
    from search_engine.embedding import embedder_info
    from search_engine.index.elastic import ElasticFaceIndex

    model = embedder_info(settings.models)
    index = ElasticFaceIndex.from_settings(settings.index, model)
    try:
        retry(index.ensure, f"Elasticsearch at {index.url}", _elasticsearch_transient, timeout_s, sleep=sleep)
        faces = index.count()
    except IndexUnavailableError as exc:
        raise IndexUnavailableError(f"{exc.message} (gave up after {timeout_s:.0f} s)") from exc
    except Exception as exc:
        if not _elasticsearch_transient(exc):
            raise
        raise IndexUnavailableError(
            f"Elasticsearch at {index.url} was still busy after {timeout_s:.0f} s: {exc}"
        ) from exc
    finally:
        index.close()
    log.info("Elasticsearch index %s ready with %d faces", index.names.faces_alias, faces)
    return InitResult(model.key, index.names, faces)


def init_stack(
    settings: Settings,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> InitResult:
    """Create the configured model's Elasticsearch index (waiting for the cluster), then, when
    ``settings.web.kibana_url`` is set, import the saved objects into Kibana (waiting for it).

    Raises:
        ConfigError: no ``FACESEARCH_ES_URL``, or bad credentials settings.
        IndexUnavailableError: the cluster did not become usable within ``timeout_s``.
        DimensionMismatchError: the faces index holds vectors of another size.
        KibanaError: Kibana did not become available, refused the credentials or some objects.
    """
    from search_engine.errors import ConfigError

    from .kibana.objects import saved_objects, to_ndjson

    if not settings.index.es_url:
        raise ConfigError("facesearch init prepares an Elasticsearch index: set FACESEARCH_ES_URL (or --es-url)")
    result = _prepare_index(settings, timeout_s, sleep)
    if not settings.web.kibana_url:
        return result

    objects = saved_objects(result.names, settings.web.web_url)
    ndjson = to_ndjson(objects)
    kibana = KibanaClient(settings.web.kibana_url, settings.index)
    try:
        retry(kibana.wait_available, f"Kibana at {kibana.url}", _kibana_transient, timeout_s, sleep=sleep)
        answer = retry(
            lambda: kibana.import_objects(ndjson), "importing into Kibana", _kibana_transient, timeout_s, sleep=sleep
        )
    except NotReady as exc:
        raise KibanaError(f"gave up after {timeout_s:.0f} s: {exc}") from None
    finally:
        kibana.close()
    failures = import_failures(answer)
    if failures:
        listed = "\n  ".join(failures)
        raise KibanaError(
            f"Kibana at {kibana.url} refused {len(failures)} of {len(objects)} saved objects:\n  {listed}"
        )
    dashboard = next(item["id"] for item in objects if item["type"] == "dashboard")
    return dataclasses.replace(result, kibana_objects=len(objects), dashboard_id=dashboard)
