"""The second look at a larger scale (iqs_cli/focus.py) and how it changes verdicts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from iqs_cli.card import InputSpec, load_card
from iqs_cli.discover import Shot
from iqs_cli.engine import ModelSession
from iqs_cli.focus import MIN_GAIN, focus_tensor, focus_window, sharpest_window
from iqs_cli.scoring import Scorer
from iqs_cli.verdict import Thresholds, decide


def _soft_with_sharp_patch(size=(200, 150), patch=(120, 40, 70), seed=0) -> Image.Image:
    """A smooth gradient frame (nothing in focus) with one finely textured square."""
    rng = np.random.default_rng(seed)
    w, h = size
    frame = np.linspace(60, 160, w)[None, :, None] + np.zeros((h, 1, 3))
    left, top, side = patch
    frame[top:top + side, left:left + side] += rng.normal(0, 40, (side, side, 3))
    return Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8))


def test_sharpest_window_finds_the_detailed_region():
    image = _soft_with_sharp_patch()
    left, top = sharpest_window(image, 32)
    assert 120 <= left <= 120 + 70 - 32 and 40 <= top <= 40 + 70 - 32


def test_no_second_look_when_the_photo_is_not_larger_than_the_input():
    spec = InputSpec(size=100)
    assert focus_window(_soft_with_sharp_patch((139, 139), (20, 20, 30)), spec) is None
    window = focus_window(_soft_with_sharp_patch((int(100 * MIN_GAIN) + 1, 150), (20, 20, 30)), spec)
    assert window is not None and window.size == (100, 100)


def test_focus_tensor_is_the_window_at_the_input_size(tmp_path):
    path = tmp_path / "shot.png"
    _soft_with_sharp_patch().save(path)
    tensor = focus_tensor(path, InputSpec(size=64))  # decoded whole: 150 < 1.8 x 64
    assert tensor.shape == (3, 64, 64)
    # The window is the textured patch: its pixels vary far more than the smooth frame's.
    assert tensor.std() > 0.2


@pytest.fixture
def blur_only_card(tmp_path):
    from tests.helpers import build_tiny_model

    return load_card(build_tiny_model(tmp_path / "m", name="bluronly", attributes=["blur"]))


def _probs(rejected, pending, accepted):
    return {"rejected": rejected, "pending": pending, "accepted": accepted}


def test_a_sharp_window_overrules_a_blur_rejection(blur_only_card):
    whole = _probs(0.8, 0.15, 0.05)
    sharp = {"probabilities": _probs(0.1, 0.5, 0.4), "attributes": {"blur": 0.1}}
    soft = {"probabilities": _probs(0.7, 0.2, 0.1), "attributes": {"blur": 0.9}}
    t = Thresholds(reject_at=0.5)
    assert decide(whole, 40.0, {"blur": 0.9}, blur_only_card, t).label == "rejected"
    kept = decide(whole, 40.0, {"blur": 0.9}, blur_only_card, t, focus=sharp)
    assert kept.label == "pending" and "blur" not in kept.reasons
    assert decide(whole, 40.0, {"blur": 0.9}, blur_only_card, t, focus=soft).label == "rejected"


def test_other_defects_are_not_overruled_by_a_sharp_window(blur_only_card):
    whole = _probs(0.8, 0.15, 0.05)
    sharp = {"probabilities": _probs(0.1, 0.5, 0.4), "attributes": {"blur": 0.1, "noise": 0.1}}
    verdict = decide(whole, 40.0, {"blur": 0.2, "noise": 0.8}, blur_only_card,
                     Thresholds(reject_at=0.5), focus=sharp)
    assert verdict.label == "rejected" and "noise" in verdict.reasons


def test_a_soft_window_rejects_only_when_asked(blur_only_card):
    whole = _probs(0.1, 0.6, 0.3)
    soft = {"probabilities": _probs(0.7, 0.2, 0.1), "attributes": {"blur": 0.9}}
    t = Thresholds(reject_at=0.5)
    assert decide(whole, 60.0, {"blur": 0.2}, blur_only_card, t, focus=soft).label == "pending"
    missed = decide(whole, 60.0, {"blur": 0.2}, blur_only_card, t, focus=soft, focus_can_reject=True)
    assert missed.label == "rejected" and missed.reasons == ["blur"]


def _dark_with_bright_patch(path, patch=True):
    """Mostly black (the tiny model rejects dark images) with a bright textured square."""
    rng = np.random.default_rng(1)
    frame = np.zeros((150, 200, 3))
    if patch:
        frame[40:110, 100:170] = 200 + rng.normal(0, 30, (70, 70, 3))
    Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(path)
    return Shot(path, [path])


def test_scorer_takes_the_second_look_at_rejected_shots(tmp_path, blur_only_card):
    session = ModelSession(blur_only_card)
    shots = [_dark_with_bright_patch(tmp_path / "patch.png"),
             _dark_with_bright_patch(tmp_path / "dark.png", patch=False)]
    t = Thresholds(reject_at=0.3)  # the tiny model's whole view of the patch: P(rejected) 0.37
    off = list(Scorer(session, t, focus="off").score(shots))
    assert [r.label for r in off] == ["rejected", "rejected"]
    on = list(Scorer(session, t).score(shots))
    assert on[0].label != "rejected"  # its window is bright and detailed: in focus
    assert on[1].label == "rejected"  # all of it is dark: the window is too
    with pytest.raises(ValueError, match="focus"):
        Scorer(session, focus="sometimes")


def test_the_second_look_is_cached(tmp_path, blur_only_card):
    from iqs_cli.cache import ResultCache

    session = ModelSession(blur_only_card)
    shot = _dark_with_bright_patch(tmp_path / "patch.png")
    cache = ResultCache(tmp_path / "cache.sqlite", model_sha256=session.sha256)
    t = Thresholds(reject_at=0.3)
    first = list(Scorer(session, t, cache=cache).score([shot]))[0]
    again = list(Scorer(session, t, cache=cache).score([shot]))[0]
    assert again.cached and again.label == first.label != "rejected"
    from iqs_cli.cache import FileKey

    stored = cache.get(FileKey.of(shot.primary))
    assert stored["focus"]["probabilities"]["rejected"] < 0.3
    cache.close()
