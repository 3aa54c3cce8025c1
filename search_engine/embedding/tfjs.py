"""TensorFlow.js graph models (``model.json`` + weight shards) read into plain Python values.

This module is the one place that knows the format: the JSON topology is TensorFlow's ``GraphDef``
as protobuf's JSON mapping (attribute values wrapped as ``{"i": "1"}``, ``{"list": {"s": [...]}}``,
strings base64-encoded), and the weights are the shards of ``weightsManifest`` concatenated, each
weight's little-endian values following the previous one in manifest order.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelUnavailableError

_DTYPES = {"float32": "<f4", "int32": "<i4"}


@dataclass(frozen=True)
class Node:
    """One graph node: its op, the names of the nodes it reads (``name:1`` outputs and ``^name``
    control inputs as TensorFlow writes them), and its attributes decoded to Python values."""

    name: str
    op: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, object]


@dataclass(frozen=True)
class GraphModel:
    """A graph model's nodes in file order and its weights (the values of its ``Const`` nodes)."""

    nodes: tuple[Node, ...]
    weights: Mapping[str, np.ndarray]
    outputs: tuple[str, ...]


def read_graph_model(model_json: Path) -> GraphModel:
    """Read a TensorFlow.js graph model; its weight shards are looked for next to ``model_json``.

    Raises:
        ModelUnavailableError: a file is missing or unreadable, or is not a float32/int32 graph model.
    """
    try:
        spec = json.loads(Path(model_json).read_text())
        if spec.get("format") != "graph-model":
            raise ValueError(f"format is {spec.get('format')!r}, not 'graph-model'")
        nodes = tuple(
            Node(
                node["name"],
                node["op"],
                tuple(node.get("input", ())),
                {k: _attr(v) for k, v in node.get("attr", {}).items()},
            )
            for node in spec["modelTopology"]["node"]
        )
        weights: dict[str, np.ndarray] = {}
        for group in spec["weightsManifest"]:
            data = b"".join((Path(model_json).parent / path).read_bytes() for path in group["paths"])
            offset = 0
            for entry in group["weights"]:
                if "quantization" in entry or entry["dtype"] not in _DTYPES:
                    raise ValueError(
                        f"weight {entry['name']} is {entry['dtype']}{' quantized' if 'quantization' in entry else ''}"
                    )
                count = int(np.prod(entry["shape"], dtype=np.int64))
                values = np.frombuffer(data, _DTYPES[entry["dtype"]], count, offset)
                weights[entry["name"]] = values.astype(values.dtype.newbyteorder("=")).reshape(entry["shape"])
                offset += values.nbytes
            if offset != len(data):
                raise ValueError(f"shards {group['paths']} hold {len(data)} bytes, the manifest {offset}")
        signature = spec.get("userDefinedMetadata", {}).get("signature", {}).get("outputs", {})
        outputs = tuple(output["name"] for output in signature.values())
    except OSError as exc:
        raise ModelUnavailableError(f"cannot read TensorFlow.js model {model_json}: {exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelUnavailableError(f"{model_json} is not a readable TensorFlow.js graph model: {exc}") from exc
    return GraphModel(nodes, weights, outputs)


def _attr(value: Mapping[str, object]) -> object:
    """A protobuf-JSON ``AttrValue`` as a Python value: ints, floats, strings, bools or lists of them."""
    if "list" in value:
        items = value["list"]
        if "s" in items:
            return [base64.b64decode(s).decode() for s in items["s"]]
        if "i" in items:
            return [int(i) for i in items["i"]]
        if "f" in items:
            return [float(f) for f in items["f"]]
        return []
    if "s" in value:
        return base64.b64decode(value["s"]).decode()
    if "i" in value:
        return int(value["i"])
    if "f" in value:
        return float(value["f"])
    if "b" in value:
        return bool(value["b"])
    if "type" in value:
        return value["type"]
    if "shape" in value:
        return [int(dim.get("size", -1)) for dim in value["shape"].get("dim", ())]
    return value
