"""The Elasticsearch client: building it from the settings, and turning what goes wrong in talking
to a cluster into one clear :class:`~search_engine.errors.IndexUnavailableError`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from elasticsearch import (
    ApiError,
    AuthenticationException,
    AuthorizationException,
    BadRequestError,
    ConnectionError,
    ConnectionTimeout,
    Elasticsearch,
    SSLError,
    TransportError,
    UnsupportedProductError,
    helpers,
)

from ..config import IndexSettings
from ..errors import ConfigError, IndexUnavailableError

#: Seconds one HTTP request may take; bulk chunks of 500 faces and cold kNN searches fit well inside.
REQUEST_TIMEOUT_S = 30.0

#: Bulk chunks refused with 429 (cluster busy) are retried this often, waiting 1, 2, 4, 8, 16 s.
BULK_MAX_RETRIES = 5
BULK_INITIAL_BACKOFF_S = 1.0
BULK_MAX_BACKOFF_S = 30.0


def create_client(settings: IndexSettings, request_timeout: float = REQUEST_TIMEOUT_S) -> Elasticsearch:
    """A client for ``settings.es_url`` with its credentials and CA bundle; constructing it does not connect.

    Authentication is an API key (``es_api_key``) or basic auth (``es_user`` + ``es_password``),
    not both. Timed-out requests are retried on the next node, as are 429/502/503/504 answers.

    Raises:
        ConfigError: no URL, a URL without scheme and port, conflicting or half-set credentials,
            a missing CA file, or a CA file with a plain-http URL.
    """
    if not settings.es_url:
        raise ConfigError("FACESEARCH_ES_URL is not set")
    options: dict[str, Any] = {"request_timeout": request_timeout, "retry_on_timeout": True}
    if settings.es_api_key and (settings.es_user or settings.es_password):
        raise ConfigError("set FACESEARCH_ES_API_KEY or FACESEARCH_ES_USER/FACESEARCH_ES_PASSWORD, not both")
    if settings.es_api_key:
        options["api_key"] = settings.es_api_key
    elif settings.es_user or settings.es_password:
        if not (settings.es_user and settings.es_password):
            raise ConfigError("FACESEARCH_ES_USER and FACESEARCH_ES_PASSWORD must be set together")
        options["basic_auth"] = (settings.es_user, settings.es_password)
    if settings.es_ca_cert is not None:
        if not settings.es_ca_cert.is_file():
            raise ConfigError(f"FACESEARCH_ES_CA_CERT {settings.es_ca_cert} is not a file")
        options["ca_certs"] = str(settings.es_ca_cert)
    try:
        return Elasticsearch(settings.es_url, **options)
    except ValueError as exc:
        raise ConfigError(f"FACESEARCH_ES_URL {settings.es_url!r} cannot be used: {exc}") from exc


def root_cause(exc: BaseException) -> str:
    """The innermost error under a transport error (``[Errno 111] Connection refused``...), for one short message."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TransportError) and exc.errors:
            inner: BaseException | None = exc.errors[0]
        else:
            inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return str(exc) or type(exc).__name__


def error_type(exc: ApiError) -> str:
    """Elasticsearch's error type (``resource_already_exists_exception``...) of an API error."""
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("type", ""))
    return ""


def error_reason(exc: ApiError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("reason") or error_type(exc))
    return str(exc)


def bulk_reason(info: dict[str, Any]) -> str:
    """One line for a failed bulk item: ``error`` is a dict for a refused document, a string for a failed request."""
    error = info.get("error")
    if isinstance(error, dict):
        reason = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        caused_by = error.get("caused_by")
        if isinstance(caused_by, dict) and caused_by.get("reason"):
            reason += f" ({caused_by['reason']})"
        return reason
    return f"HTTP {info.get('status')}: {error}"


def bulk_stream(client: Elasticsearch, actions: Iterable[dict[str, Any]], refresh: bool, **options):
    """``helpers.streaming_bulk`` of these actions: errors reported per action, 429s retried, and
    never a write that auto-creates a dynamically mapped index where an alias should be."""
    return helpers.streaming_bulk(
        client,
        actions,
        raise_on_error=False,
        max_retries=BULK_MAX_RETRIES,
        initial_backoff=BULK_INITIAL_BACKOFF_S,
        max_backoff=BULK_MAX_BACKOFF_S,
        require_alias=True,
        refresh=refresh,
        **options,
    )


def index_documents(
    client: Elasticsearch, actions: Iterable[dict[str, Any]], refresh: bool
) -> tuple[int, list[tuple[str, str]]]:
    """Index documents in bulk: how many landed, and ``(_id, reason)`` for each that did not. A
    whole chunk refused (a 5xx, say) is reported per document; rejected credentials are raised."""
    indexed, failed = 0, []
    for ok, item in bulk_stream(client, actions, refresh, raise_on_exception=False):
        info = next(iter(item.values()))
        if ok:
            indexed += 1
            continue
        if isinstance(info.get("exception"), (AuthenticationException, AuthorizationException)):
            raise info["exception"]
        failed.append((str(info.get("_id")), bulk_reason(info)))
    return indexed, failed


@contextmanager
def talking(url: str, doing: str) -> Iterator[None]:
    """Turn an unreachable or refusing cluster at ``url`` into one :class:`IndexUnavailableError`
    saying why, while ``doing`` something (words for the message)."""
    try:
        yield
    except ConnectionTimeout as exc:
        raise IndexUnavailableError(
            f"Elasticsearch at {url} did not answer in time while {doing}: {root_cause(exc)}"
        ) from exc
    except SSLError as exc:
        raise IndexUnavailableError(
            f"TLS with Elasticsearch at {url} failed while {doing}: {root_cause(exc)} "
            "(is FACESEARCH_ES_CA_CERT the cluster's CA?)"
        ) from exc
    except ConnectionError as exc:
        raise IndexUnavailableError(f"cannot reach Elasticsearch at {url} while {doing}: {root_cause(exc)}") from exc
    except AuthenticationException as exc:
        raise IndexUnavailableError(
            f"Elasticsearch at {url} rejected the credentials while {doing}: {error_reason(exc)} "
            "(check FACESEARCH_ES_API_KEY or FACESEARCH_ES_USER/FACESEARCH_ES_PASSWORD)"
        ) from exc
    except AuthorizationException as exc:
        raise IndexUnavailableError(
            f"the Elasticsearch credentials lack a privilege for {doing} at {url}: {error_reason(exc)}"
        ) from exc
    except UnsupportedProductError as exc:
        raise IndexUnavailableError(f"{url} is not a supported Elasticsearch server: {exc}") from exc
    except BadRequestError as exc:
        if error_type(exc) != "media_type_header_exception":
            raise
        raise IndexUnavailableError(
            f"Elasticsearch at {url} refused this client's API version while {doing}: "
            f"{error_reason(exc)} (install the elasticsearch-py major version that matches the server)"
        ) from exc
