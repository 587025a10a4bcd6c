"""Mean-field manifold capacity, radius and dimension (Chung, Lee & Sompolinsky 2018; Cohen et al. 2020).

For each manifold p the points are centred on the manifold's centre, scaled by the centre's norm and
written in an orthonormal basis of their span, then a constant coordinate 1 is appended (the centre
direction): ``A_p`` of shape (D+1, m). For each Gaussian vector t the anchor point ``s~(t)``
solves ``min ||v - t||^2 s.t. A^T v <= -kappa``. Its dual is a non-negative least-squares problem
``lambda = NNLS(A, t + kappa e_D)`` (the constant last row of A turns the margin into a shift of t),
which :func:`mmcr.geometry.nnls.nnls_gram` solves exactly for all t-vectors and manifolds at once; then
``s~ = A lambda / sum(lambda)`` and

    1/alpha_M = < [t.s~ + kappa]_+^2 / ||s~||^2 >_t,   R_M = sqrt< ||s~ - <s~>||^2 >_t,
    D_M = D <t^ . s^>_t^2          (hats: unit vectors over the first D coordinates).

Summaries follow the reference code: capacity = 1/mean(1/alpha_M), radius and dimension = means.
:func:`capacity_vs_margin` sweeps kappa with the same t-vectors, warm-starting each solve from the last.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from mmcr.geometry._arrays import as_manifolds, checked_seed, make_generator, manifold_list, to_numpy, to_tensor
from mmcr.geometry.lowrank import center_correlation, find_center_subspace
from mmcr.geometry.nnls import nnls_gram

#: Below this norm of ``v* - t`` the reference treats t as interior and uses the max-projection point.
INTERIOR_EPS = 1e-8
#: A centre closer than this (relative to the size of the raw coordinates) to the global mean is taken
#: to coincide with it: the distance is rounding noise.
CENTRE_EPS = 1e-12


@dataclass
class CapacityResult:
    """Summaries and per-manifold values of a mean-field capacity analysis.

    ``alpha``, ``radii`` and ``dimensions`` have shape (P,); ``center_subspace`` is the (N, K) orthonormal
    basis removed from the centres in the correlated variant (None otherwise); ``residual_correlation``
    is the mean |cosine| between centres after removing rank 1, 2, ... (correlated variant, when the
    subspace was optimised here).

    Attributes:
        capacity: 1 / mean(1 / alpha), the capacity of the P manifolds together.
        radius: mean of ``radii``.
        dimension: mean of ``dimensions``.
        alpha: (P,) per-manifold capacities.
        radii: (P,) mean-field radii, relative to each centre's norm.
        dimensions: (P,) mean-field dimensions.
        center_correlation: mean |cosine| between the mean-subtracted centres.
        kappa: the margin.
        n_t: Gaussian samples per manifold.
        correlated: whether shared centre structure was removed.
        center_subspace: (N, K) removed basis, or None.
        residual_correlation: mean |cosine| after removing rank 1, 2, ... (empty when not searched).

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import manifold_capacity
        >>> points = np.eye(4, 10)[:, None, :]  # 4 single-point manifolds (P, M, N) = (4, 1, 10)
        >>> result = manifold_capacity(points, n_t=50, seed=0)
        >>> result.alpha.shape, round(result.radius, 4), result.to_dict()["center_rank_removed"]
        ((4,), 0.0, 0)
    """

    capacity: float
    radius: float
    dimension: float
    alpha: np.ndarray
    radii: np.ndarray
    dimensions: np.ndarray
    center_correlation: float
    kappa: float
    n_t: int
    correlated: bool
    center_subspace: np.ndarray | None = None
    residual_correlation: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as lists; the removed subspace as its rank only)."""
        d = asdict(self)
        for k in ("alpha", "radii", "dimensions"):
            d[k] = [float(v) for v in d[k]]
        sub = d.pop("center_subspace")
        d["center_rank_removed"] = 0 if sub is None else int(np.asarray(sub).shape[1])
        return d


def manifold_capacity(
    manifolds: Any,
    kappa: float = 0.0,
    n_t: int = 200,
    t_vectors: Any = None,
    correlated: bool = False,
    seed: int | None = None,
    *,
    center_subspace: Any = None,
    n_reps: int = 10,
    max_rank: int | None = None,
) -> CapacityResult:
    """Mean-field capacity, radius and dimension of P manifolds.

    Args:
        manifolds: (P, M, N) array (manifolds x points x features), numpy or torch (any device), or a
            list of (M_i, N) arrays. Computation runs in float64 on the input's device. Any P >= 2,
            M >= 1 and N >= 1 work (duplicated points and N < M included); a manifold whose centre
            coincides with the global mean has no defined radius and raises ValueError.
        kappa: margin, >= 0.
        n_t: Gaussian samples per manifold (ignored when ``t_vectors`` is given).
        t_vectors: optional (P, D+1, n_t) array, or a list of P (D_i+1, n_t) arrays, in the reduced basis
            (Householder QR of the centred, centre-normalised manifold, as numpy/LAPACK computes it, D = M
            when N > M else D = N; row D is the centre coordinate). Makes the result deterministic and
            comparable with the reference implementation given the same vectors. Without them the
            t-vectors are drawn here, in a basis of the manifold's span that is cheaper to compute
            (the results have the same distribution: the analysis is rotation invariant).
        correlated: remove the low-rank structure shared by the manifold centres before the analysis
            (needs P >= 3 and centres spanning at least 2 dimensions).
        seed: seeds the t-vectors and the random starts of the centre-subspace search.
        center_subspace: (N, K) basis of the centre subspace to remove (implies ``correlated``); skips the
            search, e.g. to reproduce a stored analysis.
        n_reps: random starts per rank in the centre-subspace search.
        max_rank: largest rank tried in the search (default: rank reaching 95% of centre variance + 10).

    Returns:
        :class:`CapacityResult`.

    Raises:
        ValueError: fewer than 2 manifolds, a negative margin, a centre at the global mean, t-vectors of the
            wrong shape, or ``correlated`` without the 3 manifolds and 2 centre dimensions it needs.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import manifold_capacity
        >>> rng = np.random.default_rng(0)
        >>> manifolds = rng.standard_normal((4, 5, 10)) * 0.3 + 2 * np.eye(4, 10)[:, None, :]  # (P, M, N)
        >>> result = manifold_capacity(manifolds, n_t=100, seed=0)
        >>> result.alpha.shape, bool(result.capacity > 0), bool(result.dimension >= 1)
        ((4,), True, True)
    """
    return _capacities(
        manifolds, [kappa], n_t, t_vectors, correlated, seed, center_subspace, n_reps, max_rank, "kappa"
    )[0]


def capacity_vs_margin(
    manifolds: Any,
    kappas: Any,
    n_t: int = 200,
    t_vectors: Any = None,
    correlated: bool = False,
    seed: int | None = None,
    *,
    center_subspace: Any = None,
    n_reps: int = 10,
    max_rank: int | None = None,
) -> list[CapacityResult]:
    """:func:`manifold_capacity` at each margin in ``kappas`` (one result per kappa, in the given order).

    Every margin uses the same t-vectors (so differences between margins carry no sampling noise of
    their own), the manifolds are reduced once, and each margin's NNLS problems start from the
    solutions' supports at the neighbouring margin, which nearly always are the right ones or one swap
    away. Arguments as in :func:`manifold_capacity`.

    Args:
        manifolds: (P, M, N) array or list of (M_i, N) arrays.
        kappas: (n_kappas,) margins, each >= 0.
        n_t: Gaussian samples per manifold.
        t_vectors: optional fixed t-vectors, as in :func:`manifold_capacity`.
        correlated: remove the centres' shared low-rank structure first.
        seed: seeds the t-vectors and the centre-subspace search.
        center_subspace: (N, K) basis to remove instead of searching for one.
        n_reps: random starts per rank in the centre-subspace search.
        max_rank: largest rank tried in the search.

    Returns:
        A list of n_kappas :class:`CapacityResult`, in the order of ``kappas``.

    Raises:
        ValueError: ``kappas`` is empty, or as :func:`manifold_capacity`.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import capacity_vs_margin
        >>> rng = np.random.default_rng(0)
        >>> manifolds = rng.standard_normal((4, 5, 10)) * 0.3 + 2 * np.eye(4, 10)[:, None, :]
        >>> caps = [r.capacity for r in capacity_vs_margin(manifolds, [0.0, 0.5, 1.0], n_t=20, seed=0)]
        >>> len(caps), caps == sorted(caps, reverse=True)  # a larger margin leaves less capacity
        (3, True)
    """
    ks = np.asarray(kappas, dtype=np.float64).reshape(-1)
    if ks.size == 0:
        raise ValueError("kappas must hold at least one margin")
    return _capacities(
        manifolds, ks.tolist(), n_t, t_vectors, correlated, seed, center_subspace, n_reps, max_rank, "kappas"
    )


def _center_basis(center_subspace, correlated: bool, centers, N: int, dev, n_reps, max_rank, seed):
    """The basis of the centres' shared subspace (given, found when ``correlated``, or None), the residual
    correlations of the search, and whether the analysis is the correlated one."""
    V = None
    residual: list[float] = []
    if center_subspace is not None:
        V = to_tensor(center_subspace, dev)
        if V.ndim == 1:
            V = V[:, None]
        if V.ndim != 2 or V.shape[0] != N:
            raise ValueError(f"center_subspace must be (N={N}, K), got {tuple(V.shape)}")
        if not bool(torch.isfinite(V).all()):
            raise ValueError("center_subspace holds NaN or inf values; give a finite (N, K) orthonormal basis "
                             "(e.g. the center_subspace of a previous result), or correlated=True to find one")
        correlated = True
    elif correlated:
        Vn, residual = find_center_subspace(to_numpy(centers), n_reps=n_reps, max_rank=max_rank, seed=seed)
        V = torch.as_tensor(Vn, device=dev)
    return V, residual, correlated


def _capacities(manifolds, kappas, n_t, t_vectors, correlated, seed, center_subspace, n_reps, max_rank, name):
    for k in kappas:
        if not np.isfinite(k) or k < 0:
            raise ValueError(f"{name} must be finite margins >= 0, got {k}")
    if t_vectors is None and (int(n_t) != n_t or n_t < 1):
        raise ValueError(f"n_t must be a positive integer, got {n_t}")
    seed = checked_seed(seed)
    stacked = as_manifolds(manifolds)
    ms = list(stacked.unbind(0)) if isinstance(stacked, torch.Tensor) else stacked
    P = len(ms)
    N = ms[0].shape[1]
    dev = ms[0].device
    centers = stacked.mean(1) if isinstance(stacked, torch.Tensor) else _centers(ms)
    rho0 = center_correlation(centers)

    V, residual, correlated = _center_basis(center_subspace, correlated, centers, N, dev, n_reps, max_rank, seed)

    # Global mean of all points (for equal-size manifolds, the mean of the centres).
    origin = centers.mean(0) if isinstance(stacked, torch.Tensor) else torch.cat(ms).mean(0)
    tv = _t_vector_list(t_vectors, ms, P, N)
    rng = np.random.default_rng(checked_seed(seed)) if tv is None and dev.type == "cpu" else None
    gen = make_generator(seed, dev) if tv is None and rng is None else None
    K = len(kappas)
    alpha, radii, dims = np.empty((K, P)), np.empty((K, P)), np.empty((K, P))
    # Margins in increasing order, each warm-started from the previous one's supports.
    sweep = sorted(range(K), key=lambda i: kappas[i])
    # Manifolds with the same point count share one batched solve.
    groups: dict[int, list[int]] = {}
    for i, m in enumerate(ms):
        groups.setdefault(m.shape[0], []).append(i)
    for M, idx in groups.items():
        X = stacked if isinstance(stacked, torch.Tensor) else torch.stack([ms[i] for i in idx])
        A = _anchored(X, origin, V, householder=tv is not None, centers=centers[idx])
        D = A.shape[1] - 1
        if tv is not None:
            t = torch.stack([tv[i] for i in idx]).to(dev)
            if t.shape[1] != D + 1:
                raise ValueError(
                    f"t_vectors for manifolds of {M} points in {N} features need {D + 1} rows (D+1), got {t.shape[1]}"
                )
        elif rng is not None:
            t = torch.from_numpy(rng.standard_normal((len(idx), D + 1, int(n_t))))
        else:
            t = torch.randn(len(idx), D + 1, int(n_t), generator=gen, dtype=A.dtype, device=dev)
        # Batches of manifolds with a bounded number of NNLS problems keep the solver's working set
        # cache-sized, so that the time per problem does not grow with P.
        cap = BATCH_PROBLEMS if dev.type == "cpu" else BATCH_PROBLEMS_ACCELERATOR
        n_batches = max(1, round(len(idx) * t.shape[2] / cap))
        step = -(-len(idx) // n_batches)  # equal batches of about ``cap``: each pays the fixed cost once
        for g0 in range(0, len(idx), step):
            sub, ids = slice(g0, g0 + step), idx[g0 : g0 + step]
            support = None
            for i in sweep:
                a, r, d, lam = _anchor_statistics(A[sub], t[sub], float(kappas[i]), support)
                alpha[i, ids], radii[i, ids], dims[i, ids] = a, r, d
                support = lam > 0

    n_used = int(tv[0].shape[1]) if tv is not None else int(n_t)
    return [
        CapacityResult(
            capacity=float(1.0 / np.mean(1.0 / alpha[i])),
            radius=float(np.mean(radii[i])),
            dimension=float(np.mean(dims[i])),
            alpha=alpha[i],
            radii=radii[i],
            dimensions=dims[i],
            center_correlation=float(rho0),
            kappa=float(kappas[i]),
            n_t=n_used,
            correlated=bool(correlated),
            center_subspace=None if V is None else to_numpy(V),
            residual_correlation=[float(v) for v in residual],
        )
        for i in range(K)
    ]


#: NNLS problems (manifolds x t-vectors) solved per batch on a CPU (about). One batch of all 60,000
#: problems at P=300, M=50, N=5000 took 1.61 s, batches of <= 8192 1.36 s (flat time per problem in P);
#: smaller batches pay the solver's fixed per-call cost more often (P=50, N=512: 0.064 s in one batch,
#: 0.076 s in three).
BATCH_PROBLEMS = 8192
#: The same on an accelerator, whose kernels want large batches (not measured: no device was lent).
BATCH_PROBLEMS_ACCELERATOR = 1 << 18
#: Manifold points (values) centred per batch in :func:`_anchored`: bounds the temporary copies.
ANCHOR_CHUNK_VALUES = 1 << 22


def _anchored(
    X: torch.Tensor,
    origin: torch.Tensor,
    V: torch.Tensor | None,
    householder: bool = True,
    centers: torch.Tensor | None = None,
) -> torch.Tensor:
    """(G, M, N) manifolds -> (G, D+1, M) centred, centre-normalised, reduced points with a row of ones.

    For N > M the points are written in an M-dimensional orthonormal basis of their span. With
    ``householder`` it is the Householder QR basis (the reference's layout, needed to pair with given
    t-vectors); otherwise any orthonormal basis will do, since the analysis is invariant under rotations
    applied to points and (isotropic) t-vectors alike, and the coordinates come from a Cholesky factor
    of the M x M Gram matrix: one matrix product instead of a QR, 3x faster for N >> M. Manifolds whose
    Gram matrix is numerically singular (fewer independent directions than points) take the QR.
    ``centers`` (G, N): the manifolds' means when already known (without ``V``)."""
    G, M, N = X.shape
    parts = []
    step = max(1, ANCHOR_CHUNK_VALUES // (M * N))
    for g0 in range(0, G, step):
        Xc = X[g0 : g0 + step]
        if V is not None:
            x = Xc - origin
            x = x - (x @ V) @ V.T
            c = x.mean(1, keepdim=True)
            cn = torch.linalg.norm(c, dim=2, keepdim=True)
        else:
            x = Xc
            c = Xc.mean(1, keepdim=True) if centers is None else centers[g0 : g0 + step, None]
            cn = torch.linalg.norm(c - origin, dim=2, keepdim=True)
        S = (x - c).mT  # (g, N, M), columns are points
        if N > M:
            S = _span_coordinates(S, householder)
        # A centre within rounding of the global mean leaves the radius undefined (identical manifolds, two
        # manifolds sharing a centre): rounding is relative to the raw coordinates' size.
        size = torch.linalg.norm(c, dim=2, keepdim=True) + torch.linalg.norm(origin)
        size = size + torch.linalg.vector_norm(S, dim=1, keepdim=True).amax(2, keepdim=True)
        if bool((cn <= CENTRE_EPS * size).any()):
            raise ValueError(
                "a manifold's centre coincides with the global mean of all points, so its radius and capacity "
                "are undefined (identical manifolds, or 2 manifolds with the same centre); drop or merge them"
            )
        parts.append(S / cn)
    S = torch.cat(parts)
    return torch.cat([S, torch.ones(G, 1, M, dtype=S.dtype, device=S.device)], 1)


def _span_coordinates(S: torch.Tensor, householder: bool) -> torch.Tensor:
    """(g, N, M) centred columns -> (g, M, M) coordinates R with R^T R = S^T S: the Householder R, or
    from a Cholesky factor. Centred points sum to zero, so the first M-1 determine the last and their
    Gram block is positive definite for points in general position; R = [R1, -R1 1; 0] then, with the
    unused last coordinate that the Householder R also has (up to rounding)."""
    g, N, M = S.shape
    if householder or M < 2:
        return torch.linalg.qr(S, mode="r")[1]
    S1 = S[:, :, : M - 1]
    L, info = torch.linalg.cholesky_ex(S1.mT @ S1)
    R1 = L.mT
    R = torch.zeros(g, M, M, dtype=S.dtype, device=S.device)
    R[:, : M - 1, : M - 1] = R1
    R[:, : M - 1, M - 1] = -R1.sum(2)
    bad = info != 0
    if bool(bad.any()):  # affinely dependent points (e.g. duplicates): Householder QR for these
        R[bad] = torch.linalg.qr(S[bad], mode="r")[1]
    return R


def anchor_matrices(manifolds: Any, center_subspace: Any = None) -> list[torch.Tensor]:
    """The per-manifold (D+1, M_i) matrices the capacity solver works on (float64, input's device):
    points minus the global mean (and minus ``center_subspace`` components), centred on the manifold's
    centre, divided by the centre's norm, in the Householder QR basis when N > M, plus a row of ones.
    This is the layout of the reference's ``sD1`` matrices."""
    ms = manifold_list(manifolds)
    origin = torch.cat(ms).mean(0)
    V = None if center_subspace is None else to_tensor(center_subspace, ms[0].device)
    return [_anchored(m[None], origin, V)[0] for m in ms]


def _centers(ms: list[torch.Tensor]) -> torch.Tensor:
    if len({m.shape[0] for m in ms}) == 1:
        return torch.stack(ms).mean(1)
    return torch.stack([m.mean(0) for m in ms])


def _t_vector_list(t_vectors: Any, ms: list[torch.Tensor], P: int, N: int) -> list[torch.Tensor] | None:
    if t_vectors is None:
        return None
    if isinstance(t_vectors, (np.ndarray, torch.Tensor)):
        tv = to_tensor(t_vectors)
        if tv.ndim != 3 or tv.shape[0] != P:
            raise ValueError(f"t_vectors must be (P={P}, D+1, n_t), got {tuple(tv.shape)}")
        tv = list(tv.unbind(0))
    else:
        tv = [to_tensor(t) for t in t_vectors]
        if len(tv) != P:
            raise ValueError(f"t_vectors must hold one (D+1, n_t) array per manifold ({P}), got {len(tv)}")
    n_t = tv[0].shape[-1]
    for i, t in enumerate(tv):
        if t.ndim != 2 or t.shape[1] != n_t:
            raise ValueError(f"t_vectors[{i}] must be (D+1, n_t={n_t}), got {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"t_vectors[{i}] holds NaN or inf values; give finite Gaussian samples")
    return tv


def _anchor_statistics(
    A: torch.Tensor, t: torch.Tensor, kappa: float, support: torch.Tensor | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, torch.Tensor]:
    """alpha_M, R_M, D_M for a batch of anchored manifolds A (G, D+1, m) and t-vectors t (G, D+1, T),
    and the NNLS solutions (G, T, m); ``support`` warm-starts the solver (e.g. from another margin)."""
    D = A.shape[1] - 1
    tt = t.mT.contiguous()  # (G, T, D+1): one sample per row keeps the reductions contiguous
    At = A.mT.contiguous()  # (G, m, D+1)
    gram = A.mT @ A
    # rhs_j = t . [s_j; 1] + kappa: the dual NNLS right-hand side, and (minus kappa) the projections
    # whose maximiser is the max-projection point s*.
    rhs = tt @ A + kappa  # (G, T, m)
    top, best = rhs.max(-1)
    lam = nnls_gram(gram, rhs, init=support)  # (G, T, m)
    y = lam @ At  # (G, T, D+1) = t - v*
    s_star = torch.gather(At, 1, best[..., None].expand(-1, -1, D + 1))
    # Interior t (no constraint binds, g + kappa < 0) or a vanishing step: the anchor is s*.
    interior = (top < 0) | (torch.linalg.vector_norm(y, dim=-1) < INTERIOR_EPS)
    lam_sum = torch.where(interior, 1.0, lam.sum(-1))
    s = torch.where(interior[..., None], s_star, y / lam_sum[..., None])
    s_sq = (s * s).sum(-1)
    margin = ((tt * s).sum(-1) + kappa).clamp_min(0)
    per_t = torch.where(s_sq > 0, margin**2 / torch.where(s_sq > 0, s_sq, 1.0), 0.0)
    alpha = 1.0 / per_t.mean(-1)
    sd = s[..., :D]
    ds = (sd - sd.mean(1, keepdim=True)) / s[..., D:]
    radius = torch.sqrt((ds * ds).sum(-1).mean(-1))
    td = tt[..., :D]
    cos = (td * sd).sum(-1) / (torch.linalg.vector_norm(td, dim=-1) * torch.sqrt((sd * sd).sum(-1) + 1e-12))
    dim = D * cos.mean(-1) ** 2
    return to_numpy(alpha), to_numpy(radius), to_numpy(dim), lam
