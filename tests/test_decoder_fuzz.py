"""The decoders under fuzzing (Hypothesis): whatever the bytes, a photo decodes to an RGB array or
fails with an :class:`ImageError` naming the file; a video probes and yields frames or fails the
same way. Nothing else escapes, nothing hangs. ``bench/fuzzed_media.py`` runs whole corpora of
hostile files through the ingest; these search the space around valid files."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile_media import PHOTO_FORMATS, encode, encode_video
from search_engine.errors import ImageError
from search_engine.imageio import decode_image
from search_engine.video import probe, sample_frames

LIMIT = 4_000_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def photos(astronaut):
    small = np.ascontiguousarray(astronaut[::8, ::8])
    return {fmt: encode(small, fmt) for fmt in PHOTO_FORMATS.values()}


@pytest.fixture(scope="module")
def videos(astronaut):
    frames = [np.ascontiguousarray(np.roll(astronaut[::8, ::8], 4 * i, axis=1)) for i in range(6)]
    return {container: encode_video(frames, container) for container in ("mp4", "mkv")}


def mutations(length: int):
    """Up to 16 (position, xor mask) byte changes and an optional cut, for a file of ``length``."""
    flips = st.lists(st.tuples(st.integers(0, length - 1), st.integers(1, 255)), max_size=16)
    return st.tuples(flips, st.one_of(st.none(), st.integers(0, length)))


def mutate(data: bytes, change) -> bytes:
    flips, cut = change
    damaged = bytearray(data)
    for at, mask in flips:
        damaged[at] ^= mask
    return bytes(damaged[:cut] if cut is not None else damaged)


def decodes_or_fails_clearly(data: bytes) -> None:
    try:
        image = decode_image(data, "fuzzed.jpg", LIMIT)
    except ImageError as exc:
        assert exc.path == "fuzzed.jpg" and exc.reason
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_decode_or_fail_clearly(data):
    decodes_or_fails_clearly(data)


@FUZZ
@given(fmt=st.sampled_from(sorted(PHOTO_FORMATS.values())), data=st.data())
def test_damaged_photos_decode_or_fail_clearly(photos, fmt, data):
    original = photos[fmt]
    decodes_or_fails_clearly(mutate(original, data.draw(mutations(len(original)))))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(container=st.sampled_from(["mp4", "mkv"]), data=st.data())
def test_damaged_videos_probe_and_decode_or_fail_clearly(videos, container, data):
    original = videos[container]
    damaged = mutate(original, data.draw(mutations(len(original))))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzzed.{container}"
        path.write_bytes(damaged)
        try:
            info = probe(path)
            frames = list(sample_frames(path, rate=info.fps))
        except ImageError as exc:
            assert exc.path == str(path) and exc.reason
        else:
            assert info.width > 0 and info.height > 0
            assert all(f.image.dtype == np.uint8 and f.image.shape[2] == 3 for f in frames)
