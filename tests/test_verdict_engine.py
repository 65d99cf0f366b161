"""Thresholds, stars, reasons, provider choice and card checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from iqs_cli.card import CardError, InputSpec, image_to_tensor, load_card
from iqs_cli.engine import EngineError, ModelSession, select_providers
from iqs_cli.verdict import Thresholds, decide, label_from_probabilities, stars_from_mos


def test_stars_follow_cut_points():
    cuts = (30, 45, 60, 72)
    assert [stars_from_mos(m, cuts) for m in (0, 29.9, 30, 50, 65, 72, 100)] == [1, 1, 2, 3, 4, 5, 5]


def test_label_thresholds():
    probs = {"rejected": 0.4, "pending": 0.45, "accepted": 0.15}
    assert label_from_probabilities(probs, Thresholds()) == "pending"
    assert label_from_probabilities(probs, Thresholds(reject_at=0.35)) == "rejected"
    good = {"rejected": 0.05, "pending": 0.55, "accepted": 0.4}
    assert label_from_probabilities(good, Thresholds(accept_at=0.35)) == "accepted"
    assert label_from_probabilities(good, Thresholds(reject_at=0.5, accept_at=0.6)) == "pending"
    # Below reject_at a shot is never rejected, even when "rejected" is the likeliest class.
    doubtful = {"rejected": 0.6, "pending": 0.3, "accepted": 0.1}
    assert label_from_probabilities(doubtful, Thresholds()) == "rejected"
    assert label_from_probabilities(doubtful, Thresholds(reject_at=0.7)) == "pending"
    assert label_from_probabilities(doubtful, Thresholds(reject_at=0.6)) == "rejected"


def test_reasons_only_for_shots_that_are_not_accepted(tiny_model):
    card = load_card(tiny_model)
    attrs = {"blur": 0.9, "noise": 0.2, "underexposure": 0.7, "compression": 0.1}
    bad = decide({"rejected": 0.8, "pending": 0.1, "accepted": 0.1}, 12.0, attrs, card)
    assert bad.label == "rejected" and bad.reasons == ["blurry", "underexposed"] and bad.stars == 1
    good = decide({"rejected": 0.0, "pending": 0.1, "accepted": 0.9}, 80.0, attrs, card)
    assert good.label == "accepted" and good.reasons == [] and good.stars == 5


def test_providers():
    assert select_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == "CUDAExecutionProvider"
    with pytest.raises(EngineError, match="onnxruntime-gpu"):
        select_providers("cuda", ["CPUExecutionProvider"])
    with pytest.raises(EngineError):
        select_providers("tpu", [])


def test_damaged_model_is_refused(tiny_model, tmp_path):
    copy = tmp_path / "tiny.onnx"
    copy.write_bytes(tiny_model.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "tiny.json").write_text(tiny_model.with_suffix(".json").read_text())
    with pytest.raises(CardError, match="sha256"):
        ModelSession(load_card(copy))


def test_card_without_model_or_malformed(tiny_model, tmp_path):
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(tiny_model.read_bytes())
    with pytest.raises(CardError, match="model card not found"):
        load_card(lone)
    (tmp_path / "lone.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(CardError, match="malformed"):
        load_card(lone)


def test_preprocessing_shapes_and_normalization():
    from PIL import Image

    image = Image.new("RGB", (300, 200), (255, 0, 128))
    square = image_to_tensor(image, InputSpec(size=64))
    assert square.shape == (3, 64, 64) and square.dtype == np.float32
    assert np.allclose(square[:, 10, 10], [1.0, -1.0, 128 / 255 * 2 - 1], atol=1e-5)
    keep = image_to_tensor(image, InputSpec(size=64, resize="short_side"))
    assert keep.shape == (3, 64, 96)
    crop = image_to_tensor(image, InputSpec(size=64, resize="short_side", crop="center"))
    assert crop.shape == (3, 64, 64)


def test_decoder_may_stop_just_below_the_input_size(tmp_path):
    """A DCT scale that lands within 10 % under the input size is used (cheaper decode)."""
    from PIL import Image

    from iqs_cli.decode import load_rgb

    spec = InputSpec(size=512)
    assert spec.decode_min_side == 461
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (1800, 1000), (90, 120, 150)).save(path, quality=90)
    assert load_rgb(path, spec.decode_min_side).size == (900, 500)  # 1/2 scale, not full size
    assert load_rgb(path, spec.size).size == (1800, 1000)
