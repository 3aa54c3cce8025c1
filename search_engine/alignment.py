"""Face alignment: a 5-point similarity transform of MTCNN's landmarks onto a model's template.

Every embedder that works on aligned chips (dlib's, MobileFaceNet's) cuts them here, so the
landmark order, the transform and the anti-aliasing rule are stated once.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

#: Below this scale (chip pixels per source pixel) the face is shrunk with area averaging first,
#: as a bilinear warp alone would alias.
_MIN_WARP_SCALE = 0.5


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation mapping ``src`` points onto ``dst`` with the
    least squared error (Umeyama, 1991). Both are (N, 2) arrays of (x, y)."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    u, s, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    d = np.diag([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / (src_c**2).sum() * len(src)
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def align(
    image: np.ndarray,
    landmarks: Sequence[tuple[float, float]],
    template: np.ndarray,
    size: int,
    border: int = cv2.BORDER_REPLICATE,
) -> np.ndarray:
    """A (size, size, 3) uint8 RGB chip of a face.

    Args:
        image: (H, W, 3) uint8 RGB.
        landmarks: the face's 5 MTCNN points in source pixels (left eye, right eye, nose, left and
            right mouth corner).
        template: (5, 2) where those points go in the chip, chip pixels, same order.
        size: the chip's width and height in pixels.
        border: OpenCV border mode for chip pixels outside the image (``BORDER_CONSTANT`` is black).
    """
    points = np.asarray(landmarks, dtype=np.float64)
    matrix = similarity_transform(points, template)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < _MIN_WARP_SCALE:
        image, points = _shrink_around(image, matrix, points, size, scale / _MIN_WARP_SCALE)
        matrix = similarity_transform(points, template)
    chip = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border)
    return np.ascontiguousarray(chip)


def _shrink_around(image: np.ndarray, matrix: np.ndarray, points: np.ndarray, size: int, factor: float):
    """The region the chip covers, scaled by ``factor`` with area averaging, and the points in it."""
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float)
    footprint = corners @ inverse.T
    height, width = image.shape[:2]
    x0, y0 = np.clip(np.floor(footprint.min(axis=0)).astype(int) - 2, 0, [width - 1, height - 1])
    x1, y1 = np.clip(
        np.ceil(footprint.max(axis=0)).astype(int) + 2,
        [x0 + 1, y0 + 1],
        [width, height],
    )
    region = image[y0:y1, x0:x1]
    shape = (
        max(1, round(region.shape[1] * factor)),
        max(1, round(region.shape[0] * factor)),
    )
    small = cv2.resize(region, shape, interpolation=cv2.INTER_AREA)
    scale_xy = np.array([shape[0] / region.shape[1], shape[1] / region.shape[0]])
    return small, (points - [x0, y0]) * scale_xy
