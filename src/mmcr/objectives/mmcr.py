"""The MMCR objective (Yerxa et al., NeurIPS 2023): lmbda * mean_b ||Z_b||_* - ||C||_*."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import nn

from mmcr.distributed import all_gather_with_grad, all_reduce_mean, is_distributed
from mmcr.objectives._checks import (
    check_embeddings,
    check_same_shape,
    compute_dtype,
    raise_if_non_finite,
    tame_large_rows,
)
from mmcr.objectives.nuclear import _nuclear, _singular_values_for


def _reciprocal_norms(z: torch.Tensor) -> torch.Tensor:
    """1 / |z_v| (B, k, 1) in z's dtype, clamped like ``F.normalize``. Rounding these to float32 scales each
    normalised view by 1 + O(eps32), which moves the polar factor of C by O(eps32) (measured: no change in the
    gradient error of any benchmark family), unlike rounding C itself (1e-3 error on trained centroids)."""
    return torch.linalg.vector_norm(z, dim=-1, keepdim=True).clamp_min(_NORM_EPS).reciprocal()


class _NormalizedMean(torch.autograd.Function):
    """Mean over views of L2-normalised rows, z (B, k, d) -> (B, d) in float64, with a fused backward.

    Equal to ``F.normalize(z, dim=-1).mean(1)`` (same eps); written by hand because autograd's version makes
    about twice as many passes over z, which shows at d = 8192 next to the fast nuclear norm. The products and
    sums are float64 (see MMCRLoss); the backward, where rounding is not amplified, runs in z's dtype.
    """

    @staticmethod
    def forward(ctx, z):
        z = z.contiguous()
        k = z.shape[1]
        if k > 8 and z.dtype != torch.float64:
            # Many views: the float64 copy of z serves the norms too, where |z|^2 cannot overflow (no row
            # scaling needed, ~0.1 ms less at 32 x 40 x 128 than tame_large_rows' dozen small ops).
            z64 = z.double()
            inv64 = torch.linalg.vector_norm(z64, dim=-1, keepdim=True).clamp_min(_NORM_EPS).reciprocal()
            ctx.save_for_backward(z, inv64.to(z.dtype), None)
            return torch.bmm(inv64.mT, z64).squeeze(1) / k
        z, factor = tame_large_rows(z)
        inv = _reciprocal_norms(z)
        ctx.save_for_backward(z, inv, factor)
        # A few views: multiply-adds into one float64 (B, d) buffer, without a float64 copy of z (large fresh
        # buffers are slow to allocate on some machines, 15 ms for 32 MB on the development VM).
        inv64 = inv.double()
        out = torch.mul(z[:, 0], inv64[:, 0])
        for v in range(1, k):
            out.addcmul_(z[:, v], inv64[:, v])
        return out.div_(k)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        z, inv, factor = ctx.saved_tensors
        k = z.shape[1]
        g = grad.to(z.dtype).contiguous().unsqueeze(1)  # (B, 1, d); batched products are slow on strided input
        # d(z / |z|)^T g = (g - (u . g) u) / |z| with u = z / |z| formed first, so that nothing underflows for
        # huge rows (inv^3 would); rows clamped at eps have a constant denominator, so no projection term there.
        u = z * inv
        beta = torch.bmm(u, g.mT)  # (B, k, 1)
        beta = torch.where(inv < 1 / _NORM_EPS, beta, torch.zeros_like(beta))
        out = torch.addcmul(g, u, beta, value=-1).mul_(inv / k)
        return out if factor is None else out.mul_(factor)


class _NormalizeAndMean(torch.autograd.Function):
    """Normalised views u = z / |z| (B, k, d) and their means (B, d), both float64, with one fused backward.

    Used when the local term needs the views: the centroid gradient is folded into the same pass instead of
    being broadcast, added and pushed through autograd's normalise separately.
    """

    @staticmethod
    def forward(ctx, z):
        z, factor = tame_large_rows(z.contiguous())
        inv = _reciprocal_norms(z)
        ctx.save_for_backward(z, inv, factor)
        views = z.double() * inv.double()
        return views, views.mean(dim=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_views, grad_mean):
        z, inv, factor = ctx.saved_tensors
        k = z.shape[1]
        if grad_mean is None:
            grad_mean = z.new_zeros(z.shape[0], z.shape[2])
        gc = grad_mean.to(z.dtype).contiguous().unsqueeze(1) / k  # (B, 1, d), the centroid gradient per view
        # Total upstream gradient per view is g = grad_views + gc; the result is (g - (u . g) u) / |z|.
        dots = torch.bmm(z, gc.mT)  # (B, k, 1)
        out = gc * inv  # (B, k, d)
        if grad_views is not None:
            grad_views = grad_views.to(z.dtype)
            dots = dots + (z * grad_views).sum(-1, keepdim=True)
            out.addcmul_(grad_views, inv)
        beta = torch.where(inv < 1 / _NORM_EPS, dots * inv.pow(3), torch.zeros_like(dots))
        return out.addcmul_(z, beta, value=-1).mul_(factor)


_NORM_EPS = 1e-12


def effective_rank_from_singular_values(sigma: torch.Tensor) -> torch.Tensor:
    """Roy & Vetterli's effective rank, exp(entropy) of the normalised singular values, from singular values
    already at hand (those of the centroid matrix for ``effective_rank_C``); 0 for an all-zero matrix. The
    same quantity as :func:`mmcr.geometry.effective_rank`, which starts from features and centres them.

    Args:
        sigma: (..., r) non-negative singular values (any order).

    Returns:
        (...) effective ranks, between 1 and r (0 where all singular values are 0).

    Examples:
        >>> import torch
        >>> from mmcr.objectives import effective_rank_from_singular_values
        >>> round(effective_rank_from_singular_values(torch.ones(4)).item(), 4)  # 4 equal values
        4.0
        >>> effective_rank_from_singular_values(torch.tensor([[5.0, 0.0], [0.0, 0.0]])).tolist()
        [1.0, 0.0]
    """
    total = sigma.sum(-1, keepdim=True)
    p = sigma / total.clamp_min(torch.finfo(sigma.dtype).tiny)
    entropy = -(torch.where(p > 0, p * p.log(), torch.zeros_like(p))).sum(-1)
    return torch.where(total.squeeze(-1) > 0, entropy.exp(), torch.zeros_like(entropy))


class MMCRLoss(nn.Module):
    """Maximum Manifold Capacity loss for embeddings z of shape (B, k, d) (batch, views, dim).

    Each view is L2-normalised along d; C (B x d) stacks the per-image centroids (means over views) and
    the loss is ``lmbda * mean_b ||normalize(Z_b)||_* - ||C||_*``. With ``z_momentum`` (same shape, from a
    momentum encoder) the centroids are (mean of online views + mean of momentum views) / 2 and the local
    term uses the online views only.

    Distributed (torch.distributed initialised, world size W > 1, ``gather=True``): C is gathered from all
    ranks, so the global term is the nuclear norm of the whole (W*B, d) centroid matrix and every rank returns
    the global-batch loss value. Rank r's own embeddings receive W times the gradient of the one-process loss
    on the concatenated batch; DDP's gradient averaging divides by W, so under DDP the parameter gradient is
    exactly the global-batch gradient and the trainer uses the loss as is (see ``mmcr.distributed``).
    With ``gather=False`` each rank uses only its own centroids (a per-rank MMCR loss, as if each rank's batch
    were the whole batch).

    ``method`` and ``dtype`` are passed to :func:`mmcr.objectives.nuclear_norm`; numerics run in float32 (or
    float64 on request) also under autocast and for float16/bfloat16 embeddings. The normalised views and
    centroids are formed in float64 (a few passes over z): the gradient of an ill-conditioned C is as
    sensitive to a float32 rounding of C as to anything else (relative error ~eps32 * sigma_max / sigma_min,
    1e-3 for the trained-encoder centroids of benchmarks/bench_objectives.py), and the nuclear norm then reads
    C unrounded where it computes in float64.

    After each forward ``last_components`` holds detached scalars, all derived from quantities the loss
    computes anyway: ``loss``, ``global_nuclear_norm``, ``mean_centroid_norm``, ``effective_rank_C`` and, when
    the local term is evaluated (lmbda > 0, or ``track_local=True``), ``local_nuclear_norm`` (mean over images).

    Args:
        lmbda: weight (>= 0, finite) of the mean local nuclear norm; 0 (the paper's default) drops the term.
        method: nuclear-norm method, "auto", "gram", "newton_schulz" or "svd".
        dtype: computation dtype; None means float32 (float64 for float64 embeddings).
        gather: under torch.distributed, use the centroids of all ranks (global-batch loss).
        track_local: evaluate the local term for logging even when lmbda is 0 (default: only when lmbda > 0).

    Raises:
        ValueError: lmbda is negative or not finite; on call, z is not (B, k, d) floating point, z_momentum's
            shape differs, or an input holds NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr import MMCRLoss
        >>> _ = torch.manual_seed(0)
        >>> loss_fn = MMCRLoss()
        >>> z = torch.randn(8, 4, 16)  # (batch, views, dim)
        >>> loss = loss_fn(z)
        >>> loss.shape, bool(loss < 0)
        (torch.Size([]), True)
        >>> sorted(loss_fn.last_components)
        ['effective_rank_C', 'global_nuclear_norm', 'loss', 'mean_centroid_norm']
        >>> same = torch.eye(4).unsqueeze(1).expand(4, 2, 4)  # 2 identical views, orthogonal centroids
        >>> round(loss_fn(same).item(), 4)  # -||C||_* with C = I (4 x 4)
        -4.0
    """

    # Non-finite inputs raise a ValueError naming them, which reads one value back to the host per call. The
    # trainer, whose step masks non-finite embeddings itself without a host read, turns the check off.
    check_finite = True
    """Raise a ValueError on NaN/Inf inputs (one host read per call); the trainer turns it off."""

    def __init__(
        self,
        lmbda: float = 0.0,
        method: str = "auto",
        dtype: torch.dtype | None = None,
        gather: bool = True,
        track_local: bool | None = None,
    ):
        super().__init__()
        lmbda = float(lmbda)
        if not lmbda >= 0.0 or lmbda == float("inf"):
            raise ValueError(f"MMCRLoss needs a finite lmbda >= 0 (weight of the local nuclear norm), got {lmbda}")
        self.lmbda = lmbda
        self.method = method
        self.dtype = dtype
        self.gather = gather
        self.track_local = (lmbda > 0) if track_local is None else bool(track_local)
        self.last_components = {}

    @property
    def last_components(self) -> dict[str, torch.Tensor]:
        # The logging-only components (mean_centroid_norm, effective_rank_C) are derived when read, at logging
        # steps, not in every training step: a dozen small ops (~0.1 ms, as much as the whole nuclear norm at
        # the CIFAR shape) and, for the matmul-only method, an eigvalsh for the singular values.
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._components.update(pending())
        return self._components

    @last_components.setter
    def last_components(self, value: dict[str, torch.Tensor]) -> None:
        self._components = value
        self._pending = None

    def extra_repr(self) -> str:
        return f"lmbda={self.lmbda}, method={self.method!r}, gather={self.gather}"

    def forward(self, z: torch.Tensor, z_momentum: torch.Tensor | None = None) -> torch.Tensor:
        """The loss (a scalar, in the computation dtype) for z (B, k, d) and optional z_momentum (B, k, d)."""
        check_embeddings(z, "z")
        if z_momentum is not None:
            check_same_shape(z, z_momentum, "z_momentum")
        cdtype = compute_dtype(z, self.dtype)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zc = z.to(cdtype)
            if self.track_local:
                views, centroids = _NormalizeAndMean.apply(zc)
            else:
                centroids = _NormalizedMean.apply(zc)
            if z_momentum is not None:
                centroids = 0.5 * (centroids + _NormalizedMean.apply(z_momentum.to(cdtype)))
            inputs = {"z": z} if z_momentum is None else {"z": z, "z_momentum": z_momentum}
            # Normalised entries lie in [-1, 1], so this sum is finite unless an input held NaN or Inf.
            if self.check_finite:
                raise_if_non_finite(centroids.detach().sum(), **inputs)
            all_centroids = all_gather_with_grad(centroids) if self.gather else centroids
            global_norm, sigma = _nuclear(all_centroids, self.method, cdtype, want_sigma=False, exact_input=True)
            loss = -global_norm
            comps = {"global_nuclear_norm": global_norm.detach()}
            if self.track_local:
                with torch.no_grad() if self.lmbda == 0 else nullcontext():  # lmbda 0: tracked for logging only
                    local_mean = _nuclear(views, self.method, cdtype, want_sigma=False, exact_input=True)[0].mean()
                global_local_mean = all_reduce_mean(local_mean) if self.gather and is_distributed() else None
                if self.lmbda > 0:
                    local_term = local_mean
                    if global_local_mean is not None:
                        # Value of the global-batch mean; gradient of this rank's own mean (see class docstring).
                        local_term = local_mean + (global_local_mean - local_mean).detach()
                    loss = loss + self.lmbda * local_term
                comps["local_nuclear_norm"] = (local_mean if global_local_mean is None else global_local_mean).detach()
        detached = all_centroids.detach()

        def pending() -> dict[str, torch.Tensor]:
            s = sigma if sigma is not None else _singular_values_for(detached.unsqueeze(0))[0].to(cdtype)
            with torch.no_grad():
                mean_norm = torch.linalg.vector_norm(detached, dim=-1).mean().to(cdtype)
                return {"mean_centroid_norm": mean_norm, "effective_rank_C": effective_rank_from_singular_values(s)}
        comps["loss"] = loss.detach()
        self.last_components = comps
        self._pending = pending
        return loss
