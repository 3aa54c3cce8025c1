"""``facesearch init``: prepare a stack's Elasticsearch index and Kibana objects, waiting for both.

Elasticsearch gets exactly what the Elasticsearch backend's ``ensure()`` creates for the
configured model (index templates, versioned indices, aliases) and nothing else. Kibana, when
``FACESEARCH_KIBANA_URL`` is set, gets the saved objects of :mod:`search_engine.index.kibana`
through its import API, authenticated with the Elasticsearch credentials (Kibana checks them
against Elasticsearch). Both steps are idempotent, so ``init`` may run on every start.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from search_engine.config import Settings
from search_engine.errors import FaceSearchError, IndexUnavailableError

if TYPE_CHECKING:
    from search_engine.index.mapping import IndexNames

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds ``init`` waits for Elasticsearch, then for Kibana, before giving up.
DEFAULT_TIMEOUT_S = 300.0
#: Pause between attempts.
RETRY_INTERVAL_S = 5.0
#: Seconds one Kibana request may take; an import of a few objects takes well under one.
KIBANA_REQUEST_TIMEOUT_S = 60.0
#: Answers that mean "not ready yet, ask again": Kibana says 503 until it has started.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})


class KibanaError(FaceSearchError):
    """Kibana cannot be reached, refuses the credentials, or refuses some saved objects."""


class _NotReady(Exception):
    """A transient answer: the service is starting or busy."""


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


def import_failures(response: Mapping[str, Any]) -> list[str]:
    """One line per object a saved-objects ``_import`` answer says was refused (empty on success)."""
    lines = []
    for item in response.get("errors") or []:
        error = item.get("error") or {}
        kind = error.get("type", "error")
        detail = ""
        if kind == "missing_references":
            missing = ", ".join(f"{ref.get('type')} {ref.get('id')}" for ref in error.get("references", []))
            detail = f": refers to {missing}, which Kibana does not have"
        elif error.get("message"):
            detail = f": {error['message']}"
        lines.append(f"{item.get('type')} {item.get('id')} ({item.get('title', '')}) {kind}{detail}")
    if not lines and not response.get("success", False):
        lines.append(f"Kibana reported no success and no errors: {json.dumps(dict(response))[:300]}")
    return lines


class KibanaClient:
    """The two Kibana APIs ``init`` uses, over urllib3, with the Elasticsearch credentials.

    Args:
        url: Kibana's base URL (``http://kibana:5601``).
        settings: supplies ``es_api_key`` or ``es_user``/``es_password`` and ``es_ca_cert``.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        import urllib3

        self.url = url.rstrip("/")
        self._headers = {"kbn-xsrf": "facesearch"}
        if settings.es_api_key:
            self._headers["Authorization"] = f"ApiKey {settings.es_api_key}"
        elif settings.es_user and settings.es_password:
            self._headers.update(urllib3.util.make_headers(basic_auth=f"{settings.es_user}:{settings.es_password}"))
        timeout = urllib3.Timeout(connect=5.0, read=KIBANA_REQUEST_TIMEOUT_S)
        # No urllib3 retries: init's own loop decides what is worth asking again.
        pool: dict[str, Any] = {"timeout": timeout, "retries": False}
        if settings.es_ca_cert is not None:
            pool["ca_certs"] = str(settings.es_ca_cert)
        self._http = urllib3.PoolManager(**pool)

    def _request(self, method: str, path: str, doing: str, **kwargs: Any) -> dict[str, Any]:
        import urllib3

        try:
            response = self._http.request(method, self.url + path, **kwargs)
        except urllib3.exceptions.HTTPError as exc:
            raise _NotReady(f"cannot reach Kibana at {self.url} while {doing}: {exc}") from exc
        body = response.data.decode("utf-8", "replace")
        if response.status in _RETRY_STATUSES:
            raise _NotReady(f"Kibana at {self.url} answered {response.status} while {doing}: {body[:200]}")
        if response.status in (401, 403):
            raise KibanaError(
                f"Kibana at {self.url} refused the credentials while {doing} (HTTP {response.status}): "
                f"{body[:200]} (Kibana checks FACESEARCH_ES_API_KEY or FACESEARCH_ES_USER/FACESEARCH_ES_PASSWORD "
                "against Elasticsearch; the user needs the kibana_admin role or superuser)"
            )
        if response.status >= 300:
            raise KibanaError(f"Kibana at {self.url} answered HTTP {response.status} while {doing}: {body[:500]}")
        try:
            return json.loads(body)
        except ValueError as exc:
            raise KibanaError(f"Kibana at {self.url} answered {doing} with something not JSON: {body[:200]}") from exc

    def wait_available(self) -> None:
        """Return once ``/api/status`` says Kibana is available; raise ``_NotReady`` until then."""
        status = self._request("GET", "/api/status", "checking its status", headers=self._headers)
        level = status.get("status", {}).get("overall", {}).get("level")
        if level != "available":
            raise _NotReady(f"Kibana at {self.url} is {level or 'starting'}")

    def import_objects(self, ndjson: str) -> dict[str, Any]:
        """``POST /api/saved_objects/_import?overwrite=true`` with ``ndjson`` as the uploaded file."""
        import urllib3

        body, content_type = urllib3.encode_multipart_formdata(
            {"file": ("facesearch.ndjson", ndjson.encode("utf-8"), "application/ndjson")}
        )
        return self._request(
            "POST",
            "/api/saved_objects/_import?overwrite=true",
            "importing saved objects",
            body=body,
            headers={**self._headers, "Content-Type": content_type},
        )

    def close(self) -> None:
        self._http.clear()


def _elasticsearch_transient(exc: BaseException) -> bool:
    """Unreachable or busy clusters (503 while its security index starts, say) are worth waiting for."""
    if isinstance(exc, IndexUnavailableError):
        return True
    from elasticsearch import ApiError

    return isinstance(exc, ApiError) and exc.meta.status in _RETRY_STATUSES


def _kibana_transient(exc: BaseException) -> bool:
    return isinstance(exc, _NotReady)


def _prepare_index(settings: Settings, timeout_s: float, sleep: Callable[[float], None]) -> InitResult:
    """Wait for the cluster, then create what the configured model's index lacks."""
    from search_engine.embedding import embedder_info
    from search_engine.index.elastic import ElasticFaceIndex

    model = embedder_info(settings)
    index = ElasticFaceIndex.from_settings(settings, model)
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
    ``settings.kibana_url`` is set, import the saved objects into Kibana (waiting for it).

    Raises:
        ConfigError: no ``FACESEARCH_ES_URL``, or bad credentials settings.
        IndexUnavailableError: the cluster did not become usable within ``timeout_s``.
        DimensionMismatchError: the faces index holds vectors of another size.
        KibanaError: Kibana did not become available, refused the credentials or some objects.
    """
    from search_engine.errors import ConfigError
    from search_engine.index.kibana import saved_objects, to_ndjson

    if not settings.es_url:
        raise ConfigError("facesearch init prepares an Elasticsearch index: set FACESEARCH_ES_URL (or --es-url)")
    result = _prepare_index(settings, timeout_s, sleep)
    if not settings.kibana_url:
        return result

    objects = saved_objects(result.names, settings.web_url)
    ndjson = to_ndjson(objects)
    kibana = KibanaClient(settings.kibana_url, settings)
    try:
        retry(kibana.wait_available, f"Kibana at {kibana.url}", _kibana_transient, timeout_s, sleep=sleep)
        answer = retry(
            lambda: kibana.import_objects(ndjson), "importing into Kibana", _kibana_transient, timeout_s, sleep=sleep
        )
    except _NotReady as exc:
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
