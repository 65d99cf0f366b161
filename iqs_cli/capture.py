"""What burst grouping needs to know of a shot, read while it is decoded anyway: when it was
taken, and what it looks like in a few dozen bytes.

- `taken_when`: EXIF DateTimeOriginal + SubSecTimeOriginal (exifread), as seconds on the
  camera's clock; the file's modification time (as local wall-clock time, the clock EXIF
  uses) when the file has no usable EXIF date, and which of the two it was.
- `descriptor`: an 8 x 8 luma thumbnail plus a 4 x 4 thumbnail of each chroma channel of the
  decoded image (96 bytes, stored as hex with the shot's cached outputs). `alike` compares two:
  luma *structure* by correlation (so an exposure step of a burst does not break it), the
  overall brightness in EV and the colour (so two blank frames of different colour, or a
  bracket two stops apart, are not "alike"). Measured against a DCT hash, a gradient hash
  and the model's pooled features on bursts made from the pristine references
  (bench/bursts.py, docs/design.md): the thumbnail separated scenes best.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

# Thumbnail sides: luma carries the layout of a scene; chroma only says "green field" vs
# "blue sea", for which 4 x 4 is plenty.
LUMA_SIDE, CHROMA_SIDE = 8, 4
DESCRIPTOR_BYTES = LUMA_SIDE * LUMA_SIDE + 2 * CHROMA_SIDE * CHROMA_SIDE
_HEX = re.compile(r"[0-9a-f]*")

# When two descriptors show one scene: luma structure correlates at least MIN_CORRELATION
# for shots both timed by the camera's clock within the gap, STRICT_CORRELATION where time
# says little (a file's date, or --similar-only). Measured on bursts made from the pristine
# references (bench/bursts.py: shifts, +-1/3 EV, motion blur, missed focus), same-scene pairs
# reach 0.8 in 97 % and 0.9 in 91.5 % (grouping chains the rest through other frames); of
# 44,850 pairs of 300 unrelated LIVE Challenge photos 2.6 % reach 0.7, 0.5 % 0.85, 0.15 % 0.9:
# enough, at 0.7, to chain a folder of unrelated photos copied at one moment into one "burst".
MIN_CORRELATION = 0.80
STRICT_CORRELATION = 0.90
# the overall brightness differs by at most this many stops (a burst's auto exposure drifts by
# a third of a stop or so; an HDR bracket is two stops apart and stays apart),
MAX_EV_STEP = 1.0
# and the colour (mean |difference| of the 4 x 4 chroma cells, 0-255) by at most this (a
# 2/3-stop step moves saturated colours by up to 12).
MAX_CHROMA_DIFFERENCE = 20.0
# A thumbnail whose luma varies less than this (standard deviation, 0-255) has no structure
# to correlate: a blank frame, a lens cap. Two of them are alike when brightness and colour are.
FLAT_LUMA_STD = 2.0

# exifread logs a warning for every file it cannot parse (a CR3, a PNG): that is not the user's
# business, the capture time then comes from the file's date.
logging.getLogger("exifread").setLevel(logging.ERROR)

_DATE = re.compile(r"\s*(\d{4})\D(\d{1,2})\D(\d{1,2})\D+(\d{1,2})\D(\d{1,2})\D(\d{1,2})")


def _exif_seconds(date: object, subsec: object) -> float | None:
    """'2026:03:01 14:22:33' (+ '45' hundredths) -> seconds since 1970 on the camera's clock."""
    match = _DATE.match(str(date)) if date is not None else None
    if match is None:
        return None
    try:
        moment = datetime(*(int(g) for g in match.groups()), tzinfo=timezone.utc)
    except ValueError:  # "0000:00:00 00:00:00", a 13th month
        return None
    seconds = moment.timestamp()
    digits = re.match(r"\s*(\d+)", str(subsec)) if subsec is not None else None
    if digits:  # SubSecTime is the fraction's digits: "45" is .45 s, "045" is .045 s
        seconds += int(digits.group(1)[:6]) / 10 ** len(digits.group(1)[:6])
    return seconds


def exif_time(path: str | Path) -> float | None:
    """DateTimeOriginal + SubSecTimeOriginal of `path`, or None (no EXIF, no date, unreadable)."""
    import exifread  # only here: a run without bursts never needs it

    try:
        with open(path, "rb") as handle:
            tags = exifread.process_file(handle, details=False, extract_thumbnail=False,
                                         builtin_types=True)
    except Exception:  # noqa: BLE001 - exifread raises many kinds on odd files; the date is optional
        return None
    return _exif_seconds(tags.get("EXIF DateTimeOriginal") or tags.get("Image DateTime"),
                         tags.get("EXIF SubSecTimeOriginal"))


# Where a capture time came from: the camera's EXIF date, or the file's date (which copying,
# exporting or downloading may have set for a whole folder at once).
EXIF_CLOCK, FILE_CLOCK = "exif", "file"
CLOCKS = (EXIF_CLOCK, FILE_CLOCK)


def taken_when(path: str | Path) -> tuple[float | None, str | None]:
    """(when the shot was taken, in seconds on the camera's clock, and which clock said so):
    EXIF first, else the file's modification time read as local wall-clock time (what a
    camera's EXIF clock shows), else (None, None)."""
    seconds = exif_time(path)
    if seconds is not None:
        return seconds, EXIF_CLOCK
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None, None
    local = datetime.fromtimestamp(mtime)
    return local.replace(tzinfo=timezone.utc).timestamp(), FILE_CLOCK


def capture_time(path: str | Path) -> float | None:
    """The seconds of `taken_when`."""
    return taken_when(path)[0]


# --- the descriptor -------------------------------------------------------------------------


def descriptor(image: Image.Image) -> str:
    """96 bytes as hex: 8 x 8 luma, then 4 x 4 Cb and Cr (YCbCr, area averages)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if min(rgb.size) >= 128:  # a cheap integer shrink first: the box filter below then has little to do
        rgb = rgb.reduce(min(rgb.size) // 64)
    ycc = rgb.convert("YCbCr")
    luma = ycc.getchannel(0).resize((LUMA_SIDE, LUMA_SIDE), Image.Resampling.BOX)
    chroma = [ycc.getchannel(i).resize((CHROMA_SIDE, CHROMA_SIDE), Image.Resampling.BOX)
              for i in (1, 2)]
    return b"".join(channel.tobytes() for channel in [luma, *chroma]).hex()


def is_descriptor(value: object) -> bool:
    """Whether `value` has a descriptor's form (what the results cache may hold)."""
    return (isinstance(value, str) and len(value) == 2 * DESCRIPTOR_BYTES
            and _HEX.fullmatch(value) is not None)


def unpack(value: str) -> tuple[np.ndarray, np.ndarray]:
    """A descriptor -> (luma 8 x 8, chroma 2 x 4 x 4) as float32."""
    data = np.frombuffer(bytes.fromhex(value), dtype=np.uint8).astype(np.float32)
    split = LUMA_SIDE * LUMA_SIDE
    return (data[:split].reshape(LUMA_SIDE, LUMA_SIDE),
            data[split:].reshape(2, CHROMA_SIDE, CHROMA_SIDE))


def _linear_mean(luma: np.ndarray) -> float:
    """Mean linear light of an sRGB-coded luma thumbnail (for exposure in stops)."""
    return float(np.mean((np.clip(luma, 0, 255) / 255.0) ** 2.2))


_DARK_FLOOR = (1 / 255) ** 2.2  # log2 of black would be -inf


def ev_difference(a: np.ndarray, b: np.ndarray) -> float:
    """|exposure difference| in stops between two luma thumbnails."""
    return abs(math.log2(max(_linear_mean(a), _DARK_FLOOR) / max(_linear_mean(b), _DARK_FLOOR)))


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson correlation of two luma thumbnails; None when either is flat."""
    if a.std() < FLAT_LUMA_STD or b.std() < FLAT_LUMA_STD:
        return None
    za, zb = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    return float(np.mean(za * zb))


@dataclass(frozen=True)
class Look:
    """A descriptor unpacked for comparing: luma structure (zero mean, unit spread; zeros when
    the frame is flat), its exposure in stops and its chroma cells."""

    shape: np.ndarray
    flat: bool
    stops: float
    chroma: np.ndarray


def look(value: str) -> Look:
    luma, chroma = unpack(value)
    spread = float(luma.std())
    flat = spread < FLAT_LUMA_STD
    shape = np.zeros(luma.size, np.float32) if flat else ((luma - luma.mean()) / spread).ravel()
    return Look(shape, flat, math.log2(max(_linear_mean(luma), _DARK_FLOOR)), chroma.ravel())


def similarities(one: Look, others: list[Look]) -> np.ndarray:
    """`similarity` of `one` with each of `others`, at once (numpy over the candidates)."""
    if not others:
        return np.zeros(0, np.float32)
    shapes = np.stack([o.shape for o in others])
    result = shapes @ one.shape / shapes.shape[1]
    flat = np.array([o.flat for o in others])
    result = np.where(flat | one.flat, np.where(flat & one.flat, 1.0, -1.0), result)
    stops = np.array([o.stops for o in others])
    chroma = np.abs(np.stack([o.chroma for o in others]) - one.chroma).mean(axis=1)
    apart = (np.abs(stops - one.stops) > MAX_EV_STEP) | (chroma > MAX_CHROMA_DIFFERENCE)
    return np.where(apart, -1.0, result)


def similarity(first: str, second: str) -> float:
    """How much two descriptors look like one scene: the correlation of their luma structure
    (1.0 for two flat frames), or -1.0 when exposure or colour alone tell them apart (or one
    frame is flat and the other is not)."""
    return float(similarities(look(first), [look(second)])[0])


def alike(first: str, second: str) -> bool:
    """Whether two descriptors show one scene (thresholds above)."""
    return similarity(first, second) >= MIN_CORRELATION
