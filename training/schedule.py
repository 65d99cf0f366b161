"""The optimiser and its learning-rate schedule, and the run's randomness.

AdamW with the backbone and the heads at their own rates (no weight decay on biases and norm
weights), linear warmup then cosine decay to `min_lr_ratio` of the rate, stepped once per
batch. Randomness: one seed for python, numpy and torch, and their states as a checkpoint
stores them, so a resumed run draws what an uninterrupted one would have.
"""

from __future__ import annotations

import math
import random

import numpy as np
import torch

from .model import IQSNet


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def param_groups(model: IQSNet, lr: float, backbone_lr: float, weight_decay: float) -> list[dict]:
    """Backbone and heads at their own rates; no weight decay on biases and norm weights."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone."), p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    return [
        {"params": params, "lr": backbone_lr if is_backbone else lr,
         "weight_decay": 0.0 if no_decay else weight_decay}
        for (is_backbone, no_decay), params in sorted(groups.items())
    ]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, progress))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def optimizer_and_schedule(model: IQSNet, cfg: dict, steps_per_epoch: int):
    """(AdamW, its per-step LambdaLR) for cfg["epochs"] epochs of `steps_per_epoch` steps."""
    total_steps = steps_per_epoch * cfg["epochs"]
    optimizer = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg["backbone_lr"], cfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, round(cfg["warmup_epochs"] * steps_per_epoch), cfg["min_lr_ratio"]))
    return optimizer, scheduler
