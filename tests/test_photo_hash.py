"""Perceptual hashes: real hashes of packaged photos and their edited copies, and the grouping."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from search_engine.photo_hash import (
    DEFAULT_MAX_DISTANCE,
    HASH_BITS,
    distances,
    near_duplicate_groups,
    near_pairs,
    photo_hash,
)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def test_copies_of_a_photo_are_near_and_other_photos_far(astronaut, cameraman):
    height, width = astronaut.shape[:2]
    copies = [
        cv2.resize(astronaut, (width // 3, height // 3), interpolation=cv2.INTER_AREA),
        jpeg(astronaut, 30),
        np.ascontiguousarray(astronaut[5:-5, 5:-5]),
        cv2.convertScaleAbs(astronaut, alpha=1.0, beta=30),
    ]
    others = [cameraman, data.coffee(), data.chelsea(), np.ascontiguousarray(astronaut[:, ::-1])]
    original = photo_hash(astronaut)
    assert len(original) == HASH_BITS // 4 and int(original, 16) >= 0
    assert photo_hash(astronaut) == original
    assert max(distances(original, [photo_hash(c) for c in copies])) <= DEFAULT_MAX_DISTANCE
    assert min(distances(original, [photo_hash(o) for o in others])) > 2 * DEFAULT_MAX_DISTANCE


def hashes_at(*bits_set: tuple[int, ...]) -> list[str]:
    """Made-up hashes: all bits clear but those listed."""
    return [f"{sum(1 << b for b in bits):0{HASH_BITS // 4}x}" for bits in bits_set]


def test_distances_count_differing_bits():
    zero, one, many = hashes_at((), (3,), tuple(range(0, HASH_BITS, 2)))
    assert distances(zero, [zero, one, many]).tolist() == [0, 1, HASH_BITS // 2]
    assert distances(zero, []).tolist() == []


def test_groups_are_the_components_of_near_pairs_largest_first():
    """a-b-c are a chain 2 bits apart (a and c are 4 apart, yet in one group), d-e a pair 1 bit
    apart, f far from everyone."""
    a, b, c, d, e, f = hashes_at(
        (), (0, 1), (0, 1, 2, 3), tuple(range(100, 116)), tuple(range(100, 115)), (200, *range(20))
    )
    named = {"/p/a.jpg": a, "/p/b.jpg": b, "/p/c.jpg": c, "/p/d.jpg": d, "/p/e.jpg": e, "/p/f.jpg": f}
    assert near_duplicate_groups(named, max_distance=1) == [["/p/d.jpg", "/p/e.jpg"]]
    assert near_duplicate_groups(named, max_distance=2) == [
        ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"],
        ["/p/d.jpg", "/p/e.jpg"],
    ]
    assert near_duplicate_groups(named, max_distance=0) == []
    assert near_duplicate_groups({}) == []


def test_near_pairs_are_each_pair_within_the_distance_once_with_its_bits():
    a, b, c, far = hashes_at((), (0, 1, 2), (5,), tuple(range(100)))
    codes = np.frombuffer(bytes.fromhex(a + b + c + far), dtype=np.uint8).reshape(4, HASH_BITS // 8)
    firsts, seconds, apart = near_pairs(codes, max_distance=3)
    assert sorted(zip(firsts.tolist(), seconds.tolist(), apart.tolist())) == [(0, 1, 3), (0, 2, 1)]
    assert [len(found) for found in near_pairs(codes[:0], 3)] == [0, 0, 0]


@pytest.mark.parametrize("photos", [1, 3000])
def test_grouping_in_blocks_finds_what_one_block_finds(photos, monkeypatch):
    import search_engine.photo_hash as module

    rng = np.random.default_rng(1)
    values = rng.integers(0, 2, size=(photos, HASH_BITS)).astype(bool)
    values[1::2] = values[::2][: len(values[1::2])]
    values[1::2, :3] ^= True
    named = {f"/p/{i:05d}.jpg": np.packbits(row).tobytes().hex() for i, row in enumerate(values)}
    whole = near_duplicate_groups(named, max_distance=3)
    monkeypatch.setattr(module, "_QUERIES_AT_ONCE", 7)
    compared = []
    assert near_duplicate_groups(named, max_distance=3, progress=compared.append) == whole
    assert len(whole) == photos // 2
    assert sum(compared) == photos and len(compared) == -(-photos // 7)
