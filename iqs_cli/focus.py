"""A second look at a larger scale: is any part of the frame in focus?

The model sees the whole photo squashed to its input (say 512 px). A sharp subject on a soft
background (shallow depth of field, panning) is mostly soft at that scale, and a 24 MP frame
shrunk 8 times hides whether its focus was hit. So for a shot the whole view would reject (or
for every shot, on request), iqs decodes the photo again at about twice the input scale, finds
the window of the input's size with the most fine detail, and runs the model on that window
pixel for pixel. `verdict.decide` then calls a frame blurry only when that window is blurry
too: "blurry" means no part of the frame is in focus, not "most of the frame is soft".

Photos that are not at least `MIN_GAIN` times the input size have no larger view: the whole
view already shows them at their own resolution, and no second look is made.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from iqs_cli.card import InputSpec, image_to_tensor
from iqs_cli.decode import load_rgb

# Decode for a short side of about 1.8x the input: a 24 MP JPEG at draft scale 1/4
# (1500 x 1000) for a 512 input, a 1600 x 1000 photo at full size.
FOCUS_SCALE = 1.8
# Below 1.4x the input a window would show the same pixels as the whole view.
MIN_GAIN = 1.4
# Candidate windows every 1/8 of the window side: fine enough to centre a subject.
_GRID = 8


def detail_map(image: Image.Image) -> np.ndarray:
    """Absolute Laplacian of luma: large where edges and texture are crisp, near zero where the
    frame is defocused or smeared (and in flat areas, which no window is chosen for)."""
    gray = np.asarray(image.convert("L"), dtype=np.float32)
    if min(gray.shape) < 3:
        return np.zeros_like(gray)
    centre = gray[1:-1, 1:-1]
    lap = 4 * centre - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return np.pad(np.abs(lap), 1)


def sharpest_window(image: Image.Image, window: int) -> tuple[int, int]:
    """(left, top) of the window x window square with the most fine detail."""
    energy = detail_map(image)
    h, w = energy.shape
    window = min(window, h, w)
    integral = np.zeros((h + 1, w + 1), dtype=np.float64)
    integral[1:, 1:] = energy.cumsum(0).cumsum(1)
    step = max(1, window // _GRID)
    tops = np.unique(np.append(np.arange(0, h - window + 1, step), h - window))
    lefts = np.unique(np.append(np.arange(0, w - window + 1, step), w - window))
    t, l = np.meshgrid(tops, lefts, indexing="ij")
    sums = (integral[t + window, l + window] - integral[t, l + window]
            - integral[t + window, l] + integral[t, l])
    best = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(l[best]), int(t[best])


def focus_min_side(spec: InputSpec) -> int:
    return math.ceil(spec.size * FOCUS_SCALE)


def focus_window(image: Image.Image, spec: InputSpec) -> Image.Image | None:
    """The sharpest input-sized window of `image` (decoded at `focus_min_side`), or None when
    the photo is too small for a view larger than the whole one."""
    if min(image.size) < MIN_GAIN * spec.size:
        return None
    left, top = sharpest_window(image, spec.size)
    return image.crop((left, top, left + spec.size, top + spec.size))


def focus_tensor(path: str | Path, spec: InputSpec) -> np.ndarray | None:
    """Decode `path` at the larger scale -> the model's tensor of its sharpest window, or None."""
    window = focus_window(load_rgb(path, focus_min_side(spec)), spec)
    return None if window is None else image_to_tensor(window, spec)
