"""Models: backbones by name (the registry), projector heads, the encoder and its momentum (EMA) copy. Loading a
backbone from any source (run, checkpoint, torchvision, timm) is :mod:`mmcr.evaluate.sources`."""

from mmcr.models.backbones import (
    BACKBONES,
    SMALL_BACKBONES,
    TORCHVISION_BACKBONES,
    SmallResNet,
    apply_cifar_stem,
    available_backbones,
    build_backbone,
    is_backbone_name,
)
from mmcr.models.heads import Encoder, Projector, build_encoder
from mmcr.models.momentum import MomentumEncoder

__all__ = [
    "BACKBONES",
    "SMALL_BACKBONES",
    "TORCHVISION_BACKBONES",
    "Encoder",
    "MomentumEncoder",
    "Projector",
    "SmallResNet",
    "apply_cifar_stem",
    "available_backbones",
    "build_backbone",
    "build_encoder",
    "is_backbone_name",
]
