"""Thresholds, stars, reasons, provider choice and card checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from iqs_cli.card import CardError, InputSpec, image_to_tensor, load_card
from iqs_cli.engine import EngineError, ModelSession, select_providers
from iqs_cli.vocabulary import LOW_QUALITY, REASONS
from iqs_cli.verdict import (
    REASON_SEPARATOR,
    Thresholds,
    card_reasons,
    decide,
    label_from_probabilities,
    reason_token,
    reason_wording,
    stars_from_mos,
)

REJECTED = {"rejected": 0.8, "pending": 0.1, "accepted": 0.1}
PENDING = {"rejected": 0.1, "pending": 0.8, "accepted": 0.1}
ACCEPTED = {"rejected": 0.0, "pending": 0.1, "accepted": 0.9}
WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


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
    bad = decide(REJECTED, 12.0, attrs, card)
    assert bad.label == "rejected" and bad.reasons == ["blur", "underexposed"] and bad.stars == 1
    good = decide(ACCEPTED, 80.0, {"blur": 0.3, "noise": 0.2}, card)
    assert good.label == "accepted" and good.reasons == [] and good.stars == 5


def test_a_named_defect_keeps_a_shot_from_accepted(tiny_model):
    card = load_card(tiny_model)
    attrs = {"blur": 0.9, "noise": 0.2, "underexposure": 0.7, "compression": 0.1}
    flawed = decide(ACCEPTED, 80.0, attrs, card)
    assert flawed.label == "pending" and flawed.reasons == ["blur", "underexposed"]


def test_a_rejection_without_a_defect_needs_a_low_mos(tiny_model):
    card = load_card(tiny_model)  # stars [30, 45, 60, 72]: the 3-star cut is 45
    t = Thresholds(reject_at=0.6)
    head = {"rejected": 0.79, "pending": 0.01, "accepted": 0.20}
    clean = {"blur": 0.03, "noise": 0.04, "underexposure": 0.0, "compression": 0.01}
    fair = decide(head, 63.7, clean, card, t)
    assert fair.label == "accepted" and fair.reasons == []
    poor = decide(head, 30.0, clean, card, t)
    assert poor.label == "rejected" and poor.reasons == ["low_quality"]
    named = decide(head, 63.7, {**clean, "noise": 0.3}, card, t)  # half the reason threshold
    assert named.label == "rejected" and named.reasons == ["noise"]


def test_a_severe_defect_rejects_below_reject_at(tiny_model):
    card = load_card(tiny_model)
    t = Thresholds(reject_at=0.6)
    head = {"rejected": 0.56, "pending": 0.01, "accepted": 0.43}
    dark = {"blur": 0.09, "noise": 0.0, "underexposure": 0.95, "compression": 0.0}
    verdict = decide(head, 40.0, dark, card, t)
    assert verdict.label == "rejected" and verdict.reasons == ["underexposed"]
    # Not the likeliest class: the doubt stays with the photographer (pending, not accepted).
    doubtful = decide({"rejected": 0.40, "pending": 0.15, "accepted": 0.45}, 40.0, dark, card, t)
    assert doubtful.label == "pending"


def test_every_attribute_has_its_token():
    expected = {"blur": "blur", "noise": "noise", "underexposure": "underexposed",
                "overexposure": "overexposed", "compression": "compression", "color": "color",
                "contrast": "contrast", "motion_blur": "motion_blur"}
    assert {name: reason_token(name) for name in expected} == expected
    assert reason_token("sharpness") == "sharpness"  # unknown: the attribute's own name
    assert reason_token("bad; name") == "bad_name"  # never the separator
    tokens = [token for _, token, _ in REASONS]
    assert len(tokens) == len(set(tokens)) and LOW_QUALITY in tokens


def test_rejected_shot_always_has_a_reason(tiny_model):
    card = load_card(tiny_model)  # reason threshold 0.5 (the default)
    # Nothing reaches 0.5: the strongest attribute, as it is at least half the threshold.
    mild = {"blur": 0.1, "noise": 0.3, "underexposure": 0.25, "compression": 0.2}
    assert decide(REJECTED, 20.0, mild, card).reasons == ["noise"]
    assert decide(REJECTED, 20.0, {"blur": 0.2, "underexposure": 0.25}, card).reasons == ["underexposed"]
    # Below half the threshold: no attribute explains it.
    faint = {"blur": 0.1, "noise": 0.24, "underexposure": 0.0, "compression": 0.2}
    assert decide(REJECTED, 20.0, faint, card).reasons == [LOW_QUALITY]
    assert decide(REJECTED, 20.0, {}, card).reasons == [LOW_QUALITY]
    # Pending shots keep only what passes the threshold; accepted shots get nothing.
    assert decide(PENDING, 50.0, mild, card).reasons == []
    assert decide(PENDING, 50.0, {**mild, "blur": 0.6}, card).reasons == ["blur"]
    assert decide(ACCEPTED, 80.0, mild, card).reasons == []
    # Attributes over the threshold are all named, most severe first; no fallback added.
    strong = {"blur": 0.55, "noise": 0.3, "underexposure": 0.9, "compression": 0.0}
    assert decide(REJECTED, 20.0, strong, card).reasons == ["underexposed", "blur"]
    # Half of the card's (or the user's) threshold, not of 0.5.
    assert decide(REJECTED, 20.0, mild, card, Thresholds(reason_at=0.8)).reasons == [LOW_QUALITY]
    assert decide(REJECTED, 20.0, mild, card, Thresholds(reason_at=0.6)).reasons == ["noise"]
    # Unknown attributes of a card name themselves.
    assert decide(REJECTED, 20.0, {"sharpness": 0.3}, card).reasons == ["sharpness"]


def test_card_rewords_but_never_renames(tiny_model, tmp_path):
    plain = reason_wording(load_card(tiny_model))
    assert plain["blur"] == "blurry" and plain["underexposed"] == "underexposed"
    assert plain["compression"] == "heavy JPEG artifacts" and plain[LOW_QUALITY] == "low overall quality"
    card_path = tiny_model.with_suffix(".json")
    data = json.loads(card_path.read_text())
    data["attributes"] = data["attributes"] + ["sharp_ness"]
    data["attribute_reasons"] = {"blur": "out of focus", "underexposure": "too dark; murky"}
    data["reasons"] = {"blur": "soft", "noise": "grainy"}  # newer key wins over attribute_reasons
    copy = tmp_path / "tiny.onnx"
    copy.write_bytes(tiny_model.read_bytes())
    (tmp_path / "tiny.json").write_text(json.dumps(data))
    card = load_card(copy)
    wording = reason_wording(card)
    assert wording["blur"] == "soft" and wording["noise"] == "grainy"
    assert wording["underexposed"] == "too dark, murky"  # never the separator
    assert wording["sharp_ness"] == "sharp ness" and wording["compression"] == "heavy JPEG artifacts"
    verdict = decide(REJECTED, 10.0, {"blur": 0.9, "noise": 0.8, "underexposure": 0.7}, card)
    assert verdict.reasons == ["blur", "noise", "underexposed"]


def test_shipped_cards_word_their_reasons():
    for name in ("iqs-base", "iqs-fast"):
        card = load_card(WEIGHTS / f"{name}.onnx")
        wording = reason_wording(card)
        # Cards from `iqs export` list tokens (`reasons`); older ones worded attributes.
        listed = card.reasons or {
            reason_token(attribute): text for attribute, text in card.attribute_reasons.items()}
        assert listed and all(wording[token] == text for token, text in listed.items())
        assert set(card_reasons(card.attributes)) <= set(wording)
        verdict = decide(REJECTED, 10.0, {"overexposure": 0.9, "color": 0.6}, card)
        assert verdict.reasons == ["overexposed", "color"]


def test_no_token_or_wording_holds_the_separator():
    mark = REASON_SEPARATOR.strip()
    assert mark
    texts = [text for _, token, wording in REASONS for text in (token, wording)]
    for name in ("iqs-base", "iqs-fast"):
        texts += [t for pair in reason_wording(load_card(WEIGHTS / f"{name}.onnx")).items() for t in pair]
    assert texts and not [text for text in texts if mark in text]


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
    assert np.allclose(square[:, 10, 10], [1.0, -1.0, 0.0039216], atol=1e-5)  # 255, 0, 128 -> [-1, 1]
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


def test_sessions_sleep_instead_of_spinning_and_plan_no_batch_arena(tiny_model):
    session = ModelSession(load_card(tiny_model))
    options = session.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.enable_mem_pattern is False
