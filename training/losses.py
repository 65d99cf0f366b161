"""Multi-task loss with masks: any sample may carry a class, a MOS, attributes, or any mix.

Missing targets: label -1, MOS NaN, attribute NaN (per attribute). Each term averages over the
samples that have its target and is skipped (zero, no gradient) when none do, so a batch of
only AVA images trains the class head alone and a batch of only CLIVE images the MOS head.

Terms (weights in the config's `loss` section; 0 turns a term off):
- class: cross-entropy, or "emd": NIMA's squared earth mover's distance between the predicted
  and the one-hot class CDFs (the classes are ordered: rejected < pending < accepted, so
  calling an accepted photo rejected costs more than calling it pending).
- mos: L1 / MSE / smooth-L1 on MOS / 100.
- plcc: 1 - PLCC over the batch (KonCept512, Li et al. "Norm-in-Norm"): asks for the right
  ordering and linearity, not the scale.
- rank: pairwise margin ranking on MOS differences within the batch.
- synthetic_rank: pairs of distortions of the same reference photo with the same distortion
  type: the milder level must score higher (by a margin in MOS points).
- attributes: binary cross-entropy against soft severities in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from iqs_cli.vocabulary import OUTPUT_CLASS_LOGITS, OUTPUT_MOS

CLASS_LOSSES = ("ce", "emd")
MOS_LOSSES = ("l1", "mse", "smooth_l1")


@dataclass
class LossConfig:
    class_weight: float = 1.0
    class_loss: str = "ce"  # "ce" | "emd"
    label_smoothing: float = 0.0  # cross-entropy only
    class_balance: list[float] | None = None  # per-class weights for cross-entropy
    mos_weight: float = 1.0
    mos_loss: str = "smooth_l1"  # "l1" | "mse" | "smooth_l1"
    plcc_weight: float = 0.0
    rank_weight: float = 0.0
    rank_margin: float = 2.0  # MOS points
    rank_min_diff: float = 5.0  # only pairs whose MOS differ by more than this
    synthetic_rank_weight: float = 0.0
    synthetic_rank_margin: float = 2.0  # MOS points between consecutive levels
    attribute_weight: float = 0.5

    @classmethod
    def from_dict(cls, data: dict | None) -> "LossConfig":
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown loss options {sorted(unknown)}; known: {sorted(known)}")
        config = cls(**data)
        if config.class_loss not in CLASS_LOSSES:
            raise ValueError(f"loss.class_loss must be one of {CLASS_LOSSES}, got {config.class_loss!r}")
        if config.mos_loss not in MOS_LOSSES:
            raise ValueError(f"loss.mos_loss must be one of {MOS_LOSSES}, got {config.mos_loss!r}")
        return config


def emd_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared EMD (r=2) between softmax(logits) and one-hot labels, per NIMA."""
    probs = logits.softmax(dim=1)
    target = F.one_hot(labels, logits.shape[1]).to(probs.dtype)
    cdf_diff = probs.cumsum(dim=1) - target.cumsum(dim=1)
    return cdf_diff.pow(2).mean(dim=1).sqrt().mean()


def plcc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Pearson correlation of the batch (needs >= 3 samples with spread)."""
    p = pred - pred.mean()
    t = target - target.mean()
    corr = (p * t).sum() / (p.norm() * t.norm() + 1e-8)
    return 1.0 - corr


def pairwise_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin: float,
                       min_diff: float) -> torch.Tensor | None:
    """Hinge on every pair whose targets differ by more than min_diff (all in MOS points)."""
    diff_t = target[:, None] - target[None, :]
    diff_p = pred[:, None] - pred[None, :]
    pairs = diff_t > min_diff  # i better than j
    if not pairs.any():
        return None
    return F.relu(margin - diff_p[pairs]).mean()


def synthetic_rank_loss(pred: torch.Tensor, reference: torch.Tensor, distortion: torch.Tensor,
                        level: torch.Tensor, margin: float) -> torch.Tensor | None:
    """Same reference and distortion type, milder level must score higher by margin per step.

    level 0 is the undistorted reference itself (ranks above every distortion of it)."""
    valid = reference >= 0
    if valid.sum() < 2:
        return None
    pred, reference, distortion, level = pred[valid], reference[valid], distortion[valid], level[valid]
    same_ref = reference[:, None] == reference[None, :]
    comparable = (distortion[:, None] == distortion[None, :]) | (level[:, None] == 0) | (level[None, :] == 0)
    steps = (level[None, :] - level[:, None]).to(pred.dtype)  # > 0: i milder than j
    pairs = same_ref & comparable & (steps > 0)
    if not pairs.any():
        return None
    gap = pred[:, None] - pred[None, :]
    return F.relu(margin * steps[pairs] - gap[pairs]).mean()


class MultiTaskLoss(torch.nn.Module):
    def __init__(self, config: LossConfig):
        super().__init__()
        self.config = config
        balance = config.class_balance
        self.register_buffer(
            "class_balance", torch.tensor(balance, dtype=torch.float32) if balance else torch.ones(3)
        )

    def forward(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the active terms and each term's value (for the log)."""
        c = self.config
        parts: dict[str, torch.Tensor] = {}
        logits = outputs[OUTPUT_CLASS_LOGITS].float()
        labels = batch["label"].to(logits.device)
        has_label = labels >= 0
        if c.class_weight and has_label.any():
            if c.class_loss == "emd":
                parts["class"] = emd_loss(logits[has_label], labels[has_label])
            else:
                parts["class"] = F.cross_entropy(
                    logits[has_label], labels[has_label], weight=self.class_balance,
                    label_smoothing=c.label_smoothing,
                )
        mos_pred = outputs[OUTPUT_MOS].float()
        mos = batch["mos"].to(mos_pred.device).float()
        has_mos = torch.isfinite(mos)
        if has_mos.any():
            p, t = mos_pred[has_mos], mos[has_mos]
            if c.mos_weight:
                if c.mos_loss == "l1":
                    parts["mos"] = F.l1_loss(p / 100, t / 100)
                elif c.mos_loss == "mse":
                    parts["mos"] = F.mse_loss(p / 100, t / 100)
                else:
                    parts["mos"] = F.smooth_l1_loss(p / 100, t / 100, beta=0.1)
            if c.plcc_weight and p.numel() >= 3 and t.std() > 0:
                parts["plcc"] = plcc_loss(p, t)
            if c.rank_weight:
                rank = pairwise_rank_loss(p, t, c.rank_margin, c.rank_min_diff)
                if rank is not None:
                    parts["rank"] = rank / 100  # MOS points -> the scale of the other terms
        if c.synthetic_rank_weight and "reference" in batch:
            rank = synthetic_rank_loss(
                mos_pred, batch["reference"].to(mos_pred.device), batch["distortion"].to(mos_pred.device),
                batch["level"].to(mos_pred.device), c.synthetic_rank_margin,
            )
            if rank is not None:
                parts["synthetic_rank"] = rank / 100
        if c.attribute_weight and "attribute_logits" in outputs:
            attr_logits = outputs["attribute_logits"].float()
            targets = batch["attributes"].to(attr_logits.device).float()
            known = torch.isfinite(targets)
            if known.any():
                parts["attributes"] = F.binary_cross_entropy_with_logits(
                    attr_logits[known], targets[known].clamp(0, 1)
                )
        weights = {
            "class": c.class_weight, "mos": c.mos_weight, "plcc": c.plcc_weight,
            "rank": c.rank_weight, "synthetic_rank": c.synthetic_rank_weight,
            "attributes": c.attribute_weight,
        }
        if parts:
            total = sum(weights[name] * value for name, value in parts.items())
        else:
            # Nothing to learn from in this batch: a zero that still connects to the graph.
            total = mos_pred.sum() * 0.0
        return total, {name: float(value.detach()) for name, value in parts.items()}
