"""Baseline SSL objectives on the same (B, k, d) input as MMCRLoss, for side-by-side comparisons.

Each is distributed-correct with the convention of ``mmcr.distributed``: every rank returns the
value of the one-process loss on the concatenated global batch, and rank r's own embeddings receive W times
its gradient, which DDP's gradient averaging cancels. Pairwise losses are averaged over the k(k-1)/2 view
pairs (for k = 2 each equals its paper's two-view loss). Numerics run in float32 (float64 on request).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from mmcr.distributed import all_gather_with_grad, all_reduce_mean, is_distributed, rank
from mmcr.objectives._checks import check_embeddings, compute_dtype, raise_if_non_finite, tame_large_rows


def _check_positive(name: str, value: float, owner: str) -> float:
    value = float(value)
    if not (value > 0 and value != float("inf")):
        raise ValueError(f"{owner} needs a finite {name} > 0, got {value}")
    return value


def _check_nonnegative(name: str, value: float, owner: str) -> float:
    value = float(value)
    if not (value >= 0 and value != float("inf")):
        raise ValueError(f"{owner} needs a finite {name} >= 0, got {value}")
    return value


def _offdiag_sq_sum_of_cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """||a^T b||_F^2 for a, b (N, d), through whichever of the d x d or N x N products is smaller.

    ||a^T b||_F^2 = <a a^T, b b^T>: with N < d (small batches, wide projectors) this avoids the d x d matrix.
    """
    n, d = a.shape
    if n < d:
        return ((a @ a.T) * (b @ b.T)).sum()
    return (a.T @ b).square().sum()


def _global_batch(z: torch.Tensor, dtype: torch.dtype | None, gather: bool, owner: str,
                  check_finite: bool = True) -> torch.Tensor:
    """z in the compute dtype, checked finite (unless the caller has) and gathered over ranks
    (batch-statistics losses need the global batch); call inside an autocast-disabled block."""
    zc = z.to(compute_dtype(z, dtype))
    if check_finite:
        raise_if_non_finite(zc.detach().sum(), z=z)
    zc = all_gather_with_grad(zc) if gather else zc
    if zc.shape[0] < 2:
        raise ValueError(f"{owner} needs at least 2 images in the (global) batch, got shape {tuple(z.shape)}")
    return zc


class SimCLRLoss(nn.Module):
    """InfoNCE / NT-Xent with all k views of an image as positives (SupCon "outside" form, Khosla et al. 2020).

    Every embedding is an anchor; its positives are the k-1 other views of its image and its denominator
    runs over every other embedding of the (global) batch. Default temperature 0.1 is SimCLR's ImageNet
    default (Chen et al. 2020); their CIFAR runs used 0.5. For k = 2 this is SimCLR's NT-Xent.

    Args:
        temperature: softmax temperature (> 0) of the cosine similarities.
        dtype: computation dtype; None means float32 (float64 for float64 embeddings).
        gather: under torch.distributed, contrast against the embeddings of all ranks.

    Raises:
        ValueError: temperature is not positive and finite; on call, z is not (B, k >= 2, d) floating point or
            holds NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr import SimCLRLoss
        >>> _ = torch.manual_seed(0)
        >>> loss_fn = SimCLRLoss(temperature=0.5)
        >>> loss = loss_fn(torch.randn(8, 2, 16))  # (batch, views, dim) -> scalar
        >>> loss.shape, bool(loss > 0), sorted(loss_fn.last_components)
        (torch.Size([]), True, ['loss', 'positive_similarity'])
    """

    check_finite = True  # see MMCRLoss.check_finite

    def __init__(self, temperature: float = 0.1, dtype: torch.dtype | None = None, gather: bool = True):
        super().__init__()
        self.temperature = _check_positive("temperature", temperature, "SimCLRLoss")
        self.dtype = dtype
        self.gather = gather
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) for z (B, k, d), k >= 2."""
        check_embeddings(z, "z", min_views=2)
        b, k, d = z.shape
        with torch.autocast(device_type=z.device.type, enabled=False):
            # rows scaled first (exactly, by powers of two) so that |z|^2 cannot overflow: see tame_large_rows
            zn = F.normalize(tame_large_rows(z.to(compute_dtype(z, self.dtype)))[0], dim=-1)
            if self.check_finite:
                raise_if_non_finite(zn.detach().sum(), z=z)
            distributed = self.gather and is_distributed()
            keys = all_gather_with_grad(zn) if distributed else zn
            offset = rank() * b if distributed else 0
            anchors = zn.reshape(b * k, d)
            logits = anchors @ keys.reshape(-1, d).T / self.temperature  # (b k, W b k)
            image_of_key = torch.arange(keys.shape[0], device=z.device).repeat_interleave(k)
            image_of_anchor = torch.arange(b, device=z.device).repeat_interleave(k) + offset
            self_index = torch.arange(b * k, device=z.device) + offset * k
            is_self = F.one_hot(self_index, keys.shape[0] * k).bool()
            logits = logits.masked_fill(is_self, float("-inf"))
            positive = (image_of_anchor[:, None] == image_of_key[None, :]) & ~is_self
            log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(1) / (k - 1)
            local_loss = per_anchor.mean()
            loss = local_loss
            if distributed:
                loss = local_loss + (all_reduce_mean(local_loss) - local_loss).detach()
            with torch.no_grad():
                pos_sim = (logits.masked_fill(~positive, 0.0).sum(1) / (k - 1)).mean() * self.temperature
        self.last_components = {
            "loss": loss.detach(),
            "positive_similarity": all_reduce_mean(pos_sim) if distributed else pos_sim,
        }
        return loss


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins (Zbontar et al., ICML 2021): sum_i (1 - C_ii)^2 + lambda_offdiag * sum_{i != j} C_ij^2.

    C is the cross-correlation of two views' batch-standardised embeddings (batch norm without affine,
    eps 1e-5, statistics over the global batch), averaged over view pairs. Default off-diagonal weight
    0.0051 as in the authors' code (paper: 5e-3).

    Args:
        lambda_offdiag: weight (>= 0) of the off-diagonal (redundancy-reduction) term.
        dtype: computation dtype; None means float32 (float64 for float64 embeddings).
        gather: under torch.distributed, take the batch statistics over all ranks.

    Raises:
        ValueError: lambda_offdiag is negative or not finite; on call, z is not (B >= 2, k >= 2, d) floating
            point or holds NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr import BarlowTwinsLoss
        >>> _ = torch.manual_seed(0)
        >>> loss_fn = BarlowTwinsLoss()
        >>> loss = loss_fn(torch.randn(16, 2, 8))  # (batch, views, dim) -> scalar
        >>> loss.shape, sorted(loss_fn.last_components)
        (torch.Size([]), ['loss', 'off_diagonal', 'on_diagonal'])
    """

    check_finite = True  # see MMCRLoss.check_finite

    def __init__(self, lambda_offdiag: float = 0.0051, dtype: torch.dtype | None = None, gather: bool = True):
        super().__init__()
        self.lambda_offdiag = _check_nonnegative("lambda_offdiag", lambda_offdiag, "BarlowTwinsLoss")
        self.dtype = dtype
        self.gather = gather
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) for z (B, k, d), B >= 2 and k >= 2."""
        check_embeddings(z, "z", min_views=2)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zc = _global_batch(z, self.dtype, self.gather, "BarlowTwinsLoss", self.check_finite)
            n, k, d = zc.shape
            mean = zc.mean(0, keepdim=True)
            var = zc.var(0, unbiased=False, keepdim=True)
            h = (zc - mean) / torch.sqrt(var + 1e-5)  # (N, k, d)
            pairs = k * (k - 1) // 2
            iu = torch.triu_indices(k, k, offset=1, device=z.device)
            # Diagonals of every pair's cross-correlation at once: (k, k, d) -> the k(k-1)/2 pairs i < j.
            diag = torch.einsum("nid,njd->ijd", h, h)[iu[0], iu[1]] / n  # (pairs, d)
            if n < d:
                # ||h_i^T h_j||_F^2 = <h_i h_i^T, h_j h_j^T>: k Gram matrices (N x N) serve every pair, and the
                # sum over pairs i < j of <K_i, K_j> is (||sum_v K_v||^2 - sum_v ||K_v||^2) / 2.
                grams = torch.einsum("nvd,mvd->vnm", h, h)
                cross_sq = (grams.sum(0).square().sum() - grams.square().sum()) / 2 / n**2
            else:
                pairs_ij = itertools.combinations(range(k), 2)  # from Python: no device read
                cross_sq = sum((h[:, i].T @ h[:, j]).square().sum() for i, j in pairs_ij) / n**2
            on_diag = (1 - diag).square().sum() / pairs
            off_diag = (cross_sq - diag.square().sum()) / pairs
            loss = on_diag + self.lambda_offdiag * off_diag
        self.last_components = {
            "loss": loss.detach(),
            "on_diagonal": on_diag.detach(),
            "off_diagonal": off_diag.detach(),
        }
        return loss


class VICRegLoss(nn.Module):
    """VICReg (Bardes et al., ICLR 2022) with its defaults: 25 * invariance + 25 * variance + 1 * covariance.

    Per view pair (x, y): invariance = mean squared error; variance = (mean(relu(1 - std_x)) +
    mean(relu(1 - std_y))) / 2 with std = sqrt(var + 1e-4); covariance = (sum of squared off-diagonal
    covariances of x plus that of y) / d. Averaged over pairs; statistics over the global batch.

    Args:
        sim_coeff: weight (>= 0) of the invariance term.
        std_coeff: weight (>= 0) of the variance term.
        cov_coeff: weight (>= 0) of the covariance term.
        dtype: computation dtype; None means float32 (float64 for float64 embeddings).
        gather: under torch.distributed, take the batch statistics over all ranks.

    Raises:
        ValueError: a coefficient is negative or not finite; on call, z is not (B >= 2, k >= 2, d) floating
            point or holds NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr import VICRegLoss
        >>> _ = torch.manual_seed(0)
        >>> loss_fn = VICRegLoss()
        >>> view = torch.randn(16, 1, 8)
        >>> loss = loss_fn(view.expand(16, 2, 8))  # two identical views: no invariance penalty
        >>> loss.shape, abs(loss_fn.last_components["invariance"].item()) < 1e-6
        (torch.Size([]), True)
    """

    check_finite = True  # see MMCRLoss.check_finite

    def __init__(
        self,
        sim_coeff: float = 25.0,
        std_coeff: float = 25.0,
        cov_coeff: float = 1.0,
        dtype: torch.dtype | None = None,
        gather: bool = True,
    ):
        super().__init__()
        self.sim_coeff = _check_nonnegative("sim_coeff", sim_coeff, "VICRegLoss")
        self.std_coeff = _check_nonnegative("std_coeff", std_coeff, "VICRegLoss")
        self.cov_coeff = _check_nonnegative("cov_coeff", cov_coeff, "VICRegLoss")
        self.dtype = dtype
        self.gather = gather
        self.last_components: dict[str, torch.Tensor] = {}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The loss (a scalar) for z (B, k, d), B >= 2 and k >= 2."""
        check_embeddings(z, "z", min_views=2)
        with torch.autocast(device_type=z.device.type, enabled=False):
            zc = _global_batch(z, self.dtype, self.gather, "VICRegLoss", self.check_finite)
            n, k, d = zc.shape
            # Sum over pairs of ||x_i - x_j||^2 = k sum_v ||x_v||^2 - ||sum_v x_v||^2, without a k^2 loop.
            pair_sq = k * zc.square().sum() - zc.sum(1).square().sum()
            n_pairs = k * (k - 1) // 2
            invariance = pair_sq / (n_pairs * n * d)
            centred = zc - zc.mean(0, keepdim=True)
            var = centred.square().sum(0) / (n - 1)  # (k, d)
            variance = F.relu(1 - torch.sqrt(var + 1e-4)).mean()  # pair average of (s_x + s_y) / 2
            cov_sq = torch.stack([_offdiag_sq_sum_of_cross(centred[:, v], centred[:, v]) for v in range(k)])
            offdiag = cov_sq / (n - 1) ** 2 - var.square().sum(1)  # (k,)
            covariance = 2 * offdiag.mean() / d  # pair average of cov_x + cov_y
            loss = self.sim_coeff * invariance + self.std_coeff * variance + self.cov_coeff * covariance
        self.last_components = {
            "loss": loss.detach(),
            "invariance": invariance.detach(),
            "variance": variance.detach(),
            "covariance": covariance.detach(),
        }
        return loss
