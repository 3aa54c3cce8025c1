"""Kibana saved objects (``facesearch kibana-export``, imported by ``facesearch init``): every field
they name exists in the Elasticsearch mappings, every reference resolves inside the file. Also the
parts of ``init`` that need no server: the import answer, the retry loop, clear errors."""

from __future__ import annotations

import json
import re
import socket

import pytest

from facesearch.cli import EXIT_ERROR, main
from ingest.kibana.client import KibanaClient, import_failures
from ingest.kibana.objects import RECORDS, THUMBNAIL_FIELD, saved_objects, thumbnail_url_template, to_ndjson
from ingest.stack import retry
from search_engine.config import Settings
from search_engine.embedding.dlib_resnet import DlibEmbedder
from search_engine.embedding.facenet import FacenetEmbedder
from search_engine.index.mapping import faces_mapping, index_names, sources_mapping
from search_engine.types import Status

MODELS = [FacenetEmbedder.info, DlibEmbedder.info]


def mapped_fields(mapping: dict, prefix: str = "") -> set[str]:
    """Dotted names of every field a mapping defines (``box.x1``...)."""
    fields = set()
    for name, spec in mapping.get("properties", {}).items():
        fields.add(prefix + name)
        fields |= mapped_fields(spec, f"{prefix}{name}.")
    return fields


def export(capsys, *args: str) -> list[dict]:
    assert main(["kibana-export", *args]) == 0
    text = capsys.readouterr().out
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(params=MODELS, ids=lambda model: model.key)
def model(request):
    return request.param


@pytest.fixture
def objects(model) -> list[dict]:
    return saved_objects(index_names("facesearch", model), "https://faces.example.org/")


def by_key(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(item["type"], item["id"]): item for item in objects}


def view_fields(objects: list[dict], model) -> dict[str, set[str]]:
    """Per data view id: the mapped fields of the index it covers plus its runtime fields."""
    names = index_names("facesearch", model)
    mappings = {names.faces_alias: faces_mapping(model.dim), names.sources_alias: sources_mapping()}
    fields = {}
    for item in objects:
        if item["type"] == "index-pattern":
            attributes = item["attributes"]
            runtime = json.loads(attributes["runtimeFieldMap"])
            fields[item["id"]] = mapped_fields(mappings[attributes["title"]]) | set(runtime)
    return fields


def test_export_prints_the_generators_ndjson(capsys):
    printed = export(capsys, "--embedder", "dlib", "--web-url", "https://faces.example.org")
    names = index_names("facesearch", DlibEmbedder.info)
    generated = to_ndjson(saved_objects(names, "https://faces.example.org"))
    assert to_ndjson(printed) == generated


def test_every_object_is_well_formed_and_unique(objects):
    assert len(by_key(objects)) == len(objects)
    for item in objects:
        assert set(item) >= {"type", "id", "attributes", "references", "coreMigrationVersion", "typeMigrationVersion"}
        assert item["attributes"]["title"]
    assert sorted(item["type"] for item in objects) == sorted(
        ["index-pattern", "index-pattern", "lens", "lens", "lens", "lens", "search", "dashboard"]
    )


def test_data_views_cover_the_aliases(objects, model):
    names = index_names("facesearch", model)
    views = {item["id"]: item["attributes"] for item in objects if item["type"] == "index-pattern"}
    assert {view["title"] for view in views.values()} == {names.faces_alias, names.sources_alias}
    faces = views[names.faces_alias]
    assert faces["timeFieldName"] == "indexed_at"
    assert json.loads(faces["sourceFilters"]) == [{"value": "embedding"}]


def test_thumbnail_field_shows_the_web_apps_face_crop(objects, model):
    faces = by_key(objects)[("index-pattern", index_names("facesearch", model).faces_alias)]["attributes"]
    runtime = json.loads(faces["runtimeFieldMap"])[THUMBNAIL_FIELD]
    assert runtime["type"] == "keyword" and "emit(doc['face_id'].value)" in runtime["script"]["source"]
    url_format = json.loads(faces["fieldFormatMap"])[THUMBNAIL_FIELD]
    assert url_format["id"] == "url" and url_format["params"]["type"] == "img"
    assert url_format["params"]["urlTemplate"] == "https://faces.example.org/api/v1/faces/{{value}}/thumbnail"
    assert thumbnail_url_template("http://localhost:8000/") == "http://localhost:8000/api/v1/faces/{{value}}/thumbnail"


def test_every_field_named_exists_in_the_mappings(objects, model):
    fields = view_fields(objects, model)
    views = by_key(objects)
    checked = 0
    for item in objects:
        attributes = item["attributes"]
        refs = {ref["name"]: ref["id"] for ref in item["references"]}
        if item["type"] == "index-pattern":
            own = fields[item["id"]]
            named = {attributes.get("timeFieldName")} - {None}
            named |= set(json.loads(attributes["fieldFormatMap"]))
            named |= {f["value"] for f in json.loads(attributes.get("sourceFilters", "[]"))}
            for runtime in json.loads(attributes["runtimeFieldMap"]).values():
                named |= set(re.findall(r"doc\['([\w.]+)'\]", runtime["script"]["source"]))
            assert named <= own, named - own
            checked += len(named)
        elif item["type"] == "lens":
            for layer_id, layer in attributes["state"]["datasourceStates"]["formBased"]["layers"].items():
                view = refs[f"indexpattern-datasource-layer-{layer_id}"]
                for column in layer["columns"].values():
                    if column["sourceField"] != RECORDS:
                        assert column["sourceField"] in fields[view], (item["id"], column["sourceField"])
                        checked += 1
        elif item["type"] == "search":
            source = json.loads(attributes["kibanaSavedObjectMeta"]["searchSourceJSON"])
            view = refs[source["indexRefName"]]
            named = set(attributes["columns"]) | {field for field, _ in attributes["sort"]}
            named |= set(re.findall(r"([\w.]+)\s*:", source["query"]["query"]))
            assert named <= fields[view], named - fields[view]
            checked += len(named)
    assert checked >= 10
    assert ("index-pattern", index_names("facesearch", model).sources_alias) in views


def test_dashboard_panels_and_visualisations_reference_objects_in_the_file(objects):
    present = by_key(objects)
    for item in objects:
        for ref in item["references"]:
            assert (ref["type"], ref["id"]) in present, (item["id"], ref)
    (board,) = [item for item in objects if item["type"] == "dashboard"]
    panels = json.loads(board["attributes"]["panelsJSON"])
    refs = {ref["name"]: ref for ref in board["references"]}
    assert len(panels) == 5 and len(refs) == 5
    for panel in panels:
        ref = refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]
    assert {ref["type"] for ref in refs.values()} == {"lens", "search"}
    for item in objects:
        if item["type"] == "lens":
            layers = item["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
            layer_refs = {ref["name"] for ref in item["references"] if ref["type"] == "index-pattern"}
            assert layer_refs == {f"indexpattern-datasource-layer-{layer}" for layer in layers}


def test_dashboard_shows_the_asked_for_panels(objects):
    lenses = {item["attributes"]["title"]: item for item in objects if item["type"] == "lens"}
    assert set(lenses) == {
        "Faces per person (top 50)",
        "Faces per video (top 20)",
        "Detection probability",
        "Faces indexed over time",
    }
    person = lenses["Faces per person (top 50)"]["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    (layer,) = person.values()
    terms = [c for c in layer["columns"].values() if c["operationType"] == "terms"]
    assert terms[0]["sourceField"] == "person" and terms[0]["params"]["size"] == 50
    (failed,) = [item for item in objects if item["type"] == "search"]
    source = json.loads(failed["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert source["query"]["query"] == f'status : "{Status.FAILED.value}"'
    assert failed["attributes"]["columns"] == ["source", "status", "error"]


def test_ids_follow_the_index_prefix(model):
    objects = saved_objects(index_names("Photos-2026", model), "http://localhost:8000")
    assert all(item["id"].startswith("photos-2026-") for item in objects)


def test_import_failures_name_each_refused_object():
    assert import_failures({"success": True, "successCount": 8}) == []
    answer = {
        "success": False,
        "successCount": 6,
        "errors": [
            {
                "id": "d1",
                "type": "dashboard",
                "title": "facesearch",
                "error": {"type": "missing_references", "references": [{"type": "lens", "id": "l9"}]},
            },
            {"id": "v1", "type": "lens", "title": "People", "error": {"type": "unknown", "message": "bad state"}},
        ],
    }
    lines = import_failures(answer)
    assert lines[0] == "dashboard d1 (facesearch) missing_references: refers to lens l9, which Kibana does not have"
    assert lines[1] == "lens v1 (People) unknown: bad state"
    assert import_failures({"success": False}) != []


class Clock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def connection_trouble(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError)


def test_retry_waits_out_transient_errors_then_returns():
    clock = Clock()
    attempts = []

    def flaky():
        attempts.append(clock.now)
        if len(attempts) < 3:
            raise ConnectionError("starting")
        return "ready"

    assert (
        retry(flaky, "service", connection_trouble, timeout_s=60, interval_s=5, sleep=clock.sleep, clock=clock)
        == "ready"
    )
    assert clock.sleeps == [5, 5]


def test_retry_gives_up_after_the_timeout_and_never_retries_other_errors():
    clock = Clock()

    def down():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        retry(down, "service", lambda exc: True, timeout_s=12, interval_s=5, sleep=clock.sleep, clock=clock)
    assert clock.sleeps == [5, 5, 2]

    calls = []

    def broken():
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        retry(broken, "service", connection_trouble, timeout_s=60, sleep=clock.sleep, clock=clock)
    assert calls == [1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_init_without_elasticsearch_url_says_so(capsys):
    assert main(["init", "--embedder", "dlib"]) == EXIT_ERROR
    assert "set FACESEARCH_ES_URL" in capsys.readouterr().err


def test_init_names_an_unreachable_cluster(capsys):
    url = f"http://127.0.0.1:{closed_port()}"
    assert main(["init", "--embedder", "dlib", "--es-url", url, "--timeout", "0"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"cannot reach Elasticsearch at {url}" in err and "gave up after 0 s" in err


def test_kibana_client_reports_an_unreachable_kibana():
    url = f"http://127.0.0.1:{closed_port()}"
    client = KibanaClient(
        url, Settings.from_env({"FACESEARCH_ES_USER": "elastic", "FACESEARCH_ES_PASSWORD": "pw"}).index
    )
    with pytest.raises(Exception, match=f"cannot reach Kibana at {re.escape(url)}"):
        client.wait_available()
    client.close()
