"""Models: backbones by name (the registry), projector heads, the encoder and its momentum (EMA) copy,
and loading a backbone from any source (run, checkpoint, torchvision, timm, random init)."""

from mmcr.models.backbones import (
    BACKBONES,
    SMALL_BACKBONES,
    SmallResNet,
    apply_cifar_stem,
    available_backbones,
    build_backbone,
    is_backbone_name,
)
from mmcr.models.heads import Encoder, Projector
from mmcr.models.loading import SOURCE_HELP, ModelSource, build_encoder, load_pretrained
from mmcr.models.momentum import MomentumEncoder

__all__ = [
    "BACKBONES",
    "SMALL_BACKBONES",
    "SOURCE_HELP",
    "Encoder",
    "ModelSource",
    "MomentumEncoder",
    "Projector",
    "SmallResNet",
    "apply_cifar_stem",
    "available_backbones",
    "build_backbone",
    "build_encoder",
    "is_backbone_name",
    "load_pretrained",
]
