"""Reading and writing labels in files: XMP sidecars, and XMP inside the photo (pyexiv2).

Only a regular file is read as a sidecar, and at most MAX_SIDECAR_BYTES of it: a FIFO, a
device (e.g. a link to /dev/zero) or a folder in its place is an XmpError, not a hang. Every
write is atomic (`fsutil.write_atomic`); temp files are named by `fsutil.temp_path` (always
within the filesystem's 255-byte name limit); a photo whose sidecar name would pass that limit
gets a clear XmpError.

In-file XMP (JPEG/TIFF/PNG/WebP, never RAW) is merged the same way as a sidecar and handed to
exiv2 (pyexiv2), which re-serializes the packet inside the photo; the result is checked (XMP
read back, image data byte-identical or pixel-identical) before it atomically replaces the
photo.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from ..fsutil import NAME_MAX, describe_os_error, write_atomic
from ..result import ShotResult
from .labels import (COLOR, COLOR_LABELS, IQS_NS, LABEL, PICK, PICK_LABELS, RATING,
                     REJECTED_RATING, WRITTEN, labels_from, same_value)
from .merge import check, merge, rewrite
from .packet import UNTOUCHED, Packet, XmpError, first_values, is_blank, new_packet

IN_FILE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".png", ".webp"})
SIDECAR_STYLES = ("digikam", "lightroom")
MAX_SIDECAR_BYTES = 16 * 1024 * 1024  # real sidecars are kilobytes; refuse to load a monster


class WriteRecorder(Protocol):
    """Told about every file iqs is about to create or change (the undo journal implements it)."""

    def before_write(self, path: Path, existed: bool) -> None:
        """Called before `path` changes; may back it up. Raising stops the write."""

    def after_write(self, path: Path, sha256: str) -> None:
        """Called once `path` holds the new bytes (their sha256)."""


@dataclass
class WriteOutcome:
    photo: Path  # the photo the labels describe
    target: Path  # the file written: a sidecar, or the photo itself for in-file XMP
    in_file: bool = False
    created: bool = False  # a new sidecar (False: an existing file was updated)
    human_kept: bool = False  # labels a person set were kept (iqs values were still added)
    error: str | None = None  # set by write_shot when this file failed (nothing was written)

    @property
    def ok(self) -> bool:
        return self.error is None


# ---------------------------------------------------------------------------------------------
# Paths


def sidecar_path(photo: Path | str, style: str = "digikam") -> Path:
    """`photo.ext.xmp` (digiKam, darktable) or, with style "lightroom", `photo.xmp`."""
    photo = Path(photo)
    if style == "digikam":
        return photo.with_name(photo.name + ".xmp")
    if style == "lightroom":
        return photo.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style {style!r}: use one of {', '.join(SIDECAR_STYLES)}")


def existing_sidecars(photo: Path | str) -> list[Path]:
    """The sidecars `photo` has, in SIDECAR_STYLES order (`photo.ext.xmp`, then `photo.xmp`)."""
    return [path for path in (sidecar_path(photo, style) for style in SIDECAR_STYLES)
            if path.is_file()]


def writes_in_file(photo: Path | str, in_file: bool) -> bool:
    """Whether labels for `photo` go into the file itself (never for RAW or unknown formats)."""
    return in_file and Path(photo).suffix.lower() in IN_FILE_SUFFIXES


def sidecar_in_use(photo: Path | str, style: str = "digikam") -> Path:
    """The sidecar labels for `photo` go to: the style's name, except that with the Lightroom
    style an existing `photo.ext.xmp` (and no `photo.xmp`) is merged into. A second sidecar
    would split the labels: digiKam reads `photo.xmp` first and darktable only `photo.ext.xmp`
    (docs/design.md, XMP)."""
    chosen = sidecar_path(photo, style)
    if style == "lightroom" and not os.path.lexists(chosen):
        existing = sidecar_path(photo, "digikam")
        if os.path.lexists(existing):
            return existing
    return chosen


def target_path(photo: Path | str, *, style: str = "digikam", in_file: bool = False) -> Path:
    """The file `write_labels` would write for `photo` (for dry runs and journals)."""
    return Path(photo) if writes_in_file(photo, in_file) else sidecar_in_use(photo, style)


# ---------------------------------------------------------------------------------------------
# Reading safely


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _require_regular(path: Path, st: os.stat_result, what: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    via = " (through a symbolic link)" if os.path.islink(path) else ""
    raise XmpError(f"{what} is {_kind(st.st_mode)}{via}, not a regular file; {UNTOUCHED} — "
                   "move it out of the way, then re-run")


def _require_small(size: int, what: str) -> None:
    if size > MAX_SIDECAR_BYTES:
        raise XmpError(f"{what} is {size // (1024 * 1024)} MiB or more, too large for an XMP "
                       f"sidecar; {UNTOUCHED} — check what it is, then re-run")


def _cannot(exc: OSError, action: str) -> XmpError:
    return XmpError(describe_os_error(exc, action))


def _read_existing(path: Path, what: str) -> bytes | None:
    """The bytes of the sidecar at `path`, or None when there is none.

    Only a regular file is read, and at most MAX_SIDECAR_BYTES + 1 bytes of it: opening a FIFO
    waits for a writer forever, /dev/zero never ends, so anything else is refused unopened."""
    try:
        st = os.stat(path)  # follows a symbolic link: what it points at is what would be read
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _cannot(exc, f"read {what}") from None
    _require_regular(path, st, what)
    _require_small(st.st_size, what)
    # O_NONBLOCK: should a FIFO take the file's place after the stat, open does not wait.
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
             | getattr(os, "O_BINARY", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _cannot(exc, f"read {what}") from None
    chunks: list[bytes] = []
    try:
        _require_regular(path, os.fstat(fd), what)  # what was opened, not what was stat'ed
        left = MAX_SIDECAR_BYTES + 1
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise _cannot(exc, f"read {what}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    _require_small(len(data), what)  # it grew after the stat
    return data


def _pyexiv2():
    """pyexiv2, with exiv2's own log muted: it prints warnings about broken files to stdout
    (which would corrupt `--format jsonl` output); every failure still arrives as an exception."""
    import pyexiv2

    pyexiv2.set_log_level(4)
    return pyexiv2


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _packet_of(raw_xmp: str, what: str) -> Packet:
    """The packet exiv2 found inside a photo (a new one when there is none)."""
    return Packet(raw_xmp.encode("utf-8") if raw_xmp.strip() else new_packet(), what)


def read_labels(path: Path | str) -> dict:
    """Labels in a sidecar (`*.xmp`) or in a photo's own XMP.

    Returns {"pick", "rating", "color" (numbers or None), "label" (str or None),
    "iqs": {label, mos, stars, probabilities, model, modelVersion, reasons, date, written},
    "by_iqs": True when the labels present are the ones iqs wrote}. Raises XmpError.
    """
    path = Path(path)
    if path.suffix.lower() == ".xmp":
        what = f"sidecar {path}"
        data = _read_existing(path, what)
        if data is None:
            raise XmpError(f"{what} not found")
        return labels_from(Packet(new_packet() if is_blank(data) else data, what))
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _cannot(exc, f"read {path}") from None
    _require_regular(path, st, str(path))  # a FIFO would block the read
    pyexiv2 = _pyexiv2()
    try:
        with pyexiv2.ImageData(path.read_bytes()) as image:
            raw = image.read_raw_xmp()
    except OSError as exc:
        raise _cannot(exc, f"read {path}") from None
    except (RuntimeError, ValueError, UnicodeDecodeError) as exc:
        raise XmpError(f"{path}: cannot read its XMP ({_one_line(exc)})") from None
    return labels_from(_packet_of(raw, f"XMP inside {path}"))


# ---------------------------------------------------------------------------------------------
# Writing


def _atomic_write(target: Path, data: bytes, keep_mode_of: Path | None) -> None:
    try:
        write_atomic(target, data, keep_mode_of)
    except OSError as exc:
        message = describe_os_error(exc, f"write {target}")
        raise XmpError(f"{message}; nothing was changed") from None


def _recorded_write(target: Path, data: bytes, existed: bool, recorder: WriteRecorder | None,
                    keep_mode_of: Path | None) -> None:
    """Write `data` to `target` atomically, telling `recorder` before and after."""
    if recorder is not None:
        recorder.before_write(target, existed)
    _atomic_write(target, data, keep_mode_of)
    if recorder is not None:
        recorder.after_write(target, hashlib.sha256(data).hexdigest())


def _require_name_fits(photo: Path, target: Path) -> None:
    """A sidecar name over the filesystem's limit cannot be made: say so, and how to fix it."""
    size = len(os.fsencode(target.name))
    if size > NAME_MAX:
        room = NAME_MAX - (size - len(os.fsencode(photo.name)))
        raise XmpError(f"{photo}: its sidecar name would be {size} bytes, longer than the "
                       f"{NAME_MAX} bytes the filesystem allows; no labels written for it — "
                       f"rename the photo to at most {room} bytes, then re-run")


def _check_photo(photo: Path) -> None:
    if not photo.is_file():
        raise XmpError(f"{photo}: photo not found (moved or deleted after scoring?); "
                       "no labels written for it")


def _sidecar_to_change(photo: Path, style: str) -> tuple[Path, str, bytes | None, Packet]:
    """(the sidecar labels for `photo` go to, its name for messages, its bytes or None when
    there is none yet, its packet): XmpError, nothing changed, when it may not be changed."""
    target = sidecar_in_use(photo, style)
    _require_name_fits(photo, target)
    what = f"existing sidecar {target}"
    existing = _read_existing(target, what)
    if existing is not None and target.is_symlink():
        raise XmpError(f"{target} is a symbolic link; {UNTOUCHED} — replace it with a regular "
                       "file, then re-run")
    if existing is not None and not os.access(target, os.W_OK):
        raise XmpError(f"{target} is read-only; {UNTOUCHED} — make it writable if iqs may "
                       "add its labels, then re-run")
    blank = existing is None or is_blank(existing)
    return target, what, existing, Packet(new_packet() if blank else existing, what)


def write_labels(photo: Path | str, result: ShotResult, *, style: str = "digikam",
                 in_file: bool = False, color_labels: bool = False, overwrite: bool = False,
                 recorder: WriteRecorder | None = None,
                 now: datetime | None = None) -> WriteOutcome:
    """Write the labels of `result` for one file of its shot: sidecar, or in-file XMP.

    Raises XmpError (nothing changed) when the existing sidecar/metadata cannot be merged or
    the file cannot be written. Exceptions from `recorder` propagate (nothing written).
    """
    if result.label not in PICK_LABELS:
        raise ValueError(f"no verdict to write for {result.path}: label is {result.label!r}")
    photo = Path(photo)
    sidecar_path(photo, style)  # validates the style
    now = now or datetime.now().astimezone()
    _check_photo(photo)
    if writes_in_file(photo, in_file):
        return _write_in_file(photo, result, color_labels=color_labels, overwrite=overwrite,
                              recorder=recorder, now=now)

    target, what, existing, packet = _sidecar_to_change(photo, style)
    merged = merge(packet, result, color_labels=color_labels, overwrite=overwrite, now=now)
    check(merged.data, merged, result, what)
    _recorded_write(target, merged.data, existing is not None, recorder,
                    keep_mode_of=target if existing is not None else None)
    return WriteOutcome(photo, target, in_file=False, created=existing is None,
                        human_kept=merged.human_kept)


def _jpeg_scan_start(data: bytes) -> int | None:
    """Offset of the first SOS marker: everything from there on is the compressed image."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
        elif marker == 0xDA:
            return i
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            i += 2
        else:
            length = int.from_bytes(data[i + 2:i + 4], "big")
            if length < 2:
                return None
            i += 2 + length
    return None


def _same_image_data(before: bytes, after: bytes) -> bool:
    """True when exiv2 left the image itself alone (compressed bytes, else decoded pixels)."""
    a, b = _jpeg_scan_start(before), _jpeg_scan_start(after)
    if a is not None and b is not None:
        return memoryview(before)[a:] == memoryview(after)[b:]
    from PIL import Image

    with warnings.catch_warnings():  # broken files warn; the comparison decides
        warnings.simplefilter("ignore")
        with Image.open(io.BytesIO(before)) as old, Image.open(io.BytesIO(after)) as new:
            return (old.size == new.size and old.mode == new.mode
                    and old.tobytes() == new.tobytes())


def _write_in_file(photo: Path, result: ShotResult, *, color_labels: bool, overwrite: bool,
                   recorder: WriteRecorder | None, now: datetime) -> WriteOutcome:
    pyexiv2 = _pyexiv2()

    what = f"XMP inside {photo}"
    try:
        original = photo.read_bytes()
    except OSError as exc:
        raise _cannot(exc, f"read {photo}") from None
    if not os.access(photo, os.W_OK):
        raise XmpError(f"{photo} is read-only; iqs leaves it untouched — make it writable, or "
                       "drop --in-file to write a sidecar instead")
    try:
        image = pyexiv2.ImageData(original)
    except (RuntimeError, ValueError) as exc:
        raise XmpError(f"{photo}: exiv2 cannot read its metadata ({_one_line(exc)}); nothing "
                       "written into it "
                       "— drop --in-file to write a sidecar instead") from None
    try:
        try:
            raw = image.read_raw_xmp()
        except (RuntimeError, UnicodeDecodeError) as exc:
            raise XmpError(f"{what} cannot be read ({_one_line(exc)}); {UNTOUCHED} — drop "
                           "--in-file to write a sidecar instead") from None
        packet = _packet_of(raw, what)
        merged = merge(packet, result, color_labels=color_labels, overwrite=overwrite, now=now)
        check(merged.data, merged, result, what)
        try:
            image.modify_raw_xmp(merged.data.decode("utf-8"))
            updated = image.get_bytes()
        except RuntimeError as exc:
            raise XmpError(f"{photo}: exiv2 could not write the XMP ({_one_line(exc)}); "
                           f"{UNTOUCHED} — drop --in-file to write a sidecar instead") from None
    finally:
        image.close()

    # Check what exiv2 produced before it replaces the photo.
    try:
        check_image = pyexiv2.ImageData(updated)
        try:
            written_back = check_image.read_raw_xmp()
        finally:
            check_image.close()
    except (RuntimeError, UnicodeDecodeError) as exc:
        raise XmpError(f"{photo}: exiv2 cannot read back the XMP it wrote ({_one_line(exc)}); "
                       f"{UNTOUCHED} — drop --in-file to write a sidecar instead") from None
    check(written_back.encode("utf-8"), merged, result, f"XMP written into {photo}")
    try:
        same = _same_image_data(original, updated)
    except Exception:  # PIL cannot decode it (any error): never write into such a file
        raise XmpError(f"{photo}: the image cannot be decoded, so iqs cannot check that adding "
                       f"XMP leaves it intact; {UNTOUCHED} — drop --in-file to write a sidecar "
                       "instead") from None
    if not same:
        raise XmpError(f"{photo}: writing XMP would change the image data; {UNTOUCHED} — drop "
                       "--in-file to write a sidecar instead")
    _recorded_write(photo, updated, True, recorder, keep_mode_of=photo)
    return WriteOutcome(photo, photo, in_file=True, created=False, human_kept=merged.human_kept)


def write_shot(result: ShotResult, *, style: str = "digikam", in_file: bool = False,
               color_labels: bool = False, overwrite: bool = False,
               recorder: WriteRecorder | None = None,
               now: datetime | None = None) -> list[WriteOutcome]:
    """Label every file of the shot (RAW files always get a sidecar). A file that fails gets
    an outcome with `error` set; the others are still written."""
    now = now or datetime.now().astimezone()
    outcomes = []
    seen: set[Path] = set()
    for name in result.files or [result.path]:
        photo = Path(name)
        target = target_path(photo, style=style, in_file=in_file)
        if target in seen:  # RAW + JPEG share `photo.xmp` in the Lightroom style
            continue
        seen.add(target)
        try:
            outcomes.append(write_labels(photo, result, style=style, in_file=in_file,
                                         color_labels=color_labels, overwrite=overwrite,
                                         recorder=recorder, now=now))
        except XmpError as exc:
            outcomes.append(WriteOutcome(photo, target, in_file=writes_in_file(photo, in_file),
                                         error=str(exc)))
    return outcomes


# ---------------------------------------------------------------------------------------------
# A person's labels (issue 17: `iqs apply` writes the labels chosen on the report page)


def write_person_labels(photo: Path | str, label: str, rating: int, *, style: str = "digikam",
                        recorder: WriteRecorder | None = None) -> WriteOutcome:
    """Write a person's verdict on `photo` into its sidecar: pick label `label` (rejected /
    pending / accepted) and xmp:Rating `rating` (-1: rejected, 0-5 stars), replacing whatever
    pick label and rating were there, not recorded as iqs's (so every later iqs run keeps
    them, as labels set in digiKam). A color label iqs wrote (its record unchanged) follows the
    new pick label and becomes the person's too; a person's own color label stays. iqs's
    `iqs:*` values (MOS, reasons, its verdict) stay. Raises XmpError (nothing changed)."""
    if label not in PICK_LABELS:
        raise XmpError(f"{photo}: {label!r} is not a label (rejected, pending or accepted); "
                       "nothing written")
    if not REJECTED_RATING <= int(rating) <= 5:
        raise XmpError(f"{photo}: rating {rating} is outside -1..5; nothing written")
    photo = Path(photo)
    _check_photo(photo)
    target, what, existing, packet = _sidecar_to_change(photo, style)
    labels = {PICK: str(PICK_LABELS[label]), RATING: str(int(rating))}
    first = first_values(packet.properties())
    for key in (COLOR, LABEL):
        record = first.get((IQS_NS, WRITTEN[key]))
        if key in first and record is not None and same_value(first[key].value, record.value):
            labels[COLOR], labels[LABEL] = str(COLOR_LABELS[label][0]), COLOR_LABELS[label][1]
    # Those keys and iqs's records of them go; without a record, labels_from counts the new
    # values as a person's, so later iqs runs keep them. iqs's own values stay.
    records = {WRITTEN[key] for key in labels}
    data = rewrite(packet, lambda p: p.key in labels or (p.uri == IQS_NS and p.local in records),
                   labels, [])
    written = labels_from(Packet(data, what))
    if written["pick"] != PICK_LABELS[label] or written["rating"] != int(rating) \
            or written["by_iqs"]:
        raise XmpError(f"{what}: the person's labels did not read back as written (internal "
                       f"error); {UNTOUCHED} — please report this file")
    _recorded_write(target, data, existing is not None, recorder,
                    keep_mode_of=target if existing is not None else None)
    return WriteOutcome(photo, target, in_file=False, created=existing is None)
