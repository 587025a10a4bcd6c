"""mmcr: Maximum Manifold Capacity Representations (Yerxa et al., NeurIPS 2023).

Library pieces stand alone: take the objectives, the augmentation or the geometry into your own
code without the trainer:

    from mmcr import MMCRLoss, MultiViewAugment
    loss = MMCRLoss()(z)            # z: (batch, views, dim)

Installed as the distribution ``mmcr-toolkit`` (``pip install mmcr-toolkit``); importing warns in one line
when PyPI's unrelated ``mmcr`` package shares this folder (see :mod:`mmcr.distribution`).
"""

__version__ = "0.1.0"

from mmcr.augment import MultiViewAugment
from mmcr.distribution import warn_if_foreign_mmcr
from mmcr.objectives import (
    BarlowTwinsLoss,
    MMCRLoss,
    SimCLRLoss,
    VICRegLoss,
    build_objective,
    nuclear_norm,
)

__all__ = [
    "BarlowTwinsLoss",
    "MMCRLoss",
    "MultiViewAugment",
    "SimCLRLoss",
    "VICRegLoss",
    "__version__",
    "build_objective",
    "nuclear_norm",
]

warn_if_foreign_mmcr()
