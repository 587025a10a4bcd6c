"""Batched non-negative least squares (Lawson-Hanson active set) over many right-hand sides at once.

Mean-field capacity needs one small NNLS per (manifold, t-vector) pair: thousands of problems of a few
dozen variables whose solutions have only a handful of non-zeros. Calling a solver per problem spends
its time in Python overhead, so this module runs the classic active-set method in lockstep over all
problems with torch tensor operations: each iteration gathers the (few) passive variables of every
still-unconverged problem and solves those small systems as one batch. Written here because neither
scipy (one problem per call) nor torch offers a batched NNLS.
"""

from __future__ import annotations

import torch


def nnls_gram(
    gram: torch.Tensor,
    rhs: torch.Tensor,
    tol: float = 1e-12,
    max_iter: int | None = None,
) -> torch.Tensor:
    """Solve ``min_x 0.5 x^T G x - b^T x`` subject to ``x >= 0`` for many ``b`` per Gram matrix.

    This is ``min ||A x - t||^2, x >= 0`` with ``G = A^T A`` and ``b = A^T t``.

    Args:
        gram: (P, m, m) symmetric positive (semi)definite Gram matrices.
        rhs: (P, T, m) right-hand sides; problem (p, k) uses ``gram[p]`` and ``rhs[p, k]``.
        tol: a variable enters the passive set only while its gradient exceeds ``tol`` times the
            problem's scale (max |b|, at least 1).
        max_iter: cap on active-set iterations (default ``3 m``).

    Returns:
        (P, T, m) solutions, exact up to rounding for problems whose passive Gram blocks are nonsingular.
    """
    if gram.ndim != 3 or gram.shape[1] != gram.shape[2]:
        raise ValueError(f"gram must be (P, m, m), got {tuple(gram.shape)}")
    if rhs.ndim != 3 or rhs.shape[0] != gram.shape[0] or rhs.shape[2] != gram.shape[1]:
        raise ValueError(f"rhs must be (P, T, m) matching gram {tuple(gram.shape)}, got {tuple(rhs.shape)}")
    P, T, m = rhs.shape
    dev, dt = rhs.device, rhs.dtype
    B = P * T
    b = rhs.reshape(B, m)
    owner = torch.arange(P, device=dev).repeat_interleave(T)
    x = torch.zeros(B, m, device=dev, dtype=dt)
    passive = torch.zeros(B, m, device=dev, dtype=torch.bool)
    thresh = tol * torch.maximum(b.amax(1), -b.amin(1)).clamp_min(1.0)
    active = torch.arange(B, device=dev)
    max_iter = 3 * m if max_iter is None else int(max_iter)

    for _ in range(max_iter):
        if active.numel() == 0:
            break
        pa = passive[active]
        xa = x[active]
        ga = owner[active]
        w = b[active] - _gram_times(gram, ga, xa, pa)
        w = w.masked_fill(pa, -torch.inf)
        wmax, j = w.max(1)
        go = wmax > thresh[active]
        active, pa, xa, ga, j = active[go], pa[go], xa[go], ga[go], j[go]
        if active.numel() == 0:
            break
        pa[torch.arange(active.numel(), device=dev), j] = True
        # Inner loop: step back towards the feasible region until the passive solution is positive.
        rows = torch.arange(active.numel(), device=dev)
        z = _passive_solve(gram, b, active, ga, pa)
        r = rows
        for _inner in range(m + 1):
            bad = (pa[r] & (z[r] <= 0)).any(1)
            if not bad.any():
                break
            r = r[bad]
            zb, xb, pb = z[r], xa[r], pa[r]
            ratio = torch.where(pb & (zb <= 0), xb / (xb - zb), torch.full_like(xb, torch.inf))
            step, leave = ratio.min(1)
            xb = xb + step[:, None] * (zb - xb)
            pb = pb & (xb > 0)
            pb[torch.arange(r.numel(), device=dev), leave] = False
            xa[r] = torch.where(pb, xb, torch.zeros_like(xb))
            pa[r] = pb
            z[r] = _passive_solve(gram, b, active[r], ga[r], pb)
        else:  # pragma: no cover - only reachable with a degenerate Gram matrix
            z = torch.where(pa, z.clamp_min(0), torch.zeros_like(z))
        x[active] = torch.where(pa, z, torch.zeros_like(z))
        passive[active] = pa
    return x.reshape(P, T, m)


def _gram_times(gram: torch.Tensor, owner: torch.Tensor, x: torch.Tensor, passive: torch.Tensor) -> torch.Tensor:
    """``G[owner] @ x`` for sparse ``x`` (non-zeros only on ``passive``), gathering only the used rows."""
    k = int(passive.sum(1).max()) if passive.numel() else 0
    if k == 0:
        return torch.zeros_like(x)
    idx = passive.to(torch.int8).topk(k, dim=1, sorted=False).indices
    xs = x.gather(1, idx)
    rows = gram[owner[:, None], idx]  # (B, k, m)
    return torch.einsum("bk,bkm->bm", xs, rows)


def _passive_solve(
    gram: torch.Tensor, b: torch.Tensor, active: torch.Tensor, owner: torch.Tensor, passive: torch.Tensor
) -> torch.Tensor:
    """Unconstrained minimiser restricted to each problem's passive set (zeros elsewhere)."""
    n, m = passive.shape
    k = int(passive.sum(1).max()) if n else 0
    if k == 0:
        return torch.zeros(n, m, dtype=b.dtype, device=b.device)
    idx = passive.to(torch.int8).topk(k, dim=1, sorted=False).indices
    valid = passive.gather(1, idx)
    sub = gram[owner[:, None, None], idx[:, :, None], idx[:, None, :]]
    both = valid[:, :, None] & valid[:, None, :]
    eye = torch.eye(k, device=sub.device, dtype=sub.dtype).expand_as(sub)
    sub = torch.where(both, sub, eye)
    rhs = torch.where(valid, b[active].gather(1, idx), torch.zeros((), dtype=b.dtype, device=b.device))
    sol, info = torch.linalg.solve_ex(sub, rhs[..., None])
    sol = sol[..., 0]
    bad = (info != 0) | ~torch.isfinite(sol).all(1)
    if bool(bad.any()):  # numerically singular passive block: least-norm solution instead
        sol[bad] = (torch.linalg.pinv(sub[bad]) @ rhs[bad][..., None])[..., 0]
    z = torch.zeros(n, m, dtype=b.dtype, device=b.device)
    return z.scatter(1, idx, torch.where(valid, sol, torch.zeros_like(sol)))
