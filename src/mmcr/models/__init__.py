"""Models: backbones by name, projector heads, the encoder and its momentum (EMA) copy."""

from mmcr.models.backbones import SmallResNet, available_backbones, build_backbone
from mmcr.models.heads import Encoder, Projector
from mmcr.models.loading import CHECKPOINT_FORMAT, build_encoder, load_pretrained, newest_checkpoint
from mmcr.models.momentum import MomentumEncoder

__all__ = [
    "CHECKPOINT_FORMAT",
    "build_encoder",
    "load_pretrained",
    "newest_checkpoint",
    "Encoder",
    "MomentumEncoder",
    "Projector",
    "SmallResNet",
    "available_backbones",
    "build_backbone",
]
