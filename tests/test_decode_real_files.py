"""decode.load_rgb on files as people have them: huge scans, RAW names on JPEGs, RAWs with only
a thumbnail, iPhone HEIC photos."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pillow_heif
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.helpers import make_photo
from iqs_cli import decode
from iqs_cli.cli import app
from iqs_cli.decode import DecodeError, load_rgb
from tests.test_rawpreview import TiffWriter, _jpeg, _nef_like


def _bomb_warnings(caught) -> list:
    return [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# --- decompression-bomb warning ---------------------------------------------------------------


def test_image_between_the_bomb_limits_decodes_quietly_and_reduced(tmp_path, monkeypatch):
    path = make_photo(tmp_path / "scan.png", size=(120, 120))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 14,400 pixels: warned, not refused
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_rgb(path, 40)
    assert _bomb_warnings(caught) == []
    assert image.size == (40, 40)  # decoded, then reduced like any other PNG


def test_image_over_twice_the_limit_is_still_refused(tmp_path, monkeypatch):
    path = make_photo(tmp_path / "huge.png", size=(150, 150))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 22,500 > 2 x 10,000
    with pytest.raises(DecodeError, match="^image too large: 0.022 megapixels exceeds the limit"):
        load_rgb(path, 40)


def test_score_prints_no_bomb_warning(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "photos"
    make_photo(folder / "scan.png", size=(120, 120))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arguments = ["score", str(folder), "--model", str(tiny_model), "-f", "jsonl"]
        result = CliRunner().invoke(app, arguments, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert '"error": null' in result.stdout
    assert _bomb_warnings(caught) == []
    assert "DecompressionBombWarning" not in result.stderr


def test_score_prints_no_bomb_warning_in_a_real_process(tmp_path, tiny_model):
    # Python's own warning printer, not pytest's recorder: what a user's terminal would show.
    folder = tmp_path / "photos"
    make_photo(folder / "scan.png", size=(120, 120))
    program = (
        "import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 10_000;"
        " from iqs_cli.cli import main; sys.argv[0] = 'iqs'; main()"
    )
    command = [sys.executable, "-c", program, "score", str(folder), "--model", str(tiny_model),
               "-f", "jsonl"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"error": null' in done.stdout
    assert "DecompressionBomb" not in done.stderr and "Warning" not in done.stderr


# --- decided by content, not by name ----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nef", ".CR2", ".dng", ".arw"])
def test_jpeg_with_a_raw_name_is_decoded_as_the_jpeg_it_is(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    Image.new("RGB", (400, 300), (200, 40, 30)).save(path, "JPEG", quality=95)
    image = load_rgb(path, 0)
    assert image.size == (400, 300)
    assert all(abs(a - b) <= 6 for a, b in zip(image.getpixel((200, 150)), (200, 40, 30)))
    assert load_rgb(path, 100).size == (200, 150)  # the JPEG path: DCT scaling


def test_png_with_a_raw_name_is_decoded_and_its_exif_orientation_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "photo.orf"
    Image.new("RGB", (60, 40), (10, 200, 10)).save(path, "PNG", exif=exif)
    assert load_rgb(path, 0).size == (40, 60)


def test_damaged_jpeg_with_a_raw_name_is_reported_as_a_damaged_jpeg(tmp_path):
    path = tmp_path / "photo.nef"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x01" * 40)
    with pytest.raises(DecodeError, match="damaged JPEG file"):
        load_rgb(path, 64)


# --- RAW files with only a thumbnail ----------------------------------------------------------


@pytest.mark.parametrize("order", ["<", ">"])
def test_raw_with_only_thumbnails_is_refused(tmp_path, order):
    path = tmp_path / "old.nef"
    path.write_bytes(_nef_like(order, _jpeg(160, 120, 1), _jpeg(80, 60, 2)))
    for min_side in (0, 64, 384):
        with pytest.raises(DecodeError) as info:
            load_rgb(path, min_side)
        message = str(info.value)
        assert message.startswith("the RAW file embeds only a 160x120 thumbnail, too small")
        assert "export a JPEG" in message and "\n" not in message


def test_preview_at_the_threshold_is_used(tmp_path):
    side = decode.MIN_PREVIEW_LONG_SIDE
    jpeg = _jpeg(side, side * 3 // 4, 3)
    w = TiffWriter()
    at = w.blob(jpeg)
    w.set_first(w.ifd([(0x0201, 4, [at]), (0x0202, 4, [len(jpeg)])]))
    path = tmp_path / "small.pef"
    path.write_bytes(bytes(w.data))
    assert load_rgb(path, 0).size == (side, side * 3 // 4)


def test_damaged_preview_never_falls_back_to_the_thumbnail(tmp_path):
    big = bytearray(_jpeg(640, 480, 7))
    sos = big.index(b"\xff\xda")
    big = bytes(big[: sos + 200])  # its frame header says 640x480; its data is cut off
    path = tmp_path / "half.nef"
    path.write_bytes(_nef_like("<", big, _jpeg(160, 120, colour=(200, 20, 20)), orientation=1))
    with pytest.raises(DecodeError, match="embedded JPEG preview is damaged"):
        load_rgb(path, 0)


# --- HEIC / HEIF ------------------------------------------------------------------------------

def _heic(path, image: Image.Image, orientation: int | None = None) -> None:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    heif = pillow_heif.from_pillow(image)
    # pillow-heif turns the EXIF orientation into the container's irot/imir transforms.
    heif.save(path, quality=95, exif=exif.tobytes() if orientation else None)


def test_heic_decodes(tmp_path):
    path = tmp_path / "IMG_0001.HEIC"
    _heic(path, Image.new("RGB", (128, 96), (30, 90, 200)))
    image = load_rgb(path, 0)
    assert image.mode == "RGB" and image.size == (128, 96)
    assert all(abs(a - b) <= 8 for a, b in zip(image.getpixel((64, 48)), (30, 90, 200)))
    assert load_rgb(path, 40).size == (64, 48)  # reduced like other non-JPEG formats


@pytest.mark.parametrize("suffix", [".heif", ".hif", ".jpg"])  # .jpg: judged by content
def test_heif_under_other_names(tmp_path, suffix):
    path = tmp_path / f"photo{suffix}"
    _heic(path, Image.new("RGB", (64, 48), (200, 200, 20)))
    assert load_rgb(path, 0).size == (64, 48)


# Where the stored pixel (row 0, col 0) and (row 0, last col) appear once upright; see
# test_decode._CORNERS.
_CORNERS = {1: ("TL", "TR"), 3: ("BR", "BL"), 6: ("TR", "BR"), 8: ("BL", "TL"), 2: ("TR", "TL")}


@pytest.mark.parametrize("orientation", sorted(_CORNERS))
def test_heic_orientation_is_applied_exactly_once(tmp_path, orientation):
    stored = Image.new("RGB", (96, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    stored.paste((0, 255, 0), (80, 0, 96, 16))
    path = tmp_path / f"o{orientation}.heic"
    _heic(path, stored, orientation)
    image = load_rgb(path, 0)
    assert image.size == ((64, 96) if orientation >= 5 else (96, 64))

    def colour(corner):
        w, h = image.size
        return image.getpixel((4 if corner[1] == "L" else w - 5, 4 if corner[0] == "T" else h - 5))

    red_at, green_at = _CORNERS[orientation]
    assert all(abs(a - b) <= 40 for a, b in zip(colour(red_at), (255, 0, 0))), red_at
    assert all(abs(a - b) <= 40 for a, b in zip(colour(green_at), (0, 255, 0))), green_at


def test_damaged_heic(tmp_path):
    path = tmp_path / "cut.heic"
    _heic(path, Image.new("RGB", (64, 48), (10, 10, 10)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DecodeError, match="^damaged HEIC/HEIF file"):
        load_rgb(path, 0)


def _without_pillow_heif(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # `import pillow_heif` fails
    monkeypatch.setattr(decode, "_heif_registered", None)
    plain = tuple(f for f in decode.PILLOW_FORMATS if f != "HEIF")
    monkeypatch.setattr(decode, "PILLOW_FORMATS", plain)


def test_heic_without_pillow_heif_names_the_remedy(tmp_path, monkeypatch):
    heic = tmp_path / "IMG_0002.heic"
    _heic(heic, Image.new("RGB", (64, 48), (10, 10, 10)))
    renamed = tmp_path / "IMG_0003.jpg"
    renamed.write_bytes(heic.read_bytes())
    _without_pillow_heif(monkeypatch)
    for path in (heic, renamed):
        with pytest.raises(DecodeError) as info:
            load_rgb(path, 0)
        assert str(info.value) == "HEIC/HEIF needs pillow-heif: pip install pillow-heif"
    assert load_rgb(make_photo(tmp_path / "p.jpg"), 0).size == (64, 48)  # the rest still reads
    assert decode._heif_registered is False


def test_avif_with_a_heif_brand_still_reads_without_pillow_heif(tmp_path, monkeypatch):
    path = tmp_path / "photo.avif"
    Image.new("RGB", (64, 48), (40, 160, 40)).save(path, "AVIF")
    data = bytearray(path.read_bytes())
    assert data[4:12] == b"ftypavif"
    data[8:12] = b"mif1"  # major brand mif1, "avif" among the compatible brands
    path.write_bytes(bytes(data))
    _without_pillow_heif(monkeypatch)
    assert load_rgb(path, 0).size == (64, 48)


def test_heif_opener_is_registered_lazily():
    program = "import sys, iqs_cli.decode, iqs_cli.cli; print('pillow_heif' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_extension_sets_hold_heif():
    assert {".heic", ".heif", ".hif"} <= decode.IMAGE_EXTENSIONS
    assert not decode.IMAGE_EXTENSIONS & decode.RAW_EXTENSIONS
    assert decode._heif_available() and decode.PILLOW_FORMATS[-1] == "HEIF"
