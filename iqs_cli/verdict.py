"""Model outputs -> pick label, stars and reasons. Every threshold lives here or in the card."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from iqs_cli.card import CLASSES, ModelCard

# Human text for attribute names (defect severities, 0 none .. 1 severe); a card may add or
# override these with "attribute_reasons".
DEFAULT_REASONS = {
    "blur": "blurry",
    "motion_blur": "motion blur",
    "noise": "noisy",
    "underexposure": "underexposed",
    "overexposure": "overexposed",
    "compression": "heavy JPEG artifacts",
    "color": "poor color (cast or washed out)",
    "contrast": "low contrast",
}
DEFAULT_REASON_THRESHOLD = 0.5


@dataclass(frozen=True)
class Verdict:
    label: str
    stars: int
    reasons: list[str]


@dataclass(frozen=True)
class Thresholds:
    """How outputs become labels. None means: take the card's value, else the default."""

    reject_at: float | None = None  # reject when P(rejected) >= this, and only then
    accept_at: float | None = None  # accept when P(accepted) >= this and not rejected
    stars: tuple[float, ...] | None = None  # MOS cut points for 2..5 stars
    reason_at: float | None = None  # attribute severity that earns a reason

    def resolved(self, card: ModelCard) -> "Thresholds":
        t = card.thresholds
        return Thresholds(
            reject_at=self.reject_at if self.reject_at is not None else t.get("reject_at"),
            accept_at=self.accept_at if self.accept_at is not None else t.get("accept_at"),
            stars=self.stars if self.stars is not None else card.star_thresholds,
            reason_at=(
                self.reason_at if self.reason_at is not None
                else float(t.get("reason", DEFAULT_REASON_THRESHOLD))
            ),
        )


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def stars_from_mos(mos: float, cut_points: tuple[float, ...]) -> int:
    """1 star below the first cut point, one more for each cut point reached (at most 5)."""
    return 1 + sum(1 for cut in cut_points[:4] if mos >= cut)


def label_from_probabilities(probs: dict[str, float], thresholds: Thresholds) -> str:
    if thresholds.reject_at is not None:
        if probs["rejected"] >= thresholds.reject_at:
            return "rejected"
        # Below the threshold a shot is never rejected, even when "rejected" is the most
        # likely class: the threshold exists to keep doubtful keepers out of the bin.
        candidates = ("pending", "accepted")
    else:
        candidates = CLASSES
    if thresholds.accept_at is not None:
        if probs["accepted"] >= thresholds.accept_at and probs["rejected"] < probs["accepted"]:
            return "accepted"
        # With explicit thresholds, whatever is neither clearly bad nor clearly good waits.
        if thresholds.reject_at is not None:
            return "pending"
    return max(candidates, key=lambda name: probs[name])


def reasons_from_attributes(
    attributes: dict[str, float], card: ModelCard, threshold: float
) -> list[str]:
    texts = dict(DEFAULT_REASONS)
    texts.update(card.raw.get("attribute_reasons", {}))
    flagged = sorted(
        ((severity, name) for name, severity in attributes.items() if severity >= threshold),
        reverse=True,
    )
    return [texts.get(name, name.replace("_", " ")) for _, name in flagged]


def decide(
    probs: dict[str, float],
    mos: float,
    attributes: dict[str, float],
    card: ModelCard,
    thresholds: Thresholds = Thresholds(),
) -> Verdict:
    resolved = thresholds.resolved(card)
    label = label_from_probabilities(probs, resolved)
    reasons = reasons_from_attributes(attributes, card, resolved.reason_at)
    # Reasons explain what pulled a shot down; a shot the model accepts needs none.
    if label == "accepted":
        reasons = []
    return Verdict(label=label, stars=stars_from_mos(mos, resolved.stars), reasons=reasons)
