"""Nuclear norm (sum of singular values) of batched matrices, exact and fast.

The fast method never forms U or V of the larger side. For a matrix A (s x l, s <= l; the transpose is
used when m > n) it eigendecomposes the small Gram matrix G = A A^T = U diag(lambda) U^T, so the
singular values are sqrt(lambda). The gradient of ||A||_* is the polar factor U V^T, which equals
G^{+1/2} A = U diag(1/sigma) U^T A, a product of small and given matrices. Cost: O(s^2 l + s^3) against
the larger constants of an SVD.

Precision. Forming G squares the condition number, so a float32 Gram is only trusted when
lambda_min / lambda_max >= ``FLOAT32_MIN_EIG_RATIO`` (sigma ratio >= 0.1); other matrices of the batch
(rank-deficient, collapsed, all-zero, overflowing) are recomputed with a float64 Gram. On that path
singular values below ``RANK_RTOL`` * sigma_max count as zero for the gradient: their directions get none,
which is the minimum-norm subgradient (all-zero input -> zero gradient) and keeps the result finite.
"""

from __future__ import annotations

import torch

__all__ = ["nuclear_norm", "nuclear_norm_with_singular_values", "NUCLEAR_NORM_METHODS"]

NUCLEAR_NORM_METHODS = ("auto", "gram", "svd")

# A float32 Gram has eigenvalue errors of about sqrt(l) * 6e-8 * lambda_max, so the gradient error grows like
# kappa^2: at lambda_min / lambda_max = 1e-2 the worst measured relative gradient error was 1.7e-5 (log, linear
# and two-level spectra, shapes up to 2048 x 512 and 256 x 8192), at 1e-3 it was 1.3e-4.
FLOAT32_MIN_EIG_RATIO = 1e-2
# Singular values below this fraction of the largest one get no gradient on the float64 path. A float64
# Gram resolves sigma down to ~1e-8 sigma_max; 1e-5 leaves a wide margin while sitting far below every
# singular value a float32 matrix can meaningfully carry apart from rounding noise (~1e-7 sigma_max).
RANK_RTOL = 1e-5
# Below this, entries of a float32 Gram come from products near the subnormal range (tiny / eps ~ 1e-31).
_FLOAT32_SMALLEST_EIG = torch.finfo(torch.float32).tiny / torch.finfo(torch.float32).eps


def _check_matrix(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"nuclear_norm expects a torch.Tensor of shape (..., m, n), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"nuclear_norm expects shape (..., m, n) with at least 2 dimensions, got {tuple(x.shape)}")
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"nuclear_norm needs m >= 1 and n >= 1 in shape (..., m, n), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"nuclear_norm expects a real floating-point tensor, got dtype {x.dtype}; cast it with .float()"
        )


def _raise_non_finite(x: torch.Tensor, name: str = "x") -> None:
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    raise ValueError(
        f"{name} of shape {tuple(x.shape)} contains {n_nan} NaN and {n_inf} Inf values; "
        "the nuclear norm needs finite entries (check the encoder output or lower the learning rate)"
    )


def _polar_from_eig(evecs: torch.Tensor, inv: torch.Tensor, a: torch.Tensor, transposed: bool) -> torch.Tensor:
    """U diag(inv) U^T a, returned contiguous in the caller's layout: (N, s, l), or (N, l, s) = x's layout when
    a is the transpose of x (a transposed gradient makes later batched products and collectives slow)."""
    p = (evecs * inv.unsqueeze(-2)) @ evecs.mT
    return a.mT @ p if transposed else p @ a


def _gram_float64(a: torch.Tensor, want_polar: bool, transposed: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Singular values (ascending) and optional polar factor of a (N, s, l) with s <= l, in float64."""
    a64 = a.double()
    evals, evecs = torch.linalg.eigh(a64 @ a64.mT)
    sigma = evals.clamp_min(0).sqrt()
    if not want_polar:
        return sigma, None
    keep = sigma > RANK_RTOL * sigma[..., -1:]
    inv = torch.where(keep, sigma.reciprocal(), torch.zeros_like(sigma))
    return sigma, _polar_from_eig(evecs, inv, a64, transposed)


def _gram_nuclear(x: torch.Tensor, want_polar: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Core of the Gram method for x (..., m, n) in float32/float64.

    Returns (value (...), singular values (..., min(m, n)) ascending, polar factor like x or None).
    """
    *batch, m, n = x.shape
    transposed = m > n
    a = (x.mT if transposed else x).reshape(-1, min(m, n), max(m, n))
    out_dtype = x.dtype
    if x.dtype == torch.float64:
        sigma, polar = _gram_float64(a, want_polar, transposed)
    else:
        gram = a @ a.mT
        diag_sum = gram.diagonal(dim1=-2, dim2=-1).sum()
        if not torch.isfinite(diag_sum):
            if not torch.isfinite(x).all():
                _raise_non_finite(x)
            # Finite but overflowing in float32: do everything in float64.
            sigma, polar = _gram_float64(a, want_polar, transposed)
        else:
            evals, evecs = torch.linalg.eigh(gram)
            # Ill-conditioned, zero, or so small that float32 products lose bits to underflow -> float64.
            bad = ~(evals[..., 0] >= FLOAT32_MIN_EIG_RATIO * evals[..., -1]) | ~(evals[..., 0] >= _FLOAT32_SMALLEST_EIG)
            any_bad = bool(bad.any())
            if any_bad and bool(bad.all()):
                sigma, polar = _gram_float64(a, want_polar, transposed)
            else:
                sigma = evals.clamp_min(0).sqrt()
                polar = None
                if want_polar:
                    inv = torch.where(sigma > 0, sigma.reciprocal(), torch.zeros_like(sigma))
                    polar = _polar_from_eig(evecs, inv, a, transposed)
                if any_bad:
                    idx = bad.nonzero().squeeze(-1)
                    s64, p64 = _gram_float64(a[idx], want_polar, transposed)
                    sigma = sigma.double().index_copy(0, idx, s64)
                    polar = polar.index_copy(0, idx, p64.to(polar.dtype)) if want_polar else None
    value = sigma.sum(-1).to(out_dtype).reshape(batch)
    sigma = sigma.to(out_dtype).reshape(*batch, min(m, n))
    if polar is not None:
        polar = polar.to(out_dtype)
        polar = polar.reshape(*batch, m, n)
    return value, sigma, polar


class _GramNuclearNorm(torch.autograd.Function):
    """Autograd wrapper: the backward is grad_output times the polar factor computed in forward."""

    @staticmethod
    def forward(ctx, x):
        value, sigma, polar = _gram_nuclear(x, want_polar=ctx.needs_input_grad[0])
        ctx.save_for_backward(polar if polar is not None else x.new_empty(0))
        ctx.mark_non_differentiable(sigma)
        return value, sigma

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_value, grad_sigma):
        (polar,) = ctx.saved_tensors
        return polar * grad_value.unsqueeze(-1).unsqueeze(-1)


def _compute_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float64 if x.dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"nuclear_norm computes in torch.float32 or torch.float64, got dtype={dtype}")
    return dtype


def _resolve_method(method: str, x: torch.Tensor) -> str:
    if method not in NUCLEAR_NORM_METHODS:
        raise ValueError(f"unknown nuclear_norm method {method!r}; choose one of {NUCLEAR_NORM_METHODS}")
    if method != "auto":
        return method
    # The Gram method needs fewer flops than an SVD at every shape; on CPU it measured faster than svdvals at
    # every shape of benchmarks/bench_objectives.py except ill-conditioned 2048 x 512 (0.9x, where its float64
    # fallback is 30x more exact). Other backends may lack a batched eigh, so they keep the SVD reference.
    return "gram" if x.device.type in ("cpu", "cuda") else "svd"


def nuclear_norm_with_singular_values(
    x: torch.Tensor, method: str = "auto", *, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`nuclear_norm` but also returns the singular values (..., min(m, n)), ascending, detached.

    The singular values come for free from the same decomposition; they serve logging (effective rank).
    """
    _check_matrix(x)
    cdtype = _compute_dtype(x, dtype)
    method = _resolve_method(method, x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc = x.to(cdtype)
        if method == "svd":
            if not torch.isfinite(xc).all():
                _raise_non_finite(x)
            sigma = torch.linalg.svdvals(xc)
            return sigma.sum(-1), sigma.detach().flip(-1)
        if xc.requires_grad and torch.is_grad_enabled():
            return _GramNuclearNorm.apply(xc)
        value, sigma, _ = _gram_nuclear(xc.detach(), want_polar=False)
        return value, sigma


def nuclear_norm(x: torch.Tensor, method: str = "auto", *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Nuclear norm ||x||_* of each matrix in x (..., m, n); returns shape (...).

    method: "svd" (reference, ``torch.linalg.svdvals`` and its autograd), "gram" (eigendecomposition of the
    smaller Gram matrix; backward returns the polar factor U V^T directly; rank-deficient and zero inputs get
    the minimum-norm subgradient) or "auto" (the fastest exact method for the device: "gram" on CPU and CUDA).
    The computation runs in float32, or float64 when x is float64 or ``dtype=torch.float64``, also under
    autocast; float16/bfloat16 inputs are upcast and their gradient is cast back. Supports one backward
    (no double backward).
    """
    return nuclear_norm_with_singular_values(x, method, dtype=dtype)[0]
