"""Momentum (EMA) encoder, as in the authors' ImageNet recipe (tau fixed at 0.99) or BYOL's cosine
schedule from tau_base to 1."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from mmcr.registry import Registry

# builder(tau_base, progress in [0, 1]) -> tau at that point of training
MOMENTUM_SCHEDULES = Registry("momentum schedule", "momentum_schedules")
MOMENTUM_SCHEDULES.register("constant", lambda tau, progress: tau,
                            doc="tau fixed at model.momentum.tau (the authors' ImageNet recipe: 0.99)")
MOMENTUM_SCHEDULES.register("cosine", lambda tau, progress: 1.0 - (1.0 - tau) * (math.cos(math.pi * progress) + 1) / 2,
                            doc="BYOL's schedule: tau rises from model.momentum.tau to 1 on a cosine")


class MomentumEncoder(nn.Module):
    """Keeps an exponential moving average of an online module. Its parameters get no gradients.

    ``update(online, step, total_steps)`` sets ``p_m <- tau p_m + (1 - tau) p_online``; buffers
    (BatchNorm statistics) are copied.
    """

    def __init__(self, online: nn.Module, tau: float = 0.99, schedule: str = "constant"):
        super().__init__()
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"momentum tau must lie in [0, 1], got {tau}")
        MOMENTUM_SCHEDULES.get(schedule)  # an unknown name is a one-line error listing the schedules
        self.module = copy.deepcopy(online)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.tau_base = tau
        self.schedule = schedule

    def tau(self, step: int, total_steps: int) -> float:
        if total_steps <= 0:
            return self.tau_base
        return MOMENTUM_SCHEDULES.get(self.schedule).builder(self.tau_base, min(step / total_steps, 1.0))

    @torch.no_grad()
    def update(self, online: nn.Module, step: int = 0, total_steps: int = 0) -> None:
        tau = self.tau(step, total_steps)
        online_params = list(online.parameters())
        mom_params = list(self.module.parameters())
        torch._foreach_mul_(mom_params, tau)
        torch._foreach_add_(mom_params, [p.detach() for p in online_params], alpha=1.0 - tau)
        for b_m, b_o in zip(self.module.buffers(), online.buffers()):
            b_m.copy_(b_o)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(x)
