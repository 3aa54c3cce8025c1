"""Talking to Kibana: the two APIs ``facesearch init`` uses (status, saved-objects import), with
the Elasticsearch credentials, and what its import answers mean."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from search_engine.config import IndexSettings
from search_engine.errors import FaceSearchError

#: Seconds one Kibana request may take; an import of a few objects takes well under one.
KIBANA_REQUEST_TIMEOUT_S = 60.0
#: Answers that mean "not ready yet, ask again": Kibana says 503 until it has started.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


class KibanaError(FaceSearchError):
    """Kibana cannot be reached, refuses the credentials, or refuses some saved objects."""


class NotReady(Exception):
    """A transient answer: the service is starting or busy."""


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

    def __init__(self, url: str, settings: IndexSettings) -> None:
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
            raise NotReady(f"cannot reach Kibana at {self.url} while {doing}: {exc}") from exc
        body = response.data.decode("utf-8", "replace")
        if response.status in RETRY_STATUSES:
            raise NotReady(f"Kibana at {self.url} answered {response.status} while {doing}: {body[:200]}")
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
        """Return once ``/api/status`` says Kibana is available; raise ``NotReady`` until then."""
        status = self._request("GET", "/api/status", "checking its status", headers=self._headers)
        level = status.get("status", {}).get("overall", {}).get("level")
        if level != "available":
            raise NotReady(f"Kibana at {self.url} is {level or 'starting'}")

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
