"""Synthetic distortions (training.datasets.synthetic) and their full-reference teacher
(training.fullref)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tests.helpers import make_photo
from scipy import ndimage

from iqs_cli.vocabulary import CLASS_INDEX
from iqs_training.datasets.synthetic import (
    ATTRIBUTES,
    DISTORTIONS,
    LEVELS,
    LabelRules,
    SyntheticDistortions,
    apply_distortions,
    attribute_targets,
    distort,
    random_distortion,
)
from iqs_training.fullref import (
    DEFAULT_MAPPING,
    TARGET_QUALITY,
    color_difference,
    distortion_index,
    full_reference_scores,
    gmsd,
    ms_ssim,
    pseudo_mos,
)
from iqs_training.fullref_calibrate import calibration_rows, calibration_table, fit_mapping

REJECTED, PENDING, ACCEPTED = (CLASS_INDEX[name] for name in ("rejected", "pending", "accepted"))


def photo_like(height: int = 96, width: int = 96, seed: int = 0) -> np.ndarray:
    """A photo-like test image: luma and chroma textures with a natural (1/f^1.4) spectrum, so
    there are edges at every scale and no repeating pattern, plus one sharp-edged red disc;
    kept off the clipping points so that every distortion has something to change."""
    rng = np.random.default_rng(seed)
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    amplitude = np.maximum(frequency, 1.0 / max(height, width)) ** -1.4

    def texture() -> np.ndarray:
        spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape))
        field = np.fft.irfft2(spectrum, s=(height, width))
        return (field - field.mean()) / field.std()

    luma, chroma_1, chroma_2 = texture(), texture(), texture()
    chroma = np.stack([0.06 * chroma_1, -0.03 * (chroma_1 + chroma_2), 0.06 * chroma_2], axis=-1)
    image = 0.5 + 0.13 * luma[..., None] + chroma
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 0.04
    image[disc] = image[disc] * 0.5 + np.array([0.4, 0.1, 0.05])
    return np.clip(image * 255, 15, 240).astype(np.uint8)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    # 192 px: JPEG 2000's smallest codestream makes its levels 4 and 5 equal below ~190 px.
    return photo_like(192, 192)


@pytest.fixture(scope="module")
def distorted_by_level(image):
    """{kind: [level 1..5 outputs]}, each level drawn with the same seed so that random choices
    (motion angle, cast direction, noise pattern) stay the same and only the strength changes."""
    return {
        kind: [distort(image, kind, level, np.random.default_rng(7)) for level in LEVELS]
        for kind in DISTORTIONS
    }


def test_catalogue_has_the_required_types_and_attributes():
    assert len(DISTORTIONS) >= 15
    required = {
        "gaussian_blur", "lens_blur", "motion_blur", "gaussian_noise", "shot_noise",
        "impulse_noise", "color_noise", "jpeg", "recompression", "jpeg2000", "underexposure",
        "overexposure", "contrast_loss", "saturation_loss", "color_cast", "resample",
        "pixelation", "chromatic_aberration",
    }
    assert required <= set(DISTORTIONS)
    assert {spec.attribute for spec in DISTORTIONS.values()} == set(ATTRIBUTES)
    for spec in DISTORTIONS.values():
        assert len(spec.levels) == 5 and spec.description


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_every_level_changes_the_image_more_than_the_last(image, distorted_by_level, kind):
    outputs = distorted_by_level[kind]
    for out in outputs:
        assert out.dtype == np.uint8 and out.shape == image.shape
        assert np.any(out != image), f"{kind} left the image unchanged"
    severity = [distortion_index(full_reference_scores(image, out)) for out in outputs]
    assert all(a < b for a, b in zip(severity, severity[1:])), f"{kind}: {severity}"
    mos = [pseudo_mos(image, out) for out in outputs]
    assert all(a > b for a, b in zip(mos, mos[1:])), f"{kind}: {mos}"


@pytest.mark.parametrize("kind", list(DISTORTIONS))
def test_odd_sizes_keep_their_shape_and_seeds_repeat(kind):
    small = photo_like(37, 53, seed=3)
    first = distort(small, kind, 5, np.random.default_rng(11))
    again = distort(small, kind, 5, np.random.default_rng(11))
    assert first.shape == small.shape and first.dtype == np.uint8
    assert np.array_equal(first, again)


def test_distort_rejects_bad_arguments(image):
    rng = np.random.default_rng(0)
    with pytest.raises(KeyError, match="unknown distortion"):
        distort(image, "sepia", 1, rng)
    for level in (0, 6):
        with pytest.raises(ValueError, match="level"):
            distort(image, "jpeg", level, rng)
    with pytest.raises(ValueError, match="uint8"):
        distort(image.astype(np.float32), "jpeg", 1, rng)


def test_random_distortion_mixes_two_compatible_kinds():
    rng = np.random.default_rng(0)
    singles = [random_distortion(rng, mix_probability=0.0) for _ in range(200)]
    assert all(len(d) == 1 and d[0][1] in LEVELS for d in singles)
    assert len({kind for d in singles for kind, _ in d}) > 15
    mixes = [random_distortion(rng, mix_probability=1.0) for _ in range(200)]
    for mix in mixes:
        assert len(mix) == 2
        attributes = {DISTORTIONS[kind].attribute for kind, _ in mix}
        assert len(attributes) == 2
        assert attributes != {"underexposure", "overexposure"}
    restricted = [random_distortion(rng, 1.0, kinds=["jpeg", "gaussian_blur"]) for _ in range(20)]
    assert all({kind for kind, _ in mix} == {"jpeg", "gaussian_blur"} for mix in restricted)


def test_a_mix_is_applied_in_pipeline_order(image):
    # Blur then JPEG (camera order) whichever way the pair is listed.
    mix_a = apply_distortions(image, [("jpeg", 4), ("gaussian_blur", 3)], np.random.default_rng(1))
    mix_b = apply_distortions(image, [("gaussian_blur", 3), ("jpeg", 4)], np.random.default_rng(1))
    assert np.array_equal(mix_a, mix_b)
    blurred = distort(image, "gaussian_blur", 3, np.random.default_rng(1))
    assert np.array_equal(mix_a, distort(blurred, "jpeg", 4, np.random.default_rng(1)))
    assert pseudo_mos(image, mix_a) < pseudo_mos(image, blurred)


def test_attribute_targets_take_level_over_five_and_the_max():
    assert attribute_targets([]) == {name: 0.0 for name in ATTRIBUTES}
    single = attribute_targets([("motion_blur", 4)])
    assert single["blur"] == pytest.approx(0.8)
    assert all(value == 0.0 for name, value in single.items() if name != "blur")
    mix = attribute_targets([("jpeg", 2), ("underexposure", 5), ("pixelation", 3)])
    assert mix["compression"] == pytest.approx(0.6)
    assert mix["underexposure"] == pytest.approx(1.0)
    assert mix["blur"] == mix["noise"] == mix["color"] == 0.0


def test_label_rules():
    rules = LabelRules()
    assert rules.label([], 85.0, 85.0) == ACCEPTED
    assert rules.label([], 50.0, 50.0) == PENDING  # an undistorted but mediocre reference
    assert rules.label([("jpeg", 1)], 80.0, 85.0) == PENDING
    assert rules.label([("jpeg", 3)], 45.0, 85.0) == PENDING
    assert rules.label([("jpeg", 4)], 60.0, 85.0) == REJECTED  # clearly distorted by level
    assert rules.label([("jpeg", 2)], 29.0, 85.0) == REJECTED  # low pseudo-MOS
    assert rules.label([("jpeg", 2), ("shot_noise", 5)], 50.0, 85.0) == REJECTED
    strict = LabelRules(reject_mos=50.0, reject_level=3, accept_reference_mos=90.0)
    assert strict.label([("jpeg", 3)], 70.0, 85.0) == REJECTED
    assert strict.label([("jpeg", 2)], 45.0, 85.0) == REJECTED
    assert strict.label([], 85.0, 85.0) == PENDING


def test_label_rules_with_reject_kinds_leave_styles_unlabelled():
    rules = LabelRules(reject_kinds=("gaussian_blur", "jpeg"))
    assert rules.label([("jpeg", 4)], 60.0, 85.0) == REJECTED
    assert rules.label([("gaussian_blur", 2)], 20.0, 85.0) == REJECTED  # low pseudo-MOS
    # A monochrome or foggy look is not a defect: no class, not "rejected".
    assert rules.label([("saturation_loss", 5)], 20.0, 85.0) == -1
    assert rules.label([("contrast_loss", 4)], 60.0, 85.0) == -1
    assert rules.label([("contrast_loss", 2)], 60.0, 85.0) == PENDING
    assert rules.label([("contrast_loss", 5), ("jpeg", 4)], 40.0, 85.0) == REJECTED
    assert rules.label([], 85.0, 85.0) == ACCEPTED
    with pytest.raises(KeyError, match="sepia"):
        LabelRules(reject_kinds=("sepia",))


def test_identical_images_score_perfectly(image):
    assert ms_ssim(image, image) == 1.0
    assert gmsd(image, image) == 0.0
    assert color_difference(image, image) == 0.0
    assert pseudo_mos(image, image, reference_mos=72.5) == 72.5


def test_metrics_are_monotone_in_blur_and_noise(image):
    rng = np.random.default_rng(0)
    noise = rng.normal(size=image.shape)
    def to_uint8(a: np.ndarray) -> np.ndarray:
        return np.clip(a + 0.5, 0, 255).astype(np.uint8)

    blurred = [to_uint8(ndimage.gaussian_filter(image * 1.0, (s, s, 0))) for s in (0.5, 1, 2, 3)]
    noisy = [to_uint8(image + s * noise) for s in (3, 8, 15, 30)]
    for series in (blurred, noisy):
        ssims = [ms_ssim(image, x) for x in series]
        devs = [gmsd(image, x) for x in series]
        assert all(1.0 > a > b for a, b in zip(ssims, ssims[1:])), ssims
        assert all(0.0 < a < b for a, b in zip(devs, devs[1:])), devs


def test_the_colour_term_sees_a_cast_the_luma_metrics_miss(image):
    cast = distort(image, "color_cast", 5, np.random.default_rng(3))
    grey = distort(image, "saturation_loss", 5, np.random.default_rng(3))
    for changed in (cast, grey):
        scores = full_reference_scores(image, changed)
        assert scores.ms_ssim > 0.97 and scores.gmsd < 0.06  # luma nearly untouched
        assert scores.delta_e > 10
        assert pseudo_mos(image, changed) < 60


def test_metrics_reject_mismatched_or_tiny_images(image):
    with pytest.raises(ValueError, match="shape"):
        ms_ssim(image, image[:64])
    with pytest.raises(ValueError, match="32x32"):
        ms_ssim(image[:20, :20], image[:20, :20])


@pytest.fixture
def references(tmp_path):
    return [
        make_photo(tmp_path / f"ref{i}.jpg", size=(120 + 20 * i, 90), brightness=110 + 20 * i,
                   seed=i)
        for i in range(3)
    ]


def test_dataset_is_deterministic_per_seed_epoch_and_index(references):
    def make(seed):
        return SyntheticDistortions(references, crop_size=64, samples_per_epoch=6, seed=seed,
                                    reference_short_side=80)

    data, twin = make(5), make(5)
    assert len(data) == 6
    first = [data[i] for i in range(6)]
    for a, b in zip(first, (twin[i] for i in range(6))):
        assert np.array_equal(a.image, b.image) and a.distortions == b.distortions
        assert a.pseudo_mos == b.pseudo_mos and a.label == b.label
    assert np.array_equal(data[2].image, first[2].image)  # the cache does not change samples
    data.set_epoch(1)
    assert any(not np.array_equal(data[i].image, first[i].image) for i in range(6))
    other_seed = make(6)
    assert any(not np.array_equal(other_seed[i].image, first[i].image) for i in range(6))
    with pytest.raises(IndexError):
        data[6]


def test_dataset_samples_follow_the_documented_rules(references):
    data = SyntheticDistortions(references, crop_size=64, samples_per_epoch=24, seed=1,
                                reference_short_side=(72, 96), include_reference_probability=0.0,
                                mix_probability=0.5, reference_mos=[80.0, 85.0, 90.0])
    mixes = 0
    for i in range(len(data)):
        sample = data[i]
        assert sample.image.shape == sample.reference.shape == (64, 64, 3)
        assert sample.image.dtype == np.uint8
        assert 1 <= len(sample.distortions) <= 2
        mixes += len(sample.distortions) == 2
        assert sample.attributes == attribute_targets(sample.distortions)
        reference_mos = {"ref0.jpg": 80.0, "ref1.jpg": 85.0, "ref2.jpg": 90.0}
        assert sample.reference_mos == reference_mos[sample.reference_path.name]
        teacher = pseudo_mos(sample.reference, sample.image, sample.reference_mos)
        assert sample.pseudo_mos == pytest.approx(teacher)
        assert 0.0 <= sample.pseudo_mos < sample.reference_mos
        expected = LabelRules().label(sample.distortions, sample.pseudo_mos, sample.reference_mos)
        assert sample.label == expected
        assert sample.label != ACCEPTED
        if sample.max_level >= 4:
            assert sample.label == REJECTED
    assert mixes > 0


def test_undistorted_references_are_accepted_with_their_own_score(references):
    data = SyntheticDistortions(references, crop_size=64, samples_per_epoch=5, seed=2,
                                reference_short_side=64, include_reference_probability=1.0,
                                reference_mos=77.0)
    for i in range(len(data)):
        sample = data[i]
        assert sample.distortions == () and np.array_equal(sample.image, sample.reference)
        assert sample.pseudo_mos == 77.0 and sample.label == ACCEPTED
        assert set(sample.attributes.values()) == {0.0}


def test_dataset_rejects_bad_configuration(references):
    with pytest.raises(ValueError, match="reference"):
        SyntheticDistortions([], crop_size=64)
    with pytest.raises(ValueError, match="reference_short_side"):
        SyntheticDistortions(references, crop_size=64, reference_short_side=48)
    with pytest.raises(ValueError, match="MOS"):
        SyntheticDistortions(references, crop_size=64, reference_short_side=64,
                             reference_mos=[80.0])
    with pytest.raises(KeyError, match="sepia"):
        SyntheticDistortions(references, crop_size=64, reference_short_side=64, kinds=["sepia"])


def test_aspect_range_gives_landscape_and_portrait_crops(tmp_path):
    wide = make_photo(tmp_path / "wide.jpg", size=(240, 160))
    data = SyntheticDistortions([wide], crop_size=64, samples_per_epoch=40, seed=3,
                                reference_short_side=(80, 96), aspect_range=(1.2, 1.5),
                                include_reference_probability=0.5, mix_probability=0.0)
    shapes = {data[i].image.shape[:2] for i in range(len(data))}
    for height, width in shapes:
        short, long = min(height, width), max(height, width)
        assert short == 64 and round(64 * 1.2) <= long <= round(64 * 1.5)
    assert any(w > h for h, w in shapes) and any(h > w for h, w in shapes)
    assert SyntheticDistortions([wide], crop_size=64, reference_short_side=80)[0].image.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="aspect_range"):
        SyntheticDistortions([wide], crop_size=64, reference_short_side=80, aspect_range=(0.5, 1.0))


def test_small_references_are_enlarged_to_the_crop(tmp_path):
    tiny = make_photo(tmp_path / "tiny.png", size=(40, 30))
    data = SyntheticDistortions([tiny], crop_size=48, samples_per_epoch=2, seed=0,
                                reference_short_side=64)
    assert data[0].image.shape == (48, 48, 3)


def test_calibration_on_a_pristine_photo_spans_the_mos_scale(shared_data):
    rows = calibration_rows(shared_data / "pristine", crop_size=96, crops_per_cell=1)
    table = calibration_table(rows)
    assert set(table) == set(DISTORTIONS)
    means = [np.mean([cells[i]["pseudo_mos"] for cells in table.values()]) for i in range(5)]
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert 60 < means[0] < 90 and 5 < means[4] < 40

    def misfit(mapping):
        table = calibration_table(rows, mapping)
        return sum(
            (cells[i]["pseudo_mos"] / 85.0 - TARGET_QUALITY[i]) ** 2
            for cells in table.values() for i in range(5)
        )

    refitted = fit_mapping(rows)
    assert refitted.ms_ssim_scale == DEFAULT_MAPPING.ms_ssim_scale
    assert misfit(refitted) < misfit(DEFAULT_MAPPING)


def test_the_calibration_tool_runs_as_a_module_and_explains_itself(tmp_path):
    run = [sys.executable, "-m", "iqs_training.fullref_calibrate"]
    shown = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "PRISTINE_DIR" in shown.stdout and "--fit" in shown.stdout
    missing = subprocess.run([*run, str(tmp_path / "nowhere")], capture_output=True, text=True,
                             timeout=120)
    assert missing.returncode == 2 and "not a folder" in missing.stderr
