"""Find the JPEG previews cameras embed in RAW files, without decoding the RAW data.

iqs scores a RAW file through its embedded preview: the camera's own rendering, a JPEG that
decodes in milliseconds. This module is a small reader of the containers cameras use:

- TIFF-based (CR2, NEF, NRW, ARW, SR2, DNG, ORF, RW2, PEF, SRW, 3FR, IIQ): IFD0, the chain of
  next IFDs, SubIFDs (0x014a) and the EXIF IFD; a preview is a JPEGInterchangeFormat/Length
  pair (0x0201/0x0202), a single-strip JPEG-compressed image (Compression 6 or 7) or
  Panasonic's JpgFromRaw (0x002e). The orientation is IFD0's tag 0x0112.
- Fujifilm RAF: the JPEG whose offset and length the header holds at bytes 84 and 88.
- Canon CR3 (ISO base media): THMB in Canon's moov/uuid box, PRVW in the uuid box
  eaf42b5e-1c98-4b88-b9fb-b7dc406e4d16; the orientation is in CMT1 (a TIFF IFD0).
- Canon CRW (CIFF heaps): JpgFromRaw/ThumbnailImage records, rotation from ImageInfo.

Files are untrusted: every offset and length is checked against the file (or the enclosing
structure) before anything is read, structures are visited at most once, and the counts of
IFDs, entries, boxes, heaps and markers are capped, so a malformed file ends quickly with no
preview rather than a hang, a crash or a huge allocation. Only a JPEG that starts with SOI and
has a baseline or progressive frame header (which gives its size) counts as a preview.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_MAX_IFDS = 64
_MAX_IFD_ENTRIES = 1000
_MAX_SUBIFDS = 16
_MAX_DEPTH = 6
_MAX_BOXES = 512
_MAX_HEAPS = 64
_MAX_HEAP_ENTRIES = 512
_MAX_JPEG_MARKERS = 64
_MAX_CANDIDATES = 32

_CR3_PREVIEW_UUID = bytes.fromhex("eaf42b5e1c984b88b9fbb7dc406e4d16")
_CR3_CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
_TIFF_MAGICS = {42, 0x4F52, 0x5352, 0x55}  # TIFF, Olympus "RO"/"RS", Panasonic "U"


@dataclass(frozen=True)
class Preview:
    """One embedded JPEG: where it is in the file and how large it is."""

    offset: int
    length: int
    width: int
    height: int
    source: str  # where it was found, e.g. "IFD1 JPEGInterchangeFormat" or "CR3 PRVW"

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class RawPreviews:
    """What a RAW file offers iqs: its valid JPEG previews (smallest first) and orientation."""

    previews: tuple[Preview, ...]
    orientation: int | None  # EXIF orientation 1-8 of the RAW itself, None when not found


def scan(path: Path) -> RawPreviews:
    """Parse the container of `path` and list its decodable JPEG previews.

    Malformed structures give fewer (or no) previews, never an exception; errors opening or
    reading the file (OSError) propagate.
    """
    with open(path, "rb") as fp:
        source = _Source(fp, os.fstat(fp.fileno()).st_size)
        found = _Found()
        head = source.read(0, 32) or b""
        try:
            if head.startswith(b"FUJIFILMCCD-RAW"):
                _scan_raf(source, found)
            elif head[4:8] == b"ftyp":
                _scan_bmff(source, 0, source.size, found, 0, [_MAX_BOXES])
            elif head[:2] in (b"II", b"MM") and head[6:14] == b"HEAPCCDR":
                _scan_ciff(source, found)
            elif head[:2] in (b"II", b"MM"):
                found.set_orientation(_scan_tiff(source, 0, source.size, found))
        except _Malformed:
            pass  # keep whatever was found before the damage
        previews = _validate(source, found.candidates)
    return RawPreviews(previews=previews, orientation=found.orientation)


def list_previews(path: Path) -> list[Preview]:
    """The decodable JPEG previews in `path`, smallest first."""
    return list(scan(path).previews)


def read_preview(path: Path, preview: Preview) -> bytes:
    """The bytes of one preview found by `scan` (checked against the file's current size)."""
    with open(path, "rb") as fp:
        data = _Source(fp, os.fstat(fp.fileno()).st_size).read(preview.offset, preview.length)
    if data is None:
        raise OSError("the RAW file changed or shrank while it was being read")
    return data


def largest_jpeg_preview(path: Path) -> bytes | None:
    """The bytes of the largest embedded JPEG preview of `path` (by pixel count), or None."""
    previews = scan(path).previews
    return read_preview(path, previews[-1]) if previews else None


def preference_order(previews: tuple[Preview, ...] | list[Preview], min_side: int) -> list[Preview]:
    """Previews in the order to try for an image whose short side must reach min_side.

    The smallest preview that is large enough decodes fastest; when none is large enough the
    largest is best. min_side <= 0 asks for the largest first.
    """
    by_size = sorted(previews, key=lambda p: (p.pixels, p.length))
    if min_side <= 0:
        return by_size[::-1]
    enough = [p for p in by_size if min(p.width, p.height) >= min_side]
    too_small = [p for p in by_size if min(p.width, p.height) < min_side]
    return enough + too_small[::-1]


class _Malformed(Exception):
    """A structure points outside its bounds or loops: stop reading it."""


@dataclass
class _Candidate:
    offset: int
    length: int
    source: str


class _Found:
    def __init__(self) -> None:
        self.candidates: list[_Candidate] = []
        self.orientation: int | None = None

    def add(self, offset: int, length: int, source: str) -> None:
        if len(self.candidates) < _MAX_CANDIDATES and offset > 0 and length > 0:
            self.candidates.append(_Candidate(offset, length, source))

    def set_orientation(self, value: int | None) -> None:
        if self.orientation is None and value is not None and 1 <= value <= 8:
            self.orientation = value


class _Source:
    """Bounded random access to a file: a read outside the file gives None, never a short read."""

    def __init__(self, fp: BinaryIO, size: int) -> None:
        self.fp = fp
        self.size = size

    def read(self, offset: int, length: int) -> bytes | None:
        if offset < 0 or length < 0 or offset + length > self.size:
            return None
        self.fp.seek(offset)
        data = self.fp.read(length)
        return data if len(data) == length else None

    def need(self, offset: int, length: int, end: int | None = None) -> bytes:
        """Like read, but must lie before `end` too; raises _Malformed otherwise."""
        if end is not None and offset + length > end:
            raise _Malformed
        data = self.read(offset, length)
        if data is None:
            raise _Malformed
        return data


# --- TIFF -------------------------------------------------------------------------------------

_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_INT_FORMATS = {1: "B", 3: "H", 4: "I", 13: "I"}


def _scan_tiff(source: _Source, base: int, end: int, found: _Found) -> int | None:
    """Walk a TIFF structure at `base` (offsets inside it are relative to base); returns IFD0's
    orientation. Candidates go into `found`."""
    header = source.need(base, 8, end)
    order = {b"II": "<", b"MM": ">"}.get(header[:2])
    if order is None or struct.unpack(order + "H", header[2:4])[0] not in _TIFF_MAGICS:
        raise _Malformed
    first = struct.unpack(order + "I", header[4:8])[0]
    visited: set[int] = set()
    orientation: int | None = None
    # (offset of an IFD relative to base, name, depth, follow its next-IFD chain)
    queue: list[tuple[int, str, int]] = [(first, "IFD0", 0)]
    chain_index = 0
    while queue and len(visited) < _MAX_IFDS:
        offset, name, depth = queue.pop(0)
        if offset == 0 or offset in visited or depth > _MAX_DEPTH:
            continue
        visited.add(offset)
        try:
            entries, next_offset = _read_ifd(source, base, end, offset, order)
        except _Malformed:
            continue
        if name == "IFD0":
            orientation = _first_int(source, base, end, order, entries.get(0x0112))
        _collect_tiff_candidates(source, base, end, order, entries, name, found)
        for index, sub in enumerate(_ints(source, base, end, order, entries.get(0x014A), _MAX_SUBIFDS)):
            queue.append((sub, f"{name} SubIFD{index}", depth + 1))
        exif = _first_int(source, base, end, order, entries.get(0x8769))
        if exif:
            queue.append((exif, f"{name} EXIF", depth + 1))
        if name.startswith("IFD") and " " not in name and next_offset:
            chain_index += 1
            queue.append((next_offset, f"IFD{chain_index}", depth))
    return orientation


def _read_ifd(source: _Source, base: int, end: int, offset: int, order: str):
    count = struct.unpack(order + "H", source.need(base + offset, 2, end))[0]
    if count == 0 or count > _MAX_IFD_ENTRIES:
        raise _Malformed
    raw = source.need(base + offset + 2, count * 12 + 4, end)
    entries = {}
    for i in range(count):
        tag, typ, n = struct.unpack(order + "HHI", raw[i * 12 : i * 12 + 8])
        entries.setdefault(tag, (typ, n, raw[i * 12 + 8 : i * 12 + 12]))
    next_offset = struct.unpack(order + "I", raw[count * 12 :])[0]
    return entries, next_offset


def _ints(source: _Source, base: int, end: int, order: str, entry, limit: int) -> list[int]:
    """The integer values of an IFD entry (at most `limit`), [] when absent or malformed."""
    if entry is None:
        return []
    typ, count, field = entry
    fmt = _INT_FORMATS.get(typ)
    if fmt is None or count == 0 or count > limit:
        return []
    size = _TYPE_SIZES[typ] * count
    if size <= 4:
        data = field[:size]
    else:
        at = base + struct.unpack(order + "I", field)[0]
        data = source.read(at, size) if at + size <= end else None
        if data is None:
            return []
    return list(struct.unpack(f"{order}{count}{fmt}", data))


def _first_int(source, base, end, order, entry) -> int | None:
    values = _ints(source, base, end, order, entry, 1)
    return values[0] if values else None


def _collect_tiff_candidates(source, base, end, order, entries, name, found: _Found) -> None:
    start = _first_int(source, base, end, order, entries.get(0x0201))
    length = _first_int(source, base, end, order, entries.get(0x0202))
    if start and length:
        found.add(base + start, length, f"{name} JPEGInterchangeFormat")
    compression = _first_int(source, base, end, order, entries.get(0x0103))
    if compression in (6, 7):
        strips = _ints(source, base, end, order, entries.get(0x0111), 1)
        counts = _ints(source, base, end, order, entries.get(0x0117), 1)
        if strips and counts:
            found.add(base + strips[0], counts[0], f"{name} JPEG strip")
    jpg_from_raw = entries.get(0x002E)  # Panasonic RW2: an UNDEFINED blob holding a JPEG
    if jpg_from_raw is not None and jpg_from_raw[0] == 7 and jpg_from_raw[1] > 4:
        offset = struct.unpack(order + "I", jpg_from_raw[2])[0]
        found.add(base + offset, jpg_from_raw[1], f"{name} JpgFromRaw")


# --- Fujifilm RAF -----------------------------------------------------------------------------


def _scan_raf(source: _Source, found: _Found) -> None:
    offset, length = struct.unpack(">II", source.need(84, 8))
    found.add(offset, length, "RAF JPEG")


# --- Canon CR3 (ISO base media file format) ----------------------------------------------------


def _scan_bmff(
    source: _Source, start: int, end: int, found: _Found, depth: int, budget: list[int]
) -> None:
    pos = start
    while pos + 8 <= end and budget[0] > 0:
        budget[0] -= 1
        size, kind = struct.unpack(">I4s", source.need(pos, 8, end))
        header = 8
        if size == 1:
            size = struct.unpack(">Q", source.need(pos + 8, 8, end))[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise _Malformed
        payload, box_end = pos + header, pos + size
        if kind == b"moov" and depth < _MAX_DEPTH:
            _scan_bmff(source, payload, box_end, found, depth + 1, budget)
        elif kind == b"uuid" and box_end - payload >= 16 and depth < _MAX_DEPTH:
            uuid = source.need(payload, 16, box_end)
            if uuid == _CR3_CANON_UUID:
                _scan_bmff(source, payload + 16, box_end, found, depth + 1, budget)
            elif uuid == _CR3_PREVIEW_UUID:  # 8 bytes of its own header, then the PRVW box
                _scan_bmff(source, payload + 24, box_end, found, depth + 1, budget)
        elif kind in (b"THMB", b"PRVW"):
            _add_cr3_jpeg(source, payload, box_end, kind.decode(), found)
        elif kind == b"CMT1":
            try:
                found.set_orientation(_scan_tiff(source, payload, box_end, _Found()))
            except _Malformed:
                pass
        pos = box_end


def _add_cr3_jpeg(source: _Source, payload: int, box_end: int, kind: str, found: _Found) -> None:
    head = source.read(payload, min(64, box_end - payload)) or b""
    soi = head.find(b"\xff\xd8\xff")
    if soi < 0:
        return
    start = payload + soi
    length = box_end - start
    # The declared JPEG size sits just before the data: at +8 in THMB, +12 in PRVW.
    field = 8 if kind == "THMB" else 12
    if soi >= field + 4:
        declared = struct.unpack(">I", head[field : field + 4])[0]
        if 0 < declared <= length:
            length = declared
    found.add(start, length, f"CR3 {kind}")


# --- Canon CRW (CIFF) --------------------------------------------------------------------------


def _scan_ciff(source: _Source, found: _Found) -> None:
    head = source.need(0, 14)
    order = "<" if head[:2] == b"II" else ">"
    header_length = struct.unpack(order + "I", head[2:6])[0]
    budget = [_MAX_HEAPS]
    _scan_heap(source, order, header_length, source.size, found, 0, budget, set())


def _scan_heap(source, order, start, end, found: _Found, depth, budget, visited) -> None:
    if depth > _MAX_DEPTH or budget[0] <= 0 or (start, end) in visited or end - start < 6:
        return
    budget[0] -= 1
    visited.add((start, end))
    table = start + struct.unpack(order + "I", source.need(end - 4, 4))[0]
    if not start <= table < end - 4:
        raise _Malformed
    count = struct.unpack(order + "H", source.need(table, 2, end))[0]
    if count > _MAX_HEAP_ENTRIES:
        raise _Malformed
    records = source.need(table + 2, count * 10, end)
    for i in range(count):
        tag, size, offset = struct.unpack(order + "HII", records[i * 10 : i * 10 + 10])
        if tag & 0xC000:  # data stored in the record itself: nothing we need
            continue
        data_start = start + offset
        if offset > end - start or size > end - data_start:
            continue
        tag_id, data_type = tag & 0x3FFF, tag & 0x3800
        if data_type in (0x2800, 0x3000):  # a sub-heap
            try:
                sub_end = data_start + size
                _scan_heap(source, order, data_start, sub_end, found, depth + 1, budget, visited)
            except _Malformed:
                continue
        elif tag_id in (0x2007, 0x2008):  # JpgFromRaw, ThumbnailImage
            found.add(data_start, size, "CRW JpgFromRaw" if tag_id == 0x2007 else "CRW ThumbnailImage")
        elif tag_id == 0x1810 and size >= 16:  # ImageInfo: rotation in degrees at +12
            rotation = struct.unpack(order + "i", source.need(data_start + 12, 4))[0]
            found.set_orientation({0: 1, 90: 6, 180: 3, 270: 8}.get(rotation % 360))


# --- JPEG validation ---------------------------------------------------------------------------

_DECODABLE_FRAMES = {0xC0, 0xC1, 0xC2}  # baseline, extended, progressive Huffman (not lossless)


def _validate(source: _Source, candidates: list[_Candidate]) -> tuple[Preview, ...]:
    previews: dict[tuple[int, int], Preview] = {}
    for c in candidates:
        if (c.offset, c.length) in previews or c.offset + c.length > source.size:
            continue
        size = _jpeg_size(source, c.offset, c.length)
        if size is not None:
            previews[(c.offset, c.length)] = Preview(c.offset, c.length, size[0], size[1], c.source)
    return tuple(sorted(previews.values(), key=lambda p: (p.pixels, p.length, p.offset)))


def _jpeg_size(source: _Source, offset: int, length: int) -> tuple[int, int] | None:
    """(width, height) from the frame header of the JPEG at offset, None if it is not one."""
    end = offset + length
    if length < 128 or source.read(offset, 3) != b"\xff\xd8\xff":
        return None
    pos = offset + 2
    for _ in range(_MAX_JPEG_MARKERS):
        head = source.read(pos, 4)
        if head is None or pos + 4 > end or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01 or marker == 0xDA:
            return None  # image data or end before any frame header
        segment = struct.unpack(">H", head[2:4])[0]
        if segment < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _DECODABLE_FRAMES:
                return None  # lossless (RAW data) or arithmetic/hierarchical frames
            frame = source.read(pos + 4, 5)
            if frame is None:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return (width, height) if width and height else None
        pos += 2 + segment
    return None
