"""NIQE baseline (training.baselines): AGGD fitting, MATLAB-compatible pieces, the response to
blur and noise, pristine-model fitting and the errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import make_photo
from PIL import Image
from scipy import ndimage

from iqs_training.baselines import (
    LIVE_MODEL_PATH,
    PATCH_SIZE,
    baseline_scores,
    estimate_aggd,
    fit_pristine_model,
    live_pristine_model,
    load_rgb,
    mscn,
    niqe,
    niqe_features,
    resize_half,
    to_gray,
)


def aggd_samples(rng, n, alpha, beta_l, beta_r):
    """Draws from an AGGD: side by its mass beta/(beta_l+beta_r), |x|^alpha/beta^alpha ~
    Gamma(1/alpha)."""
    left = rng.random(n) < beta_l / (beta_l + beta_r)
    magnitude = rng.gamma(1 / alpha, 1.0, n) ** (1 / alpha)
    return np.where(left, -beta_l * magnitude, beta_r * magnitude)


@pytest.mark.parametrize("alpha,beta_l,beta_r", [(0.8, 0.5, 1.2), (2.0, 1.0, 1.0), (1.4, 0.3, 0.2)])
def test_aggd_estimation_recovers_known_parameters(alpha, beta_l, beta_r):
    x = aggd_samples(np.random.default_rng(1), 200_000, alpha, beta_l, beta_r)
    a, bl, br = estimate_aggd(x)
    assert a == pytest.approx(alpha, rel=0.05)
    assert bl == pytest.approx(beta_l, rel=0.04)
    assert br == pytest.approx(beta_r, rel=0.04)


def test_aggd_estimation_is_per_row_and_marks_one_sided_rows():
    rng = np.random.default_rng(2)
    rows = np.stack([aggd_samples(rng, 5000, 1.0, 1.0, 2.0), aggd_samples(rng, 5000, 2.5, 0.4, 0.4)])
    a, bl, br = estimate_aggd(rows)
    for i in range(2):
        single = estimate_aggd(rows[i])
        assert (a[i], bl[i], br[i]) == pytest.approx(single)
    # A flat or one-sided patch has no left (or right) spread: NaN scales, as in the release.
    a, bl, br = estimate_aggd(np.stack([np.zeros(50), np.abs(rows[0, :50])]))
    assert np.isnan(bl).all() and np.isfinite(br[1])


def test_gray_conversion_is_matlab_rgb2gray_rounded():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [90, 90, 90]]], dtype=np.uint8)
    assert to_gray(rgb).tolist() == [[76.0, 150.0, 29.0, 90.0]]


def test_resize_half_uses_matlab_pixel_centres_and_keeps_flat_images_flat():
    ramp = np.tile(np.arange(40, dtype=float), (30, 1))
    half = resize_half(ramp)
    assert half.shape == (15, 20)
    # Output pixel k sits at input coordinate 2k + 0.5; bicubic reproduces a ramp exactly
    # away from the mirrored edges.
    assert half[:, 3:-3] == pytest.approx(np.tile(2 * np.arange(3, 17) + 0.5, (15, 1)))
    assert resize_half(np.full((9, 11), 77.0)) == pytest.approx(np.full((5, 6), 77.0))


def test_mscn_is_exactly_zero_in_flat_areas_and_normalized_elsewhere():
    image = np.full((40, 40), 255.0)  # a clipped area beside a textured one
    image[:, 20:] = np.tile([0.0, 200.0], (40, 10))
    coefficients, sigma = mscn(image)
    assert (coefficients[:, :10] == 0).all() and sigma[:, :10].max() == pytest.approx(0, abs=1e-5)
    assert np.abs(coefficients[:, 25:35]).min() > 0.5


def test_niqe_matches_the_reference_implementation_on_a_deterministic_image():
    yy, xx = np.mgrid[0:200, 0:300].astype(float)
    image = (128 + 60 * np.sin(xx / 7.0 + np.cos(yy / 13.0) * 3) + 40 * np.cos(yy / 5.0 + xx / 17.0)
             + 20 * np.sin(xx * yy / 900.0))
    image = np.floor(np.clip(image, 0, 255) + 0.5)
    # Value of BasicSR 1.4.2's niqe() (a port checked against the LIVE MATLAB release) on this
    # image with the same pristine parameters.
    assert niqe(image) == pytest.approx(13.253331, abs=1e-3)


@pytest.fixture(scope="module")
def pristine_crop(shared_data) -> np.ndarray:
    image = load_rgb(shared_data / "pristine" / "plasma-BytheWater.jpg")
    h, w = image.shape[:2]
    return image[h // 2 - 192: h // 2 + 192, w // 2 - 192: w // 2 + 192]


def test_niqe_rises_with_gaussian_blur(pristine_crop):
    def blurred(sigma):
        out = ndimage.gaussian_filter(pristine_crop.astype(float), (sigma, sigma, 0))
        return np.clip(out, 0, 255).round().astype(np.uint8)

    clean, mild, severe = niqe(pristine_crop), niqe(blurred(1.0)), niqe(blurred(3.0))
    assert clean + 1.0 < mild < severe - 1.0


def test_niqe_rises_with_noise(pristine_crop):
    rng = np.random.default_rng(0)

    def noisy(sigma):
        out = pristine_crop + rng.normal(0, sigma, pristine_crop.shape)
        return np.clip(out, 0, 255).round().astype(np.uint8)

    clean, mild, severe = niqe(pristine_crop), niqe(noisy(10)), niqe(noisy(30))
    assert clean + 1.0 < mild < severe - 1.0


def test_rgb_and_its_gray_score_the_same(pristine_crop):
    assert niqe(pristine_crop) == pytest.approx(niqe(to_gray(pristine_crop)))


def test_features_have_one_row_per_whole_patch(pristine_crop):
    features, sharpness = niqe_features(pristine_crop[:300, :250])  # 3 x 2 whole patches
    assert features.shape == (6, 36) and sharpness.shape == (6,)
    assert np.isfinite(features).all() and (sharpness > 0).all()


@pytest.mark.parametrize("shape", [(95, 400, 3), (96, 96, 3), (150, 150, 3), (0, 0, 3)])
def test_small_images_give_a_clear_error(shape):
    with pytest.raises(ValueError, match="too small"):
        niqe(np.zeros(shape, dtype=np.uint8))


def test_smallest_scorable_image_is_two_patches(pristine_crop):
    assert np.isfinite(niqe(pristine_crop[:PATCH_SIZE, : 2 * PATCH_SIZE]))


@pytest.mark.parametrize("image,message", [
    (np.zeros((200, 200, 4), dtype=np.uint8), "RGB"),
    (np.zeros((200, 200, 3), dtype=np.float32), "uint8"),
    (np.full((200, 200), 0.5), "0-1 scale"),
    (np.full((200, 200), np.nan), "NaN"),
    (np.full((200, 200), 128, dtype=np.uint8), "too uniform"),
])
def test_unusable_images_give_a_clear_error(image, message):
    with pytest.raises(ValueError, match=message):
        niqe(image)


def test_live_model_is_a_valid_gaussian_with_its_notice():
    mu, cov = live_pristine_model()
    assert mu.shape == (36,) and cov.shape == (36, 36)
    assert np.allclose(cov, cov.T) and np.linalg.eigvalsh(cov).min() > 0
    with np.load(LIVE_MODEL_PATH, allow_pickle=False) as data:
        assert "University of Texas at Austin" in str(data["notice"])


def test_fit_pristine_model_keeps_only_the_sharpest_patches(pristine_crop, tmp_path):
    paths = []
    for i, crop in enumerate([pristine_crop, pristine_crop[:, ::-1]]):
        paths.append(tmp_path / f"p{i}.png")
        Image.fromarray(np.ascontiguousarray(crop)).save(paths[-1])
    features, sharpness = niqe_features(pristine_crop)  # the mirror has the same sharpness order
    every_patch = fit_pristine_model(paths, sharpness_threshold=0.0)
    sharp = fit_pristine_model(paths)
    assert every_patch[0].shape == (36,) and every_patch[1].shape == (36, 36)
    assert (sharpness > 0.75 * sharpness.max()).sum() < sharpness.size
    assert every_patch[0] == pytest.approx(np.nanmean(np.concatenate(
        [features, niqe_features(pristine_crop[:, ::-1])[0]]), axis=0))
    assert not np.allclose(sharp[0], every_patch[0])
    # A fitted model scores like the shipped one: a finite distance, larger for a blurred photo.
    blurred = ndimage.gaussian_filter(pristine_crop.astype(float), (3, 3, 0)).round().astype(np.uint8)
    assert niqe(pristine_crop, every_patch) < niqe(blurred, every_patch)


def test_baseline_scores_in_order_and_errors_name_the_file(pristine_crop, tmp_path):
    sharp = tmp_path / "sharp.png"
    Image.fromarray(pristine_crop).save(sharp)
    soft = tmp_path / "soft.png"
    Image.fromarray(ndimage.gaussian_filter(pristine_crop, (3, 3, 0))).save(soft)
    scores = baseline_scores([sharp, soft])
    assert scores.shape == (2,) and scores[0] == pytest.approx(niqe(pristine_crop))
    assert scores[0] < scores[1]

    tiny = make_photo(tmp_path / "tiny.jpg", size=(64, 48))
    with pytest.raises(ValueError, match=r"tiny\.jpg.*too small"):
        baseline_scores([sharp, tiny])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(sharp.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"broken\.jpg"):
        baseline_scores([broken])
    with pytest.raises(ValueError, match="unknown baseline method"):
        baseline_scores([sharp], method="brisque")
