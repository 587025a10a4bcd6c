"""Batched many-view augmentation on the training device (presets per recipe).

``MultiViewAugment(preset, views=k)`` turns a uint8 batch (B, 3, H, W) into k independently augmented,
normalised views (B, k, 3, h, w); ``mmcr.augment.functional`` holds the batched ops it is built from.
"""

from mmcr.augment import functional
from mmcr.augment.multiview import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    MultiViewAugment,
    ViewParams,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "MultiViewAugment",
    "ViewParams",
    "functional",
]
