"""What photographers do on purpose, and the defects that look like it.

A culling model that learned "soft = bad" and "dark = bad" from distortion ladders rejects the
shots photographers mean to take that way: a sharp subject on creamy bokeh, fog, a low-key
portrait, a high-key still life, panning blur, black and white. This module makes synthetic
counterparts of those *styles* from sharp reference crops (labelled as keepers) and their
*defective twins* (labelled rejected): the whole frame soft, focus on nothing, camera shake over
everything, a dark frame with noisy shadows, a frame darkened to a fraction, blown highlights.
A twin differs from its style exactly where a photographer sees the difference: whether some
part of the frame is sharp and well exposed.

Images are float32 HxWx3 in [0, 1] at the model's scale (see `training.datasets.synthetic`:
pixel parameters are in those pixels). numpy + scipy only, so DataLoader workers can call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .synthetic import (
    _convolve,
    _disc_kernel,
    _line_kernel,
    _scale_chroma,
    _to_float,
    _to_uint8,
    _vignetting,
    linear_to_srgb,
    srgb_to_linear,
)


# ---------------------------------------------------------------------------------------------
# Masks: where the photographer put the sharp (or lit) subject.


def subject_mask(shape: tuple[int, int], rng: np.random.Generator, falloff: tuple[float, float]
                 ) -> np.ndarray:
    """0 inside a random subject ellipse, rising to 1 over `falloff` (ellipse radii) outside it:
    how far a pixel is from the subject, as the depth of field or the light falls off."""
    h, w = shape
    cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
    ry, rx = h * rng.uniform(0.12, 0.3), w * rng.uniform(0.12, 0.3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return np.clip((distance - 1.0) / rng.uniform(*falloff), 0.0, 1.0)


def _varying_blur(image: np.ndarray, amount: np.ndarray,
                  kernel_at: Callable[[float], np.ndarray | None], steps: int = 4) -> np.ndarray:
    """Blur that grows with `amount` (0 .. 1): blends copies blurred with kernel_at(k / steps)
    for k = 0..steps (None: left sharp), so a subject stays sharp and the background melts
    away gradually, as through a lens."""
    kernels = [kernel_at(k / steps) for k in range(steps + 1)]
    stack = [image if kernel is None else _convolve(image, kernel) for kernel in kernels]
    position = amount * steps
    low = np.clip(np.floor(position).astype(int), 0, steps - 1)
    frac = (position - low)[..., None]
    out = np.zeros_like(image)
    for k in range(steps):
        here = (low == k)[..., None]
        out += np.where(here, stack[k] * (1 - frac) + stack[k + 1] * frac, 0.0)
    return out.astype(np.float32)


def _exposure(image: np.ndarray, stops: np.ndarray | float) -> np.ndarray:
    gain = np.exp2(stops)
    if np.ndim(gain) == 2:
        gain = gain[..., None]
    return linear_to_srgb(srgb_to_linear(image) * gain)


# ---------------------------------------------------------------------------------------------
# Styles: kept shots. Each takes (image, rng, scale) and returns the styled image;
# pixel sizes are multiplied by `scale` (see `apply_style`).


def shallow_focus(image, rng, scale=1.0):
    """Shallow depth of field: a subject region stays sharp, the rest defocused (a disc point
    spread up to 4-16 px) with a gradual falloff, as a fast lens renders it."""
    amount = subject_mask(image.shape[:2], rng, (0.4, 1.5))
    radius = rng.uniform(4.0, 16.0) * scale
    return _varying_blur(image, amount, lambda t: _disc_kernel(t * radius) if t else None)


def panning(image, rng, scale=1.0):
    """Panning: the subject sharp, the background smeared 12-40 px along a near-horizontal line."""
    amount = subject_mask(image.shape[:2], rng, (0.15, 0.5))
    length, angle = rng.uniform(12.0, 40.0) * scale, rng.uniform(-0.15, 0.15)
    return _varying_blur(image, amount, lambda t: _line_kernel(t * length, angle) if t else None,
                         steps=2)


def fog(image, rng, scale=1.0):
    """Fog and haze: a bright veil (airlight) that thickens toward the top of the frame."""
    h = image.shape[0]
    top, bottom = rng.uniform(0.25, 0.55), rng.uniform(0.6, 0.95)
    ramp = np.linspace(top, bottom, h, dtype=np.float32)[:, None, None]  # transmission
    air = rng.uniform(0.72, 0.95) + rng.uniform(-0.03, 0.03, size=3).astype(np.float32)
    return image * ramp + air * (1.0 - ramp)


def low_key(image, rng, scale=1.0):
    """Low key: the subject keeps its exposure, the rest falls 1.5-3.5 stops into deep shadow."""
    amount = subject_mask(image.shape[:2], rng, (0.5, 2.0))
    dark = _exposure(image, -rng.uniform(1.5, 3.5) * amount)
    return np.clip(dark, 0.0, 1.0) ** rng.uniform(1.0, 1.3)


def high_key(image, rng, scale=1.0):
    """High key: +0.7-1.5 stops with a soft highlight shoulder (small bright areas clip),
    lifted shadows, slightly muted colours."""
    linear = srgb_to_linear(np.clip(image, 0, 1)) * np.exp2(rng.uniform(0.7, 1.5))
    white = rng.uniform(1.2, 2.0)
    linear = linear * (1 + linear / white**2) / (1 + linear)  # extended Reinhard shoulder
    out = linear_to_srgb(np.clip(linear, 0, 1))
    lift = rng.uniform(0.03, 0.12)
    return _scale_chroma(lift + out * (1 - lift), rng.uniform(0.7, 1.0))


def vignette(image, rng, scale=1.0):
    """A vignette of 1-2.2 stops at the corners, drawing the eye to the centre."""
    return _vignetting(image, rng.uniform(1.0, 2.2), rng)


def monochrome(image, rng, scale=1.0):
    """Black and white: a random channel mix (neutral, red, green or blue filter), sometimes
    toned (sepia, selenium) and given a steeper tone curve."""
    weights = rng.dirichlet(np.array([3.0, 5.0, 1.5]) * rng.uniform(0.5, 3.0)).astype(np.float32)
    gray = np.clip(image @ weights, 0.0, 1.0)
    if rng.random() < 0.4:
        gamma = rng.uniform(0.8, 1.25)
        gray = gray ** gamma
    out = np.repeat(gray[..., None], 3, axis=2)
    if rng.random() < 0.2:
        tone = np.array([1.0, 0.93, 0.8] if rng.random() < 0.5 else [0.92, 0.96, 1.0], np.float32)
        out = out * tone
    return out


# ---------------------------------------------------------------------------------------------
# Defective twins: rejected shots. Each takes (image, rng, scale) and returns (image,
# attribute severities).


def soft_all(image, rng, scale=1.0):
    """The whole frame soft: defocus of 3.5-8 px everywhere, no part in focus."""
    return _convolve(image, _disc_kernel(rng.uniform(3.5, 8.0) * scale)), {"blur": 1.0}


def focus_missed(image, rng, scale=1.0):
    """Focus on nothing: the depth-of-field falloff of `shallow_focus`, but even its sharpest
    zone is 3-5 px out of focus (the lens focused in front of or behind the subject)."""
    amount = subject_mask(image.shape[:2], rng, (0.4, 1.5))
    base, radius = rng.uniform(3.0, 5.0) * scale, rng.uniform(6.0, 16.0) * scale
    return _varying_blur(image, amount, lambda t: _disc_kernel(base + t * (radius - base))), {"blur": 1.0}


def camera_shake(image, rng, scale=1.0):
    """Camera shake over everything: a 9-22 px smear at a random angle, subject included."""
    return _convolve(image, _line_kernel(rng.uniform(9.0, 22.0) * scale, rng.uniform(0, np.pi))), {"blur": 1.0}


def dark_noisy(image, rng, scale=1.0):
    """A dark frame with noisy shadows: 2.5-4.5 stops under, photon noise of a high ISO."""
    linear = srgb_to_linear(np.clip(image, 0, 1)) * np.exp2(-rng.uniform(2.5, 4.5))
    photons = rng.uniform(150.0, 600.0)
    noisy = rng.poisson(linear * photons).astype(np.float32) / photons
    return linear_to_srgb(np.clip(noisy, 0, 1)), {"underexposure": 1.0, "noise": 0.6}


def darkened(image, rng, scale=1.0):
    """A frame darkened to 8-25 % of its pixel values (what anyone gets from a failed exposure
    or a 'darken' slider): nothing in it is well exposed."""
    return image * rng.uniform(0.08, 0.25), {"underexposure": 1.0}


def blown(image, rng, scale=1.0):
    """Blown out: +2-3 stops with a hard clip, most of the frame white."""
    return _exposure(image, rng.uniform(2.0, 3.0)), {"overexposure": 1.0}


@dataclass(frozen=True)
class Look:
    name: str
    # styles: (image, rng, scale) -> image; twins: (image, rng, scale) -> (image, attributes)
    apply: Callable
    weight: float = 1.0


STYLES: dict[str, Look] = {look.name: look for look in (
    Look("shallow_focus", shallow_focus, 2.0),
    Look("panning", panning),
    Look("fog", fog),
    Look("low_key", low_key),
    Look("high_key", high_key),
    Look("vignette", vignette),
    Look("monochrome", monochrome),
)}

TWINS: dict[str, Look] = {look.name: look for look in (
    Look("soft_all", soft_all, 1.5),
    Look("focus_missed", focus_missed, 1.5),
    Look("camera_shake", camera_shake, 1.5),
    Look("dark_noisy", dark_noisy),
    Look("darkened", darkened),
    Look("blown", blown, 0.5),
)}


def _pick(looks: dict[str, Look], rng: np.random.Generator) -> Look:
    names = list(looks)
    weights = np.array([looks[n].weight for n in names])
    return looks[names[int(rng.choice(len(names), p=weights / weights.sum()))]]


def apply_style(image: np.ndarray, name: str, rng: np.random.Generator,
                scale: float = 1.0) -> np.ndarray:
    """Style `name` on an HxWx3 uint8 image -> uint8. Pixel sizes (blur radii, smear lengths)
    are for the model's scale (short side about 512-640); `scale` multiplies them for an image
    that is larger (a whole photo at its own resolution) or smaller."""
    return _to_uint8(np.clip(STYLES[name].apply(_to_float(image), rng, scale), 0.0, 1.0))


def apply_twin(image: np.ndarray, name: str, rng: np.random.Generator,
               scale: float = 1.0) -> tuple[np.ndarray, dict]:
    """Defective twin `name` on an HxWx3 uint8 image -> (uint8, attribute severities)."""
    out, attributes = TWINS[name].apply(_to_float(image), rng, scale)
    return _to_uint8(np.clip(out, 0.0, 1.0)), dict(attributes)


@dataclass
class StyleGroup:
    """One reference crop, `n_styles` kept versions and one rejected twin."""

    styled: list[tuple[str, np.ndarray]]  # (name, uint8 image); "a+monochrome" when combined
    twin: tuple[str, np.ndarray, dict]  # (name, uint8 image, attribute severities)


def style_group(crop: np.ndarray, n_styles: int, rng: np.random.Generator,
                monochrome_probability: float = 0.35) -> StyleGroup:
    """Styles drawn by weight, each also turned black and white with `monochrome_probability`
    (the B&W of a bokeh shot is still a keeper); the twin too, so that black and white never
    tells a keeper from a reject."""
    styled = []
    for _ in range(n_styles):
        look = _pick(STYLES, rng)
        image = apply_style(crop, look.name, rng)
        name = look.name
        if look.name != "monochrome" and rng.random() < monochrome_probability:
            image, name = apply_style(image, "monochrome", rng), f"{name}+monochrome"
        styled.append((name, image))
    twin = _pick(TWINS, rng)
    image, attributes = apply_twin(crop, twin.name, rng)
    name = twin.name
    if rng.random() < monochrome_probability:
        image, name = apply_style(image, "monochrome", rng), f"{name}+monochrome"
    return StyleGroup(styled, (name, image, attributes))

