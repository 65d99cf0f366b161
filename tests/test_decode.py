"""decode.load_rgb: fast reduced decoding, EXIF orientation, every pixel mode, clean errors."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tests.helpers import make_photo, unprivileged
from iqs_cli import decode
from iqs_cli.decode import IMAGE_EXTENSIONS, RAW_EXTENSIONS, DecodeError, load_rgb


def _png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def _near(pixel, expected, tol=12) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


# --- size -----------------------------------------------------------------------------------


def test_jpeg_draft_keeps_short_side_at_least_min_side(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (120, 130, 140)).save(path, quality=90)
    image = load_rgb(path, 384)
    assert image.mode == "RGB"
    assert image.size == (1000, 750)  # DCT scaling by 1/4: 3000 // 384 = 7 -> largest power of 2
    assert 384 <= min(image.size) < 2 * 384
    assert _near(image.getpixel((500, 400)), (120, 130, 140), 3)


def test_min_side_zero_is_full_size_and_small_sources_are_not_enlarged(tmp_path):
    path = make_photo(tmp_path / "p.jpg", size=(640, 480))
    assert load_rgb(path, 0).size == (640, 480)
    assert load_rgb(path, 1000).size == (640, 480)
    assert load_rgb(path, 241).size == (640, 480)  # half would be 1 pixel short
    assert load_rgb(path, 240).size == (320, 240)  # half is exactly enough


def test_portrait_jpeg_uses_short_side(tmp_path):
    path = tmp_path / "tall.jpg"
    Image.new("RGB", (800, 3200), (90, 90, 90)).save(path)
    image = load_rgb(path, 200)
    assert image.size == (200, 800)


def test_other_formats_reduce_by_integer_factor(tmp_path):
    path = make_photo(tmp_path / "p.png", size=(1000, 800))
    image = load_rgb(path, 200)
    assert image.size == (250, 200)
    tiff = make_photo(tmp_path / "p.tif", size=(900, 600))
    assert load_rgb(tiff, 250).size == (450, 300)


# --- orientation ------------------------------------------------------------------------------

# EXIF orientation by its definition ("the 0th row is the visual <first> side, the 0th column
# the visual <second> side"): where the stored pixel (row 0, col 0) and (row 0, last col) must
# appear once the photo is shown upright. T/B = top/bottom, L/R = left/right.
_CORNERS = {
    1: ("TL", "TR"),
    2: ("TR", "TL"),
    3: ("BR", "BL"),
    4: ("BL", "BR"),
    5: ("TL", "BL"),
    6: ("TR", "BR"),
    7: ("BR", "TR"),
    8: ("BL", "TL"),
}


def _corner_colour(image: Image.Image, corner: str):
    w, h = image.size
    x = 2 if corner[1] == "L" else w - 3
    y = 2 if corner[0] == "T" else h - 3
    return image.getpixel((x, y))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png", ".tif", ".webp"])
def test_all_exif_orientations(tmp_path, orientation, suffix):
    stored = Image.new("RGB", (96, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))  # stored row 0, col 0
    stored.paste((0, 255, 0), (80, 0, 96, 16))  # stored row 0, last col
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}{suffix}"
    options = {"quality": 95} if suffix in (".jpg", ".webp") else {}
    stored.save(path, exif=exif, **options)

    image = load_rgb(path, 32)  # halved: by DCT scaling for JPEG, by reduce() for the rest
    swapped = orientation >= 5
    assert image.size == ((32, 48) if swapped else (48, 32))
    red_at, green_at = _CORNERS[orientation]
    assert _near(_corner_colour(image, red_at), (255, 0, 0), 40), red_at
    assert _near(_corner_colour(image, green_at), (0, 255, 0), 40), green_at


def test_out_of_range_orientation_is_ignored(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 42
    path = tmp_path / "odd.jpg"
    Image.new("RGB", (60, 40), (10, 200, 10)).save(path, exif=exif)
    assert load_rgb(path, 0).size == (60, 40)


# --- pixel modes ------------------------------------------------------------------------------


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(path, quality=95)
    image = load_rgb(path, 0)
    assert image.mode == "RGB"
    assert _near(image.getpixel((20, 15)), (255, 0, 0))


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 30000, 65535]], dtype=">u2")
    path = tmp_path / "deep.png"
    path.write_bytes(_png_bytes(4, 1, 16, 0, b"\x00" + values.tobytes()))
    image = load_rgb(path, 0)
    assert image.mode == "RGB"
    got = [image.getpixel((x, 0))[0] for x in range(4)]
    assert got == [0, 4, 117, 255]


def test_16bit_rgb_png(tmp_path):
    row = np.array([[40000, 20000, 0]] * 2, dtype=">u2").tobytes()
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png_bytes(2, 1, 16, 2, b"\x00" + row))
    assert _near(load_rgb(path, 0).getpixel((0, 0)), (156, 78, 0), 1)


def test_16bit_and_float_tiff(tmp_path):
    ramp = np.array([[0, 16384, 65535]], dtype=np.uint16)
    deep = tmp_path / "deep.tif"
    Image.fromarray(ramp).save(deep)
    assert [load_rgb(deep, 0).getpixel((x, 0))[1] for x in range(3)] == [0, 64, 255]

    floats = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(floats)
    assert [load_rgb(floats, 0).getpixel((x, 0))[2] for x in range(3)] == [0, 128, 255]


def test_palette_with_transparency_goes_on_white(tmp_path):
    image = Image.new("P", (20, 10), 0)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * (254 * 3))
    image.paste(1, (10, 0, 20, 10))
    path = tmp_path / "pal.png"
    image.save(path, transparency=0)
    rgb = load_rgb(path, 0)
    assert rgb.getpixel((2, 2)) == (255, 255, 255)
    assert rgb.getpixel((15, 5)) == (200, 0, 0)


def test_rgba_and_la_composite_on_white(tmp_path):
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 0))
    rgba.paste((0, 0, 0, 128), (10, 0, 20, 10))
    path = tmp_path / "alpha.png"
    rgba.save(path)
    rgb = load_rgb(path, 0)
    assert rgb.getpixel((2, 2)) == (255, 255, 255)
    assert _near(rgb.getpixel((15, 5)), (127, 127, 127), 2)

    la = tmp_path / "la.png"
    Image.new("LA", (8, 8), (0, 0)).save(la)
    assert load_rgb(la, 0).getpixel((1, 1)) == (255, 255, 255)


def test_grayscale_and_bilevel(tmp_path):
    gray = tmp_path / "gray.jpg"
    Image.new("L", (40, 30), 77).save(gray)
    assert _near(load_rgb(gray, 0).getpixel((5, 5)), (77, 77, 77), 2)
    bilevel = tmp_path / "bw.tif"
    Image.new("1", (40, 30), 1).save(bilevel)
    assert load_rgb(bilevel, 0).getpixel((5, 5)) == (255, 255, 255)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (30, 20), (250, 0, 0)), Image.new("RGB", (30, 20), (0, 0, 250))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    assert _near(load_rgb(path, 0).getpixel((5, 5)), (250, 0, 0), 8)


def test_result_is_an_independent_rgb_image(tmp_path):
    path = make_photo(tmp_path / "p.jpg", size=(64, 48))
    image = load_rgb(path, 0)
    path.unlink()
    assert isinstance(image, Image.Image)
    assert getattr(image, "fp", None) is None  # nothing left open
    assert image.mode == "RGB"
    assert image.resize((32, 24)).size == (32, 24)


# --- bad input --------------------------------------------------------------------------------


def _error(path, min_side=64) -> str:
    with pytest.raises(DecodeError) as info:
        load_rgb(path, min_side)
    message = str(info.value)
    assert str(path) not in message  # the caller prints the path
    return message


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "empty file (0 bytes)" in _error(path)


def test_truncated_jpeg(tmp_path):
    path = make_photo(tmp_path / "cut.jpg", size=(640, 480), quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(path)
    assert "truncated" in _error(path, 0)


def test_truncated_png(tmp_path):
    path = make_photo(tmp_path / "cut.png", size=(200, 150))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "truncated" in _error(path)


def test_random_bytes_named_jpg(tmp_path):
    path = tmp_path / "noise.jpg"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "not an image" in _error(path)


def test_jpeg_with_corrupt_header(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 40)
    assert "damaged JPEG file" in _error(path)


def test_broken_heic_with_a_jpg_name_is_reported_as_a_damaged_heic(tmp_path):
    path = tmp_path / "phone.jpg"  # wrong extension: judged by content
    path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    assert _error(path).startswith("damaged HEIC/HEIF file")


def test_decompression_bomb_header(tmp_path):
    # A PNG header claiming 100000 x 100000 pixels: refused before any allocation.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(100000, 100000, 8, 2, b""))
    message = _error(path)
    assert message.startswith("image too large: 10000 megapixels exceeds the limit of 179")


def test_decompression_bomb_limit_follows_pillow_setting(tmp_path, monkeypatch):
    path = make_photo(tmp_path / "p.jpg", size=(100, 100))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    assert _error(path).startswith("image too large: 0.01 megapixels exceeds the limit of 0.002")


def test_memory_error_becomes_decode_error(tmp_path, monkeypatch):
    path = make_photo(tmp_path / "p.png")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(decode, "_decode", no_memory)
    assert "not enough memory" in _error(path)


def test_permission_denied(user_tmp_path):
    """A file the user may not read (as an unprivileged user even under root, who reads all)."""
    load_rgb(make_photo(user_tmp_path / "readable.jpg"), 64)  # imports done before dropping root
    path = make_photo(user_tmp_path / "locked.jpg")
    path.chmod(0)
    try:
        with unprivileged():
            assert _error(path).startswith("permission denied")
    finally:
        path.chmod(0o644)


def test_folder_and_missing_file(tmp_path):
    folder = tmp_path / "looks-like.jpg"
    folder.mkdir()
    assert _error(folder) == "is a folder, not a file"
    assert _error(tmp_path / "gone.jpg").startswith("file not found")
    assert _error(tmp_path / "gone.cr2").startswith("file not found")


def test_fifo_is_refused_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    assert "not a regular file" in _error(path)


def test_extension_sets():
    assert {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"} <= IMAGE_EXTENSIONS
    assert {".cr2", ".cr3", ".nef", ".arw", ".dng", ".raf", ".orf", ".rw2"} <= RAW_EXTENSIONS
    assert not IMAGE_EXTENSIONS & RAW_EXTENSIONS
    assert all(ext == ext.lower() and ext.startswith(".") for ext in IMAGE_EXTENSIONS | RAW_EXTENSIONS)
