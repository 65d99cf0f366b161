"""rawpreview: embedded JPEG previews found in RAW containers; bad input stays bounded."""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import pytest
from PIL import Image

from iqs_cli import rawpreview
from iqs_cli.decode import DecodeError, load_rgb


def _jpeg(width: int, height: int, seed: int = 0, colour=None) -> bytes:
    if colour is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
    else:
        image = Image.new("RGB", (width, height), colour)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue()


class TiffWriter:
    """Lays out a TIFF-like container: blobs and IFDs appended in the order they are made."""

    def __init__(self, order: str = "<", magic: int = 42) -> None:
        self.order = order
        self.data = bytearray((b"II" if order == "<" else b"MM") + struct.pack(order + "HI", magic, 0))

    def blob(self, payload: bytes) -> int:
        if len(self.data) % 2:
            self.data += b"\x00"
        offset = len(self.data)
        self.data += payload
        return offset

    def ifd(self, entries: list[tuple[int, int, object]], next_ifd: int = 0) -> int:
        """entries: (tag, type, list of ints) or (tag, 7, (offset, count)) for UNDEFINED blobs."""
        fields = []
        for tag, typ, values in sorted(entries, key=lambda e: e[0]):
            if typ == 7:
                offset, count = values
                fields.append(struct.pack(self.order + "HHII", tag, 7, count, offset))
                continue
            fmt = {3: "H", 4: "I"}[typ]
            packed = struct.pack(f"{self.order}{len(values)}{fmt}", *values)
            if len(packed) <= 4:
                field = packed.ljust(4, b"\x00")
            else:
                field = struct.pack(self.order + "I", self.blob(packed))
            fields.append(struct.pack(self.order + "HHI", tag, typ, len(values)) + field)
        body = struct.pack(self.order + "H", len(fields)) + b"".join(fields)
        return self.blob(body + struct.pack(self.order + "I", next_ifd))

    def set_first(self, offset: int) -> None:
        self.data[4:8] = struct.pack(self.order + "I", offset)

    def set_next(self, ifd_offset: int, next_offset: int) -> None:
        count = struct.unpack(self.order + "H", self.data[ifd_offset : ifd_offset + 2])[0]
        at = ifd_offset + 2 + 12 * count
        self.data[at : at + 4] = struct.pack(self.order + "I", next_offset)


def _nef_like(order: str, big: bytes, thumb: bytes, orientation: int = 6, magic: int = 42) -> bytes:
    """IFD0 (orientation, SubIFD -> large JPEG) -> IFD1 (thumbnail), like a NEF or ARW."""
    w = TiffWriter(order, magic)
    big_at, thumb_at = w.blob(big), w.blob(thumb)
    sub = w.ifd([(0x0201, 4, [big_at]), (0x0202, 4, [len(big)])])
    ifd1 = w.ifd([(0x0201, 4, [thumb_at]), (0x0202, 4, [len(thumb)])])
    ifd0 = w.ifd([(0x0112, 3, [orientation]), (0x014A, 4, [sub])], next_ifd=ifd1)
    w.set_first(ifd0)
    return bytes(w.data)


@pytest.mark.parametrize("order", ["<", ">"])
def test_largest_preview_from_subifd_byte_exact(tmp_path, order):
    big, thumb = _jpeg(640, 480, 1), _jpeg(160, 120, 2)
    path = tmp_path / "shot.nef"
    path.write_bytes(_nef_like(order, big, thumb))

    assert rawpreview.largest_jpeg_preview(path) == big
    found = rawpreview.scan(path)
    assert [(p.width, p.height) for p in found.previews] == [(160, 120), (640, 480)]
    assert found.orientation == 6
    assert rawpreview.read_preview(path, found.previews[0]) == thumb


def test_raw_orientation_applies_to_preview_and_smallest_adequate_preview_is_used(tmp_path):
    path = tmp_path / "shot.arw"
    path.write_bytes(_nef_like("<", _jpeg(640, 480, 1), _jpeg(160, 120, 2), orientation=6))
    assert load_rgb(path, 0).size == (480, 640)  # largest, rotated 90 degrees as IFD0 says
    # Never the 160x120 thumbnail, even when it would be large enough: the large one at 1/4.
    assert load_rgb(path, 100).size == (120, 160)
    assert load_rgb(path, 200).size == (240, 320)  # the large one, halved in the DCT


def test_preview_with_its_own_orientation_when_the_raw_has_none(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    out = io.BytesIO()
    Image.new("RGB", (480, 320), (0, 100, 0)).save(out, "JPEG", exif=exif)
    w = TiffWriter()
    at = w.blob(out.getvalue())
    w.set_first(w.ifd([(0x0201, 4, [at]), (0x0202, 4, [len(out.getvalue())])]))
    path = tmp_path / "x.pef"
    path.write_bytes(bytes(w.data))
    assert rawpreview.scan(path).orientation is None
    assert load_rgb(path, 0).size == (320, 480)


def test_strip_jpeg_is_found_and_lossless_raw_data_is_not(tmp_path):
    # CR2 layout: IFD0 holds a JPEG strip (Compression 6), IFD3 the lossless-JPEG raw data.
    preview = _jpeg(480, 320, 3)
    lossless = b"\xff\xd8\xff\xc3\x00\x0b\x0e\x0f\xa0\x17\x70\x01\x01\x11\x00" + b"\x00" * 300
    w = TiffWriter()
    preview_at, raw_at = w.blob(preview), w.blob(lossless)
    ifd3 = w.ifd([(0x0103, 3, [6]), (0x0111, 4, [raw_at]), (0x0117, 4, [len(lossless)])])
    ifd0 = w.ifd(
        [(0x0103, 3, [6]), (0x0111, 4, [preview_at]), (0x0117, 4, [len(preview)]), (0x0112, 3, [1])],
        next_ifd=ifd3,
    )
    w.set_first(ifd0)
    path = tmp_path / "shot.cr2"
    path.write_bytes(bytes(w.data))
    previews = rawpreview.list_previews(path)
    assert [(p.width, p.height, p.source) for p in previews] == [(480, 320, "IFD0 JPEG strip")]
    assert rawpreview.largest_jpeg_preview(path) == preview


@pytest.mark.parametrize(("header", "suffix"), [(0x55, ".rw2"), (0x4F52, ".orf")])
def test_panasonic_jpg_from_raw_and_olympus_magic(tmp_path, header, suffix):
    jpeg = _jpeg(320, 240, 4)
    w = TiffWriter("<", magic=header)
    at = w.blob(jpeg)
    w.set_first(w.ifd([(0x002E, 7, (at, len(jpeg)))]))
    path = tmp_path / f"p{suffix}"
    path.write_bytes(bytes(w.data))
    assert rawpreview.largest_jpeg_preview(path) == jpeg


def test_raf_header_points_at_the_jpeg(tmp_path):
    jpeg = _jpeg(480, 320, 5)
    header = b"FUJIFILMCCD-RAW 0201FF383501".ljust(84, b"\x00")
    path = tmp_path / "x.raf"
    path.write_bytes(header + struct.pack(">II", 100, len(jpeg)) + b"\x00" * 8 + jpeg)
    assert rawpreview.largest_jpeg_preview(path) == jpeg
    assert load_rgb(path, 0).size == (480, 320)


def test_ifd_loops_and_wild_offsets_end_quickly(tmp_path):
    jpeg = _jpeg(200, 150, 6)
    w = TiffWriter(">")
    at = w.blob(jpeg)
    ifd0 = w.ifd(
        [
            (0x0201, 4, [at]),
            (0x0202, 4, [len(jpeg)]),
            (0x014A, 4, [8, 0xFFFFFFF0, 3]),  # SubIFDs: the header, past the end, odd
            (0x8769, 4, [0x7FFFFFFF]),
        ]
    )
    w.set_first(ifd0)
    w.set_next(ifd0, ifd0)  # IFD0 -> IFD0 -> ...
    path = tmp_path / "loop.nef"
    path.write_bytes(bytes(w.data))
    start = time.perf_counter()
    assert rawpreview.largest_jpeg_preview(path) == jpeg
    assert time.perf_counter() - start < 1.0


def test_preview_lengths_past_the_end_or_not_jpeg_are_ignored(tmp_path):
    w = TiffWriter()
    junk = w.blob(b"not a jpeg at all" * 20)
    sub = w.ifd([(0x0201, 4, [junk]), (0x0202, 4, [340])])
    ifd0 = w.ifd([(0x0201, 4, [16]), (0x0202, 4, [10_000_000]), (0x014A, 4, [sub])])
    w.set_first(ifd0)
    path = tmp_path / "bad.dng"
    path.write_bytes(bytes(w.data))
    assert rawpreview.list_previews(path) == []
    assert rawpreview.largest_jpeg_preview(path) is None
    with pytest.raises(DecodeError, match="no embedded JPEG preview"):
        load_rgb(path, 64)


def test_damaged_largest_preview_falls_back_to_the_next(tmp_path):
    big = bytearray(_jpeg(640, 480, 7))
    sos = big.index(b"\xff\xda")
    big[sos + 20 :] = b"\x00" * (len(big) - sos - 20)  # the frame header survives, the data does not
    big = bytes(big[: sos + 200])
    path = tmp_path / "half.nef"
    path.write_bytes(_nef_like("<", big, _jpeg(480, 360, colour=(200, 20, 20)), orientation=1))
    image = load_rgb(path, 0)
    assert image.size == (480, 360)
    assert image.getpixel((240, 180))[0] > 150


def test_mutated_containers_never_raise(tmp_path):
    # A flat large preview keeps the file small (mutations land in the structures) and above
    # decode.MIN_PREVIEW_LONG_SIDE, so mutated files still reach the JPEG decoder.
    original = _nef_like("<", _jpeg(400, 300, colour=(90, 120, 150)), _jpeg(32, 24, 9))
    rng = np.random.default_rng(42)
    path = tmp_path / "fuzz.nef"
    start = time.perf_counter()
    for _ in range(300):
        data = bytearray(original)
        for at in rng.integers(0, len(data), rng.integers(1, 12)):
            data[at] = rng.integers(0, 256)
        if rng.random() < 0.3:
            data = data[: rng.integers(8, len(data))]
        path.write_bytes(bytes(data))
        rawpreview.scan(path)  # must not raise
        try:
            load_rgb(path, 16)
        except DecodeError:
            pass
    assert time.perf_counter() - start < 10.0


# --- real camera files ------------------------------------------------------------------------


def test_canon_cr3_previews(shared_data):
    path = shared_data / "raw-samples" / "Canon-R6-pruned.CR3"
    found = rawpreview.scan(path)
    found_at = [(p.offset, p.width, p.height) for p in found.previews]
    assert found_at == [(18288, 160, 120), (102176, 1620, 1080)]
    largest = rawpreview.largest_jpeg_preview(path)
    with Image.open(io.BytesIO(largest)) as image:
        assert image.size == (1620, 1080)
    assert load_rgb(path, 384).size == (810, 540)


def test_dng_without_preview_gives_a_clean_error(shared_data):
    path = shared_data / "raw-samples" / "IMG_1361.dng"
    assert rawpreview.largest_jpeg_preview(path) is None
    with pytest.raises(DecodeError, match="RAW file has no embedded JPEG preview"):
        load_rgb(path, 384)


def test_canon_crw_thumbnail(shared_data):
    path = shared_data / "raw-samples" / "exiv2-canon-powershot-s40.crw"
    with Image.open(io.BytesIO(rawpreview.largest_jpeg_preview(path))) as image:
        assert image.size == (160, 120)
    # Its only image is the thumbnail: too small to judge the photo by.
    with pytest.raises(DecodeError, match="embeds only a 160x120 thumbnail"):
        load_rgb(path, 384)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the broken EXIF blocks
def test_every_bad_input_gives_an_image_or_a_decode_error(shared_data):
    files = sorted(p for p in (shared_data / "bad-inputs").iterdir() if p.name != "README.md")
    assert len(files) >= 70
    for path in files:
        start = time.perf_counter()
        rawpreview.scan(path)  # any container parse must survive, whatever the extension
        try:
            image = load_rgb(path, 64)
        except DecodeError as error:
            assert str(error)
        else:
            assert image.mode == "RGB" and min(image.size) > 0
        assert time.perf_counter() - start < 5.0, path.name
