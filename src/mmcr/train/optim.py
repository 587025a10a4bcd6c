"""Optimisers and learning-rate schedules: Adam/AdamW/SGD from torch, LARS (no torch equivalent), and
linear warmup followed by a constant or cosine schedule.

A step can be skipped on the device, without reading anything back to the host: the trainer sets
``optimizer.found_inf`` (a 0-d float tensor, 1 = skip) before ``step()``, the protocol torch's fused
optimizers already follow for loss scaling. Adam/AdamW use their fused implementation where the device
has one; LARS implements the protocol itself. :func:`skips_on_device` says whether an optimizer honours it
(otherwise the trainer decides on the host).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmcr.registry import Registry


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al. 2017), as used in the authors'
    ImageNet recipe: ``update = g + wd * p`` then scaled by the trust ratio
    ``eta * ||p|| / ||update||`` (1 where either norm is zero), then momentum.

    Parameter groups with ``lars_exclude=True`` (biases and normalisation weights) get neither weight
    decay nor the trust ratio. Written by hand because torch has no LARS.
    """

    _step_supports_amp_scaling = True  # honours ``found_inf`` (skip on the device) and ``grad_scale``

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 1e-3):
        if lr <= 0:
            raise ValueError(f"LARS lr must be positive, got {lr}")
        if not 0 <= momentum < 1 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"LARS needs 0 <= momentum < 1, weight_decay >= 0 and eta > 0, got momentum={momentum}, "
                             f"weight_decay={weight_decay}, eta={eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)
        self.found_inf: torch.Tensor | None = None
        self.grad_scale: torch.Tensor | None = None

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf, grad_scale = getattr(self, "found_inf", None), getattr(self, "grad_scale", None)
        keep = None if found_inf is None else (found_inf == 0)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad if grad_scale is None else p.grad / grad_scale.to(p.grad.dtype)
                if not group["lars_exclude"]:
                    d_p = d_p.add(p, alpha=group["weight_decay"])
                    p_norm = torch.linalg.vector_norm(p)
                    u_norm = torch.linalg.vector_norm(d_p)
                    trust = torch.where(
                        (p_norm > 0) & (u_norm > 0), group["eta"] * p_norm / u_norm, torch.ones_like(p_norm)
                    )
                    d_p = d_p.mul(trust)
                state = self.state[p]
                if keep is None:
                    if "mu" not in state:
                        state["mu"] = torch.clone(d_p).detach()
                    else:
                        state["mu"].mul_(group["momentum"]).add_(d_p)
                    p.add_(state["mu"], alpha=-group["lr"])
                    continue
                # skipped on the device when found_inf: the buffer and the weights keep their values
                if "mu" not in state:
                    state["mu"] = torch.where(keep, d_p, torch.zeros_like(d_p))
                else:
                    mu = state["mu"].mul(group["momentum"]).add_(d_p)
                    state["mu"] = torch.where(keep, mu, state["mu"])
                p.sub_(torch.where(keep, state["mu"], torch.zeros_like(p)), alpha=group["lr"])
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


def base_lr(optim_cfg, global_batch: int) -> float:
    """``lr * global_batch / 256`` when ``scale_lr`` is set (the linear scaling rule), else ``lr``."""
    return optim_cfg.lr * global_batch / 256 if optim_cfg.scale_lr else optim_cfg.lr


def _fused(cls, groups, **kw) -> torch.optim.Optimizer:
    """torch's fused implementation where this torch and device have one (it can skip a step on the
    device), else the default one."""
    try:
        return cls(groups, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device/dtype/torch version
        for g in groups:
            g.pop("fused", None)
        return cls(groups, **kw)


def _groups(model: nn.Module, cfg, exclude_1d: bool, lars: bool = False) -> list[dict]:
    groups = param_groups(model, cfg.weight_decay, exclude_1d)
    if not lars:  # the flag means something to LARS only; torch's optimisers refuse unknown group keys
        for g in groups:
            g.pop("lars_exclude")
    return groups


OPTIMIZERS = Registry("optimiser", "optimizers")


@OPTIMIZERS.register("adam", doc="Adam (fused where the device has it): optim.lr, betas, weight_decay on all params")
def _adam(model, cfg, lr):
    return _fused(torch.optim.Adam, _groups(model, cfg, exclude_1d=False), lr=lr, betas=tuple(cfg.betas))


@OPTIMIZERS.register("adamw", doc="AdamW (fused where the device has it): decoupled decay, none on 1-d params")
def _adamw(model, cfg, lr):
    return _fused(torch.optim.AdamW, _groups(model, cfg, exclude_1d=True), lr=lr, betas=tuple(cfg.betas))


@OPTIMIZERS.register("sgd", doc="SGD with optim.momentum, no weight decay on 1-d params")
def _sgd(model, cfg, lr):
    # not fused: torch's fused CPU SGD corrupts its momentum buffer when the first step is skipped
    return torch.optim.SGD(_groups(model, cfg, exclude_1d=True), lr=lr, momentum=cfg.momentum)


@OPTIMIZERS.register("lars", doc="LARS (optim.momentum, lars_eta); 1-d params get neither decay nor adaptation")
def _lars(model, cfg, lr):
    return LARS(_groups(model, cfg, exclude_1d=True, lars=True), lr=lr, momentum=cfg.momentum, eta=cfg.lars_eta)


def build_optimizer(model: nn.Module, optim_cfg, global_batch: int) -> torch.optim.Optimizer:
    """The optimiser of a run's ``optim`` section (an ``OptimConfig``), by its :data:`OPTIMIZERS` entry."""
    return OPTIMIZERS.get(optim_cfg.name).builder(model, optim_cfg, base_lr(optim_cfg, global_batch))


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step()`` honours ``optimizer.found_inf`` (skips the update on the device)."""
    if isinstance(optimizer, LARS):
        return True
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and bool(
        optimizer.defaults.get("fused", False)
    )


LR_SCHEDULES = Registry("learning-rate schedule", "lr_schedules")
LR_SCHEDULES.register("constant", lambda progress, final_ratio: 1.0, doc="the base lr after the warmup")
LR_SCHEDULES.register("cosine", lambda progress, final_ratio: final_ratio + (1 - final_ratio) * 0.5 * (
    1 + math.cos(math.pi * progress)), doc="cosine from the base lr to optim.final_lr_ratio x lr at the last step")


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str, final_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step``: linear warmup from ~0 to 1 over
    ``warmup_steps``, then the :data:`LR_SCHEDULES` entry at the progress of the remaining steps
    (constant, or cosine from 1 down to ``final_ratio`` at ``total_steps``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return LR_SCHEDULES.get(schedule).builder(progress, final_ratio)


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(round(optim_cfg.warmup_epochs * steps_per_epoch))
    schedule, final = optim_cfg.schedule, optim_cfg.final_lr_ratio
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, schedule, final))
