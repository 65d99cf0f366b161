"""The exponential moving average (EMA) of a model's weights: what a run validates, selects
and exports (training/train.py)."""

from __future__ import annotations

import copy

import torch


class ModelEMA:
    """Exponential moving average of the trainable weights (and the BatchNorm statistics of
    the trainable modules; frozen parts never change, so they are not touched).

    The decay ramps up as (1 + n) / (10 + n) so short runs are not dominated by the
    initial (untrained) heads."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self.param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        ema_params = dict(self.module.named_parameters())
        self.ema_params = [ema_params[n] for n in self.param_names]
        self.buffer_names = [
            f"{module_name}.{buffer_name}" if module_name else buffer_name
            for module_name, module in model.named_modules()
            if any(p.requires_grad for p in module.parameters(recurse=False))
            for buffer_name, _ in module.named_buffers(recurse=False)
        ]
        ema_buffers = dict(self.module.named_buffers())
        self.ema_buffers = [ema_buffers[n] for n in self.buffer_names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = dict(model.named_parameters())
        torch._foreach_lerp_(self.ema_params, [params[n].detach() for n in self.param_names], 1.0 - d)
        buffers = dict(model.named_buffers())
        for name, value in zip(self.buffer_names, self.ema_buffers):
            value.copy_(buffers[name])
