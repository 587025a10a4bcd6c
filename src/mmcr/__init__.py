"""mmcr: Maximum Manifold Capacity Representations (Yerxa et al., NeurIPS 2023).

Library pieces stand alone: take the objectives, the augmentation or the geometry into your own
code without the trainer:

    from mmcr import MMCRLoss, MultiViewAugment
    loss = MMCRLoss()(z)            # z: (batch, views, dim)

Installed as the distribution ``mmcr-toolkit`` (``pip install mmcr-toolkit``); importing warns in one line
when PyPI's unrelated ``mmcr`` package shares this folder (see :mod:`mmcr.distribution`).

Examples:
    >>> import torch
    >>> import mmcr
    >>> _ = torch.manual_seed(0)
    >>> images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    >>> views = mmcr.MultiViewAugment("cifar", views=4)(images)  # (batch, views, 3, 32, 32)
    >>> z = views.flatten(2)[..., :64]  # stand-in embeddings (batch, views, dim)
    >>> mmcr.MMCRLoss()(z).shape
    torch.Size([])
    >>> len(mmcr.__version__.split(".")) >= 2
    True
"""

__version__ = "0.1.0"  # the package version (PEP 440); packaging reads it from here

# The registries a run config chooses from load with the package (as timm's models do), so every name is
# known wherever a config is checked; their modules sit above the config, which reads them by name.
import mmcr.data.registry  # noqa: F401
import mmcr.models.backbones  # noqa: F401
import mmcr.models.momentum  # noqa: F401
import mmcr.train.optim  # noqa: F401
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
