"""Perceptual hashes of whole photos, and the groups of near-duplicates they reveal.

A photo's hash is imagehash's pHash at hash size 16: whether each of the 16x16 lowest frequencies
of the discrete cosine transform of the photo, shrunk to 64x64 grey levels, lies above their
median; 256 bits written as 64 hex digits. Resizing, recompressing or a change of brightness move
few of those bits; another photo differs in about half of them. Two photos are near-duplicates
when their hashes differ in at most ``max_distance`` bits (``bench/near_duplicates.py`` measured
the default on LFW, where 64-bit hashes called too many different photos the same: README,
"Near-duplicates").

The stores keep each photo's hash with its file record and find one photo's near-duplicates
themselves (``FaceIndex.near_duplicates``); grouping a whole archive compares every pair here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

#: Side of the square of frequencies kept: a hash has its square's bits.
HASH_SIZE = 16
HASH_BITS = HASH_SIZE * HASH_SIZE
HASH_BYTES = HASH_BITS // 8
#: Differing bits up to which two photos are called near-duplicates (README, "Near-duplicates").
DEFAULT_MAX_DISTANCE = 48
#: Near-duplicates of one photo listed at most unless asked for more, nearest first.
COPIES_LISTED = 50
#: pHash's DCT runs over a square this many times the hash's side (imagehash's default).
_PHASH_FACTOR = 4
#: Hashes the grouping compares with all the others in one call (bounds the memory its found pairs take).
_QUERIES_AT_ONCE = 4096


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


def hash_bytes(image_hash: str) -> bytes:
    """A hash's :data:`HASH_BYTES` bytes, first hex digit in the first byte's high half: how both
    stores keep a hash for their Hamming search, and how :func:`distances` and the grouping read it."""
    return bytes.fromhex(image_hash)


def hash_codes(hashes: Sequence[str]) -> np.ndarray:
    """(n, :data:`HASH_BYTES`) uint8: the hashes' bytes, one row each."""
    return np.frombuffer(b"".join(hash_bytes(value) for value in hashes), dtype=np.uint8).reshape(-1, HASH_BYTES)


#: Set bits of every byte value.
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def distances(one: str, others: Sequence[str]) -> np.ndarray:
    """How many bits ``one`` hash differs from each of ``others``, int array."""
    return code_distances(one, hash_codes(others))


def code_distances(one: str, codes: np.ndarray) -> np.ndarray:
    """How many bits ``one`` hash differs from each row of ``codes`` (:func:`hash_codes`), int
    array: XOR of the bytes, bits counted per byte."""
    differing = codes ^ np.frombuffer(hash_bytes(one), dtype=np.uint8)
    return _POPCOUNT[differing].sum(axis=1, dtype=np.int64)


def near_pairs(
    codes: np.ndarray, max_distance: int, progress: Callable[[int], None] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows of ``codes`` (:func:`hash_codes`)
    whose hashes differ in at most ``max_distance`` bits, each pair once: (first rows, second rows,
    bits apart), first < second.

    Every pair is compared once: faiss's exhaustive binary index counts the bits with the CPU's
    popcount on all cores, :data:`_QUERIES_AT_ONCE` rows at a time against those rows and all after
    them (README, "Near-duplicates", has the time per pair); ``progress`` is called with the
    number of rows just compared.
    """
    import faiss

    firsts, seconds, apart = [], [], []
    for start in range(0, len(codes), _QUERIES_AT_ONCE):
        # Copying the rows from here on costs far less than comparing them with the earlier ones again.
        index = faiss.IndexBinaryFlat(HASH_BITS)
        index.add(codes[start:])
        # faiss returns the pairs strictly nearer than its radius.
        limits, bits, found = index.range_search(codes[start : start + _QUERIES_AT_ONCE], max_distance + 1)
        rows = start + np.repeat(np.arange(len(limits) - 1), np.diff(limits).astype(np.int64))
        found = found + start
        later = rows < found
        firsts.append(rows[later])
        seconds.append(found[later])
        apart.append(bits[later])
        if progress is not None:
            progress(len(limits) - 1)
    if not firsts:
        return (np.zeros(0, dtype=np.int64),) * 3
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(apart).astype(np.int64)


def near_duplicate_groups(
    hashes: Mapping[str, str],
    max_distance: int = DEFAULT_MAX_DISTANCE,
    progress: Callable[[int], None] | None = None,
) -> list[list[str]]:
    """Groups of near-duplicate photos: the connected components of "hashes differ in at most
    ``max_distance`` bits" among ``hashes`` (source name to hash), those of two or more photos
    only. Each group's sources sorted; groups largest first, then by their first source.
    ``progress`` is called with the number of photos just compared with all the others."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not hashes:
        return []
    sources = sorted(hashes)
    firsts, seconds, _ = near_pairs(hash_codes([hashes[source] for source in sources]), max_distance, progress)
    edges = coo_matrix((np.ones(len(firsts), dtype=np.int8), (firsts, seconds)), (len(sources),) * 2)
    _, component = connected_components(edges, directed=False)
    members: dict[int, list[str]] = {}
    for source, group in zip(sources, component):
        members.setdefault(int(group), []).append(source)
    groups = [group for group in members.values() if len(group) >= 2]
    return sorted(groups, key=lambda group: (-len(group), group[0]))
