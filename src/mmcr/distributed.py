"""Every torch.distributed helper of mmcr in one place: process-group set-up for torchrun (a single
process when not launched by it), collectives with gradients for the objectives, host-side agreements
for the trainer (all ranks stop together), gathering evaluation features, and a BatchNorm that
synchronises statistics on every backend.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; the same command then
scales from one process to many nodes. NCCL is used on GPUs, gloo on CPUs.

Gradient convention of :func:`all_gather_with_grad` (and so of every objective in ``mmcr.objectives``):
the backward sums the gradients that all ranks send to each gathered block (a reduce-scatter, via
``torch.distributed.nn.functional.all_gather``). Every objective returns, on every rank, a loss whose
gradient w.r.t. that rank's own embeddings is ``world_size`` times the gradient of the single-process
loss on the concatenated global batch. DistributedDataParallel averages parameter gradients over ranks
(divides the sum by ``world_size``), which cancels that factor exactly: under DDP the parameter gradient
equals the one-process gradient on the global batch, and the trainer must not rescale the loss. If you
sum gradients yourself instead of averaging, divide the loss by ``world_size()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` (this process's local rank),
    ``cuda:<index>`` or ``mps``; an unusable choice is a one-line ValueError."""
    name = "auto" if device is None else str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asked for, but no CUDA device is visible; use device cpu")
        try:
            index = int(name.split(":", 1)[1]) if ":" in name else local_rank
        except ValueError:
            raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:<index> or mps") from None
        if not 0 <= index < torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
        return torch.device("cuda", index)
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("device 'mps' asked for, but Metal is not available here; use device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:<index> or mps")


def setup(device: str = "auto") -> DistInfo:
    """Initialise the default process group from torchrun's environment (if present) and pick the
    device. Returns rank/world size/device; a no-op group for a plain single-process run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are taken over the samples of all ranks, with gradients
    flowing through the reductions, on any backend (gloo included).

    torch's SyncBatchNorm only runs on accelerators; the CPU 2-process test and CPU clusters need this.
    Two reductions (sum, then sum of squared deviations) keep the variance as accurate as one-process
    BatchNorm. In eval mode or a single process it is plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects (N, C, ...) input, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        xf = x if x.dtype == torch.float64 else x.float()
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
        count = dist_fn.all_reduce(count)
        mean = dist_fn.all_reduce(xf.sum(dims)) / count
        centred = xf - mean.view(shape)
        var = dist_fn.all_reduce((centred * centred).sum(dims)) / count
        with torch.no_grad():
            if self.track_running_stats and self.running_mean is not None:
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on accelerators, :class:`GlobalBatchNorm` on the CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_global(module)


def _convert_global(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
    for name, child in module.named_children():
        out.add_module(name, _convert_global(child))
    return out


# ------------------------------------------------------------------------ collectives with gradient
def is_distributed() -> bool:
    """True when torch.distributed is available, initialised, and has more than one rank.

    The objectives gather across ranks only then, so the same code runs in one process and under torchrun.

    Returns:
        Whether collectives are needed.

    Examples:
        >>> from mmcr.objectives import is_distributed
        >>> is_distributed()  # a plain Python process
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks in the default process group (1 when not distributed).

    Returns:
        The world size W, e.g. to divide a loss when summing (not averaging) gradients over ranks.

    Examples:
        >>> from mmcr.objectives import world_size
        >>> world_size()
        1
    """
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default process group (0 when not distributed).

    Returns:
        The rank r in [0, W), e.g. to find this rank's rows in a gathered batch (rows r*n to (r+1)*n).

    Examples:
        >>> from mmcr.objectives import rank
        >>> rank()
        0
    """
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_with_grad(x: torch.Tensor, check_sizes: bool = True) -> torch.Tensor:
    """Concatenate x (n, ...) from all ranks along dim 0 in rank order, keeping the autograd graph.

    Without an initialised multi-rank group this returns x unchanged. All ranks must pass the same shape
    (use drop_last=True in the loader); ``check_sizes`` verifies that with one tiny collective and raises a
    ValueError naming every rank's size instead of hanging or corrupting the gather.

    Args:
        x: (n, ...) this rank's tensor; the same shape on every rank.
        check_sizes: verify the shapes agree across ranks first (one small collective).

    Returns:
        (W*n, ...) the tensors of all ranks in rank order; its backward sums what every rank sends back to
        each block (see the module docstring for the resulting gradient convention).

    Raises:
        ValueError: with ``check_sizes``, the ranks passed different shapes.

    Examples:
        >>> import torch
        >>> from mmcr.objectives import all_gather_with_grad
        >>> x = torch.ones(3, 2, requires_grad=True)
        >>> all_gather_with_grad(x) is x  # one process: x itself, graph intact
        True
    """
    if not is_distributed():
        return x
    if check_sizes:
        shape = torch.tensor(list(x.shape), device=x.device, dtype=torch.int64)
        shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
        dist.all_gather(shapes, shape)
        if any(not torch.equal(s, shape) for s in shapes):
            sizes = [tuple(s.tolist()) for s in shapes]
            raise ValueError(
                f"all ranks must pass tensors of the same shape to the gather, got {sizes} by rank; "
                "use equal per-rank batch sizes (drop_last=True)"
            )
    return _ContiguousGrad.apply(torch.cat(dist_fn.all_gather(x.contiguous()), dim=0))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous. torch's gloo all_gather backward allocates its
    receive buffers with ``empty_like(grad)`` and lets the collective write them as dense memory, which
    scrambles a transposed (non-contiguous) gradient such as the polar factor of a tall matrix."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks, without gradient (for logged values). Identity when not distributed."""
    if not is_distributed():
        return x.detach()
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / dist.get_world_size()


# ------------------------------------------------------------------------------ host-side agreement
def all_ranks_true(ok: torch.Tensor | bool, info: DistInfo) -> bool:
    """True when ``ok`` holds on every rank (one collective; reads the value back to the host)."""
    flag = torch.as_tensor(ok, dtype=torch.float32).reshape(1).to(info.device)
    if info.enabled:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() > 0)


def any_rank(flags: list[bool], info: DistInfo) -> list[bool]:
    """Element-wise OR of host flags over ranks, so that every rank takes the same decision (stop on
    a time budget or a signal) at the same step."""
    if not info.enabled:
        return [bool(f) for f in flags]
    t = torch.tensor([float(f) for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [v > 0 for v in t.tolist()]


def gather_objects(obj: Any, info: DistInfo) -> Any:
    """Every rank's ``obj`` in rank order (just ``obj`` in a single process)."""
    if not info.enabled:
        return obj
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def gather_rows(*tensors: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, ...]:
    """Concatenate each rank's rows (sizes may differ by rank) in rank order, on every rank."""
    if not info.enabled:
        return tensors
    n = torch.tensor([tensors[0].shape[0]], device=tensors[0].device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    m = max(counts)
    out = []
    for t in tensors:
        padded = torch.zeros(m, *t.shape[1:], device=t.device, dtype=t.dtype)
        padded[: t.shape[0]] = t
        parts = [torch.zeros_like(padded) for _ in range(info.world_size)]
        dist.all_gather(parts, padded)
        out.append(torch.cat([p[:c] for p, c in zip(parts, counts)]))
    return tuple(out)
