"""Objectives: exact fast nuclear norms, the MMCR loss (+ momentum form), SimCLR, Barlow Twins, VICReg.

All take embeddings z of shape (B, k, d) = (batch, views, dim), return a scalar, expose ``last_components``
(detached scalars for logging) and are distributed-correct (see ``mmcr.distributed``).
"""

from __future__ import annotations

import torch
from torch import nn

from mmcr.distributed import all_gather_with_grad, is_distributed, rank, world_size
from mmcr.objectives.baselines import BarlowTwinsLoss, SimCLRLoss, VICRegLoss
from mmcr.objectives.mmcr import MMCRLoss, effective_rank_from_singular_values
from mmcr.objectives.nuclear import NUCLEAR_NORM_METHODS, nuclear_norm, nuclear_norm_with_singular_values
from mmcr.registry import Registry, options_section
from mmcr.schema import NON_NEGATIVE, POSITIVE, option

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

OBJECTIVES = Registry("objective", "objectives")

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_DTYPE = (str | None, option(None, choices=lambda: tuple(_DTYPES),
                             doc="numerics of the loss (null: float32, or float64 for float64 z)"))
_GATHER = (bool, option(True, doc="gather embeddings across ranks (distributed-correct loss)"))
_MMCR = options_section(
    "mmcr",
    lmbda=(float, option(0.0, check=NON_NEGATIVE, doc="weight of the mean local (per-image) nuclear norm")),
    method=(str, option("auto", choices=lambda: NUCLEAR_NORM_METHODS, doc="nuclear norm algorithm")),
    dtype=_DTYPE, gather=_GATHER,
    track_local=(bool | None, option(None, doc="log the local nuclear norm (null: when lmbda > 0)")))
_SIMCLR = options_section("simclr", temperature=(float, option(0.1, check=POSITIVE, doc="softmax temperature")),
                          dtype=_DTYPE, gather=_GATHER)
OBJECTIVES.register("mmcr", MMCRLoss, options=_MMCR,
                    doc="MMCR: lmbda x mean ||Z_b||_* - ||C||_*; the momentum form with model.momentum.enabled")
OBJECTIVES.register("simclr", SimCLRLoss, options=_SIMCLR, doc="SimCLR's NT-Xent (InfoNCE) over all k views")
OBJECTIVES.register("infonce", SimCLRLoss, options=_SIMCLR, doc="another name of simclr")
OBJECTIVES.register("barlow_twins", BarlowTwinsLoss, options=options_section(
    "barlow_twins", lambda_offdiag=(float, option(0.0051, check=NON_NEGATIVE, doc="weight of the off-diagonal terms")),
    dtype=_DTYPE, gather=_GATHER), doc="Barlow Twins: cross-correlation of view pairs towards the identity")
OBJECTIVES.register("vicreg", VICRegLoss, options=options_section(
    "vicreg", sim_coeff=(float, option(25.0, check=NON_NEGATIVE, doc="weight of the invariance term")),
    std_coeff=(float, option(25.0, check=NON_NEGATIVE, doc="weight of the variance term")),
    cov_coeff=(float, option(1.0, check=NON_NEGATIVE, doc="weight of the covariance term")),
    dtype=_DTYPE, gather=_GATHER), doc="VICReg: invariance, variance and covariance terms over view pairs")


def build_objective(name: str, **kwargs) -> nn.Module:
    """Create an objective by name (:data:`OBJECTIVES`: "mmcr", "simclr"/"infonce", "barlow_twins", "vicreg")
    with its options, e.g. ``build_objective("mmcr", lmbda=0.005)``; ``dtype`` may be a name or a torch
    dtype. Each option is checked (type, range) against the objective's section; others are refused."""
    key = str(name).lower().replace("-", "_")
    if isinstance(kwargs.get("dtype"), torch.dtype):
        kwargs["dtype"] = str(kwargs["dtype"]).removeprefix("torch.")
    options = OBJECTIVES.check_options(key if key in OBJECTIVES else name, kwargs)
    if options.get("dtype") is not None:
        options["dtype"] = _DTYPES[options["dtype"]]
    return OBJECTIVES.get(key).builder(**options)
