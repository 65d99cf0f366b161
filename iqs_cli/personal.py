"""A personal model: the person's own reject head on a base model's pooled features.

`iqs learn` (iqs_cli/learn.py) fits it; `--model NAME` runs it. It has no ONNX file of its own:
its card (in the user's config folder, card.personal_models_dir) copies the base model's card
(input, attributes, reasons, star cuts), pins the base ONNX file by sha256 and holds the head,
a logistic regression on the base model's `features` output:

    P(rejected) = sigmoid(features . weight + bias)

The pending / accepted split of the rest and the MOS stay the base model's: the person's
labels say what they throw away, while stars mean different things in every application
(darktable gives every photo 1 star on import). So the class probabilities of a personal
model are [p, (1 - p) * q_pending, (1 - p) * q_accepted], q being the base model's split.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqs_cli.card import (CardError, ModelCard, personal_card_path, shipped_models_dir,
                          write_card)
from iqs_cli.linfit import sigmoid
from iqs_cli.vocabulary import LIKE_YOUR_REJECTS, WORDING


@dataclass(frozen=True)
class PersonalHead:
    weight: np.ndarray  # [D] float32, one per feature of the base model's `features` output
    bias: float

    @property
    def digest(self) -> str:
        """Identifies the head (part of the results cache's key for this model)."""
        data = self.weight.astype("<f4").tobytes() + np.float64(self.bias).tobytes()
        return hashlib.sha256(data).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"size": int(self.weight.size), "bias": float(self.bias),
                "weight_float32_base64": base64.b64encode(
                    self.weight.astype("<f4").tobytes()).decode("ascii")}

    @classmethod
    def from_dict(cls, data: dict, where: str = "personal model") -> "PersonalHead":
        try:
            weight = np.frombuffer(base64.b64decode(data["weight_float32_base64"], validate=True),
                                   dtype="<f4").astype(np.float32)
            bias = float(data["bias"])
            size = int(data["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CardError(f"{where}: its head is malformed ({exc!r}); make it again with "
                            "`iqs learn`") from None
        if weight.size != size or not np.isfinite(weight).all() or not np.isfinite(bias):
            raise CardError(f"{where}: its head is damaged ({weight.size} weights, {size} "
                            "expected, or not finite); make it again with `iqs learn`")
        return cls(weight, bias)

    def reject_probability(self, features: np.ndarray) -> np.ndarray:
        return sigmoid(np.asarray(features, np.float64) @ self.weight.astype(np.float64) + self.bias)

    def probabilities(self, features: np.ndarray, base: np.ndarray) -> np.ndarray:
        """[N, 3] class probabilities (order CLASSES) from the features and the base model's
        probabilities (module docstring)."""
        p = self.reject_probability(features)[:, None]
        rest = np.asarray(base, np.float64)[:, 1:]
        rest = rest / np.maximum(rest.sum(1, keepdims=True), 1e-12)
        return np.concatenate([p, (1 - p) * rest], axis=1).astype(np.float32)


def head_of(card: ModelCard) -> PersonalHead | None:
    """The personal head of `card`, or None for any other model."""
    if not card.personal:
        return None
    head = PersonalHead.from_dict(card.personal.get("head", {}), f"personal model {card.name!r}")
    size = card.features.get("size")
    if size is not None and int(size) != head.weight.size:
        raise CardError(f"personal model {card.name!r}: its head reads {head.weight.size} "
                        f"features, its base model gives {size}; make it again with `iqs learn`")
    return head


def personal_card(base: ModelCard, base_sha256: str, name: str, head: PersonalHead,
                  reject_at: float, learned: dict) -> ModelCard:
    """The card of a personal model on `base` (whose ONNX file has `base_sha256`)."""
    base_ref = {"name": base.name, "version": base.version, "sha256": base_sha256}
    if base.onnx_path is not None and not _is_shipped(base.onnx_path):
        base_ref["path"] = str(Path(base.onnx_path).resolve())
    thresholds = {k: v for k, v in base.thresholds.items() if k not in ("reject_at", "accept_at")}
    thresholds["reject_at"] = float(reject_at)
    reasons = dict(base.reasons)
    if reasons:
        reasons.setdefault(LIKE_YOUR_REJECTS, WORDING[LIKE_YOUR_REJECTS])
    return ModelCard(
        name=name, version=str(learned.get("date", "")), input=base.input,
        attributes=base.attributes, mos_range=base.mos_range, thresholds=thresholds,
        training={"data": "the person's own pick labels and ratings (iqs learn)", **learned},
        metrics=dict(learned.get("held_out", {})), sha256=base_sha256,
        license=f"Personal model; its base: {base.license}", reasons=reasons,
        attribute_reasons=dict(base.attribute_reasons), features=dict(base.features),
        personal={"base": base_ref, "head": head.to_dict()},
    )


def _is_shipped(onnx_path: Path) -> bool:
    try:
        return Path(onnx_path).resolve().parent == shipped_models_dir().resolve()
    except OSError:
        return False


def save(card: ModelCard) -> Path:
    """Write the personal model's card to the user's config folder, whole or not at all."""
    path = personal_card_path(card.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_card(card, path)
    return path
