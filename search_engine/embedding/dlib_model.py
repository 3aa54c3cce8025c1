"""dlib's face recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) run by torch.

dlib computes this network with im2col and a BLAS; torch's oneDNN convolutions compute the same
network about twice as fast on a CPU, from the same weights, to within float rounding (checked
against dlib itself in tests/test_models.py). So the vectors are dlib's: indexes built with dlib's
own code stay valid.

The ``.dat`` file is dlib's serialisation of ``anet_type`` from dlib's ``dnn_face_recognition_ex.cpp``:
a 7x7/2 convolution, a 3x3/2 max-pool, 14 residual blocks of two 3x3 convolutions each (each
convolution followed by a fixed per-channel affine), a global average and a 128x256 matrix. dlib
writes a layer's inner network before the layer itself, so the layer records come input first,
each starting with its version string. We read those records and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelUnavailableError

CHIP_SIZE = 150

#: (output channels, stride) of the residual blocks, input first: 3 x 32, then 64, 128 and 256
#: channels each entered by a stride-2 block, then a last stride-2 block of 256.
RESIDUAL_BLOCKS: tuple[tuple[int, int], ...] = (
    ((32, 1),) * 3
    + ((64, 2),)
    + ((64, 1),) * 3
    + ((128, 2),)
    + ((128, 1),) * 2
    + ((256, 2),)
    + ((256, 1),) * 2
    + ((256, 2),)
)

_RECORD = re.compile(rb"\x01\x15input_rgb_image_sized|\x01\x05con_4|\x01\x07affine_|\x01\x04fc_2")


@dataclass(frozen=True)
class Convolution:
    """A convolution with its following affine folded in: ``weight`` (out, in, k, k) and ``bias``
    (out,) float32, cross-correlation as in torch; ``padding`` pixels on every side."""

    weight: np.ndarray
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class ResNetWeights:
    """Everything the network needs: the mean RGB subtracted from 0-255 input pixels (which are
    then divided by 256, as dlib's ``input_rgb_image_sized`` does), the stem convolution, two
    convolutions per residual block, and the (128, 256) projection to the descriptor."""

    mean_rgb: tuple[float, float, float]
    stem: Convolution
    blocks: tuple[tuple[Convolution, Convolution], ...]
    projection: np.ndarray


class _Reader:
    """dlib's serialisation primitives (dlib/serialize.h, dlib/cuda/tensor.h) from a byte offset."""

    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def integer(self) -> int:
        # A header byte (low nibble: byte count, top bit: sign), then the magnitude, little-endian.
        header = self.data[self.offset]
        size = header & 0x0F
        value = int.from_bytes(self.data[self.offset + 1 : self.offset + 1 + size], "little")
        self.offset += 1 + size
        return -value if header & 0x80 else value

    def string(self) -> str:
        length = self.integer()
        text = self.data[self.offset : self.offset + length].decode("ascii")
        self.offset += length
        return text

    def real(self) -> float:
        mantissa = self.integer()
        return mantissa * 2.0 ** self.integer()

    def shape(self, version: int) -> tuple[int, ...]:
        if self.integer() != version:
            raise ValueError(f"unknown tensor format at byte {self.offset}")
        return tuple(self.integer() for _ in range(4))

    def tensor(self) -> np.ndarray:
        """A tensor's values, flat: its shape, then little-endian float32s."""
        count = int(np.prod(self.shape(2)))
        values = np.frombuffer(self.data, "<f4", count, self.offset).astype(np.float32)
        self.offset += 4 * count
        return values


def read_weights(path: Path) -> ResNetWeights:
    """The weights of dlib's face recognition ResNet from its ``.dat`` file.

    Raises:
        ModelUnavailableError: the file is missing, or is not that network.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelUnavailableError(f"cannot read dlib model file {path}: {exc}") from exc
    try:
        return _parse(data)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ModelUnavailableError(f"{path} is not dlib's face recognition ResNet v1: {exc}") from exc


def _parse(data: bytes) -> ResNetWeights:
    mean_rgb, convolutions, scales, projection = None, [], [], None
    for match in _RECORD.finditer(data):
        reader = _Reader(data, match.start())
        kind = reader.string()
        if kind == "input_rgb_image_sized":
            mean_rgb = (reader.real(), reader.real(), reader.real())
        elif kind == "con_4":
            params = reader.tensor()
            filters, rows, cols, stride, _, padding, _ = (reader.integer() for _ in range(7))
            convolutions.append((params, filters, rows, cols, stride, padding))
        elif kind == "affine_":
            params = reader.tensor()
            channels = int(np.prod(reader.shape(1)))
            scales.append((params[:channels], params[channels:]))
        else:
            outputs, inputs = reader.integer(), reader.integer()
            projection = reader.tensor().reshape(inputs, outputs).T.copy()
    expected = 1 + 2 * len(RESIDUAL_BLOCKS)
    if mean_rgb is None or projection is None or len(convolutions) != expected or len(scales) != expected:
        raise ValueError(f"found {len(convolutions)} convolutions and {len(scales)} affines, expected {expected}")
    folded, channels = [], 3
    for (params, filters, rows, cols, stride, padding), (gamma, beta) in zip(convolutions, scales):
        size = filters * channels * rows * cols
        if params.size != size + filters or gamma.size != filters:
            raise ValueError(f"convolution {len(folded)} has {params.size} parameters, expected {size + filters}")
        weight = params[:size].reshape(filters, channels, rows, cols) * gamma[:, None, None, None]
        folded.append(Convolution(weight, params[size:] * gamma + beta, stride, padding))
        channels = filters
    if projection.shape != (128, channels):
        raise ValueError(f"descriptor matrix is {projection.shape}, expected (128, {channels})")
    blocks = tuple(zip(folded[1::2], folded[2::2]))
    for (first, _), (width, stride) in zip(blocks, RESIDUAL_BLOCKS):
        if first.weight.shape[0] != width or first.stride != stride:
            raise ValueError("residual blocks differ from dlib's face recognition ResNet v1")
    return ResNetWeights(mean_rgb, folded[0], blocks, projection)


def build_network(weights: ResNetWeights):
    """The network as a frozen, inference-optimised TorchScript module.

    It takes (N, 150, 150, 3) uint8 RGB chips and returns (N, 128) float32 descriptors, not
    normalised (dlib's own descriptors have a length near 1.4).
    """
    import torch
    import torch.nn.functional as F
    from torch import nn

    def conv(spec: Convolution) -> nn.Conv2d:
        out_channels, in_channels, size, _ = spec.weight.shape
        layer = nn.Conv2d(in_channels, out_channels, size, spec.stride, spec.padding)
        layer.weight.data = torch.from_numpy(spec.weight)
        layer.bias.data = torch.from_numpy(spec.bias)
        return layer

    class Residual(nn.Module):
        """relu(block(x) + x). A stride-2 block adds to x average-pooled 2x2 instead; where the two
        differ in channels or size, dlib adds them as if zero-padded at the end, and so do we."""

        def __init__(self, first: Convolution, second: Convolution, in_size: int) -> None:
            super().__init__()
            self.first, self.second = conv(first), conv(second)
            self.down = first.stride == 2
            in_channels, out_channels = first.weight.shape[1], first.weight.shape[0]
            self.extra_channels = out_channels - in_channels
            block_size = (in_size + 2 * first.padding - first.weight.shape[2]) // first.stride + 1
            self.out_size = in_size // 2 if self.down else in_size
            self.extra_pixels = self.out_size - block_size

        def forward(self, x):
            y = self.second(F.relu(self.first(x)))
            if self.down:
                x = F.avg_pool2d(x, 2)
                # Padding copies out of oneDNN's layout and back: only where the shapes differ.
                if self.extra_channels:
                    x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
                if self.extra_pixels:
                    y = F.pad(y, (0, self.extra_pixels, 0, self.extra_pixels))
            return F.relu(x + y)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(weights.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
            self.stem = conv(weights.stem)
            size = ((CHIP_SIZE - weights.stem.weight.shape[2]) // weights.stem.stride + 1 - 3) // 2 + 1
            blocks = []
            for first, second in weights.blocks:
                blocks.append(Residual(first, second, size))
                size = blocks[-1].out_size
            self.blocks = nn.Sequential(*blocks)
            self.projection = nn.Linear(weights.projection.shape[1], 128, bias=False)
            self.projection.weight.data = torch.from_numpy(weights.projection)

        def forward(self, chips):
            x = (chips.permute(0, 3, 1, 2).float() - self.mean) / 256.0
            x = F.max_pool2d(F.relu(self.stem(x.contiguous(memory_format=torch.channels_last))), 3, 2)
            return self.projection(self.blocks(x).mean(dim=(2, 3)))

    example = torch.zeros((2, CHIP_SIZE, CHIP_SIZE, 3), dtype=torch.uint8)
    with torch.inference_mode():
        traced = torch.jit.trace(ResNet().eval(), example)
    return torch.jit.optimize_for_inference(torch.jit.freeze(traced))
