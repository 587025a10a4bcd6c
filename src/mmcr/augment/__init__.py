"""Batched many-view augmentation on the training device (presets per recipe), and the matching
deterministic evaluation view.

``MultiViewAugment(preset, views=k)`` turns a uint8 batch (B, 3, H, W) into k independently augmented,
normalised views (B, k, 3, h, w); ``EvalTransform`` (or ``aug.eval_transform()``) gives the one
deterministic view (B, 3, h, w) that evaluation uses; ``mmcr.augment.functional`` holds the batched ops.
"""

from mmcr.augment import functional
from mmcr.augment.eval import EvalTransform
from mmcr.augment.functional import check_images
from mmcr.augment.multiview import MultiViewAugment, ViewParams, eval_transform_of, map_params
from mmcr.augment.presets import (
    AUGMENT_PRESETS,
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PRESETS,
    TRAIN_PRESETS,
)

__all__ = [
    "AUGMENT_PRESETS",
    "CIFAR_MEAN",
    "CIFAR_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PRESETS",
    "TRAIN_PRESETS",
    "EvalTransform",
    "MultiViewAugment",
    "ViewParams",
    "map_params",
    "check_images",
    "eval_transform_of",
    "functional",
]
