"""MTCNN's three-stage cascade (Zhang et al., 2016) over facenet-pytorch's trained P/R/O-Nets.

facenet-pytorch's own ``detect_face`` cuts and resizes each candidate box for the second and third
networks in a Python loop of small torch calls, which costs more than those networks themselves on
a CPU (about 15 of 35 ms per LFW photo). Here every box of a batch is cut and resized at once from
per-image integral images. The arithmetic is facenet-pytorch's: the same pyramid, the same area
resampling (each output pixel averages the whole source pixels PyTorch's ``area`` mode gives it),
the same thresholds, box regression, squaring, clipping and non-maximum suppression. So it finds
the same faces, with the same probabilities, boxes and landmarks up to float rounding
(tests/test_models.py compares the two).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Minimum network scores of the three stages, and the pyramid's scale step: facenet-pytorch's
#: defaults, which are the paper's.
THRESHOLDS = (0.6, 0.7, 0.7)
SCALE_FACTOR = 0.709

#: Images (P-Net) or crops (R-Net, O-Net) per forward pass. Small batches keep each layer's
#: activations in cache: on a 2-core EPYC, 8/64/16 run the three networks 2.5x, 2.4x and 2.1x
#: faster than batches of 32/256/32 (measured with torch 2.2's oneDNN). They also bound memory on
#: photos with thousands of candidates.
_CHUNKS = {"pnet": 8, "rnet": 64, "onet": 16}


@dataclass(frozen=True)
class Faces:
    """What the cascade found in one image, in no particular order.

    ``boxes``: (n, 4) float32 x1, y1, x2, y2 in pixels of the image given; ``probabilities``: (n,)
    float32; ``landmarks``: (n, 5, 2) float32 (x, y) of left eye, right eye, nose, left and right
    mouth corner.
    """

    boxes: np.ndarray
    probabilities: np.ndarray
    landmarks: np.ndarray


class Cascade:
    """The cascade over facenet-pytorch's ``PNet``, ``RNet`` and ``ONet`` (weights ship in the package).

    Args:
        device: torch device the three networks run on; boxes are handled on the CPU.
    """

    def __init__(self, device: str = "cpu") -> None:
        import torch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

        self.device = torch.device(device)

        def prepared(net, size: int):
            # Channels-last makes every conv output, and so MTCNN's many ceil-mode max-pools, take
            # torch's fast CPU kernels; freezing lets oneDNN run the convolutions (about 1.25x more).
            model = net().eval().to(self.device, memory_format=torch.channels_last)
            if self.device.type != "cpu":
                return model
            example = torch.zeros((2, 3, size, size)).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                traced = torch.jit.trace(model, example)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))

        self.pnet, self.rnet, self.onet = prepared(PNet, 48), prepared(RNet, 24), prepared(ONet, 48)

    def _run(self, name: str, pixels):
        """Network ``name``'s outputs, on the CPU, for (N, 3, h, w) float 0-255 pixels."""
        import torch

        net, chunk = getattr(self, name), _CHUNKS[name]
        outputs = [
            net(_standardise(pixels[start : start + chunk].to(self.device))) for start in range(0, len(pixels), chunk)
        ]
        return tuple(torch.cat(parts).cpu() for parts in zip(*outputs))

    def detect(self, images: np.ndarray, min_face: float) -> list[Faces]:
        """Faces in a batch of same-size images.

        Args:
            images: (B, H, W, 3) uint8 RGB.
            min_face: smallest face looked for, in pixels (MTCNN's ``minsize``; at least 12).
        """
        import torch
        from torchvision.ops import batched_nms

        batch, height, width = images.shape[:3]
        images = np.ascontiguousarray(images)
        points = torch.zeros((0, 5, 2))
        with torch.inference_mode():
            boxes, owners = self._propose(images, min_face, batched_nms)
            boxes = _square(_regress(boxes, boxes[:, 5:9], inclusive=False))
            boxes, owners = _inside(boxes, owners, width, height)
            if len(boxes):
                regression, scores = self._run_on_crops("rnet", images, boxes, owners, 24)
                keep = scores[:, 1] > THRESHOLDS[1]
                boxes = torch.cat([boxes[keep, :4], scores[keep, 1:2]], dim=1)
                owners, regression = owners[keep], regression[keep]
                pick = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
                boxes = _square(_regress(boxes[pick], regression[pick], inclusive=True))
                owners = owners[pick]
                boxes, owners = _inside(boxes, owners, width, height)
            if len(boxes):
                regression, landmarks, scores = self._run_on_crops("onet", images, boxes, owners, 48)
                keep = scores[:, 1] > THRESHOLDS[2]
                boxes = torch.cat([boxes[keep, :4], scores[keep, 1:2]], dim=1)
                owners, regression, landmarks = owners[keep], regression[keep], landmarks[keep]
                sizes = boxes[:, 2:4] - boxes[:, 0:2] + 1
                points = torch.stack(
                    [
                        sizes[:, None, 0] * landmarks[:, :5] + boxes[:, None, 0] - 1,
                        sizes[:, None, 1] * landmarks[:, 5:] + boxes[:, None, 1] - 1,
                    ],
                    dim=2,
                )
                boxes = _regress(boxes, regression, inclusive=True)
        boxes, owners, points = boxes.numpy(), owners.numpy(), points.numpy()
        pick = _nms_min(boxes, owners, 0.7)
        boxes, owners, points = boxes[pick], owners[pick], points[pick]
        return [
            Faces(boxes[owners == i, :4].copy(), boxes[owners == i, 4].copy(), points[owners == i].copy())
            for i in range(batch)
        ]

    def _run_on_crops(self, name: str, images: np.ndarray, boxes, owners, size: int):
        """Network ``name``'s outputs for each box's pixels (see :func:`_crops`), in the order of
        ``boxes``, which must all cover pixels of their image (see :func:`_inside`). ``images``
        are (B, H, W, 3) uint8."""
        import torch

        height, width = images.shape[1:3]
        # Summed-area tables in integers are exact; int32 holds 255 x H x W up to about 8.4 Mpixels.
        dtype = torch.int32 if 255 * height * width < 2**31 else torch.int64
        crops = torch.empty((len(boxes), 3, size, size))
        for owner in owners.unique():
            # One image's table at a time: a batch of large photos would not fit at once.
            pixels = torch.from_numpy(images[int(owner)])
            integral = torch.zeros((height + 1, width + 1, 3), dtype=dtype)
            integral[1:, 1:] = pixels.to(dtype).cumsum(0, dtype=dtype).cumsum(1, dtype=dtype)
            mine = owners == owner
            crops[mine] = _crops(integral, boxes[mine], width, height, size)
        return self._run(name, crops)

    def _propose(self, images: np.ndarray, min_face: float, batched_nms):
        """First stage: PNet over the image pyramid. (N, 9) candidates (x1, y1, x2, y2, score, 4
        regression offsets) and their image indexes, after per-scale and per-image suppression,
        in facenet-pytorch's order (which decides between boxes of equal score later on)."""
        import torch
        import torch.nn.functional as F

        height, width = images.shape[1:3]
        step = _CHUNKS["pnet"]
        # NCHW-contiguous float: PyTorch's area resampling is twice as fast so. Converted and
        # resampled a few images at a time, which keeps them in cache.
        chunks = [
            torch.from_numpy(images[first : first + step]).to(self.device).permute(0, 3, 1, 2).float().contiguous()
            for first in range(0, len(images), step)
        ]
        scale = 12.0 / min_face
        shortest = min(height, width) * scale
        found, owners = [], []
        while shortest >= 12:
            size = (int(height * scale + 1), int(width * scale + 1))
            outputs = [self._run("pnet", F.interpolate(chunk, size=size, mode="area")) for chunk in chunks]
            regression, probabilities = (torch.cat(parts) for parts in zip(*outputs))
            mask = probabilities[:, 1] >= THRESHOLDS[0]
            where = mask.nonzero()
            cells = where[:, 1:].flip(1).float()
            boxes = torch.cat(
                [
                    ((2 * cells + 1) / scale).floor(),
                    ((2 * cells + 12) / scale).floor(),
                    probabilities[:, 1][mask].unsqueeze(1),
                    regression.permute(0, 2, 3, 1)[mask],
                ],
                dim=1,
            )
            pick = batched_nms(boxes[:, :4], boxes[:, 4], where[:, 0], 0.5)
            found.append(boxes[pick])
            owners.append(where[pick, 0])
            scale *= SCALE_FACTOR
            shortest *= SCALE_FACTOR
        if not found:
            return torch.zeros((0, 9)), torch.zeros((0,), dtype=torch.long)
        boxes, owners = torch.cat(found), torch.cat(owners)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
        return boxes[pick], owners[pick]


def _standardise(pixels):
    """0-255 pixels to MTCNN's input range, channels-last."""
    import torch

    return ((pixels - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)


def _regress(boxes, offsets, inclusive: bool):
    """Boxes (x1, y1, x2, y2, score) moved by offsets in units of their size; the later stages
    count sizes inclusively (x2 - x1 + 1), the first does not (facenet-pytorch's conventions)."""
    import torch

    extra = 1 if inclusive else 0
    sizes = (boxes[:, 2:4] - boxes[:, 0:2] + extra).repeat(1, 2)
    return torch.cat([boxes[:, :4] + offsets[:, :4] * sizes, boxes[:, 4:5]], dim=1)


def _square(boxes):
    """Each box grown to a square on its longer side, about the same centre."""
    sizes = boxes[:, 2:4] - boxes[:, 0:2]
    longest = sizes.max(dim=1).values
    squared = boxes.clone()
    squared[:, 0:2] = boxes[:, 0:2] + sizes * 0.5 - longest[:, None] * 0.5
    squared[:, 2:4] = squared[:, 0:2] + longest[:, None]
    return squared


def _pixels(boxes, width: int, height: int):
    """The pixel span each box covers once clipped to its image: x0, y0 inclusive, x1, y1 exclusive
    (facenet-pytorch's ``pad``, which truncates the box's corners)."""
    corners = boxes[:, :4].trunc().long()
    x0 = corners[:, 0].clamp(min=1) - 1
    y0 = corners[:, 1].clamp(min=1) - 1
    return x0, y0, corners[:, 2].clamp(max=width), corners[:, 3].clamp(max=height)


def _inside(boxes, owners, width: int, height: int):
    """The boxes that cover pixels of their image, and their owners, in the same order.

    (facenet-pytorch skips the crop of a box outside its image but keeps the box, which puts the
    later boxes' scores on the wrong boxes.)"""
    x0, y0, x1, y1 = _pixels(boxes, width, height)
    inside = (x1 > x0) & (y1 > y0)
    return boxes[inside], owners[inside]


def _crops(integral, boxes, width: int, height: int, size: int):
    """Each box's pixels, clipped to the image, area-resampled to (N, 3, size, size) float32.

    ``integral`` is the image's (H+1, W+1, 3) summed-area table. Output pixel i along an axis of n
    source pixels averages source pixels floor(i*n/size) to ceil((i+1)*n/size) - 1, PyTorch's
    ``area`` rule.
    """
    import torch

    x0, y0, x1, y1 = _pixels(boxes, width, height)
    steps = torch.arange(size)

    def edges(start, stop):
        span = (stop - start)[:, None]
        return start[:, None] + steps * span // size, start[:, None] - (-(steps + 1) * span) // size

    top, bottom = edges(y0, y1)
    left, right = edges(x0, x1)
    # All four corners of every output pixel's window in one gather from the flattened table.
    rows = torch.cat([top, bottom], dim=1)[:, :, None]
    cols = torch.cat([left, right], dim=1)[:, None, :]
    flat = integral.reshape(-1, 3).index_select(0, (rows * (width + 1) + cols).reshape(-1))
    corners = flat.reshape(len(boxes), 2 * size, 2 * size, 3)
    low, high = slice(0, size), slice(size, 2 * size)
    total = corners[:, high, high] - corners[:, low, high] - corners[:, high, low] + corners[:, low, low]
    area = (bottom - top)[:, :, None] * (right - left)[:, None, :]
    return (total.double() / area[..., None]).float().permute(0, 3, 1, 2)


def _nms_min(boxes: np.ndarray, owners: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy suppression within each image where overlap is intersection over the smaller box's
    area (MTCNN's last step; torchvision only has IoU). Boxes are (N, 5) with the score last.

    Done as facenet-pytorch does it, boxes of all images at once, shifted apart so that images
    never overlap, and sorted with numpy's default sort: boxes of equal score (O-Net gives many a
    score of exactly 1.0) are then decided the same way.
    """
    if not len(boxes):
        return np.zeros((0,), dtype=np.int64)
    shifted = boxes[:, :4] + (owners.astype(np.float32) * (boxes[:, :4].max() + 1))[:, None]
    x1, y1, x2, y2 = shifted.T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(boxes[:, 4])
    keep = []
    while order.size:
        best, rest = order[-1], order[:-1]
        keep.append(best)
        overlap_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        overlap_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        overlap = overlap_w * overlap_h / np.minimum(area[best], area[rest])
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)
