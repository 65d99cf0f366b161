"""Full-reference quality: the teacher that labels synthetic distortions with a pseudo-MOS.

A blind student cannot see the reference, but while we make training data we can: MS-SSIM
(Wang, Simoncelli & Bovik 2003) and GMSD (Xue, Zhang, Mou & Bovik 2014) compare a distorted
crop with its undistorted reference, and `pseudo_mos` maps them (plus a colour term) onto the
0-100 MOS scale the model predicts. numpy + scipy.ndimage only, so DataLoader workers can call
it without torch.

Both structural metrics work on luma, so they hardly notice a colour cast or a saturation loss;
`color_difference` (mean CIELab Delta E of the smoothed images) covers colour and overall tone.

The mapping is calibrated on crops of the pristine photographs (training/fullref_calibrate.py:
`python -m iqs_training.fullref_calibrate [PRISTINE_DIR] [--fit]` prints the mean pseudo-MOS
per distortion type and level and, with --fit, the mapping refitted to those crops).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# MS-SSIM constants from Wang et al. 2003: 5 scales, 11x11 gaussian window (sigma 1.5).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 5 / _SSIM_SIGMA  # radius 5 -> the 11-tap window of the paper
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2

# GMSD constants from Xue et al. 2014 (images in 0-255, 2x downsampled first).
_GMSD_T = 170.0
_PREWITT_X = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], dtype=np.float64) / 3.0

# Colour term: Lab difference after a blur, so it measures colour and tone, not grain or edges.
_COLOR_SIGMA = 2.0

DEFAULT_REFERENCE_MOS = 85.0  # what a pristine reference photograph scores on the 0-100 scale

# Mean fraction of the reference's quality a level-1..5 distortion should leave, over crops of the
# pristine photographs: pseudo-MOS about 78, 63, 47, 32, 17 for a reference scored 85.
TARGET_QUALITY = (0.92, 0.74, 0.55, 0.38, 0.20)


@dataclass(frozen=True)
class FullReferenceScores:
    ms_ssim: float  # 1 = identical structure, lower = worse
    gmsd: float  # 0 = identical gradients, higher = worse (about 0.35 at worst)
    delta_e: float  # mean CIELab Delta E76 of the smoothed images; 0 = same colours

    def as_dict(self) -> dict[str, float]:
        return {"ms_ssim": self.ms_ssim, "gmsd": self.gmsd, "delta_e": self.delta_e}


def _check_pair(reference: np.ndarray, distorted: np.ndarray) -> None:
    if reference.shape != distorted.shape:
        raise ValueError(
            f"reference {reference.shape} and distorted {distorted.shape} images differ in shape"
        )
    if reference.ndim != 3 or reference.shape[2] != 3:
        raise ValueError(f"expected HxWx3 RGB images, got shape {reference.shape}")


def luma(image: np.ndarray) -> np.ndarray:
    """HxWx3 RGB (0-255) -> HxW float64 luma (BT.601 weights, as MATLAB's rgb2gray)."""
    rgb = image.astype(np.float64)
    return rgb[..., 0] * 0.298936 + rgb[..., 1] * 0.587043 + rgb[..., 2] * 0.114021


def _ssim_terms(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Mean luminance*contrast-structure (SSIM) and mean contrast-structure of two luma images."""

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, _SSIM_SIGMA, mode="reflect", truncate=_SSIM_TRUNCATE)

    mu_x, mu_y = blur(x), blur(y)
    sigma_xx = blur(x * x) - mu_x * mu_x
    sigma_yy = blur(y * y) - mu_y * mu_y
    sigma_xy = blur(x * y) - mu_x * mu_y
    cs_map = (2 * sigma_xy + _SSIM_C2) / (sigma_xx + sigma_yy + _SSIM_C2)
    l_map = (2 * mu_x * mu_y + _SSIM_C1) / (mu_x * mu_x + mu_y * mu_y + _SSIM_C1)
    return float(np.mean(l_map * cs_map)), float(np.mean(cs_map))


def _halve(a: np.ndarray) -> np.ndarray:
    """2x2 average then keep every other pixel (the downsampling of the MS-SSIM paper)."""
    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    a = a[:h, :w]
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def ms_ssim(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Multi-scale SSIM on luma, 5 scales (Wang et al. 2003); 1.0 for identical images.

    Filtering is "same" size with reflected borders (the paper filters "valid"), so any image
    of at least 32x32 works; negative contrast-structure terms are clipped to 0 before the
    weighted product, as common implementations do, so the result stays in [0, 1].
    """
    _check_pair(reference, distorted)
    if min(reference.shape[:2]) < 2 ** (len(MS_SSIM_WEIGHTS) - 1) * 2:
        raise ValueError(f"MS-SSIM needs images of at least 32x32, got {reference.shape[:2]}")
    x, y = luma(reference), luma(distorted)
    result = 1.0
    last = len(MS_SSIM_WEIGHTS) - 1
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        ssim, cs = _ssim_terms(x, y)
        term = ssim if scale == last else cs
        result *= max(term, 0.0) ** weight
        if scale != last:
            x, y = _halve(x), _halve(y)
    return float(result)


def gmsd(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014); 0.0 for identical images."""
    _check_pair(reference, distorted)

    def gradient_magnitude(a: np.ndarray) -> np.ndarray:
        # The paper's code: 2x2 average filter, keep every other pixel, Prewitt gradients.
        a = ndimage.uniform_filter(a, size=2, mode="reflect")[::2, ::2]
        gx = ndimage.correlate(a, _PREWITT_X, mode="reflect")
        gy = ndimage.correlate(a, _PREWITT_X.T, mode="reflect")
        return np.sqrt(gx * gx + gy * gy)

    m_ref = gradient_magnitude(luma(reference))
    m_dist = gradient_magnitude(luma(distorted))
    similarity = (2 * m_ref * m_dist + _GMSD_T) / (m_ref * m_ref + m_dist * m_dist + _GMSD_T)
    return float(np.std(similarity))


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB values in [0, 1] -> linear light in [0, 1]."""
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB values in [0, 1]."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
     [0.0193339, 0.1191920, 0.9503041]]
)
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """HxWx3 sRGB uint8 (or float 0-255) -> HxWx3 CIELab (D65)."""
    xyz = srgb_to_linear(image.astype(np.float64) / 255.0) @ _RGB_TO_XYZ.T / _D65_WHITE
    epsilon, kappa = 216 / 24389, 24389 / 27
    f = np.where(xyz > epsilon, np.cbrt(xyz), (kappa * xyz + 16) / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])],
        axis=-1,
    )


def color_difference(reference: np.ndarray, distorted: np.ndarray) -> float:
    """Mean CIELab Delta E76 between the two images after a gaussian blur (sigma 2 px).

    The blur (in the spirit of S-CIELAB) keeps grain and edge detail out of it, which the
    structural metrics already judge: what is left is colour cast, saturation and tone.
    """
    _check_pair(reference, distorted)
    sigma = (_COLOR_SIGMA, _COLOR_SIGMA, 0)
    lab_ref = ndimage.gaussian_filter(rgb_to_lab(reference), sigma, mode="reflect")
    lab_dist = ndimage.gaussian_filter(rgb_to_lab(distorted), sigma, mode="reflect")
    return float(np.mean(np.sqrt(np.sum((lab_ref - lab_dist) ** 2, axis=-1))))


def full_reference_scores(reference: np.ndarray, distorted: np.ndarray) -> FullReferenceScores:
    """MS-SSIM, GMSD and the colour difference of a distorted image against its reference."""
    return FullReferenceScores(
        ms_ssim=ms_ssim(reference, distorted),
        gmsd=gmsd(reference, distorted),
        delta_e=color_difference(reference, distorted),
    )


@dataclass(frozen=True)
class QualityMapping:
    """Full-reference scores -> the fraction of the reference's quality that is left.

    distortion index = GMSD / gmsd_scale + (1 - MS-SSIM) / ms_ssim_scale
                       + (Delta E / delta_e_scale) ** delta_e_power
    quality factor = 1 / (1 + index ** slope): 1.0 for identical images, 0.5 at index 1, toward 0.

    Whichever metric sees the damage (gradients, structure, colour and tone) counts. The colour
    term grows faster than linearly because a small global shift of colour or brightness is
    hardly noticed while a large one ruins a photo. The defaults come from
    `fullref_calibrate.fit_mapping` on the pristine photographs (`python -m
    iqs_training.fullref_calibrate --fit`). Fitted freely, MS-SSIM gets no weight (GMSD
    explains the same cells); its scale is held at 0.3, where it costs the fit little, because
    GMSD pools by standard deviation and under-rates damage spread evenly over the image, which
    MS-SSIM's mean pooling sees.
    """

    gmsd_scale: float = 0.057
    ms_ssim_scale: float = 0.3
    delta_e_scale: float = 17.5
    delta_e_power: float = 1.38
    slope: float = 1.29

    def index(self, scores: FullReferenceScores) -> float:
        return (
            scores.gmsd / self.gmsd_scale
            + (1.0 - scores.ms_ssim) / self.ms_ssim_scale
            + (scores.delta_e / self.delta_e_scale) ** self.delta_e_power
        )

    def factor(self, scores: FullReferenceScores) -> float:
        index = self.index(scores)
        return 1.0 if index <= 0.0 else 1.0 / (1.0 + index**self.slope)


DEFAULT_MAPPING = QualityMapping()


def distortion_index(scores: FullReferenceScores) -> float:
    """0 for identical images, 1 where the quality falls to half (`QualityMapping.index`)."""
    return DEFAULT_MAPPING.index(scores)


def quality_factor(scores: FullReferenceScores) -> float:
    """Fraction of the reference's quality that is left, in (0, 1] (`QualityMapping.factor`)."""
    return DEFAULT_MAPPING.factor(scores)


def pseudo_mos(
    reference: np.ndarray, distorted: np.ndarray, reference_mos: float = DEFAULT_REFERENCE_MOS
) -> float:
    """MOS-like score (0-100) of `distorted`, from its full-reference comparison with `reference`.

    `reference_mos` is the score of the reference itself (about 85 for a pristine photograph,
    the human MOS for a well-rated CLIVE photo); identical images get exactly that, and the
    score falls toward 0 as `quality_factor` does. Calibrated on the pristine photographs so
    that level-1 distortions land around 70-85 and level-5 ones around 10-25 (see
    training/fullref_calibrate.py).
    """
    return float(reference_mos * quality_factor(full_reference_scores(reference, distorted)))
