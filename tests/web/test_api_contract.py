"""The API against its own OpenAPI document: schemathesis, as a black box, against ``facesearch
serve`` on a copy of the session's library grouped into people (its calls change people), with
API keys on. A bounded run; ``bench/api_contract.py`` runs longer ones."""

from __future__ import annotations

import pytest
import requests

from harness import SCHEMATHESIS_CONFIG_WITHOUT_KEY, api_contract_run, running_server
from web.api import OPENAPI_PATH

from .test_people_pages import grouped_copy

KEY = "contract-test-key"


@pytest.fixture(scope="module")
def keyed_server(library, tmp_path_factory, detector, dlib_embedder, resnet50_weights):
    base = tmp_path_factory.mktemp("contract")
    copy = grouped_copy(library, base / "data", detector, dlib_embedder)
    env = {
        "FACESEARCH_EMBEDDER": "dlib",
        "FACESEARCH_DATA_DIR": str(copy.data_dir),
        "FACESEARCH_MEDIA_ROOTS": str(copy.root),
        "FACESEARCH_API_KEYS": KEY,
        # Similar-photo search on, so that POST /similar is exercised, not only its 503.
        "FACESEARCH_IMAGE_SEARCH": "1",
        "FACESEARCH_RESNET50_WEIGHTS": str(resnet50_weights),
    }
    headers = {"X-API-Key": KEY}
    with running_server(["--workers", "1", "--threads", "2"], env, base / "serve.log", headers=headers) as url:
        yield url, base


def test_every_operation_answers_as_its_schema_says(keyed_server):
    url, base = keyed_server
    report = api_contract_run(url, base / "with-key", examples=5, headers={"X-API-Key": KEY})
    assert report["operations"]["tested"] == report["operations"]["total"] > 10
    assert report["test_cases"]["generated"] > 100 and not report["errors"]
    assert report["failures"] == [], "\n\n".join(report["failure_texts"])


def test_without_the_key_every_operation_is_refused_as_its_schema_says(keyed_server):
    url, base = keyed_server
    report = api_contract_run(
        url, base / "without-key", examples=2, schema=OPENAPI_PATH, config=SCHEMATHESIS_CONFIG_WITHOUT_KEY
    )
    assert report["operations"]["tested"] == report["operations"]["total"]
    assert report["failures"] == [], "\n\n".join(report["failure_texts"])


def test_the_key_is_never_in_the_servers_log(keyed_server):
    """After both contract runs (the key in every request's header, and in cookies and queries of
    the runs' own), the server's output holds requests' traces but never the key."""
    url, base = keyed_server
    requests.get(f"{url}/?key={KEY}", allow_redirects=False, timeout=30)
    requests.get(f"{url}/api/v1/no-such-route", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    log = (base / "serve.log").read_text()
    assert "Booting worker" in log and KEY not in log
