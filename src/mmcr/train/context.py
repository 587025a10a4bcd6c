"""What every training step reads besides the changing state (:class:`StepContext`), and the small
rules both the one-pass step (:mod:`.step`) and the two-pass view chunks (:mod:`.chunked`) apply to it:
autocast, the input's dtype and memory format, embeddings made finite."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from mmcr.distributed import DistInfo


@dataclass
class StepContext:
    """What every step needs besides the changing state: built once by the trainer."""

    forward: nn.Module  # the encoder as called (DDP- and compile-wrapped when asked)
    augment: object  # MultiViewAugment of the full-resolution views
    small_augment: object | None  # MultiViewAugment of the small crops (multi-crop), or None
    objective: nn.Module
    dist_info: DistInfo
    global_batch: int
    total_steps: int
    param_dtype: torch.dtype
    amp_dtype: torch.dtype | None
    grad_clip: float | None
    channels_last: bool
    view_chunk: int | None = None  # views per chunk of the two-pass backprop (None: all at once)
    ddp: nn.Module | None = None  # the DistributedDataParallel wrapper (its no_sync for chunks)


def autocast_for(ctx: StepContext):
    return torch.autocast(ctx.dist_info.device.type, dtype=ctx.amp_dtype) if ctx.amp_dtype else nullcontext()


def to_input(ctx: StepContext, x: torch.Tensor) -> torch.Tensor:
    x = x.to(ctx.param_dtype)
    return x.contiguous(memory_format=torch.channels_last) if ctx.channels_last else x


def finite_and_clean(ctx: StepContext, z: torch.Tensor, z_m: torch.Tensor | None):
    """Embeddings in the objective's precision with non-finite values replaced by zeros, and whether
    they were all finite (else the step is skipped, see :func:`guarded_update`)."""
    dtype = torch.float64 if ctx.param_dtype == torch.float64 else torch.float32
    finite = torch.isfinite(z).all()
    z = torch.nan_to_num(z.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
    if z_m is not None:
        finite = finite & torch.isfinite(z_m).all()
        z_m = torch.nan_to_num(z_m.to(dtype), nan=0.0, posinf=0.0, neginf=0.0)
    return z, z_m, finite
