"""Photo file -> RGB pixels, fast: JPEG draft mode, EXIF orientation, RAW previews.

`load_rgb` is the single way both the command and training turn a file into pixels, so the
same file always gives the same image. It returns the smallest image whose short side is still
at least `min_side` that can be had cheaply: JPEG (and RAW previews, which are JPEGs) decode at
1/2, 1/4 or 1/8 scale in libjpeg's DCT ("draft mode"), other formats are shrunk by an integer
box filter (`Image.reduce`). The caller does the final resize.

HEIC/HEIF (every iPhone's format) decodes through pillow-heif, imported on the first HEIF
file: most runs are all JPEG and RAW and need not pay for it.

Every failure is a `DecodeError` whose message says what is wrong with the file and what to
do; the caller prints it after the path. Pillow's DecompressionBombWarning (an image between
Image.MAX_IMAGE_PIXELS and twice that) is silenced: such an image is decoded like any other.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from iqs_cli import rawpreview
from iqs_cli.fsutil import os_error_note

RAW_EXTENSIONS = frozenset(
    {
        ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".sr2", ".dng", ".raf",
        ".orf", ".rw2", ".pef", ".srw", ".3fr", ".iiq",
    }
)  # fmt: skip
# HEIC/HEIF (.hif: Canon and Fujifilm's HEIF) decode through pillow-heif, a core dependency;
# Pillow itself reads AVIF (through libavif) but not HEIF.
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
IMAGE_EXTENSIONS = HEIF_EXTENSIONS | {
    ".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".webp", ".avif",
}  # fmt: skip

# Only the formats a camera or photo editor writes. Restricting Image.open keeps odd files
# away from exotic plugins (EPS would even start Ghostscript). "HEIF" is appended once
# pillow-heif's opener is registered (see _heif_available).
PILLOW_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "TIFF", "WEBP", "AVIF", "GIF", "BMP")
# Pillow opens camera JPEGs that carry a multi-picture index as format "MPO" (a JPEG subclass).
_JPEG_FORMATS = ("JPEG", "MPO")

_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
HEIF_MISSING_MESSAGE = "HEIC/HEIF needs pillow-heif: pip install pillow-heif"
_heif_lock = threading.Lock()
_heif_registered: bool | None = None  # None: pillow-heif not tried yet

# A RAW's embedded image whose long side is below this is a thumbnail (160x120 is typical), not
# a preview: far too small and too compressed to judge sharpness, noise or exposure by.
MIN_PREVIEW_LONG_SIDE = 320

# The filter that keeps DecompressionBombWarning from the user, as warnings.filters stores it.
_BOMB_FILTER = ("ignore", None, Image.DecompressionBombWarning, None, 0)

# EXIF orientation (tag 0x0112) -> the transpose that shows the photo upright.
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class DecodeError(Exception):
    """A file could not be turned into pixels; the message names the cause and the remedy."""


def load_rgb(path: Path, min_side: int) -> Image.Image:
    """Decode `path` to an upright RGB image whose short side is >= min_side (when the source is).

    min_side <= 0 means full size. RAW files (by extension, unless their first bytes are an
    ordinary image: a JPEG named .NEF is decoded as a JPEG) are read through an embedded JPEG
    preview: the smallest whose short side reaches min_side, else the largest (a damaged one
    is skipped for the next); thumbnails (long side under MIN_PREVIEW_LONG_SIDE) never are.
    Raises DecodeError for anything that is not a readable photo.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    _quiet_bomb_warning()
    try:
        if suffix in RAW_EXTENSIONS:
            return _load_raw(path, min_side, suffix)
        return _load_image_file(path, min_side, suffix)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(_too_large_message(exc)) from None
    except MemoryError:
        raise DecodeError(
            "not enough memory to decode this image; close other programs or export a smaller copy"
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # the operating system refused, not Pillow
            raise DecodeError(os_error_message(exc)) from None
        raise DecodeError(_corrupt_message(exc)) from None
    except Exception as exc:  # noqa: BLE001 - Pillow plugins raise many kinds on bad data
        raise DecodeError(_corrupt_message(exc)) from None


def _quiet_bomb_warning() -> None:
    """Keep Pillow's DecompressionBombWarning from ever reaching the user as a Python warning.

    A filter rather than warnings.catch_warnings() around each decode: that swaps the
    process-wide filter list and is not thread-safe, and decoding runs in worker threads. It is
    checked on every call, not only added at import, because a catch_warnings() block open at
    import time (pytest's are) takes it away when it ends, and kept first in the list, because
    a blanket "always" or "error" filter added later would otherwise bring the warning back.
    """
    if warnings.filters[:1] != [_BOMB_FILTER]:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _load_image_file(path: Path, min_side: int, suffix: str) -> Image.Image:
    _check_regular_file(path)
    with open(path, "rb") as fp:
        if os.fstat(fp.fileno()).st_size == 0:
            raise DecodeError("empty file (0 bytes); re-copy it from the card or the backup")
        head = fp.read(32)
        fp.seek(0)
        if suffix in HEIF_EXTENSIONS or _is_heif(head):
            # By name or by content (an iPhone photo renamed .jpg is a HEIC all the same).
            # Without pillow-heif, Pillow still gets its try: an AVIF can carry a HEIF brand.
            _heif_available()
        try:
            img = Image.open(fp, formats=PILLOW_FORMATS)
        except UnidentifiedImageError:
            raise DecodeError(_unidentified_message(head, suffix)) from None
        with img:
            return _decode(img, min_side)


def _load_raw(path: Path, min_side: int, suffix: str) -> Image.Image:
    _check_regular_file(path)
    with open(path, "rb") as fp:
        head = fp.read(32)
    if not head:
        raise DecodeError("empty file (0 bytes); re-copy it from the card or the backup")
    if _is_ordinary_image(head):
        # Judged by content, not by name: a JPEG saved (or renamed by a tool) as .NEF is a JPEG.
        return _load_image_file(path, min_side, suffix)
    found = rawpreview.scan(path)
    if not found.previews:
        raise DecodeError(
            "RAW file has no embedded JPEG preview; iqs scores RAW files through their preview"
            " — export a JPEG or use a camera setting that embeds one"
        )
    # Scoring a thumbnail would judge the camera's 160x120 rendering, not the photo.
    usable = [p for p in found.previews if max(p.width, p.height) >= MIN_PREVIEW_LONG_SIDE]
    if not usable:
        largest = found.previews[-1]
        raise DecodeError(
            f"the RAW file embeds only a {largest.width}x{largest.height} thumbnail, too small"
            " to judge the photo; export a JPEG from it (or set the camera to embed a full-size"
            " preview)"
        )
    first_error: DecodeError | None = None
    # The smallest preview that is large enough decodes fastest; if one is damaged, the next.
    for preview in rawpreview.preference_order(usable, min_side):
        try:
            jpeg = rawpreview.read_preview(path, preview)
            with Image.open(io.BytesIO(jpeg), formats=("JPEG",)) as img:
                # Previews are stored as the sensor saw them: the RAW's own orientation is
                # the one raw converters honour, the preview's EXIF (if any) only a fallback.
                return _decode(img, min_side, orientation=found.orientation)
        except (MemoryError, Image.DecompressionBombError):
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged preview: try the next one
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # the file itself cannot be read: no other preview will do better
            first_error = first_error or DecodeError(
                "the RAW file's embedded JPEG preview is damaged ("
                + _corrupt_message(exc).split(";")[0]
                + "); re-copy the file from the card or export a JPEG from it"
            )
    assert first_error is not None
    raise first_error


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def _is_ordinary_image(head: bytes) -> bool:
    """Whether a file's first bytes are an image format no camera RAW uses as its container.

    TIFF is not among them: CR2, NEF, ARW, DNG, PEF and most other RAW formats are TIFF files.
    """
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return _is_heif(head) or head[4:12] in (b"ftypavif", b"ftypavis")


def _heif_available() -> bool:
    """Register pillow-heif's HEIF opener on first use; False when pillow-heif is missing.

    Lazy because importing pillow-heif costs ~25 ms that runs without a HEIF file need not pay.
    """
    global PILLOW_FORMATS, _heif_registered
    with _heif_lock:  # worker threads decode in parallel: register once
        if _heif_registered is None:
            try:
                import pillow_heif
            except ImportError:
                _heif_registered = False
            else:
                pillow_heif.register_heif_opener()
                if "HEIF" not in PILLOW_FORMATS:
                    PILLOW_FORMATS = (*PILLOW_FORMATS, "HEIF")
                _heif_registered = True
        return _heif_registered


def _check_regular_file(path: Path) -> None:
    # stat before open: opening a FIFO or device would block or read forever.
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(st.st_mode):
        raise DecodeError("not a regular file (a device, pipe or socket), so not a photo")


def _decode(img: Image.Image, min_side: int, orientation: int | None = None) -> Image.Image:
    """Load `img` (an opened file) reduced, as RGB, upright; `orientation` overrides its EXIF."""
    if img.format in _JPEG_FORMATS and min_side > 0:
        # A square request makes draft keep the short side >= min_side whatever the rotation.
        img.draft("RGB", (min_side, min_side))
    img.load()  # decode now, so a truncated or corrupt file fails here
    if img.format == "HEIF":
        # libheif has already applied the container's rotation and mirroring (irot/imir), which
        # the HEIF standard makes the orientation; the EXIF tag only repeats it (pillow-heif
        # resets it to 1), so applying it as well would turn the photo twice.
        orientation = 1
    elif orientation is None or not 1 <= orientation <= 8:
        orientation = _exif_orientation(img)
    rgb = _to_rgb(img)
    if min_side > 0:
        factor = min(rgb.size) // min_side
        if factor >= 2:
            rgb = rgb.reduce(factor)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    # When nothing changed, rgb is the opened image itself: fully loaded, its file closed by the
    # caller's `with`; a copy would cost a 72 MB memcpy for a full-size 24 MP photo.
    return rgb


def _exif_orientation(img: Image.Image) -> int | None:
    try:
        value = img.getexif().get(_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        return None
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: transparency over white, 16-bit and float scaled to 8 bits."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info or mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode in ("I", "F"):
        return _high_depth_to_rgb(img)
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        message = f"unsupported pixel format (Pillow mode {mode}); export an 8-bit RGB copy"
        raise DecodeError(message) from exc


def _high_depth_to_rgb(img: Image.Image) -> Image.Image:
    values = np.asarray(img).astype(np.float32)
    if img.mode.startswith("I;16"):
        scale, low = 255.0 / 65535.0, 0.0
    else:
        finite = values[np.isfinite(values)]
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        if img.mode == "F" and lo >= 0.0 and hi <= 1.0:  # float photos are usually 0..1
            scale, low = 255.0, 0.0
        elif lo >= 0.0 and hi <= 65535.0:  # 32-bit int holding 8- or 16-bit samples
            scale, low = (255.0 / 65535.0 if hi > 255.0 else 1.0), 0.0
        else:  # any other range: stretch what is there
            scale, low = (255.0 / (hi - lo) if hi > lo else 0.0), lo
    gray = np.clip(np.nan_to_num((values - low) * scale) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _unidentified_message(head: bytes, suffix: str) -> str:
    """Why Pillow could not open a file, judged from its first bytes."""
    if (_is_heif(head) or suffix in HEIF_EXTENSIONS) and not _heif_available():
        return HEIF_MISSING_MESSAGE
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")) or suffix == ".jxl":
        return "JPEG XL images are not supported here; export a JPEG"
    if head[4:12] == b"ftypcrx ":
        return "this is a Canon CR3 RAW file with the wrong extension; rename it to .CR3"
    signatures = {
        b"\xff\xd8\xff": "JPEG",
        b"\x89PNG\r\n\x1a\n": "PNG",
        b"II*\x00": "TIFF",
        b"MM\x00*": "TIFF",
        b"GIF8": "GIF",
    }
    kind = next((name for magic, name in signatures.items() if head.startswith(magic)), None)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        kind = "WebP"
    elif head[4:12] in (b"ftypavif", b"ftypavis"):
        kind = "AVIF"
    elif _is_heif(head):
        kind = "HEIC/HEIF"
    if kind:
        return (
            f"damaged {kind} file: its header is corrupt or cut off;"
            " re-copy it from the card or re-export it"
        )
    return (
        "not an image or an unsupported format"
        " (iqs reads JPEG, PNG, TIFF, WebP, AVIF, HEIC/HEIF and camera RAW)"
    )


def _too_large_message(exc: Exception) -> str:
    # Pillow says "Image size (N pixels) exceeds limit of M pixels, ..."
    numbers = [int(n) for n in re.findall(r"\d+", str(exc))]
    if len(numbers) >= 2:
        return (
            f"image too large: {_megapixels(numbers[0])} megapixels exceeds the limit of"
            f" {_megapixels(numbers[1])} (a guard against decompression bombs); export a smaller copy"
        )
    return "image too large: it exceeds Pillow's decompression-bomb limit; export a smaller copy"


def _megapixels(pixels: int) -> str:
    value = pixels / 1e6
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def os_error_message(exc: OSError) -> str:
    """What a user is told when a photo file cannot be opened or read."""
    return os_error_note(exc, "read the file", missing="file not found (moved or deleted?)",
                         advice="check the disk or card")


def _corrupt_message(exc: Exception) -> str:
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated image: the file ends early or is cut off; re-copy it from the card"
    detail = f" ({text})" if text and len(text) < 120 else ""
    return f"corrupt image data{detail}; re-copy the file or re-export it"
