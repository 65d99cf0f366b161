"""Photographer's styles and their defective twins (training/datasets/styles.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from iqs_training.datasets import styles  # noqa: E402


def _textured(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A sharp, colourful, well-exposed test crop: checkerboard detail on a colour gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    # Isotropic fine texture (2 px random cells): no direction a smear could leave intact.
    checker = np.kron(rng.integers(0, 2, (h // 2 + 1, w // 2 + 1)), np.ones((2, 2)))[:h, :w]
    base = np.stack([xx / w, yy / h, 1 - xx / w], axis=-1).astype(np.float32)
    image = 0.25 + 0.4 * base + 0.25 * checker[..., None] + rng.normal(0, 0.01, (h, w, 3))
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _detail(image: np.ndarray, block: int = 16) -> np.ndarray:
    """Mean absolute gradient in block x block tiles."""
    gray = image.astype(np.float32).mean(axis=2)
    grad = np.abs(np.diff(gray, axis=1))[:-1] + np.abs(np.diff(gray, axis=0))[:, :-1]
    h, w = (s // block * block for s in grad.shape)
    return grad[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3))


@pytest.mark.parametrize("name", sorted(styles.STYLES))
def test_every_style_keeps_shape_and_changes_the_image(name):
    crop = _textured()
    out = styles.apply_style(crop, name, np.random.default_rng(1))
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - crop.astype(int)).mean() > 1.0


@pytest.mark.parametrize("name", sorted(styles.TWINS))
def test_every_twin_names_its_defect(name):
    crop = _textured()
    out, attributes = styles.apply_twin(crop, name, np.random.default_rng(1))
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert attributes and max(attributes.values()) == 1.0


def test_shallow_focus_keeps_a_sharp_subject_where_the_twins_keep_none():
    crop = _textured(128, 160)
    sharp = _detail(crop)
    best_kept = []
    for seed in range(4):
        styled = styles.apply_style(crop, "shallow_focus", np.random.default_rng(seed))
        # Somewhere (the subject) the styled frame is as detailed as the reference ...
        ratio = _detail(styled) / (sharp + 1e-3)
        best_kept.append(ratio.max())
        # ... and elsewhere it is defocused.
        assert np.quantile(ratio, 0.3) < 0.6
    assert min(best_kept) > 0.8
    for name in ("soft_all", "focus_missed", "camera_shake"):
        twin, _ = styles.apply_twin(crop, name, np.random.default_rng(0))
        assert (_detail(twin) / (sharp + 1e-3)).max() < 0.6, name


def test_monochrome_has_no_colour_beyond_a_tone():
    crop = _textured()
    for seed in range(6):
        out = styles.apply_style(crop, "monochrome", np.random.default_rng(seed)).astype(np.float32)
        # Untoned grey or a fixed tone: every pixel's channels are one grey times fixed gains.
        gains = out.reshape(-1, 3).sum(0)
        predicted = out.mean(axis=2, keepdims=True) * gains / gains.mean()
        assert np.abs(out - predicted).mean() < 1.5


def test_low_key_keeps_highlights_where_darkened_does_not():
    crop = _textured()
    low = styles.apply_style(crop, "low_key", np.random.default_rng(0))
    dark, _ = styles.apply_twin(crop, "darkened", np.random.default_rng(0))
    assert np.quantile(low, 0.99) > 0.6 * np.quantile(crop, 0.99)
    assert np.quantile(dark, 0.99) < 0.3 * np.quantile(crop, 0.99)


def test_scale_multiplies_pixel_sizes():
    crop = _textured(128, 160)
    small = styles.apply_twin(crop, "soft_all", np.random.default_rng(0), scale=0.3)[0]
    large = styles.apply_twin(crop, "soft_all", np.random.default_rng(0), scale=1.0)[0]
    assert _detail(small).mean() > 1.5 * _detail(large).mean()


def test_style_groups_in_the_synthetic_dataset(tmp_path):
    torch = pytest.importorskip("torch")  # the training dataset yields tensors
    from PIL import Image

    from iqs_cli.card import InputSpec
    from iqs_training.data import SYNTHETIC_DATASET, SyntheticDataset
    from iqs_cli.vocabulary import CLASS_INDEX
    from iqs_training.datasets.synthetic import SyntheticDistortions

    refs = []
    for i in range(2):
        path = tmp_path / f"ref{i}.png"
        Image.fromarray(_textured(80, 100, seed=i)).save(path)
        refs.append(path)
    attributes = ["blur", "noise", "underexposure", "overexposure", "compression", "color"]
    synthetic = SyntheticDistortions(refs, crop_size=64, samples_per_epoch=3,
                                     reference_short_side=64, reference_mos=85)
    ds = SyntheticDataset(synthetic, InputSpec(size=64), attributes, ["clive", SYNTHETIC_DATASET],
                          ladder_levels=3, style_groups=2, use_mos=False)
    assert len(ds) == 5
    group = ds[4]  # a style group: reference, two styles, one twin
    assert group["label"].tolist() == [CLASS_INDEX["accepted"]] * 3 + [CLASS_INDEX["rejected"]]
    assert group["level"].tolist() == [0, 0, 0, 5]
    assert torch.all(group["attributes"][:3] == 0)
    assert group["attributes"][3].max() == 1.0
    assert len(set(group["reference"].tolist())) == 1 and group["reference"][0] == 4
    with pytest.raises(ValueError, match="style_groups"):
        SyntheticDataset(synthetic, InputSpec(size=64), attributes, ["clive", SYNTHETIC_DATASET],
                         ladder_levels=1, include_reference=False, style_groups=2)
