"""Models: backbones by name, projector heads, the encoder and its momentum (EMA) copy."""

from mmcr.models.backbones import SmallResNet, available_backbones, build_backbone
from mmcr.models.heads import Encoder, Projector
from mmcr.models.momentum import MomentumEncoder

__all__ = [
    "Encoder",
    "MomentumEncoder",
    "Projector",
    "SmallResNet",
    "available_backbones",
    "build_backbone",
]
