"""Optimisers and learning-rate schedules: Adam/AdamW/SGD from torch, LARS (no torch equivalent), and
linear warmup followed by a constant or cosine schedule."""

from __future__ import annotations

import math

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as used in the authors'
    ImageNet recipe: ``update = g + wd * p`` then scaled by the trust ratio
    ``eta * ||p|| / ||update||`` (1 where either norm is zero), then momentum.

    Parameter groups with ``lars_exclude=True`` (biases and normalisation weights) get neither weight
    decay nor the trust ratio. Written by hand because torch has no LARS.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 1e-3):
        if lr <= 0:
            raise ValueError(f"LARS lr must be positive, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if not group["lars_exclude"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    p_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(d_p)
                    trust = torch.where(
                        (p_norm > 0) & (u_norm > 0), group["eta"] * p_norm / u_norm, torch.ones_like(p_norm)
                    )
                    d_p = d_p.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.clone(d_p).detach()
                else:
                    state["mu"].mul_(group["momentum"]).add_(d_p)
                p.add_(state["mu"], alpha=-group["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float, exclude_1d: bool) -> list[dict]:
    """Split parameters into decayed (weights) and excluded (biases, norm layers: every 1-d tensor)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if exclude_1d and p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lars_exclude": True})
    return groups


def base_lr(optim_cfg: dict, global_batch: int) -> float:
    """``lr * global_batch / 256`` when ``scale_lr`` is set (the linear scaling rule), else ``lr``."""
    return optim_cfg["lr"] * global_batch / 256 if optim_cfg["scale_lr"] else optim_cfg["lr"]


def build_optimizer(model: nn.Module, optim_cfg: dict, global_batch: int) -> torch.optim.Optimizer:
    name = optim_cfg["name"]
    lr = base_lr(optim_cfg, global_batch)
    wd = optim_cfg["weight_decay"]
    if name == "lars":
        return LARS(param_groups(model, wd, True), lr=lr, momentum=optim_cfg["momentum"], eta=optim_cfg["lars_eta"])
    groups = param_groups(model, wd, exclude_1d=name != "adam")
    for g in groups:
        g.pop("lars_exclude")
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(optim_cfg["betas"]))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim_cfg["betas"]))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim_cfg["momentum"])
    raise ValueError(f"unknown optimiser {name!r}; choose adam, adamw, sgd or lars")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, final_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step``: linear warmup from ~0 to 1 over
    ``warmup_steps``, then constant, or cosine from 1 down to ``final_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim_cfg: dict, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(optim_cfg["warmup_epochs"] * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, total_steps, warmup, optim_cfg["schedule"], optim_cfg["final_lr_ratio"]),
    )
