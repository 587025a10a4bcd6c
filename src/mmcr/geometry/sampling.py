"""Finite-sample check: how capacity, radius and dimension move with the number of points per manifold.

A manifold is known only through its M sampled points (views of an image, images of a class). The
mean-field radius and dimension of M points grow with M until the points cover the manifold, and the
capacity falls accordingly, so a value measured at one M says little unless it has stopped moving.
:func:`capacity_vs_points` recomputes the analysis on random subsets of m <= M points per manifold
(several repeats per m, fresh t-vectors each time) and reports the mean and spread at each m.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmcr.geometry._arrays import checked_seed, manifold_list, to_numpy
from mmcr.geometry.capacity import manifold_capacity
from mmcr.geometry.lowrank import find_center_subspace

#: Default subsample sizes, as fractions of the smallest manifold's point count.
DEFAULT_FRACTIONS = (0.125, 0.25, 0.5, 0.75, 1.0)


@dataclass
class FiniteSampleResult:
    """``points``: the subsample sizes m; ``capacity``, ``radius``, ``dimension``: (len(points), repeats)
    arrays of the summaries (capacity = harmonic mean over manifolds, radius and dimension = means).
    ``center_subspace_rank``: rank removed in the correlated variant (found once on all points).

    Attributes:
        points: the subsample sizes m, ascending.
        capacity: (len(points), repeats) capacities.
        radius: (len(points), repeats) mean radii.
        dimension: (len(points), repeats) mean dimensions.
        repeats: subsets per size.
        kappa: the margin.
        n_t: Gaussian samples per manifold.
        correlated: whether shared centre structure was removed.
        seed: the seed of the subsets and t-vectors.
        center_subspace_rank: rank removed in the correlated variant (0 otherwise).
        max_points: M, the smallest manifold's point count.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import FiniteSampleResult
        >>> values = np.array([[1.0, 1.5], [0.5, 0.5]])  # (len(points), repeats)
        >>> result = FiniteSampleResult(points=[2, 4], capacity=values, radius=values, dimension=values,
        ...                             repeats=2, kappa=0.0, n_t=20, correlated=False, seed=0, max_points=4)
        >>> result.mean("capacity").tolist(), result.std("capacity").round(4).tolist(), result.relative_change()
        ([1.25, 0.5], [0.3536, 0.0], -1.5)
    """

    points: list[int]
    capacity: np.ndarray
    radius: np.ndarray
    dimension: np.ndarray
    repeats: int
    kappa: float
    n_t: int
    correlated: bool
    seed: int | None
    center_subspace_rank: int = 0
    max_points: int = 0

    def mean(self, key: str) -> np.ndarray:
        """Mean over repeats, (len(points),), of "capacity", "radius" or "dimension"."""
        return np.asarray(getattr(self, key)).mean(1)

    def std(self, key: str) -> np.ndarray:
        """Spread over repeats (sample standard deviation; 0 with a single repeat)."""
        a = np.asarray(getattr(self, key))
        return a.std(1, ddof=1) if a.shape[1] > 1 else np.zeros(a.shape[0])

    def relative_change(self, key: str = "capacity") -> float | None:
        """Change of the mean from the half-size subsample (the largest m <= M/2) to all M points,
        relative to the value at M; None when no such m was measured."""
        m = np.asarray(self.points)
        half = np.flatnonzero(m <= self.max_points / 2)
        if half.size == 0 or m[-1] != self.max_points:
            return None
        v = self.mean(key)
        return float((v[-1] - v[half[-1]]) / v[-1]) if v[-1] != 0 else None

    def to_dict(self) -> dict[str, Any]:
        """One row (mean and spread of each summary) per subsample size, and the settings, JSON-ready."""
        rows = []
        for i, m in enumerate(self.points):
            row: dict[str, Any] = {"points": int(m)}
            for key in ("capacity", "radius", "dimension"):
                row[key] = float(self.mean(key)[i])
                row[f"{key}_std"] = float(self.std(key)[i])
            rows.append(row)
        return {
            "rows": rows,
            "repeats": self.repeats,
            "kappa": self.kappa,
            "n_t": self.n_t,
            "correlated": self.correlated,
            "seed": self.seed,
            "max_points": self.max_points,
            "center_subspace_rank": self.center_subspace_rank,
            "capacity_change_from_half": self.relative_change("capacity"),
        }


def default_points(max_points: int) -> list[int]:
    """Subsample sizes for manifolds of ``max_points`` points: 1/8, 1/4, 1/2, 3/4 and all of them (>= 2)."""
    return sorted({int(round(f * max_points)) for f in DEFAULT_FRACTIONS if round(f * max_points) >= 2})


def capacity_vs_points(
    manifolds: Any,
    points: Any = None,
    repeats: int = 5,
    kappa: float = 0.0,
    n_t: int = 200,
    seed: int | None = None,
    correlated: bool = False,
) -> FiniteSampleResult:
    """Mean-field capacity, radius and dimension on random subsets of ``m`` points of every manifold.

    Args:
        manifolds: (P, M, N) array or list of (M_i, N) arrays (as :func:`manifold_capacity`).
        points: subsample sizes m (1 <= m <= min M_i); default :func:`default_points` of min M_i.
        repeats: independent subsets (and t-vectors) per size; the spread over them is reported.
        kappa: margin, as in :func:`manifold_capacity`.
        n_t: Gaussian samples per manifold, as in :func:`manifold_capacity`.
        seed: seeds the subsets and the t-vectors.
        correlated: remove the centres' shared low-rank structure; the subspace is found once on all
            points and reused for every subset (centres move little when points are dropped).

    Returns:
        :class:`FiniteSampleResult`.

    Raises:
        ValueError: manifolds of fewer than 2 points (without ``points``), sizes outside 1..min M_i, or
            repeats not a positive integer.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import capacity_vs_points
        >>> manifolds = np.random.default_rng(0).standard_normal((3, 4, 8)) + 3 * np.eye(3, 8)[:, None, :]
        >>> result = capacity_vs_points(manifolds, points=[2, 4], repeats=2, n_t=10, seed=0)  # (P, M, N)
        >>> result.points, result.capacity.shape, isinstance(result.relative_change(), float)
        ([2, 4], (2, 2), True)
    """
    ms = manifold_list(manifolds)
    M = min(m.shape[0] for m in ms)
    if points is None:
        if M < 2:
            raise ValueError(
                "the finite-sample check needs manifolds of at least 2 points (subsets of 1 point are single "
                f"points, whose radius is 0); the smallest manifold here has {M}"
            )
        points = default_points(M)
    pts = sorted({int(p) for p in np.atleast_1d(np.asarray(points))})
    if not pts or any(p < 1 or p > M for p in np.atleast_1d(np.asarray(points))):
        raise ValueError(
            f"points must be subsample sizes between 1 and the smallest manifold's {M} points, got {points}"
        )
    if int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be a positive integer, got {repeats}")
    rng = np.random.default_rng(checked_seed(seed))
    subspace = None
    if correlated:
        centers = torch.stack([x.mean(0) for x in ms])
        subspace, _ = find_center_subspace(to_numpy(centers), seed=seed)
    dev = ms[0].device
    caps = np.empty((len(pts), int(repeats)))
    rad = np.empty_like(caps)
    dim = np.empty_like(caps)
    for i, m in enumerate(pts):
        for r in range(int(repeats)):
            sub = torch.stack([x[torch.as_tensor(rng.choice(x.shape[0], m, replace=False), device=dev)] for x in ms])
            res = manifold_capacity(sub, kappa=kappa, n_t=n_t, seed=int(rng.integers(2**31)), center_subspace=subspace)
            caps[i, r], rad[i, r], dim[i, r] = res.capacity, res.radius, res.dimension
    return FiniteSampleResult(
        points=pts,
        capacity=caps,
        radius=rad,
        dimension=dim,
        repeats=int(repeats),
        kappa=float(kappa),
        n_t=int(n_t),
        correlated=bool(correlated),
        seed=seed,
        center_subspace_rank=0 if subspace is None else int(subspace.shape[1]),
        max_points=M,
    )
