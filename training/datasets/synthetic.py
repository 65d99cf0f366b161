"""KADID-10k-style synthetic distortions of reference photos, made on the fly.

The "blind noisy student" data: crops of sharp, well-exposed reference photographs, distorted
by one or two of the `DISTORTIONS` at a level 1 (barely visible) to 5 (clearly bad to a
photographer), labelled with the distortion's type and level, the attribute it degrades, a
pseudo-MOS from the full-reference teacher (`training.fullref`) and a 3-class label.

numpy + Pillow + scipy.ndimage only (no torch), so a torch Dataset can wrap
`SyntheticDistortions` and call it in DataLoader workers.

Scale. The network sees a whole photo resized to about 384 px, so a defect is only learnable
at the size it has there: a 2 px blur on a 1600 px original disappears when the photo is
shrunk four times. The distortions are therefore applied to the reference already resized to
about the model's input scale (short side `reference_short_side`, default 512 for a 384 crop:
the crop covers three quarters of the photo's short side, a photo-like field of view, and
objects look 1.33x larger than in the squashed whole photo, a margin on the safe side), and
every pixel parameter below (blur radii, block sizes, channel shifts) is in those pixels.
The sample is meant to be fed to the network as it is, without another resize.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from iqs_cli.decode import load_rgb
from iqs_cli.vocabulary import CLASS_INDEX, DEFAULT_ATTRIBUTES
from ..fullref import (
    DEFAULT_REFERENCE_MOS,
    full_reference_scores,
    linear_to_srgb,
    quality_factor,
    srgb_to_linear,
)

# The defect severities (0..1) the model's attributes head learns; one per distortion type.
ATTRIBUTES = DEFAULT_ATTRIBUTES
LEVELS = (1, 2, 3, 4, 5)

# Where each step sits in a camera pipeline: a mix of two is applied in this order.
STAGE_OPTICS, STAGE_EXPOSURE, STAGE_SENSOR, STAGE_PROCESSING, STAGE_RESIZE, STAGE_CODEC = range(6)

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601, as JPEG's YCbCr
_LINEAR_LUMA = np.array([0.2126, 0.7152, 0.0722])  # Rec.709 luminance of linear RGB


# ---------------------------------------------------------------------------------------------
# Helpers. Images inside the distortions are float32 HxWx3 in [0, 1].


def _to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(_to_uint8(image))


def _from_pil(image: Image.Image) -> np.ndarray:
    return _to_float(np.asarray(image.convert("RGB")))


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve every channel with a (normalised) 2-D kernel, FFT-based, reflected borders."""
    kh, kw = kernel.shape
    py, px = kh // 2, kw // 2
    padded = np.pad(image, ((py, py), (px, px), (0, 0)), mode="reflect")
    h, w = padded.shape[:2]
    spectrum = np.fft.rfft2(padded, axes=(0, 1)) * np.fft.rfft2(kernel, s=(h, w))[..., None]
    result = np.fft.irfft2(spectrum, s=(h, w), axes=(0, 1))
    # A kernel of odd size centred at (py, px) shifts the output by (py, px): undo it and crop.
    return result[2 * py :, 2 * px :][: image.shape[0], : image.shape[1]].astype(np.float32)


def _disc_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disc (defocus point spread), coverage measured on an 8x8 subgrid."""
    size = int(np.ceil(radius)) * 2 + 1
    sub = (np.arange(size * 8) + 0.5) / 8 - size / 2
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    inside = (xx * xx + yy * yy <= radius * radius).astype(np.float64)
    kernel = inside.reshape(size, 8, size, 8).mean(axis=(1, 3))
    return kernel / kernel.sum()


def _line_kernel(length: float, angle: float) -> np.ndarray:
    """Anti-aliased straight motion path of `length` px at `angle` radians."""
    size = (int(np.ceil(length)) | 1) + 2  # odd, plus a margin for the bilinear splat
    kernel = np.zeros((size, size))
    centre = size // 2
    t = np.linspace(-length / 2, length / 2, max(16, int(length * 8)))
    x = centre + t * np.cos(angle)
    y = centre + t * np.sin(angle)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dy, dx, weight in (
        (0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)
    ):
        np.add.at(kernel, (y0 + dy, x0 + dx), weight)
    return kernel / kernel.sum()


def _luma(image: np.ndarray) -> np.ndarray:
    return image @ _LUMA


def _resize(image: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """Resize a float image with Pillow, per channel in float ("F" mode: no 8-bit rounding)."""
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c])).resize(size, resample))
        for c in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="JPEG", quality=int(quality), subsampling="4:2:0")
    return _from_pil(Image.open(buffer))


# ---------------------------------------------------------------------------------------------
# The distortions. Each takes (image, level parameter, rng) and returns the distorted image.


def _gaussian_blur(image, sigma, rng):
    """Gaussian blur of standard deviation `sigma` px (soft focus, missed focus)."""
    return ndimage.gaussian_filter(image, (sigma, sigma, 0), mode="reflect")


def _lens_blur(image, radius, rng):
    """Defocus: a disc point spread of `radius` px (out-of-focus lens, with its bokeh edges)."""
    return _convolve(image, _disc_kernel(radius))


def _motion_blur(image, length, rng):
    """Camera shake: a straight smear of `length` px at a random angle."""
    return _convolve(image, _line_kernel(length, rng.uniform(0, np.pi)))


def _resample(image, factor, rng):
    """Shrunk and enlarged back: the softness of an upscaled small image."""
    h, w = image.shape[:2]
    small = _resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), Image.BILINEAR)
    return _resize(small, (w, h), Image.BICUBIC)


def _chromatic_aberration(image, corner_shift, rng):
    """Chromatic aberration: red magnified, blue shrunk about the optical centre, so edges get
    colour fringes that grow away from it, `corner_shift` px at the farthest corner, and both
    channels softened (gaussian sigma 0.25 x `corner_shift`), as the fringes of a real lens are.
    The crop may come from anywhere in the photo, so the centre is drawn inside the crop."""
    h, w = image.shape[:2]
    cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
    scale = corner_shift / np.hypot(max(cy, h - 1 - cy), max(cx, w - 1 - cx))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = image.copy()
    for channel, sign in ((0, 1.0), (2, -1.0)):
        # Sampling at centre + (p - centre) / (1 + s) magnifies the channel by (1 + s).
        factor = 1.0 / (1.0 + sign * scale)
        coords = [cy + (yy - cy) * factor, cx + (xx - cx) * factor]
        shifted = ndimage.map_coordinates(image[..., channel], coords, order=1, mode="nearest")
        out[..., channel] = ndimage.gaussian_filter(shifted, 0.25 * corner_shift, mode="reflect")
    return out


def _vignetting(image, corner_stops, rng):
    """Corners darker by `corner_stops` EV, falling off with the squared distance from centre."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (cy**2 + cx**2)  # 0 at the centre, 1 at corners
    gain = np.exp2(-corner_stops * r2)[..., None]
    return linear_to_srgb(srgb_to_linear(image) * gain)


def _underexposure(image, params, rng):
    """Exposure lowered by `stops` EV in linear light, then the shadows crushed to black below
    `black` (the flat, blocked-up shadows of a dark JPEG)."""
    stops, black = params
    dark = linear_to_srgb(srgb_to_linear(image) * 2.0**-stops)
    return np.clip((dark - black) / (1.0 - black), 0.0, 1.0)


def _overexposure(image, stops, rng):
    """Exposure raised by `stops` EV in linear light; channels clip at white (blown highlights)."""
    return linear_to_srgb(srgb_to_linear(image) * 2.0**stops)


def _contrast_loss(image, keep, rng):
    """Flat, hazy rendering: pulled toward the image's mean grey, keeping `keep` of the contrast."""
    mean = float(_luma(image).mean())
    return mean + (image - mean) * keep


def _scale_chroma(image: np.ndarray, factor: float) -> np.ndarray:
    y = _luma(image)[..., None]
    return y + (image - y) * factor


def _saturation_loss(image, factor, rng):
    """Washed-out colours: chroma scaled down to `factor` around each pixel's luma."""
    return _scale_chroma(image, factor)


def _saturation_boost(image, factor, rng):
    """Garish colours: chroma multiplied by `factor` around each pixel's luma, clipping."""
    return _scale_chroma(image, factor)


def _color_cast(image, stops, rng):
    """White-balance error of `stops` EV in a random direction of the temperature (blue-amber)
    / tint (green-magenta) plane, applied in linear light with the luminance of grey kept."""
    angle = rng.uniform(0, 2 * np.pi)
    temperature, tint = np.cos(angle), np.sin(angle)
    log_gain = np.array([temperature, -tint, -temperature]) * stops
    gain = np.exp2(log_gain)
    gain /= float(_LINEAR_LUMA @ gain)
    return linear_to_srgb(srgb_to_linear(image) * gain.astype(np.float32))


def _gaussian_noise(image, sigma, rng):
    """White gaussian noise, independent per channel, `sigma` in 8-bit steps."""
    return image + rng.normal(0.0, sigma / 255.0, image.shape).astype(np.float32)


def _shot_noise(image, photons, rng):
    """Photon (Poisson) noise in linear light, `photons` at white: strongest in the shadows once
    gamma-encoded, as in a high-ISO photo. Mid-grey std is about 127.5 / sqrt(photons) steps."""
    linear = srgb_to_linear(np.clip(image, 0.0, 1.0))
    return linear_to_srgb(rng.poisson(linear * photons).astype(np.float32) / photons)


def _impulse_noise(image, fraction, rng):
    """Salt-and-pepper: `fraction` of the samples of each channel stuck at black or white."""
    out = image.copy()
    hit = rng.random(image.shape) < fraction
    out[hit] = (rng.random(int(hit.sum())) < 0.5).astype(np.float32)
    return out


def _color_noise(image, sigma, rng):
    """Chroma noise: blotchy (blurred) noise in Cb and Cr only, `sigma` in 8-bit steps."""
    h, w = image.shape[:2]
    noise = ndimage.gaussian_filter(rng.normal(size=(h, w, 2)), (1.0, 1.0, 0), mode="reflect")
    noise *= sigma / 255.0 / noise.std()
    cb, cr = noise[..., 0], noise[..., 1]
    delta = np.stack([1.402 * cr, -0.344136 * cb - 0.714136 * cr, 1.772 * cb], axis=-1)
    return image + delta.astype(np.float32)


def _oversharpen(image, amount, rng):
    """Unsharp mask pushed too far: halos along edges and crunchy, amplified texture."""
    return image + amount * (image - ndimage.gaussian_filter(image, (1.5, 1.5, 0), mode="reflect"))


def _jpeg_compression(image, quality, rng):
    """JPEG at `quality` (Pillow scale, 4:2:0 chroma): 8x8 blocks, ringing, colour bleeding."""
    return _jpeg(image, quality)


def _recompression(image, qualities, rng):
    """Saved twice at low quality with the 8x8 grids misaligned (a re-shared, re-saved photo)."""
    first, second = qualities
    once = _jpeg(image, first)
    dy, dx = (int(v) for v in rng.integers(1, 8, size=2))
    shifted = np.pad(once, ((dy, 0), (dx, 0), (0, 0)), mode="reflect")
    return _jpeg(shifted, second)[dy:, dx:]


def _jpeg2000(image, ratio, rng):
    """JPEG 2000 at compression `ratio` (wavelet blur and ringing instead of 8x8 blocks).

    The codestream cannot shrink below about 170 bytes, so on images under about 190 px a side
    the strongest levels all hit that floor and look the same (all detail gone)."""
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="JPEG2000", quality_mode="rates", quality_layers=[ratio])
    return _from_pil(Image.open(buffer))


def _pixelation(image, block, rng):
    """Mosaic of `block`-px squares (box-averaged, then enlarged with nearest neighbour)."""
    h, w = image.shape[:2]
    small = _resize(image, (max(1, round(w / block)), max(1, round(h / block))), Image.BOX)
    return _resize(small, (w, h), Image.NEAREST)


def _quantization(image, steps, rng):
    """Each channel reduced to `steps` values: banding in skies and smooth gradients."""
    return np.round(np.clip(image, 0.0, 1.0) * (steps - 1)) / (steps - 1)


@dataclass(frozen=True)
class DistortionSpec:
    name: str
    attribute: str  # which of ATTRIBUTES it degrades
    stage: int  # pipeline position (STAGE_*): order of application in a mix
    levels: tuple  # the parameter of `apply` at levels 1..5 (mild .. severe)
    apply: Callable[[np.ndarray, object, np.random.Generator], np.ndarray]
    description: str = ""

    def __post_init__(self) -> None:
        if self.attribute not in ATTRIBUTES:
            raise ValueError(f"{self.name}: unknown attribute {self.attribute!r}")
        if len(self.levels) != len(LEVELS):
            raise ValueError(f"{self.name}: needs {len(LEVELS)} level parameters")


def _spec(name, attribute, stage, levels, apply):
    first_sentence = " ".join(apply.__doc__.split()).split(". ")[0].rstrip(".") + "."
    return DistortionSpec(name, attribute, stage, tuple(levels), apply, first_sentence)


# Level parameters are in model-scale pixels (see the module docstring) and 8-bit steps.
DISTORTIONS: dict[str, DistortionSpec] = {
    spec.name: spec
    for spec in (
        _spec("gaussian_blur", "blur", STAGE_OPTICS, (0.6, 1.0, 1.6, 2.5, 4.0), _gaussian_blur),
        _spec("lens_blur", "blur", STAGE_OPTICS, (1.0, 1.7, 2.7, 4.0, 6.0), _lens_blur),
        _spec("motion_blur", "blur", STAGE_OPTICS, (2.0, 4.0, 6.5, 11.0, 20.0), _motion_blur),
        _spec("chromatic_aberration", "blur", STAGE_OPTICS, (1.5, 3.0, 5.0, 8.0, 12.0),
              _chromatic_aberration),
        _spec("vignetting", "underexposure", STAGE_OPTICS, (0.6, 1.1, 1.7, 2.5, 3.5), _vignetting),
        _spec("underexposure", "underexposure", STAGE_EXPOSURE,
              ((0.25, 0.0), (0.55, 0.005), (0.95, 0.012), (1.5, 0.025), (2.3, 0.04)),
              _underexposure),
        _spec("overexposure", "overexposure", STAGE_EXPOSURE, (0.2, 0.4, 0.7, 1.1, 1.7),
              _overexposure),
        _spec("gaussian_noise", "noise", STAGE_SENSOR, (3.5, 6.0, 10.0, 16.0, 25.0),
              _gaussian_noise),
        _spec("shot_noise", "noise", STAGE_SENSOR, (1000, 330, 130, 55, 24), _shot_noise),
        _spec("impulse_noise", "noise", STAGE_SENSOR, (0.0001, 0.0005, 0.003, 0.01, 0.03),
              _impulse_noise),
        _spec("color_noise", "noise", STAGE_SENSOR, (5.0, 9.0, 14.0, 21.0, 30.0), _color_noise),
        _spec("color_cast", "color", STAGE_PROCESSING, (0.2, 0.4, 0.7, 1.05, 1.5), _color_cast),
        _spec("saturation_loss", "color", STAGE_PROCESSING, (0.85, 0.65, 0.45, 0.3, 0.18),
              _saturation_loss),
        _spec("saturation_boost", "color", STAGE_PROCESSING, (1.2, 1.45, 1.8, 2.3, 3.0),
              _saturation_boost),
        _spec("contrast_loss", "color", STAGE_PROCESSING, (0.88, 0.78, 0.66, 0.52, 0.38),
              _contrast_loss),
        _spec("oversharpen", "noise", STAGE_PROCESSING, (0.5, 1.0, 1.8, 3.0, 5.0), _oversharpen),
        _spec("resample", "blur", STAGE_RESIZE, (1.35, 1.8, 2.6, 3.8, 6.0), _resample),
        _spec("pixelation", "compression", STAGE_RESIZE, (2, 3, 4, 6, 9), _pixelation),
        _spec("quantization", "compression", STAGE_CODEC, (48, 28, 16, 10, 6), _quantization),
        _spec("jpeg", "compression", STAGE_CODEC, (55, 32, 18, 10, 5), _jpeg_compression),
        _spec("jpeg2000", "compression", STAGE_CODEC, (20, 45, 100, 220, 480), _jpeg2000),
        _spec("recompression", "compression", STAGE_CODEC,
              ((75, 55), (50, 35), (32, 22), (22, 13), (15, 8)), _recompression),
    )
}

# A mix pairs two different attributes (`random_distortion`), and never these together.
_INCOMPATIBLE_ATTRIBUTES = {frozenset({"underexposure", "overexposure"})}


def distort(image: np.ndarray, kind: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply distortion `kind` at `level` (1 mild .. 5 severe) to an HxWx3 uint8 image."""
    if kind not in DISTORTIONS:
        raise KeyError(f"unknown distortion {kind!r}; known: {', '.join(DISTORTIONS)}")
    if level not in LEVELS:
        raise ValueError(f"distortion level must be one of {LEVELS}, got {level!r}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
    spec = DISTORTIONS[kind]
    return _to_uint8(spec.apply(_to_float(image), spec.levels[level - 1], rng))


def apply_distortions(
    image: np.ndarray, distortions: Sequence[tuple[str, int]], rng: np.random.Generator
) -> np.ndarray:
    """Apply several (kind, level) distortions in camera-pipeline order (`DistortionSpec.stage`)."""
    ordered = sorted(distortions, key=lambda item: DISTORTIONS[item[0]].stage)
    for kind, level in ordered:
        image = distort(image, kind, level, rng)
    return image


def random_distortion(
    rng: np.random.Generator, mix_probability: float = 0.2, kinds: Sequence[str] | None = None
) -> list[tuple[str, int]]:
    """One (kind, level), or with `mix_probability` two of different attributes; uniform over
    `kinds` (default: all) and levels 1..5."""
    names = list(kinds) if kinds is not None else list(DISTORTIONS)
    first = names[int(rng.integers(len(names)))]
    chosen = [(first, int(rng.integers(1, 6)))]
    if rng.random() < mix_probability:
        attribute = DISTORTIONS[first].attribute
        partners = [
            name for name in names
            if DISTORTIONS[name].attribute != attribute
            and frozenset({attribute, DISTORTIONS[name].attribute}) not in _INCOMPATIBLE_ATTRIBUTES
        ]
        if partners:
            chosen.append((partners[int(rng.integers(len(partners)))], int(rng.integers(1, 6))))
    return chosen


def attribute_targets(distortions: Sequence[tuple[str, int]]) -> dict[str, float]:
    """Defect severity per attribute: level / 5 for the attribute a distortion degrades (the
    larger one when a mix hits the same attribute twice), 0 for the others."""
    targets = {name: 0.0 for name in ATTRIBUTES}
    for kind, level in distortions:
        attribute = DISTORTIONS[kind].attribute
        targets[attribute] = max(targets[attribute], level / len(LEVELS))
    return targets


@dataclass(frozen=True)
class LabelRules:
    """How a synthetic sample gets its 3-class label (docs/design.md: rejected = clearly
    distorted; accepted = sharp, well-exposed, pleasing; pending = the rest).

    - rejected: a distortion of `reject_kinds` (default: every kind) at level `reject_level`
      (4) or above, or pseudo-MOS below `reject_mos` (30: the 1-star band of the default star
      thresholds) with at least one such distortion;
    - accepted: an undistorted reference whose own MOS is at least `accept_reference_mos` (60);
    - no class (-1): a severe distortion of a kind outside `reject_kinds` and nothing else
      severe: colour casts, desaturation, low contrast or vignetting at full strength look
      like a photographer's style (monochrome, fog, a mood grade), so they teach the MOS,
      attributes and rankings but not what "clearly distorted" means;
    - pending: everything else (mild and moderate distortions, weaker references).
    """

    reject_mos: float = 30.0
    reject_level: int = 4
    accept_reference_mos: float = 60.0
    reject_kinds: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.reject_kinds is not None:
            object.__setattr__(self, "reject_kinds", tuple(self.reject_kinds))
            unknown = [k for k in self.reject_kinds if k not in DISTORTIONS]
            if unknown:
                raise KeyError(f"reject_kinds: unknown distortions {unknown}; known: {', '.join(DISTORTIONS)}")

    def label(
        self, distortions: Sequence[tuple[str, int]], pseudo_mos: float, reference_mos: float
    ) -> int:
        """Class index (CLASS_INDEX order: 0 rejected, 1 pending, 2 accepted; -1 no class)."""
        defects = [(kind, level) for kind, level in distortions
                   if self.reject_kinds is None or kind in self.reject_kinds]
        style_only = bool(distortions) and not defects
        if not style_only and (pseudo_mos < self.reject_mos
                               or any(level >= self.reject_level for _, level in defects)):
            return CLASS_INDEX["rejected"]
        if any(level >= self.reject_level for _, level in distortions):
            return -1
        if not distortions and reference_mos >= self.accept_reference_mos:
            return CLASS_INDEX["accepted"]
        return CLASS_INDEX["pending"]


@dataclass
class SyntheticSample:
    image: np.ndarray  # HxWx3 uint8, what the model sees
    reference: np.ndarray  # HxWx3 uint8, the same crop undistorted
    distortions: tuple[tuple[str, int], ...]  # (kind, level) pairs; empty for a pristine sample
    attributes: dict[str, float]  # ATTRIBUTES -> defect severity in [0, 1]
    pseudo_mos: float  # 0-100, full-reference teacher (reference_mos for a pristine sample)
    label: int  # CLASS_INDEX: 0 rejected, 1 pending, 2 accepted
    reference_path: Path
    reference_mos: float
    scores: dict[str, float] = field(default_factory=dict)  # ms_ssim, gmsd, delta_e

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind, _ in self.distortions)

    @property
    def max_level(self) -> int:
        return max((level for _, level in self.distortions), default=0)


class SyntheticDistortions:
    """Distorted crops of reference photos, deterministic for (seed, epoch, index).

    `references` are sharp, well-exposed photos; `reference_mos` is their own score (one value
    for all, or one per reference). Each item is a random `crop_size` crop of a reference resized
    to short side `reference_short_side` (an int, or a (low, high) range drawn per sample for
    scale variety; never enlarged beyond the photo's own size unless it is smaller than the
    crop), randomly mirrored, then left undistorted with `include_reference_probability` or
    distorted by `random_distortion`. Decoded references are cached in memory at the largest
    short side needed (a few MB each).
    """

    def __init__(
        self,
        references: Sequence[Path],
        crop_size: int = 384,
        samples_per_epoch: int = 1000,
        seed: int = 0,
        include_reference_probability: float = 0.15,
        mix_probability: float = 0.2,
        reference_short_side: int | tuple[int, int] = 512,
        reference_mos: float | Sequence[float] = DEFAULT_REFERENCE_MOS,
        kinds: Sequence[str] | None = None,
        rules: LabelRules = LabelRules(),
        flip: bool = True,
        aspect_range: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        self.references = [Path(p) for p in references]
        if not self.references:
            raise ValueError("SyntheticDistortions needs at least one reference photo")
        if isinstance(reference_mos, (int, float)):
            reference_mos = [float(reference_mos)] * len(self.references)
        if len(reference_mos) != len(self.references):
            raise ValueError(
                f"{len(reference_mos)} reference MOS values for {len(self.references)} references"
            )
        self.reference_mos = [float(m) for m in reference_mos]
        if isinstance(reference_short_side, int):
            reference_short_side = (reference_short_side, reference_short_side)
        low, high = reference_short_side
        if not crop_size <= low <= high:
            raise ValueError(
                f"reference_short_side {reference_short_side} must be >= crop_size {crop_size}"
            )
        unknown = [k for k in (kinds or ()) if k not in DISTORTIONS]
        if unknown:
            raise KeyError(f"unknown distortions {unknown}; known: {', '.join(DISTORTIONS)}")
        self.crop_size = crop_size
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.epoch = 0
        self.include_reference_probability = include_reference_probability
        self.mix_probability = mix_probability
        self.short_side_range = (low, high)
        self.kinds = list(kinds) if kinds is not None else None
        low_aspect, high_aspect = (float(v) for v in aspect_range)
        if not 1.0 <= low_aspect <= high_aspect:
            raise ValueError(f"aspect_range {tuple(aspect_range)} must satisfy 1 <= low <= high")
        self.aspect_range = (low_aspect, high_aspect)
        if isinstance(rules, dict):
            rules = LabelRules(**rules)
        self.rules = rules
        self.flip = flip
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw a different set of samples (call at the start of every epoch)."""
        self.epoch = epoch

    def _decoded(self, index: int) -> Image.Image:
        if index not in self._cache:
            path = self.references[index]
            # The command's own decoder, so training sees the pixels `iqs score` sees.
            image = load_rgb(path, self.short_side_range[1])
            scale = self.short_side_range[1] / min(image.size)
            if scale < 1.0:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                image = image.resize(size, Image.LANCZOS)
            self._cache[index] = image
        return self._cache[index]

    def reference_crop(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """A random uint8 crop of reference `index` at the model's scale: crop_size square, or
        with `aspect_range` a crop_size short side and a long side up to that many times longer
        (as far as the photo allows); the model input transform squashes it to a square."""
        image = self._decoded(index)
        low, high = self.short_side_range
        short = int(rng.integers(low, high + 1))
        # Never enlarge a photo beyond its own size, unless it is smaller than the crop.
        short = max(self.crop_size, min(short, min(image.size)))
        if short != min(image.size):
            scale = short / min(image.size)
            size = (max(short, round(image.width * scale)), max(short, round(image.height * scale)))
            image = image.resize(size, Image.LANCZOS if scale < 1 else Image.BICUBIC)
        width = height = self.crop_size
        if self.aspect_range != (1.0, 1.0):
            # A landscape or portrait field of view, which the model squashes to a square the
            # way `iqs score` squashes a whole 3:2 photo (so training sees that squash too).
            low, high = self.aspect_range
            aspect = float(np.exp(rng.uniform(np.log(low), np.log(high))))
            if rng.random() < 0.5:
                width = min(image.width, round(self.crop_size * aspect))
            else:
                height = min(image.height, round(self.crop_size * aspect))
        left = int(rng.integers(0, image.width - width + 1))
        top = int(rng.integers(0, image.height - height + 1))
        crop = np.asarray(image.crop((left, top, left + width, top + height)))
        if self.flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return np.ascontiguousarray(crop)

    def __getitem__(self, index: int) -> SyntheticSample:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range 0..{len(self) - 1}")
        rng = np.random.default_rng((self.seed, self.epoch, index))
        ref_index = int(rng.integers(len(self.references)))
        reference = self.reference_crop(ref_index, rng)
        reference_mos = self.reference_mos[ref_index]
        if rng.random() < self.include_reference_probability:
            distortions: list[tuple[str, int]] = []
            image, quality, scores = reference.copy(), reference_mos, {}
        else:
            distortions = random_distortion(rng, self.mix_probability, self.kinds)
            image = apply_distortions(reference, distortions, rng)
            fr = full_reference_scores(reference, image)
            quality, scores = reference_mos * quality_factor(fr), fr.as_dict()
        return SyntheticSample(
            image=image,
            reference=reference,
            distortions=tuple(distortions),
            attributes=attribute_targets(distortions),
            pseudo_mos=float(quality),
            label=self.rules.label(distortions, quality, reference_mos),
            reference_path=self.references[ref_index],
            reference_mos=reference_mos,
            scores=scores,
        )
