"""Model outputs -> pick label, stars and reasons. Every threshold lives here or in the card.

Reasons are short stable tokens (`blur`, `underexposed`, `low_quality`, ...): they are what
JSON, JSONL, CSV, XMP (`Xmp.iqs.reasons`) and `ShotResult.reasons` carry. REASONS (in
iqs_cli/vocabulary.py) is the one table of them; the human wording beside each token is shown
only in the terminal table (`reason_wording`), where a card may reword it but never rename a token.

Which shots get which reasons (`reasons_for`):

- accepted: none;
- pending: every attribute (defect severity, 0 none .. 1 severe) at or above the reason
  threshold (the card's `thresholds.reason`, 0.5 by default), most severe first; maybe none;
- rejected: the same, and never none: when no attribute reaches the threshold, the strongest
  attribute when its severity is at least half the threshold, else `low_quality` (the MOS is
  then below the 3-star cut: see `_coherent`).

Stars (`stars_for`) come from the MOS (the card's star cut points) and then agree with the
label: a rejected shot is 1 star (written to XMP as the reject rating -1), a pending one 2-3, an
accepted one 3-5 (STARS_BY_LABEL). So a pending shot never shows more stars than an accepted one
needs, and filtering by stars in digiKam, darktable or Lightroom gives the same split as labels.

Which label (`decide`): the class head with the card's `reject_at` (`label_from_probabilities`),
made coherent with the MOS and the defect severities (`_coherent`), then, when the second look
at the sharpest region was taken, `_second_look`. A personal model (`iqs learn`) follows its
own head instead (`_personal_verdict`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from iqs_cli.card import ModelCard
from iqs_cli.vocabulary import (
    CLASSES, LIKE_YOUR_REJECTS, LOW_QUALITY, TOKEN_OF_ATTRIBUTE, WORDING,
)

# Joins reasons in CSV cells and in the table. Tokens and wordings never contain ";" (tokens
# are [A-Za-z0-9_.-]; wordings from a card have ";" replaced), so a cell splits back exactly.
REASON_SEPARATOR = "; "
DEFAULT_REASON_THRESHOLD = 0.5

_NOT_IN_TOKEN = re.compile(r"[^A-Za-z0-9_.-]+")


def reason_token(attribute: str) -> str:
    """The token for an attribute: REASONS' entry, else the attribute's own name (any character
    outside letters, digits, `_`, `.`, `-` becomes `_`, so a token never holds the separator)."""
    attribute = str(attribute)
    if attribute in TOKEN_OF_ATTRIBUTE:
        return TOKEN_OF_ATTRIBUTE[attribute]
    return _NOT_IN_TOKEN.sub("_", attribute) or "_"


def _clean_wording(text: str) -> str:
    return " ".join(text.replace(";", ",").split())


def card_reasons(attributes: Iterable[str]) -> dict[str, str]:
    """token -> wording for every reason a model with these attributes can give (what
    `iqs export` writes as the card's `reasons`); LOW_QUALITY last."""
    listed: dict[str, str] = {}
    for attribute in attributes:
        token = reason_token(attribute)
        listed.setdefault(token, WORDING.get(token, _clean_wording(str(attribute).replace("_", " "))))
    listed[LOW_QUALITY] = WORDING[LOW_QUALITY]
    return listed


def reason_wording(card: ModelCard | None = None) -> dict[str, str]:
    """token -> human wording for the terminal table: REASONS, then the card's attributes, then
    the card's own wording: `reasons` (token -> wording, cards from `iqs export`) over the older
    `attribute_reasons` (attribute -> wording). Tokens stay as they are; only wording changes."""
    wording = dict(WORDING)
    if card is None:
        return wording
    wording.update(card_reasons(card.attributes))
    for attribute, text in card.attribute_reasons.items():
        wording[reason_token(attribute)] = _clean_wording(text)
    for token, text in card.reasons.items():
        wording[token] = _clean_wording(text)
    return wording


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


# The stars each label may show (lowest, highest): labels and stars tell one story.
STARS_BY_LABEL = {"rejected": (1, 1), "pending": (2, 3), "accepted": (3, 5)}


def stars_for(label: str, mos: float, cut_points: tuple[float, ...]) -> int:
    """Stars from the MOS, held inside the label's range (STARS_BY_LABEL)."""
    low, high = STARS_BY_LABEL[label]
    return min(high, max(low, stars_from_mos(mos, cut_points)))


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


def reasons_for(label: str, attributes: dict[str, float], threshold: float,
                personal: bool = False) -> list[str]:
    """Reason tokens for a shot with this label (rules in the module docstring). A personal
    model's rejection names the defects at the threshold, else LIKE_YOUR_REJECTS: it rejects
    for the person's reasons, which need not be a defect."""
    if label == "accepted":
        return []  # reasons explain what pulled a shot down; a shot the model accepts needs none
    ranked = sorted(
        ((float(severity), name) for name, severity in attributes.items()
         if math.isfinite(float(severity))),
        reverse=True,
    )
    reasons: list[str] = []
    for severity, name in ranked:
        token = reason_token(name)
        if severity >= threshold and token not in reasons:
            reasons.append(token)
    if label == "rejected" and not reasons:
        if personal:
            reasons = [LIKE_YOUR_REJECTS]
        elif ranked and ranked[0][0] >= threshold / 2:
            reasons = [reason_token(ranked[0][1])]
        else:
            reasons = [LOW_QUALITY]
    return reasons


# A defect severity at or above this is not in doubt (a frame darkened to 15 %, a smear).
SEVERE_DEFECT = 0.9


def _coherent(label: str, probs: dict[str, float], mos: float, attributes: dict[str, float],
              thresholds: Thresholds) -> str:
    """Make the class head, the MOS head and the defect severities tell one story (each head
    is a separate linear fit and can stray where the others do not):

    - a rejection that names no defect (no severity reaches half the reason threshold) stands
      only when the MOS agrees, below the 3-star cut: a photo the MOS head rates fair and the
      attribute heads find no fault with is not thrown away (the likelier of pending and
      accepted instead);
    - a shot whose likeliest class is "rejected" and that has a severe defect (SEVERE_DEFECT)
      is rejected even below reject_at;
    - a shot with a defect at the reason threshold is never accepted, at most pending.
    A model without attributes is left as its class head says."""
    if not attributes:
        return label
    worst = max(float(v) for v in attributes.values())
    if label == "rejected":
        fair = len(thresholds.stars) > 1 and mos >= thresholds.stars[1]
        if worst >= thresholds.reason_at / 2 or not fair:
            return label
        label = _not_rejected(probs, thresholds)
    elif worst >= SEVERE_DEFECT and max(CLASSES, key=lambda name: probs[name]) == "rejected":
        return "rejected"
    if label == "accepted" and worst >= thresholds.reason_at:
        return "pending"
    return label


def _not_rejected(probs: dict[str, float], thresholds: Thresholds) -> str:
    """The label the class head gives when rejecting is ruled out: the likelier of pending and
    accepted (or what accept_at says)."""
    return label_from_probabilities(probs, replace(thresholds, reject_at=math.inf))


# Attributes a sharp region elsewhere in the frame can overrule (iqs_cli/focus.py).
BLUR_ATTRIBUTES = ("blur", "motion_blur")


def _second_look(label: str, probs: dict[str, float], attributes: dict[str, float], focus: dict,
                 thresholds: Thresholds, can_reject: bool) -> tuple[str, dict[str, float]]:
    """(label, attributes) once the second look is known. The window (the sharpest region at a
    larger scale) is in focus when it is not rejected and no blur attribute reaches the reason
    threshold. A frame is blurry only when no part of it is in focus: a rejection whose only
    named defect is blur (or none) is overruled when the window is in focus; with
    `can_reject`, a frame whose window is blurry and rejected is rejected for blur (missed
    focus the whole view cannot see)."""
    window = focus.get("attributes") or {}
    window_rejected = label_from_probabilities(focus["probabilities"], thresholds) == "rejected"
    sharp = not window_rejected and all(
        window.get(name, 0.0) < thresholds.reason_at for name in BLUR_ATTRIBUTES)
    if label == "rejected" and sharp:
        other = any(severity >= thresholds.reason_at for name, severity in attributes.items()
                    if name not in BLUR_ATTRIBUTES)
        if not other:
            return _not_rejected(probs, thresholds), {
                name: (0.0 if name in BLUR_ATTRIBUTES else severity)
                for name, severity in attributes.items()}
    if (can_reject and label != "rejected" and window_rejected
            and window.get("blur", 0.0) >= thresholds.reason_at):
        return "rejected", {**attributes, "blur": max(attributes.get("blur", 0.0), window["blur"])}
    return label, attributes


def decide(
    probs: dict[str, float],
    mos: float,
    attributes: dict[str, float],
    card: ModelCard,
    thresholds: Thresholds = Thresholds(),
    focus: dict | None = None,
    focus_can_reject: bool = False,
) -> Verdict:
    """`focus`: the model's outputs (probabilities, attributes) on the sharpest window at a
    larger scale (iqs_cli/focus.py), when that second look was taken; see `_second_look`."""
    resolved = thresholds.resolved(card)
    if card.personal:
        return _personal_verdict(probs, mos, attributes, resolved)
    label = _coherent(label_from_probabilities(probs, resolved), probs, mos, attributes, resolved)
    if focus is not None:
        label, attributes = _second_look(label, probs, attributes, focus, resolved, focus_can_reject)
    reasons = reasons_for(label, attributes, resolved.reason_at)
    return Verdict(label=label, stars=stars_for(label, mos, resolved.stars), reasons=reasons)


def _personal_verdict(probs: dict[str, float], mos: float, attributes: dict[str, float],
                      thresholds: Thresholds) -> Verdict:
    """A personal model (iqs_cli/personal.py): rejected exactly when the person's head says so
    (P(rejected) >= its reject_at), whatever the MOS: the person may reject what the base model
    finds fine (a colour cast, a portrait frame). A named defect still keeps a shot from
    "accepted", as with any model."""
    label = label_from_probabilities(probs, thresholds)
    if (label == "accepted" and attributes
            and max(float(v) for v in attributes.values()) >= thresholds.reason_at):
        label = "pending"
    reasons = reasons_for(label, attributes, thresholds.reason_at, personal=True)
    return Verdict(label=label, stars=stars_for(label, mos, thresholds.stars), reasons=reasons)
