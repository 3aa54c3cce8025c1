import pickle

import numpy as np
import pytest
from PIL import Image

from hostile_media import encode, png_declaring
from search_engine.errors import ImageError
from search_engine.imageio import decode_image, load_image

LIMIT = 90_000_000


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_formats_decode_to_rgb(astronaut, fmt):
    array = decode_image(encode(astronaut, fmt), f"a.{fmt.lower()}", LIMIT)
    assert array.shape == astronaut.shape and array.dtype == np.uint8


def test_grayscale_and_rgba_become_rgb(astronaut):
    gray = np.asarray(Image.fromarray(astronaut).convert("L"))
    assert decode_image(encode(gray, "PNG"), "g.png", LIMIT).shape == astronaut.shape
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    assert decode_image(encode(rgba, "PNG"), "a.png", LIMIT).shape == astronaut.shape


def test_exif_orientation_is_honoured():
    tall = np.zeros((40, 20, 3), np.uint8)
    tall[:10] = 255  # white band on top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90 degree turn
    data = encode(tall, "JPEG", exif=exif.tobytes())
    shown = decode_image(data, "rotated.jpg", LIMIT)
    assert shown.shape[:2] == (20, 40)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (b"this is a text file, not a photo\n" * 10, "not an image"),
        (png_declaring(50_000, 50_000), "too large"),
    ],
)
def test_bad_bytes_give_a_clear_reason(data, reason):
    with pytest.raises(ImageError, match=reason) as info:
        decode_image(data, "bad.jpg", LIMIT)
    assert info.value.path == "bad.jpg"


def test_truncated_jpeg(astronaut):
    data = encode(astronaut, "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        decode_image(data[: len(data) // 2], "cut.jpg", LIMIT)


def test_missing_file_and_pickling(tmp_path):
    with pytest.raises(ImageError, match="file not found") as info:
        load_image(tmp_path / "nope.jpg", LIMIT)
    copy = pickle.loads(pickle.dumps(info.value))
    assert copy.path == info.value.path and copy.reason == info.value.reason


def test_load_image_hashes_content(tmp_path, astronaut):
    path = tmp_path / "a.png"
    path.write_bytes(encode(astronaut, "PNG"))
    image, digest = load_image(path, LIMIT)
    assert image.shape == astronaut.shape and len(digest) == 64


@pytest.mark.parametrize("fmt", ["TIFF", "EPS", "PPM", "ICO"])
def test_formats_pillow_knows_but_facesearch_does_not_read_are_refused_by_content(astronaut, fmt):
    """A photo format facesearch does not list is refused whatever the file is named (EPS would
    run Ghostscript), with a reason naming the formats it reads."""
    with pytest.raises(ImageError, match="not an image file facesearch reads .*JPEG, PNG, WebP, BMP or GIF"):
        decode_image(encode(astronaut[:64, :64], fmt), "disguised.jpg", LIMIT)
