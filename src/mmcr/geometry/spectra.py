"""Covariance eigenspectra of representations: participation ratio, effective rank, power-law decay.

The power-law exponent follows Stringer et al. (2019): a straight-line fit of log eigenvalue against
log rank over a chosen rank range, weighted by 1/rank so that the many high ranks do not dominate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmcr.geometry._arrays import to_numpy, to_tensor


def eigenspectrum(features: Any) -> np.ndarray:
    """Descending eigenvalues of the covariance of ``features`` (n_samples, n_features), float64
    (min(n_samples, n_features) of them), the input of every spectral measure here.

    A 1-d input is taken to be a spectrum already and is returned sorted in descending order.

    Args:
        features: (n_samples >= 2, n_features) array (numpy or torch, any device), or a 1-d spectrum.

    Returns:
        (min(n_samples, n_features),) float64 eigenvalues, descending (covariance with n_samples - 1).

    Raises:
        ValueError: features is neither 1-d nor (n_samples >= 2, n_features).

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import eigenspectrum
        >>> x = np.random.default_rng(0).standard_normal((50, 4)) * [4.0, 2.0, 1.0, 0.5]
        >>> lam = eigenspectrum(x)
        >>> lam.shape, lam.dtype, bool(np.all(np.diff(lam) <= 0))
        ((4,), dtype('float64'), True)
        >>> eigenspectrum([1.0, 3.0, 2.0]).tolist()
        [3.0, 2.0, 1.0]
    """
    x = to_tensor(features)
    if x.ndim == 1:
        return np.sort(to_numpy(x))[::-1].copy()
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (n_samples >= 2, n_features), got shape {tuple(x.shape)}")
    x = x - x.mean(0, keepdim=True)
    # Eigenvalues of the smaller Gram matrix (float64): much faster than an SVD of a wide matrix, and
    # accurate down to ~1e-16 of the top eigenvalue, far below any fitted range.
    gram = x @ x.T if x.shape[0] < x.shape[1] else x.T @ x
    lam = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)
    return to_numpy(lam / (x.shape[0] - 1))


def participation_ratio(features: Any) -> float:
    """(sum lambda)^2 / sum lambda^2 of the covariance eigenvalues: the number of dimensions in use.

    Args:
        features: (n_samples, n_features) array, or a 1-d spectrum (see :func:`eigenspectrum`).

    Returns:
        The participation ratio, between 1 and the number of eigenvalues.

    Raises:
        ValueError: the features have zero variance.

    Examples:
        >>> from mmcr.geometry import participation_ratio
        >>> participation_ratio([1.0, 1.0, 1.0, 1.0])  # four equal directions
        4.0
        >>> round(participation_ratio([2.0, 1.0, 1.0]), 4)  # 4^2 / 6
        2.6667
    """
    lam = eigenspectrum(features)
    denom = float(np.sum(lam**2))
    if denom == 0:
        raise ValueError("features have zero variance; the participation ratio is undefined")
    return float(np.sum(lam) ** 2 / denom)


def effective_rank(features: Any) -> float:
    """Roy & Vetterli's effective rank of centred features: exp of the entropy of their normalised singular
    values (the objectives log the same quantity for the uncentred centroid matrix, from singular values they
    already have: ``mmcr.objectives.effective_rank_from_singular_values``).

    Args:
        features: (n_samples, n_features) array, or a 1-d spectrum of covariance eigenvalues.

    Returns:
        The effective rank, between 1 and the number of eigenvalues.

    Raises:
        ValueError: the features have zero variance.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import effective_rank
        >>> round(effective_rank([1.0, 1.0, 1.0, 1.0]), 4)
        4.0
        >>> x = np.random.default_rng(0).standard_normal((1000, 3))  # isotropic in 3 dimensions
        >>> 2.9 < effective_rank(x) <= 3.0
        True
    """
    lam = eigenspectrum(features)
    s = np.sqrt(np.clip(lam, 0, None))
    if s.sum() == 0:
        raise ValueError("features have zero variance; the effective rank is undefined")
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass
class PowerLawFit:
    """Result of :func:`power_law_exponent`: the fitted decay and what is needed to plot it.

    Attributes:
        alpha: decay exponent (lambda_n ~ n^-alpha).
        intercept: b of the fit log lambda_n = b - alpha log n.
        r2: weighted R^2 of the log-log fit.
        fit_range: the 1-based inclusive rank range used (after clipping).
        spectrum: (n,) the descending eigenvalues.
        fitted: (n,) the fitted power law at every rank.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import power_law_exponent
        >>> fit = power_law_exponent(np.arange(1, 51) ** -2.0, fit_range=(1, 50))
        >>> sorted(fit.to_dict()), fit.fitted.shape
        (['alpha', 'fit_range', 'intercept', 'r2'], (50,))
    """

    alpha: float
    intercept: float
    r2: float
    fit_range: tuple[int, int]
    spectrum: np.ndarray
    fitted: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        """The scalar fields as a JSON-ready dict (the arrays left out)."""
        return {"alpha": self.alpha, "intercept": self.intercept, "r2": self.r2, "fit_range": list(self.fit_range)}


def power_law_exponent(features: Any, fit_range: tuple[int, int] = (11, 500)) -> PowerLawFit:
    """Fit lambda_n = exp(b) n^-alpha over ranks ``fit_range`` (1-based, inclusive; clipped to the
    available positive eigenvalues) by least squares in log-log space with weights 1/n.

    Args:
        features: (n_samples, n_features) array, or a 1-d spectrum.
        fit_range: (first, last) rank of the fit; the default skips the first 10 as Stringer et al. do.

    Returns:
        :class:`PowerLawFit` with alpha, intercept, r2 and the spectrum with its fit.

    Raises:
        ValueError: fit_range is not 1 <= first <= last, or fewer than 3 positive eigenvalues fall in it.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import power_law_exponent
        >>> fit = power_law_exponent(np.arange(1, 101) ** -1.5, fit_range=(1, 100))  # an exact power law
        >>> round(fit.alpha, 4), round(fit.r2, 4), fit.fit_range
        (1.5, 1.0, (1, 100))
    """
    lam = eigenspectrum(features)
    lo, hi = int(fit_range[0]), int(fit_range[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"fit_range must be (first, last) ranks with 1 <= first <= last, got {fit_range}")
    n_pos = int(np.sum(lam > lam[0] * 1e-12)) if lam.size and lam[0] > 0 else 0
    hi = min(hi, n_pos)
    if hi - lo + 1 < 3:
        raise ValueError(
            f"only {n_pos} positive eigenvalues; the fit range {fit_range} leaves fewer than 3 points. "
            "Use more samples/features or a lower fit_range"
        )
    ranks = np.arange(lo, hi + 1, dtype=np.float64)
    y = np.log(lam[lo - 1 : hi])
    X = np.stack([-np.log(ranks), np.ones_like(ranks)], 1)
    w = 1.0 / ranks
    coef = np.linalg.solve(X.T @ (X * w[:, None]), X.T @ (w * y))
    pred = X @ coef
    ybar = np.sum(w * y) / np.sum(w)
    ss_tot = np.sum(w * (y - ybar) ** 2)
    r2 = 1.0 - np.sum(w * (y - pred) ** 2) / ss_tot if ss_tot > 0 else 1.0
    all_ranks = np.arange(1, lam.size + 1, dtype=np.float64)
    fitted = np.exp(coef[1] - coef[0] * np.log(all_ranks))
    return PowerLawFit(float(coef[0]), float(coef[1]), float(r2), (lo, hi), lam, fitted)
