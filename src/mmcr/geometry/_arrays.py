"""Input handling shared by the geometry functions: numpy or torch in, float64 torch on the input's device."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmcr.schema import check_seed


def to_tensor(x: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """Any array-like as a float64 tensor (numpy -> CPU; torch keeps its device unless ``device`` is given)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to(torch.float64)
    else:
        t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    return t.to(device) if device is not None else t


def as_manifolds(manifolds: Any) -> list[torch.Tensor] | torch.Tensor:
    """Return a (P, M, N) float64 tensor, or a list of (M_i, N) tensors when the sizes differ.

    Raises ValueError for anything that is not P >= 2 manifolds of >= 1 points in a common feature space.
    """
    if isinstance(manifolds, (np.ndarray, torch.Tensor)):
        t = to_tensor(manifolds)
        if t.ndim != 3:
            raise ValueError(
                f"manifolds must have shape (P, M, N) = manifolds x points x features, got {tuple(t.shape)}; "
                "pass a list of (M_i, N) arrays for manifolds of different sizes"
            )
        if t.shape[0] < 2 or t.shape[1] < 1 or t.shape[2] < 1:
            raise ValueError(f"need at least 2 manifolds with points and features, got shape {tuple(t.shape)}")
        _check_finite(t)
        return t
    if not isinstance(manifolds, Sequence) or len(manifolds) < 2:
        raise ValueError("manifolds must be a (P, M, N) array or a list of at least 2 arrays of shape (M_i, N)")
    items = [to_tensor(m) for m in manifolds]
    device = items[0].device
    for i, m in enumerate(items):
        if m.ndim != 2 or m.shape[0] < 1:
            raise ValueError(f"manifold {i} must be a 2-d (points x features) array, got shape {tuple(m.shape)}")
        if m.shape[1] != items[0].shape[1]:
            raise ValueError(
                f"manifold {i} has {m.shape[1]} features but manifold 0 has {items[0].shape[1]}; "
                "all manifolds must live in the same feature space"
            )
        _check_finite(m)
    items = [m.to(device) for m in items]
    if len({m.shape[0] for m in items}) == 1:
        return torch.stack(items)
    return items


def _check_finite(t: torch.Tensor) -> None:
    # A finite sum proves every entry finite (one cheap pass); only a non-finite sum needs the full check.
    if bool(torch.isfinite(t.sum())):
        return
    if not bool(torch.isfinite(t).all()):
        raise ValueError("manifolds contain NaN or inf values; remove or impute them before the analysis")


def manifold_list(manifolds: Any) -> list[torch.Tensor]:
    """The manifolds as a list of (M_i, N) float64 tensors."""
    m = as_manifolds(manifolds)
    return list(m.unbind(0)) if isinstance(m, torch.Tensor) else m


def to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def checked_seed(seed: int | None) -> int | None:
    """``seed`` under the one rule of mmcr's seeds (an integer in [0, 2**32 - 1]); None stays None (fresh entropy)."""
    return None if seed is None else check_seed(seed)


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A torch generator on ``device``; seeded when ``seed`` is given, otherwise from fresh entropy."""
    g = torch.Generator(device=device)
    seed = checked_seed(seed)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g
