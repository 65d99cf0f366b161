"""The model shipped in weights/: installed with the package, intact, and judging sensibly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from iqs_cli.card import DEFAULT_MODEL_NAME, image_to_tensor, load_card, shipped_models_dir
from iqs_cli.engine import ModelSession
from iqs_cli.fsutil import sha256_file
from iqs_cli.verdict import Thresholds, label_from_probabilities


@pytest.fixture(scope="module", params=[DEFAULT_MODEL_NAME, "iqs-fast"])
def shipped(request):
    if not (shipped_models_dir() / f"{request.param}.onnx").exists():
        pytest.fail(f"weights/{request.param}.onnx is not installed with the package (pyproject package data)")
    card = load_card(request.param)
    return card, ModelSession(card)


def test_default_model_is_iqs_base():
    assert load_card(None).name == DEFAULT_MODEL_NAME == "iqs-base"


def test_card_is_complete_and_matches_the_file(shipped):
    card, _ = shipped
    assert card.sha256 == sha256_file(card.onnx_path)
    assert card.onnx_path.stat().st_size <= 25 * 1024 * 1024
    assert set(card.attributes) >= {"blur", "noise", "underexposure", "compression"}
    raw = json.loads(card.onnx_path.with_suffix(".json").read_text())
    for key in ("training", "metrics", "license", "thresholds", "input"):
        assert raw[key], key
    assert raw["metrics"]["clive"]["srcc"] > 0.7  # measured on the validation split
    assert 0.5 <= raw["thresholds"]["reject_at"] < 1.0  # chosen on training folds


def test_sharp_photo_beats_its_blurred_and_darkened_copies(shipped, shared_data):
    card, session = shipped
    photo = Image.open(shared_data / "pristine" / "mate-LadyBird.jpg").convert("RGB")  # held out
    versions = [
        photo,
        photo.filter(ImageFilter.GaussianBlur(radius=photo.width / 100)),
        Image.fromarray((np.asarray(photo, np.float32) * 0.12).astype(np.uint8)),
    ]
    outputs = session.infer(np.stack([image_to_tensor(v, card.input) for v in versions]))
    thresholds = Thresholds().resolved(card)  # as `iqs score` decides, card thresholds included
    labels = [label_from_probabilities(dict(zip(card.classes, p)), thresholds)
              for p in outputs.probabilities]
    assert labels[1] == labels[2] == "rejected", "severe blur and darkness must be rejected"
    assert outputs.mos[0] > outputs.mos[1] and outputs.mos[0] > outputs.mos[2]
    # Less likely rejected than its damaged copies (whether it is rejected at all is a known
    # weakness of iqs-base on stylised photos: see the card's synthetic_held_out figures).
    assert outputs.probabilities[0, 0] < min(outputs.probabilities[1:, 0])
