"""Analytic (elliptical) manifold radius and dimension from each manifold's singular values, and the
nuclear norms MMCR optimises.

Treating manifold p as an ellipsoid around its centre c_p, its semi-axes relative to the centre norm are
r_i = sigma_i / (sqrt(M) ||c_p||), with sigma_i the singular values of the centred points. Then
R = sqrt(sum r_i^2) and D = (sum r_i^2)^2 / sum r_i^4 (participation ratio of the axes), and the
large-D mean-field capacity of such an ellipsoid is approximately (1 + R^2) / (R^2 D) (Chung et al.
2018). The nuclear norm of the centred points, sum_i sigma_i, grows with both radius and dimension,
which is why MMCR can shrink R sqrt(D) by minimising per-manifold nuclear norms and spread the
centres by maximising the centroid nuclear norm ||C||_*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmcr.geometry._arrays import manifold_list, to_numpy


@dataclass
class EllipticalGeometry:
    """Per-manifold arrays of shape (P,) and their means; ``centroid_nuclear_norm`` is ||C||_* of the
    (P, N) matrix of centres and ``mean_manifold_nuclear_norm`` the mean of ||Z_p||_* over manifolds.

    Attributes:
        radii: (P,) elliptical radii R, relative to each centre's norm.
        dimensions: (P,) elliptical dimensions D (participation ratio of the axes).
        capacity_estimates: (P,) large-D capacity estimates (1 + R^2) / (R^2 D) (inf for zero radius).
        nuclear_norms: (P,) nuclear norms of the centred points of each manifold.
        radius: mean of ``radii``.
        dimension: mean of ``dimensions``.
        capacity: harmonic mean of ``capacity_estimates``.
        centroid_nuclear_norm: ||C||_* of the (P, N) centres (MMCR's global term, uncentred input).
        mean_manifold_nuclear_norm: mean of ||Z_p||_* of the uncentred points (MMCR's local term).

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import elliptical_geometry
        >>> geometry = elliptical_geometry(np.eye(2, 3)[:, None, :] + [[[0, 0, 0.5]], [[0, 0, -0.5]]])
        >>> sorted(geometry.to_dict())[:3], geometry.radii.shape
        (['capacity', 'centroid_nuclear_norm', 'dimension'], (2,))
    """

    radii: np.ndarray
    dimensions: np.ndarray
    capacity_estimates: np.ndarray
    nuclear_norms: np.ndarray
    radius: float
    dimension: float
    capacity: float
    centroid_nuclear_norm: float
    mean_manifold_nuclear_norm: float

    def to_dict(self) -> dict[str, Any]:
        """Summaries and the per-manifold radii and dimensions as a JSON-ready dict."""
        return {
            "radius": self.radius,
            "dimension": self.dimension,
            "capacity": self.capacity,
            "centroid_nuclear_norm": self.centroid_nuclear_norm,
            "mean_manifold_nuclear_norm": self.mean_manifold_nuclear_norm,
            "radii": self.radii.tolist(),
            "dimensions": self.dimensions.tolist(),
        }


def _singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values of x (M, N) via the eigenvalues of its smaller Gram matrix (M is usually << N)."""
    g = x @ x.T if x.shape[0] <= x.shape[1] else x.T @ x
    return torch.sqrt(torch.linalg.eigvalsh(g).clamp_min(0)).flip(0)


def elliptical_geometry(manifolds: Any, center: bool = True) -> EllipticalGeometry:
    """Elliptical radius, dimension and capacity estimate of each manifold.

    Args:
        manifolds: (P, M, N) array or list of (M_i, N) arrays.
        center: subtract the global mean of all points first (as the mean-field analysis does), so that
            centre norms measure distances from the data's middle rather than from the origin.

    Returns:
        :class:`EllipticalGeometry`; capacity is the harmonic mean of per-manifold estimates (infinite
        for manifolds of zero radius, such as single points, where the large-D formula does not apply).

    Raises:
        ValueError: a manifold's centre coincides with the origin (the global mean when ``center``).

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import elliptical_geometry
        >>> offsets = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]])  # 2 points, +-1 along z
        >>> manifolds = np.stack([2 * np.eye(3)[0] + offsets, 2 * np.eye(3)[1] + offsets])  # (2, 2, 3)
        >>> g = elliptical_geometry(manifolds, center=False)  # centres (2, 0, 0) and (0, 2, 0)
        >>> g.radii.round(4).tolist(), g.dimensions.round(4).tolist(), round(g.capacity, 4)
        ([0.5, 0.5], [1.0, 1.0], 5.0)
        >>> round(g.centroid_nuclear_norm, 4)  # ||C||_* of the centres (2, 0, 0) and (0, 2, 0)
        4.0
    """
    ms = manifold_list(manifolds)
    origin = torch.cat(ms).mean(0) if center else torch.zeros_like(ms[0][0])
    radii, dims, caps, nucs, raw_nucs, centers = [], [], [], [], [], []
    for m in ms:
        x = m - origin
        c = x.mean(0)
        cn = torch.linalg.norm(c)
        if cn <= 1e-12 * torch.linalg.vector_norm(x, dim=1).max():
            raise ValueError(
                "a manifold's centre coincides with the origin (the global mean when center=True), so its "
                "relative radius is undefined (identical manifolds, or 2 with the same centre); drop or merge them"
            )
        s = _singular_values(x - c)
        r2 = (s / (np.sqrt(x.shape[0]) * cn)) ** 2
        tot = r2.sum()
        R = torch.sqrt(tot)
        D = tot**2 / (r2**2).sum() if tot > 0 else torch.zeros((), dtype=tot.dtype)
        radii.append(float(R))
        dims.append(float(D))
        caps.append(float((1 + R**2) / (R**2 * D)) if tot > 0 else float("inf"))
        nucs.append(float(s.sum()))
        raw_nucs.append(float(_singular_values(m).sum()))
        centers.append(m.mean(0))
    caps_a = np.array(caps)
    C = torch.stack(centers)
    return EllipticalGeometry(
        radii=np.array(radii),
        dimensions=np.array(dims),
        capacity_estimates=caps_a,
        nuclear_norms=np.array(nucs),
        radius=float(np.mean(radii)),
        dimension=float(np.mean(dims)),
        capacity=_harmonic_mean(caps_a),
        centroid_nuclear_norm=float(to_numpy(torch.linalg.svdvals(C).sum())),
        mean_manifold_nuclear_norm=float(np.mean(raw_nucs)),
    )


def _harmonic_mean(v: np.ndarray) -> float:
    """1 / mean(1 / v); infinite estimates (manifolds of zero radius, e.g. single points) count as 1/inf = 0."""
    with np.errstate(divide="ignore"):
        return float(1.0 / np.mean(1.0 / v))
