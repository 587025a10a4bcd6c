"""One training step, the whole method in one place:

    uint8 batch -> k views (+ m small crops) on the device -> embeddings -> objective -> guarded update

With ``train.view_chunk`` the embeddings and their backward go chunk by chunk in two passes (see
:mod:`mmcr.train.chunked`): memory stays fixed as the views grow.

No value is read back to the host inside a step: the NaN/Inf guard is a device-side flag that masks
the optimiser update (``optimizer.found_inf``, see :mod:`mmcr.train.optim`), and the trainer reads the
step's numbers only every ``train.log_every_steps`` steps. Two exceptions synchronise by design: fp16
loss scaling (torch's GradScaler decides on the host) and optimisers without an on-device skip (SGD).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mmcr.augment import MultiViewAugment, map_params
from mmcr.distributed import DistInfo
from mmcr.train.chunked import chunked_forward_backward
from mmcr.train.context import StepContext, autocast_for, finite_and_clean, to_input
from mmcr.train.optim import skips_on_device
from mmcr.train.state import TrainState


@dataclass
class StepResult:
    """Device tensors of one step (nothing has been read back): loss, whether the update was applied,
    and the gradient norm (before clipping)."""

    loss: torch.Tensor
    ok: torch.Tensor
    grad_norm: torch.Tensor


def train_step(ctx: StepContext, state: TrainState, images: torch.Tensor) -> StepResult:
    groups = make_views(ctx, state, images)  # [(B, k, 3, h, w)] (+ small crops)
    buffers = BufferSnapshot(state.model)  # a skipped step must not leave its BatchNorm statistics behind
    state.optimizer.zero_grad(set_to_none=True)
    if ctx.view_chunk is None:
        loss, finite = forward_backward(ctx, state, groups)
    else:
        loss, finite = chunked_forward_backward(ctx, state, groups, ctx.view_chunk)
    ok, grad_norm = guarded_update(ctx, state, loss, finite)
    buffers.keep_where(ok)
    with warnings.catch_warnings():  # a skipped step still advances the schedule (it is indexed by step)
        warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
        state.scheduler.step()
    if state.momentum is not None:
        state.momentum.update(state.model, state.step, ctx.total_steps)
    state.step += 1
    state.batch_in_epoch += 1
    return StepResult(loss.detach(), ok, grad_norm)


class BufferSnapshot:
    """The model's buffers (BatchNorm running statistics) before a step, put back on the device when
    the step is skipped (``keep_where(ok)``), so a NaN forward cannot poison them. No host read."""

    def __init__(self, model: nn.Module):
        self.buffers = [b for b in model.buffers() if b.numel()]
        self.saved = [b.detach().clone() for b in self.buffers]

    def keep_where(self, ok: torch.Tensor) -> None:
        with torch.no_grad():
            for b, old in zip(self.buffers, self.saved):
                b.copy_(torch.where(ok, b, old))


def make_views(ctx: StepContext, state: TrainState, images: torch.Tensor) -> list[torch.Tensor]:
    """This rank's views: the full-resolution group and, with multi-crop, the small crops."""
    groups = [augment_shard(ctx.augment, images, ctx.global_batch, ctx.dist_info, state.aug_generator)]
    if ctx.small_augment is not None:
        groups.append(augment_shard(ctx.small_augment, images, ctx.global_batch, ctx.dist_info, state.aug_generator))
    return groups


def forward_backward(ctx: StepContext, state: TrainState, groups: list[torch.Tensor]):
    """Embed every group in one pass each (B, k_g, d), concatenate the views (each counts once in the
    centroids), then the objective and its backward. Returns (loss, finite flag)."""
    zs, zms = [], []
    with autocast_for(ctx):
        for g in groups:
            b, k = g.shape[:2]
            x = to_input(ctx, g.flatten(0, 1))
            zs.append(ctx.forward(x).view(b, k, -1))
            zms.append(state.momentum(x).view(b, k, -1) if state.momentum is not None else None)
    z = torch.cat(zs, dim=1) if len(zs) > 1 else zs[0]
    z_m = None if zms[0] is None else (torch.cat(zms, dim=1) if len(zms) > 1 else zms[0])
    z, z_m, finite = finite_and_clean(ctx, z, z_m)
    loss = ctx.objective(z, z_m) if z_m is not None else ctx.objective(z)
    state.scaler.scale(loss).backward()
    return loss, finite


def guarded_update(ctx: StepContext, state: TrainState, loss: torch.Tensor, finite: torch.Tensor):
    """Clip, then apply the optimiser step only when the embeddings, the loss and the gradient norm are
    finite on every rank; otherwise the step is skipped (weights and optimiser state unchanged) and
    counted. Returns (applied flag, gradient norm) as device tensors."""
    opt, scaler = state.optimizer, state.scaler
    if scaler.is_enabled():
        scaler.unscale_(opt)
    params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    grad_norm = gradient_norm(params, ctx.grad_clip)
    ok = finite & torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
    if ctx.dist_info.enabled:  # one rank's bad embeddings skip the step everywhere
        flag = ok.to(torch.float32)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        ok = flag > 0
    if scaler.is_enabled():  # fp16: the scaler decides on the host (and adapts its scale either way)
        if bool(ok):
            scaler.step(opt)
        scaler.update()
    elif skips_on_device(opt):
        opt.found_inf, opt.grad_scale = (~ok).to(torch.float32), None
        opt.step()
        opt.found_inf = None
    elif bool(ok):  # optimisers without an on-device skip
        opt.step()
    state.nonfinite.record(ok)
    return ok, grad_norm


def gradient_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """The total L2 norm of the gradients (clipping them to ``clip`` when set), as a device tensor."""
    if not params:
        return torch.zeros(())
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    norms = torch._foreach_norm([p.grad for p in params])  # one fused pass, as clip_grad_norm_ does
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].dtype) for n in norms]))


def _select_views(params, view_idx: torch.Tensor):
    """The rows ``view_idx`` of every per-view parameter tensor."""
    return map_params(params, lambda t: t[view_idx])


def augment_shard(aug, images: torch.Tensor, global_batch: int, dist_info: DistInfo,
                  gen: torch.Generator) -> torch.Tensor:
    """Views of this rank's images, identical to the views those images get in a one-process run.

    ``images`` is a uint8 batch (B, 3, H, W); views already cropped by the data workers (B, k, 3, h, w),
    which only get the flips, colour, blur and solarisation; or, for temporal views
    (:class:`mmcr.augment.temporal.TemporalViews`), windows of k frames (B, k, 3, H, W). Every rank
    draws the parameters of all ``global_batch * k`` views from the same generator state (on the host,
    so no device value is read) and keeps its own rows. The loader gives rank r the
    global-batch positions r, r + W, r + 2W, ... (interleaved shares, see mmcr.data.loader), so the
    views do not depend on the number of ranks.
    """
    b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
    params = aug.sample_params(global_batch, h, w, gen)
    if dist_info.world_size > 1:
        pos = torch.arange(b) * dist_info.world_size + dist_info.rank
        view_idx = (pos[:, None] * aug.views + torch.arange(aug.views)).flatten()
        params = _select_views(params, view_idx)
    if images.ndim == 5 and isinstance(aug, MultiViewAugment):  # views the workers cut from the full images
        return aug.apply_views(images, params)
    return aug.apply(images, params)
