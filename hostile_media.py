"""Hostile media files for the ingest's robustness test and benchmark, never shipped (not in the wheel).

:func:`write_corpus` writes good photos and generated hostile files side by side, each hostile
file named after its kind, and returns what it wrote with what each file must lead to. The kinds
follow what breaks decoders and services that take uploads: empty, truncated, bit-flipped and
spliced JPEG/PNG/WebP/BMP/GIF/MP4/MKV; huge declared dimensions; decompression bombs; files of one
kind named as another; containers with no video stream; HTML and SVG named as photos; photos legal
in size but huge in memory once decoded.

Some damaged files still decode (a JPEG with a few flipped bits is a JPEG with a few wrong blocks,
and a cut Matroska file plays up to the cut; every viewer shows them): those kinds are marked
``may_decode`` and must only be reported once, like any file. Every other hostile file must fail
with a reason.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

from search_engine.indexing import source_name
from search_engine.types import SourceRecord, Status

PHOTO_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP", "gif": "GIF"}
VIDEO_FORMATS = ("mp4", "mkv")


@dataclass(frozen=True)
class CorpusFile:
    """One written file: its path, its kind (e.g. ``truncated-png``, ``good``), and whether it may
    decode (``good`` files must be indexed; others must fail unless ``may_decode``)."""

    path: Path
    kind: str
    may_decode: bool = False

    @property
    def good(self) -> bool:
        return self.kind == "good"


def encode(image: np.ndarray, fmt: str, **options) -> bytes:
    """A uint8 array, (H, W) grey or (H, W, 3|4) RGB(A), encoded as Pillow's ``fmt`` (JPEG, PNG, ...)."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt, **options)
    return out.getvalue()


def encode_video(frames: Sequence[np.ndarray], container: str, fps: int = 10) -> bytes:
    """RGB frames as an MPEG-4 Part 2 video in an ``mp4`` or ``mkv`` container, in memory (PyAV).
    MP4's index (moov) is written last, as most encoders do: a truncated MP4 loses it."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="mp4" if container == "mp4" else "matroska") as muxer:
        stream = muxer.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                muxer.mux(packet)
        for packet in stream.encode():
            muxer.mux(packet)
    return out.getvalue()


def audio_only(container: str, seconds: float = 1.0) -> bytes:
    """A valid ``mp4`` or ``mkv`` file holding one AAC audio stream (a sine) and no video stream."""
    import av

    rate = 22050
    out = io.BytesIO()
    with av.open(out, "w", format="mp4" if container == "mp4" else "matroska") as muxer:
        stream = muxer.add_stream("aac", rate=rate)
        stream.layout = "mono"
        samples = (0.2 * np.sin(np.arange(int(rate * seconds)) * 2 * np.pi * 440 / rate)).astype(np.float32)
        for start in range(0, len(samples), 1024):
            frame = av.AudioFrame.from_ndarray(samples[None, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            for packet in stream.encode(frame):
                muxer.mux(packet)
        for packet in stream.encode():
            muxer.mux(packet)
    return out.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, rows: int = 1) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (valid CRCs) holding ``rows`` rows of data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * (rows * (1 + 3 * min(width, 4096))), 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real, complete ``side`` x ``side`` black PNG: a few hundred kB that decode to side² x 3 bytes."""
    row = b"\0" * (1 + 3 * side)
    squeezer = zlib.compressobj(9)
    body = b"".join(squeezer.compress(row) for _ in range(side)) + squeezer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def jpeg_declaring(image: bytes, width: int, height: int) -> bytes:
    """A JPEG's bytes with the frame header (SOF0) patched to declare ``width`` x ``height``."""
    at = image.index(b"\xff\xc0")
    return image[: at + 5] + struct.pack(">HH", height, width) + image[at + 9 :]


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF whose logical screen is ``width`` x ``height`` around a 1x1 image."""
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + screen + b"\0\0\0\xff\xff\xff" + image + b"\x3b"


def bmp_declaring(width: int, height: int) -> bytes:
    """A 24-bit BMP header declaring ``width`` x ``height`` followed by 64 bytes of pixels."""
    pixels = b"\0" * 64
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info)) + info + pixels


_RANDOM_KINDS = {"truncated", "bit-flipped", "spliced"}

HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script><h1>not a photo</h1></body></html>\n"
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="200" height="200">'
    b'<script>alert(document.domain)</script><circle cx="100" cy="100" r="80"/></svg>\n'
)


def _flip_bits(data: bytes, rng: random.Random) -> bytes:
    damaged = bytearray(data)
    for _ in range(rng.randint(1, 24)):
        at = rng.randrange(min(16, len(data) - 1), len(data))
        damaged[at] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randint(1, int(len(data) * 0.9))]


def _splice(first: bytes, second: bytes, rng: random.Random) -> bytes:
    return first[: rng.randint(1, len(first) - 1)] + second[rng.randint(1, len(second) - 1) :]


def write_corpus(
    folder: Path,
    good_photos: Sequence[np.ndarray],
    hostile: int,
    seed: int = 0,
    huge_side: int = 8000,
) -> list[CorpusFile]:
    """Write ``good_photos`` (as JPEGs) and ``hostile`` generated hostile files into ``folder``.

    The hostile kinds are taken in turn, so every kind appears once ``hostile`` reaches their
    number; their damage is drawn from ``seed``. ``huge_side`` is the side of the photos that are
    legal in pixel count (under the default 90 M limit) but large once decoded; they are black, so
    they must be read and hold no face, and are counted as hostile files that may decode.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    written = []
    for n, image in enumerate(good_photos):
        path = folder / f"good-{n:04d}.jpg"
        path.write_bytes(encode(image, "JPEG", quality=92))
        written.append(CorpusFile(path, "good"))

    sample = good_photos[0]
    small = np.ascontiguousarray(sample[::4, ::4])
    photos = {ext: encode(sample, fmt) for ext, fmt in PHOTO_FORMATS.items()}
    frames = [np.roll(small, 3 * i, axis=1) for i in range(10)]
    even = [np.ascontiguousarray(f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2]) for f in frames]
    videos = {ext: encode_video(even, ext) for ext in VIDEO_FORMATS}
    media = {**photos, **videos}

    def each(extensions: Sequence[str], make: Callable[[str], bytes], may_decode: bool = False):
        return [(ext, make, may_decode) for ext in extensions]

    everything = [*PHOTO_FORMATS, *VIDEO_FORMATS]
    kinds: dict[str, list] = {
        "empty": each(everything, lambda ext: b""),
        # Matroska is made to play while it downloads: a cut one keeps its first frames.
        "truncated": [(ext, lambda ext: _truncate(media[ext], rng), ext == "mkv") for ext in everything],
        "bit-flipped": each(everything, lambda ext: _flip_bits(media[ext], rng), may_decode=True),
        "spliced": each(
            everything,
            lambda ext: _splice(media[ext], media[rng.choice(everything)], rng),
            may_decode=True,
        ),
        "huge-dimensions": [
            ("png", lambda ext: png_declaring(200_000, 200_000), False),
            ("jpg", lambda ext: jpeg_declaring(photos["jpg"], 65_000, 65_000), False),
            ("gif", lambda ext: gif_declaring(65_535, 65_535), False),
            ("bmp", lambda ext: bmp_declaring(100_000, 100_000), False),
        ],
        "decompression-bomb": [("png", lambda ext: png_bomb(12_000), False)],
        "huge-but-legal": [("jpg", lambda ext: encode(np.zeros((huge_side, huge_side, 3), np.uint8), "JPEG"), True)],
        "wrong-extension": [
            ("jpg", lambda ext: videos["mp4"], False),
            ("png", lambda ext: videos["mkv"], False),
            ("webp", lambda ext: b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", False),
            ("mp4", lambda ext: b"just some text, not a video\n" * 20, False),
        ],
        "no-video-stream": each(VIDEO_FORMATS, audio_only),
        "html-as-photo": each(["jpg", "png"], lambda ext: HTML),
        "svg-as-photo": each(["png", "webp"], lambda ext: SVG),
    }
    plan = [(kind, ext, make, may) for kind, variants in kinds.items() for ext, make, may in variants]
    fixed: dict[tuple[str, str], bytes] = {}  # the kinds that draw nothing from rng, made once
    for n in range(hostile):
        kind, ext, make, may_decode = plan[n % len(plan)]
        path = folder / f"{kind}-{n:04d}.{ext}"
        if kind in _RANDOM_KINDS:
            data = make(ext)
        else:
            if (kind, ext) not in fixed:
                fixed[kind, ext] = make(ext)
            data = fixed[kind, ext]
        path.write_bytes(data)
        written.append(CorpusFile(path, f"{kind}-{ext}", may_decode))
    return written


def problems(files: Sequence[CorpusFile], records: Mapping[str, SourceRecord]) -> list[str]:
    """What went wrong, one line per file, given the index's source records (keyed by source name):
    a file with no record, a good photo not indexed with a face, a hostile file that must fail but
    did not, or a failure without a reason. Empty when all held."""
    found = []
    for file in files:
        record = records.get(source_name(file.path))
        if record is None:
            found.append(f"{file.path}: no outcome recorded")
        elif record.status == Status.FAILED and not record.error:
            found.append(f"{file.path}: failed without a reason")
        elif file.good and (record.status != Status.INDEXED or record.faces < 1):
            found.append(f"{file.path}: a good photo ended {record.status.value} ({record.error})")
        elif not file.good and not file.may_decode and record.status != Status.FAILED:
            found.append(f"{file.path}: {file.kind} must fail but ended {record.status.value}")
    return found


def tally(files: Sequence[CorpusFile], records: Mapping[str, SourceRecord]) -> dict[str, Counter]:
    """Outcomes per kind of file (the kind without its extension): ``{kind: Counter(status: n)}``,
    with ``missing`` for files the index holds no record of."""
    table: dict[str, Counter] = {}
    for file in files:
        record = records.get(source_name(file.path))
        kind = file.kind if file.good else file.kind.rsplit("-", 1)[0]
        table.setdefault(kind, Counter())[record.status.value if record else "missing"] += 1
    return table
