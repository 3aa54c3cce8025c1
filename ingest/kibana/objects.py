"""Kibana saved objects for one embedding model's indices: plain data, no client.

:func:`saved_objects` returns, for the aliases in an :class:`~search_engine.index.mapping.IndexNames`:

- a data view on the faces alias whose runtime field ``thumbnail`` (the face id) is shown as an
  image fetched from the web app's ``GET /api/v1/faces/<face_id>/thumbnail``, so Discover shows
  the faces themselves; the stored embedding is hidden from Discover;
- a data view on the sources alias (one document per ingested file);
- four Lens charts: faces per person (top 50), faces per video, the detection probability
  histogram and faces indexed over time;
- a saved search of the files that failed, with their errors;
- a dashboard holding all five.

The objects are written in the export format of Kibana 8.x (each carries the migration version of
its format); Kibana migrates them on import, and its import API accepts objects from the same or
the previous major version, so one file serves Kibana 8.x and 9.x. Every id is derived from the
alias names, so importing again with ``overwrite=true`` updates the objects instead of copying them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from search_engine.index.mapping import EMBEDDING_FIELD, IndexNames
from search_engine.types import Status

#: Runtime field of the faces data view; its value is the face id.
THUMBNAIL_FIELD = "thumbnail"

#: Where the web app serves a face's JPEG crop; Kibana fills ``{{value}}`` with the URL-encoded face id.
#: (The web layer is not imported here; tests/web checks that the app routes this path.)
THUMBNAIL_PATH = "/api/v1/faces/{{value}}/thumbnail"

#: Lens's name for "count documents" rather than a field.
RECORDS = "___records___"

# Migration versions of the formats these objects are written in (Kibana 8.x exports).
_CORE_MIGRATION_VERSION = "8.8.0"
_TYPE_MIGRATION_VERSION = {
    "index-pattern": "8.0.0",
    "lens": "8.9.0",
    "search": "7.9.3",
    "dashboard": "8.7.0",
}
_PANEL_VERSION = "8.9.0"

_EMPTY_QUERY = {"query": "", "language": "kuery"}


def thumbnail_url_template(web_url: str) -> str:
    """Kibana URL-format template of a face's thumbnail under ``web_url`` (trailing slashes ignored)."""
    return web_url.rstrip("/") + THUMBNAIL_PATH


def _saved_object(
    kind: str, object_id: str, attributes: dict[str, Any], references: Sequence[dict[str, str]]
) -> dict[str, Any]:
    return {
        "type": kind,
        "id": object_id,
        "attributes": attributes,
        "references": list(references),
        "managed": False,
        "coreMigrationVersion": _CORE_MIGRATION_VERSION,
        "typeMigrationVersion": _TYPE_MIGRATION_VERSION[kind],
    }


def _reference(kind: str, object_id: str, name: str) -> dict[str, str]:
    return {"type": kind, "id": object_id, "name": name}


def faces_data_view(names: IndexNames, web_url: str) -> dict[str, Any]:
    """Data view on the faces alias, time field ``indexed_at``, with the ``thumbnail`` image field."""
    runtime_fields = {
        THUMBNAIL_FIELD: {
            "type": "keyword",
            # Every stored face has a face_id; the guard keeps a hand-written document from failing the search.
            "script": {"source": "if (doc['face_id'].size() > 0) { emit(doc['face_id'].value); }"},
        }
    }
    formats = {
        THUMBNAIL_FIELD: {
            "id": "url",
            "params": {
                "type": "img",
                "urlTemplate": thumbnail_url_template(web_url),
                "labelTemplate": "face {{rawValue}}",
                "width": 96,
                "height": 96,
            },
        }
    }
    attributes = {
        "title": names.faces_alias,
        "name": f"facesearch faces ({names.faces_alias})",
        "timeFieldName": "indexed_at",
        "fields": "[]",
        "runtimeFieldMap": json.dumps(runtime_fields, sort_keys=True),
        "fieldFormatMap": json.dumps(formats, sort_keys=True),
        # Hundreds of vector components per row would bury everything else in Discover.
        "sourceFilters": json.dumps([{"value": EMBEDDING_FIELD}]),
        "typeMeta": "{}",
    }
    return _saved_object("index-pattern", names.faces_alias, attributes, [])


def sources_data_view(names: IndexNames) -> dict[str, Any]:
    """Data view on the sources alias: one document per ingested file, no time field."""
    attributes = {
        "title": names.sources_alias,
        "name": f"facesearch files ({names.sources_alias})",
        "fields": "[]",
        "runtimeFieldMap": "{}",
        "fieldFormatMap": "{}",
        "typeMeta": "{}",
    }
    return _saved_object("index-pattern", names.sources_alias, attributes, [])


def _count_column() -> dict[str, Any]:
    return {
        "label": "Faces",
        "customLabel": True,
        "dataType": "number",
        "operationType": "count",
        "sourceField": RECORDS,
        "isBucketed": False,
        "scale": "ratio",
        "params": {"emptyAsNull": False},
    }


def _lens_bars(
    object_id: str,
    title: str,
    view_id: str,
    bucket: dict[str, Any],
    series_type: str,
    description: str,
) -> dict[str, Any]:
    """A one-layer Lens XY chart: ``bucket`` on the x axis, the face count on the y axis."""
    layer, x, y = "faces", "bucket", "count"
    attributes = {
        "title": title,
        "description": description,
        "visualizationType": "lnsXY",
        "state": {
            "datasourceStates": {
                "formBased": {
                    "layers": {
                        layer: {
                            "columnOrder": [x, y],
                            "columns": {x: bucket, y: _count_column()},
                            "incompleteColumns": {},
                        }
                    }
                }
            },
            "visualization": {
                "preferredSeriesType": series_type,
                "legend": {"isVisible": False, "position": "right"},
                "valueLabels": "hide",
                "fittingFunction": "None",
                "layers": [
                    {
                        "layerId": layer,
                        "layerType": "data",
                        "seriesType": series_type,
                        "xAccessor": x,
                        "accessors": [y],
                    }
                ],
            },
            "query": dict(_EMPTY_QUERY),
            "filters": [],
            "internalReferences": [],
            "adHocDataViews": {},
        },
    }
    references = [_reference("index-pattern", view_id, f"indexpattern-datasource-layer-{layer}")]
    return _saved_object("lens", object_id, attributes, references)


def _bucket_column(
    label: str, data_type: str, operation: str, field: str, scale: str, params: dict[str, Any]
) -> dict[str, Any]:
    """A Lens column that splits the faces into buckets of ``field`` (the x axis)."""
    return {
        "label": label,
        "customLabel": True,
        "dataType": data_type,
        "operationType": operation,
        "sourceField": field,
        "isBucketed": True,
        "scale": scale,
        "params": params,
    }


def faces_per_term(names: IndexNames, field: str, label: str, size: int) -> dict[str, Any]:
    """Horizontal bars: the ``size`` values of ``field`` with the most faces."""
    return _lens_bars(
        f"{names.faces_alias}-faces-per-{field}",
        f"Faces per {label.lower()} (top {size})",
        names.faces_alias,
        _bucket_column(
            label,
            "string",
            "terms",
            field,
            "ordinal",
            {
                "size": size,
                "orderBy": {"type": "column", "columnId": "count"},
                "orderDirection": "desc",
                "otherBucket": False,
                "missingBucket": False,
            },
        ),
        "bar_horizontal",
        f"The {size} {label.lower()} values with the most indexed faces.",
    )


def probability_histogram(names: IndexNames) -> dict[str, Any]:
    """Bars of MTCNN detection probability (faces below ``FACESEARCH_MIN_PROBABILITY`` are never stored)."""
    histogram = {"type": "histogram", "maxBars": "auto", "ranges": [{"from": 0, "to": 1, "label": ""}]}
    return _lens_bars(
        f"{names.faces_alias}-probability",
        "Detection probability",
        names.faces_alias,
        _bucket_column("Detection probability", "number", "range", "probability", "interval", histogram),
        "bar",
        "How sure the detector was of the stored faces.",
    )


def faces_over_time(names: IndexNames) -> dict[str, Any]:
    """Faces indexed per time interval (``indexed_at``)."""
    interval = {"interval": "auto", "includeEmptyRows": True, "dropPartials": False}
    return _lens_bars(
        f"{names.faces_alias}-indexed-over-time",
        "Faces indexed over time",
        names.faces_alias,
        _bucket_column("Indexed at", "date", "date_histogram", "indexed_at", "interval", interval),
        "bar_stacked",
        "Ingest progress: faces stored per interval.",
    )


def failed_files_search(names: IndexNames) -> dict[str, Any]:
    """Saved search of the files whose ingest failed: ``source``, ``status`` and ``error``."""
    search_source = {
        "query": {"query": f'status : "{Status.FAILED.value}"', "language": "kuery"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    attributes = {
        "title": "Failed files",
        "description": "Files that could not be indexed, with the reason.",
        "columns": ["source", "status", "error"],
        "sort": [["source", "asc"]],
        "hits": 0,
        "version": 1,
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search_source, sort_keys=True)},
    }
    references = [_reference("index-pattern", names.sources_alias, "kibanaSavedObjectMeta.searchSourceJSON.index")]
    return _saved_object("search", f"{names.sources_alias}-failed", attributes, references)


def dashboard(
    object_id: str, title: str, panels: Sequence[tuple[Mapping[str, Any], Mapping[str, int]]]
) -> dict[str, Any]:
    """A dashboard of saved objects by reference; each panel is (object, grid position ``x y w h``)."""
    panel_specs = []
    references = []
    for number, (item, grid) in enumerate(panels, 1):
        index = str(number)
        panel_specs.append(
            {
                "version": _PANEL_VERSION,
                "type": item["type"],
                "gridData": {**grid, "i": index},
                "panelIndex": index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{index}",
            }
        )
        references.append(_reference(item["type"], item["id"], f"{index}:panel_{index}"))
    attributes = {
        "title": title,
        "description": "Who was indexed, from which videos, how confidently and when; and the files that failed.",
        "panelsJSON": json.dumps(panel_specs, sort_keys=True),
        "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "hidePanelTitles": False}, sort_keys=True),
        "timeRestore": True,
        "timeFrom": "now-1y",
        "timeTo": "now",
        "refreshInterval": {"pause": True, "value": 60000},
        "version": 1,
        "kibanaSavedObjectMeta": {
            "searchSourceJSON": json.dumps({"query": _EMPTY_QUERY, "filter": []}, sort_keys=True)
        },
    }
    return _saved_object("dashboard", object_id, attributes, references)


def saved_objects(names: IndexNames, web_url: str) -> list[dict[str, Any]]:
    """Every saved object for one model's indices, each referenced object before its referrers."""
    people = faces_per_term(names, "person", "Person", 50)
    videos = faces_per_term(names, "video", "Video", 20)
    probability = probability_histogram(names)
    over_time = faces_over_time(names)
    failed = failed_files_search(names)
    board = dashboard(
        f"{names.faces_alias}-overview",
        f"facesearch: {names.faces_alias}",
        [
            (people, {"x": 0, "y": 0, "w": 24, "h": 18}),
            (videos, {"x": 24, "y": 0, "w": 24, "h": 18}),
            (probability, {"x": 0, "y": 18, "w": 24, "h": 12}),
            (over_time, {"x": 24, "y": 18, "w": 24, "h": 12}),
            (failed, {"x": 0, "y": 30, "w": 48, "h": 15}),
        ],
    )
    views = [faces_data_view(names, web_url), sources_data_view(names)]
    return views + [people, videos, probability, over_time, failed, board]


def to_ndjson(objects: Iterable[Mapping[str, Any]]) -> str:
    """The objects as Kibana's import file: one compact JSON object per line, keys sorted."""
    return "".join(json.dumps(item, sort_keys=True, separators=(",", ":")) + "\n" for item in objects)
