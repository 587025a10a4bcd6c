"""torch.distributed helpers shared by the objectives and the trainer.

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

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

__all__ = ["is_distributed", "world_size", "rank", "all_gather_with_grad", "all_reduce_mean"]


def is_distributed() -> bool:
    """True when torch.distributed is available, initialised, and has more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Number of ranks in the default process group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default process group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def all_gather_with_grad(x: torch.Tensor, check_sizes: bool = True) -> torch.Tensor:
    """Concatenate x (n, ...) from all ranks along dim 0 in rank order, keeping the autograd graph.

    Without an initialised multi-rank group this returns x unchanged. All ranks must pass the same shape
    (use drop_last=True in the loader); ``check_sizes`` verifies that with one tiny collective and raises a
    ValueError naming every rank's size instead of hanging or corrupting the gather.
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
