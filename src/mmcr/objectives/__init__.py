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
"""Objective classes by the name that configs and :func:`build_objective` use ("infonce" is SimCLR's)."""


def build_objective(name: str, **kwargs) -> nn.Module:
    """Create an objective by name ("mmcr", "simclr"/"infonce", "barlow_twins", "vicreg") with its keyword
    arguments, e.g. ``build_objective("mmcr", lmbda=0.005)``, so that configs can name the loss.

    Args:
        name: a key of :data:`OBJECTIVES`, case-insensitive, "-" read as "_".
        **kwargs: the objective's constructor arguments; unknown ones are rejected by name.

    Returns:
        The objective module; call it on embeddings z (B, k, d) to get a scalar loss.

    Raises:
        ValueError: unknown objective name, or an argument the objective does not accept.

    Examples:
        >>> import torch
        >>> from mmcr.objectives import OBJECTIVES, build_objective
        >>> _ = torch.manual_seed(0)
        >>> sorted(OBJECTIVES)
        ['barlow_twins', 'infonce', 'mmcr', 'simclr', 'vicreg']
        >>> build_objective("Barlow-Twins", lambda_offdiag=0.005)
        BarlowTwinsLoss()
        >>> build_objective("mmcr", lmbda=0.01)(torch.randn(4, 2, 8)).shape
        torch.Size([])
        >>> build_objective("mmcr", temperature=0.1)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: objective 'mmcr' got unknown argument(s) ['temperature']; it accepts ['lmbda', ...]
    """
    key = str(name).lower().replace("-", "_")
    if key not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}")
    cls = OBJECTIVES[key]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"objective {key!r} got unknown argument(s) {unknown}; it accepts {accepted}")
    return cls(**kwargs)
