"""Simulated manifold capacity: the ground truth the mean-field theory estimates.

Manifolds are projected onto n random directions; a random dichotomy (half the manifolds +1, half -1)
is linearly separable (with bias) if some hyperplane puts every point of every manifold on its side.
The critical n_c is where half the dichotomies are separable; capacity = P / n_c.

Separability is decided exactly through Gordan's alternative: with a_i = y_i [z_i; 1] (rows scaled to
unit norm), the points are strictly separable iff 0 is not in the convex hull of the a_i. The NNLS
problem ``min ||[A^T; 1^T] mu - e_last||, mu >= 0`` has zero residual iff 0 is in the hull, and otherwise
its residual (u, s) gives a separating direction ``w = -u`` with ``a_i . w >= s > 0`` for every point,
which is checked explicitly; scipy's compiled NNLS is several times faster than a linear programme here.
A least-squares classifier settles easy separable cases, and ambiguous numerics fall back to HiGHS.

Each dichotomy's directions are nested (the first n columns of one draw), so separability is monotone in
n per dichotomy and a dichotomy decided at one n is reused at the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linprog, nnls

from mmcr.geometry._arrays import checked_seed, manifold_list, to_numpy


@dataclass
class SimCapResult:
    """``capacity`` = P / ``n_critical``; ``n_values``/``p_values``: every n tried and its separable fraction.

    Attributes:
        capacity: P / n_critical.
        n_critical: projection dimension where half the dichotomies are separable (interpolated).
        n_values: every projection dimension tried, ascending.
        p_values: separable fraction at each of ``n_values``.
        n_rep: random dichotomies per dimension.
        seed: the seed used.

    Examples:
        >>> from mmcr.geometry import SimCapResult
        >>> SimCapResult(capacity=0.8, n_critical=5.0, n_values=[4, 6], p_values=[0.0, 1.0]).to_dict()["n_rep"]
        20
    """

    capacity: float
    n_critical: float
    n_values: list[int] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)
    n_rep: int = 20
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-ready dict."""
        return {
            "capacity": self.capacity,
            "n_critical": self.n_critical,
            "n_values": list(self.n_values),
            "p_values": list(self.p_values),
            "n_rep": self.n_rep,
            "seed": self.seed,
        }


def is_separable(points: np.ndarray, labels: np.ndarray) -> bool:
    """Exact strict linear separability (with bias) of ``points`` (n_pts, d) by ``labels`` in {-1, +1}.

    The decision :func:`simulated_capacity` makes for every dichotomy, exposed for checks of its own.

    Args:
        points: (n_pts, d) points.
        labels: (n_pts,) labels, each -1 or +1.

    Returns:
        Whether some hyperplane w.x + b puts every point strictly on its label's side.

    Raises:
        ValueError: the shapes do not match, or a label is neither -1 nor +1.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import is_separable
        >>> corners = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
        >>> is_separable(corners, np.array([1, 1, -1, -1]))  # XOR
        False
        >>> is_separable(corners, np.array([1, -1, 1, 1]))
        True
    """
    points = np.asarray(points, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if points.ndim != 2 or labels.shape != (points.shape[0],):
        raise ValueError(f"points must be (n, d) and labels (n,), got {points.shape} and {labels.shape}")
    if not np.isin(labels, (-1.0, 1.0)).all():
        raise ValueError("labels must be -1 or +1")
    A = np.hstack([points, np.ones((len(points), 1))]) * labels[:, None]
    return _separable_rows(A)


def _separable_rows(A: np.ndarray) -> bool:
    return _decide(A)[0]


#: Least-separated points (in units of the dimension) in the first working set of a separability check;
#: with a warm start (the certificate's points from a neighbouring dimension) fewer are needed.
WORK_COLD, WORK_WARM = 8, 2


def _decide(A: np.ndarray, hint: np.ndarray | None = None) -> tuple[bool, np.ndarray | None]:
    """Exact separability of the rows of A, and the points (row indices) of the certificate that decided
    it, which seed the working set of the same dichotomy at the next dimension (``hint``)."""
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    n_pts, d = A.shape
    # Cheap certificate first: a least-squares classifier that already separates.
    gram = A.T @ A
    gram[np.diag_indices(d)] += 1e-10 * np.trace(gram) / d  # tiny ridge: the solve only proposes a w
    w = np.linalg.solve(gram, A.sum(0))
    margins = A @ w
    if margins.min() > 0:
        return True, None
    # Constraint generation: decide on the least-separated points; a hull containing 0 on a subset
    # proves non-separability, a direction separating every point proves separability.
    first = (WORK_COLD if hint is None else WORK_WARM) * d
    work = np.argsort(margins)[: min(n_pts, first)]
    if hint is not None:
        work = np.union1d(work, hint)
    for _ in range(8):
        verdict, direction, used = _hull_test(A[work])
        if verdict is False:
            return False, work[used]
        if verdict is None:
            break
        margins = A @ direction
        if margins.min() > 0:
            return True, work[used]
        if len(work) == n_pts:
            break
        viol = np.flatnonzero(margins <= 0)
        extra = viol[np.argsort(margins[viol])[: 4 * d]]
        work = np.union1d(work, extra)
    verdict, direction, used = _hull_test(A)
    if verdict is not None:
        return bool(verdict), used
    out = linprog(np.zeros(d), A_ub=-A, b_ub=-np.full(n_pts, 1e-9), bounds=(None, None), method="highs")
    return out.status == 0, None


def _hull_test(A: np.ndarray) -> tuple[bool | None, np.ndarray | None, np.ndarray]:
    """(True, w, .) if w separates the rows of A; (False, None, .) if 0 is in their hull; (None, None, .)
    if unclear. The last item indexes the rows the NNLS solution uses (its support)."""
    n_pts, d = A.shape
    B = np.vstack([A.T, np.ones(n_pts)])
    e = np.zeros(d + 1)
    e[-1] = 1.0
    mu, _ = nnls(B, e, maxiter=50 * (d + n_pts))
    used = np.flatnonzero(mu > 0)
    rho = e - B @ mu
    direction = -rho[:-1]
    if (A @ direction).min() > 1e-12:
        return True, direction, used
    if mu.sum() > 0.5 and np.linalg.norm(A.T @ mu) <= 1e-10 * mu.sum():
        return False, None, used
    return None, None, used


def simulated_capacity(
    manifolds: Any,
    n_rep: int = 20,
    seed: int | None = None,
    tol: float = 0.05,
    max_dim: int | None = None,
) -> SimCapResult:
    """Simulated capacity by bisection on the number of random projection dimensions.

    Args:
        manifolds: (P, M, N) array or list of (M_i, N) arrays (raw features; a bias term is learned).
        n_rep: random dichotomies per evaluated dimension.
        seed: seeds the dichotomies and projections.
        tol: stop once the separable fraction is within ``tol`` of 0.5.
        max_dim: largest projection dimension searched (default N).

    Returns:
        :class:`SimCapResult` with n_c linearly interpolated where the separable fraction crosses 0.5.

    Raises:
        ValueError: n_rep < 1, or max_dim outside 1..N.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import simulated_capacity
        >>> manifolds = np.random.default_rng(0).standard_normal((4, 3, 20))  # (P, M, N)
        >>> result = simulated_capacity(manifolds, n_rep=5, seed=0)
        >>> bool(result.capacity > 0), len(result.n_values) == len(result.p_values)
        (True, True)
    """
    ms = [to_numpy(m) for m in manifold_list(manifolds)]
    P = len(ms)
    N = ms[0].shape[1]
    if n_rep < 1:
        raise ValueError(f"n_rep must be >= 1, got {n_rep}")
    n_max = N if max_dim is None else int(max_dim)
    if not 1 <= n_max <= N:
        raise ValueError(f"max_dim must be between 1 and the feature count {N}, got {max_dim}")
    dich = _Dichotomies(ms, n_rep, n_max, checked_seed(seed))
    lo, hi = _bracket(dich.fraction, P, n_max, tol)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        p = dich.fraction(mid)
        if abs(p - 0.5) <= tol + 1e-12:
            lo = hi = mid
            break
        if p > 0.5:
            hi = mid
        else:
            lo = mid
    n_vals = sorted(dich.tried)
    p_vals = [dich.tried[k] for k in n_vals]
    nc = _crossing(np.array(n_vals, float), np.array(p_vals))
    return SimCapResult(
        capacity=float(P / nc), n_critical=float(nc), n_values=n_vals, p_values=p_vals, n_rep=n_rep, seed=seed
    )


class _Dichotomies:
    """``n_rep`` random dichotomies of the manifolds and their nested random projections: column j of
    dichotomy r's projection is the same for every n > j, so each verdict bounds the others (separable at
    n: separable above; not separable at n: not below) and certificates carry over between dimensions."""

    def __init__(self, ms: list[np.ndarray], n_rep: int, n_max: int, seed: int):
        P, self.N = len(ms), ms[0].shape[1]
        self.X = np.concatenate(ms)
        owner = np.concatenate([np.full(len(m), i) for i, m in enumerate(ms)])
        rng = np.random.default_rng(seed)
        self.labels = []
        for _ in range(n_rep):
            y = np.ones(P)
            y[rng.choice(P, P // 2, replace=False)] = -1.0
            self.labels.append(y[owner])
        seeds = rng.integers(0, 2**63 - 1, size=n_rep)
        self.n_rep = n_rep
        self.cols: list[np.ndarray] = [np.empty((self.N, 0)) for _ in range(n_rep)]
        self.proj: list[np.ndarray] = [np.empty((len(self.X), 0)) for _ in range(n_rep)]
        self.gens = [np.random.default_rng(int(s)) for s in seeds]
        self.sep_at: list[int] = [n_max + 1] * n_rep  # smallest n known separable
        self.nonsep_at: list[int] = [0] * n_rep  # largest n known non-separable (n = 0: both labels occur)
        self.tried: dict[int, float] = {}
        self.hints: list[np.ndarray | None] = [None] * n_rep  # certificate points from the last dimension tried

    def _separable(self, r: int, n: int) -> bool:
        while self.cols[r].shape[1] < n:
            W = self.gens[r].standard_normal((self.N, n - self.cols[r].shape[1]))
            W /= np.linalg.norm(W, axis=0)
            self.cols[r] = np.hstack([self.cols[r], W])
            self.proj[r] = np.hstack([self.proj[r], self.X @ W])
        A = np.hstack([self.proj[r][:, :n], np.ones((len(self.X), 1))]) * self.labels[r][:, None]
        verdict, used = _decide(A, self.hints[r])
        if used is not None:
            self.hints[r] = used
        return verdict

    def fraction(self, n: int) -> float:
        """The fraction of the dichotomies that are linearly separable in ``n`` projected dimensions."""
        if n not in self.tried:
            count = 0
            for r in range(self.n_rep):
                if n >= self.sep_at[r]:
                    count += 1
                elif n > self.nonsep_at[r]:
                    if self._separable(r, n):
                        count += 1
                        self.sep_at[r] = n
                    else:
                        self.nonsep_at[r] = n
            self.tried[n] = count / self.n_rep
        return self.tried[n]


def _bracket(frac, P: int, n_max: int, tol: float) -> tuple[int, int]:
    """Dimensions ``lo < hi`` around the crossing of 1/2 (equal when one lands within ``tol``): from
    n = P/2, where random points, the easiest manifolds, reach half separability, by halving or growing
    by 25 %."""
    lo, hi = 0, None
    n = int(min(max(1, P // 2), n_max))
    going_up = None
    while True:
        p = frac(n)
        if abs(p - 0.5) <= tol + 1e-12:
            return n, n
        if p > 0.5:
            hi = n
            if going_up or n <= 1:
                break
            going_up = False
            n = max(1, n // 2)
        else:
            lo = n
            if going_up is False or n == n_max:
                break
            going_up = True
            # Small upward steps: unseparable draws are cheap to refute, separable ones cost a full
            # certificate, so overshooting the critical dimension by little saves most of the time.
            n = min(max(n + 1, int(round(n * 1.25))), n_max)
    if hi is None:
        raise ValueError(
            f"fewer than half of the dichotomies are separable even with {n_max} dimension(s); "
            "the manifolds are too entangled for a simulated capacity (capacity < P/N)"
        )
    if hi == 1 and lo == 0 and frac(1) > 0.5 + tol + 1e-12:
        raise ValueError(
            f"{frac(1):.0%} of the dichotomies are separable already in 1 dimension, so the critical dimension "
            f"is below the simulation's resolution (capacity > P = {P}); this needs more manifolds"
        )
    return lo, hi


def _crossing(n: np.ndarray, p: np.ndarray) -> float:
    """Linear interpolation of the first upward crossing of p = 0.5."""
    for i in range(len(n)):
        if p[i] == 0.5:
            return float(n[i])
        if i > 0 and p[i - 1] < 0.5 < p[i]:
            return float(n[i - 1] + (0.5 - p[i - 1]) * (n[i] - n[i - 1]) / (p[i] - p[i - 1]))
    return float(n[int(np.argmin(np.abs(p - 0.5)))])
