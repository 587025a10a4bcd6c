"""Objectives: exact fast nuclear norms, the MMCR loss (+ momentum form), SimCLR, Barlow Twins, VICReg.

All take embeddings z of shape (B, k, d) = (batch, views, dim), return a scalar, expose ``last_components``
(detached scalars for logging) and are distributed-correct (see ``mmcr.distributed``).
"""

from __future__ import annotations

import inspect

from torch import nn

from mmcr.distributed import all_gather_with_grad, is_distributed, rank, world_size
from mmcr.objectives.baselines import BarlowTwinsLoss, SimCLRLoss, VICRegLoss
from mmcr.objectives.mmcr import MMCRLoss, effective_rank_from_singular_values
from mmcr.objectives.nuclear import nuclear_norm, nuclear_norm_with_singular_values

__all__ = [
    "OBJECTIVES",
    "BarlowTwinsLoss",
    "MMCRLoss",
    "SimCLRLoss",
    "VICRegLoss",
    "all_gather_with_grad",
    "build_objective",
    "effective_rank_from_singular_values",
    "is_distributed",
    "nuclear_norm",
    "nuclear_norm_with_singular_values",
    "rank",
    "world_size",
]

OBJECTIVES: dict[str, type[nn.Module]] = {
    "mmcr": MMCRLoss,
    "simclr": SimCLRLoss,
    "infonce": SimCLRLoss,
    "barlow_twins": BarlowTwinsLoss,
    "vicreg": VICRegLoss,
}


def build_objective(name: str, **kwargs) -> nn.Module:
    """Create an objective by name ("mmcr", "simclr"/"infonce", "barlow_twins", "vicreg") with its keyword
    arguments, e.g. ``build_objective("mmcr", lmbda=0.005)``."""
    key = str(name).lower().replace("-", "_")
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"objective {key!r} got unknown argument(s) {unknown}; it accepts {accepted}")
    return cls(**kwargs)
