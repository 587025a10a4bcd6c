"""Training by iterations (SGD, warmup, step decay; each step's random draws seeded so a resumed run
repeats it), precise BatchNorm statistics and prediction on the test set."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN

from mmcr.evaluate.detection.data import to_device
from mmcr.evaluate.detection.model import set_eval_sizes
from mmcr.evaluate.features import progress_bar


def param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict]:
    norm, other = [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):
            (norm if isinstance(m, nn.modules.batchnorm._NormBase) else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": weight_decay_norm}]


def step_lr_factor(it: int, solver: dict, steps: list[int]) -> float:
    """detectron2's WarmupMultiStepLR: linear warmup from ``warmup_factor``, times gamma per passed step."""
    f = solver["gamma"] ** sum(1 for s in steps if s <= it)
    w = solver["warmup_iters"]
    if it < w:
        a = it / w
        f *= solver["warmup_factor"] * (1 - a) + a
    return f


@torch.no_grad()
def precise_bn(model: FasterRCNN, batches, dev: torch.device, autocast) -> int:
    """Replace every BatchNorm's running statistics by the plain average over ``batches`` (detectron2's
    PreciseBN): the exponential averages of training lag behind the last weights. Returns the number of
    batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    set_eval_sizes(model, True)
    n = 0
    try:
        for batch in batches:
            images, targets = to_device(batch, dev)
            with autocast():
                model(images, targets)
            n += 1
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
    return n


@torch.no_grad()
def predict(model: FasterRCNN, loader, dev: torch.device, autocast, progress: bool, total: int) -> dict[int, dict]:
    """Detections for each test image index of the loader (boxes in the original image's pixels)."""
    model.eval()
    set_eval_sizes(model, False)
    out: dict[int, dict] = {}
    with progress_bar(total, "detection test", enabled=progress) as advance:
        for batch, idx in loader:
            images, _ = to_device(batch, dev)
            with autocast():
                dets = model(images)
            for i, d in zip(idx, dets):
                out[i] = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()}
            advance(len(idx))
    return out


def train_loop(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    batches,
    start: int,
    total: int,
    solver: dict,
    steps: list[int],
    seed: int,
    rank: int,
    dev: torch.device,
    autocast,
    after_step,
) -> int:
    """Iterations ``start .. total - 1``: the scheduled lr, every random draw of the step (image sizes,
    RPN and RoI sampling) seeded from ``(seed, iteration, rank)`` so that a resumed run repeats it, one
    SGD step on the summed losses, then ``after_step(iteration + 1, losses)``. Returns the steps taken."""
    if start >= total:
        return 0
    net.train()
    set_eval_sizes(getattr(net, "module", net), True)
    done = 0
    for it, batch in zip(range(start, total), batches):
        for g in opt.param_groups:
            g["lr"] = solver["lr"] * step_lr_factor(it, solver, steps)
        torch.manual_seed((seed * 1_000_003 + it) * 4096 + rank)
        images, targets = to_device(batch, dev)
        with autocast():
            losses = net(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise ValueError(
                f"the detection loss became {loss.item()} at iteration {it}; lower solver.lr (now {solver['lr']}) "
                "or check the data"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        after_step(it + 1, losses)
    return done
