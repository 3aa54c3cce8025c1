"""Perceptual hashes of whole photos, and the groups of near-duplicates they reveal.

A photo's hash is imagehash's pHash at hash size 16: whether each of the 16x16 lowest frequencies
of the discrete cosine transform of the photo, shrunk to 64x64 grey levels, lies above their
median; 256 bits written as 64 hex digits. Resizing, recompressing or a change of brightness move
few of those bits; another photo differs in about half of them. Two photos are near-duplicates
when their hashes differ in at most ``max_distance`` bits (``bench/near_duplicates.py`` measured
the default on LFW, where 64-bit hashes called too many different photos the same: README,
"Near-duplicates").
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

#: Side of the square of frequencies kept: a hash has its square's bits.
HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
#: Differing bits up to which two photos are called near-duplicates (README, "Near-duplicates").
DEFAULT_MAX_DISTANCE = 48
#: pHash's DCT runs over a square this many times the hash's side (imagehash's default).
_PHASH_FACTOR = 4
#: Hashes scored against all the others at once (bounds memory: block x photos x 4 bytes).
_PAIRS_AT_ONCE = 1 << 24


def photo_hash(image: np.ndarray) -> str:
    """The pHash of an (H, W, 3) uint8 RGB photo, :data:`HASH_BITS` / 4 lowercase hex digits."""
    import cv2
    import imagehash
    from PIL import Image

    # Shrunk by area first, as pHash shrinks it anyway: Pillow's Lanczos over a whole camera
    # photo (24 M pixels) took 0.5 s, and area averages commute with the grey conversion. OpenCV
    # averages whole blocks of pixels fastest, so a big photo loses a whole factor first, then
    # what is left: 39 ms for those 24 M pixels, against 111 ms in one step.
    side = HASH_SIZE * _PHASH_FACTOR
    height, width = image.shape[:2]
    factor = min(height, width) // (4 * side)
    if factor > 1:
        height, width = height - height % factor, width - width % factor
        image = cv2.resize(image[:height, :width], (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    small = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    return str(imagehash.phash(Image.fromarray(small), hash_size=HASH_SIZE, highfreq_factor=_PHASH_FACTOR))


def bit_signs(hashes: list[str]) -> np.ndarray:
    """(n, :data:`HASH_BITS`) float32 of +1 / -1 per bit: the dot product of two rows is the bits
    less twice their distance, so a matrix product scores every pair at once."""
    packed = np.frombuffer(b"".join(bytes.fromhex(value) for value in hashes), dtype=np.uint8)
    return 1.0 - 2.0 * np.unpackbits(packed).reshape(len(hashes), HASH_BITS).astype(np.float32)


#: Set bits of every byte value.
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def distances(one: str, others: list[str]) -> np.ndarray:
    """How many bits ``one`` hash differs from each of ``others``, int array: XOR of the packed
    bytes, bits counted per byte (32 bytes a hash, where :func:`bit_signs` takes a kilobyte)."""
    if not others:
        return np.zeros(0, dtype=np.int64)
    packed = np.frombuffer(b"".join(bytes.fromhex(value) for value in others), dtype=np.uint8)
    differing = packed.reshape(len(others), HASH_BITS // 8) ^ np.frombuffer(bytes.fromhex(one), dtype=np.uint8)
    return _POPCOUNT[differing].sum(axis=1, dtype=np.int64)


def near_duplicates_of(
    source: str, hashes: Mapping[str, str], max_distance: int = DEFAULT_MAX_DISTANCE
) -> list[tuple[str, int]]:
    """The other photos of ``hashes`` (source name to hash) within ``max_distance`` bits of
    ``source``'s hash, as (source, bits apart), nearest first; none when ``source`` has no hash."""
    if source not in hashes:
        return []
    others = sorted(name for name in hashes if name != source)
    apart = distances(hashes[source], [hashes[name] for name in others])
    near = [(name, int(bits)) for name, bits in zip(others, apart) if bits <= max_distance]
    return sorted(near, key=lambda pair: (pair[1], pair[0]))


def near_duplicate_groups(hashes: Mapping[str, str], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[list[str]]:
    """Groups of near-duplicate photos: the connected components of "hashes differ in at most
    ``max_distance`` bits" among ``hashes`` (source name to hash), those of two or more photos
    only. Each group's sources sorted; groups largest first, then by their first source.

    Every pair is compared, as one matrix product in blocks (README, "Near-duplicates", has the time).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not hashes:
        return []
    sources = sorted(hashes)
    signs = bit_signs([hashes[source] for source in sources])
    block = max(1, _PAIRS_AT_ONCE // len(sources))
    # Dot products are small integers, exact in float32; half a unit of slack all the same.
    least = HASH_BITS - 2 * max_distance - 0.5
    rows, columns = [], []
    for start in range(0, len(sources), block):
        near_row, near_column = np.nonzero(signs[start : start + block] @ signs.T >= least)
        keep = near_row + start < near_column
        rows.append(near_row[keep] + start)
        columns.append(near_column[keep])
    found = np.concatenate(rows)
    edges = coo_matrix((np.ones(len(found), dtype=np.int8), (found, np.concatenate(columns))), (len(sources),) * 2)
    _, component = connected_components(edges, directed=False)
    members: dict[int, list[str]] = {}
    for source, group in zip(sources, component):
        members.setdefault(int(group), []).append(source)
    groups = [group for group in members.values() if len(group) >= 2]
    return sorted(groups, key=lambda group: (-len(group), group[0]))
