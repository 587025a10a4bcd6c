"""Augmentation presets, one per recipe of the paper, and the normalisation statistics (defined once).

``AUGMENT_PRESETS`` is the registry of training augmentation presets (one entry per ``PRESETS`` dict): a
run config's ``augment.preset`` must name one of them, and ``augment.overrides`` may change any of their
keys (the entry's options).
"""

import copy

from mmcr.registry import Registry, options_section
from mmcr.schema import option

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
"""Per-channel (R, G, B) mean of the CIFAR-10 training images in [0, 1], the CIFAR preset's normalisation."""
CIFAR_STD = (0.2470, 0.2435, 0.2616)
"""Per-channel (R, G, B) standard deviation of the CIFAR-10 training images in [0, 1]."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
"""Per-channel (R, G, B) ImageNet mean in [0, 1], the convention of torchvision and timm models."""
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel (R, G, B) ImageNet standard deviation in [0, 1]."""

_COMMON = dict(
    ratio=(3.0 / 4.0, 4.0 / 3.0),
    flip_p=0.5,
    blur_p=0.0,
    blur_sigma=(0.1, 2.0),
    solarize_p=0.0,
    color_first=False,
    # Random affine views (torchvision's RandomAffine), applied to each view after its crop; off by default.
    degrees=0.0,
    translate=None,
    affine_scale=None,
    shear=0.0,
    fill=0,
    affine_interpolation="nearest",
)

PRESETS: dict[str, dict] = {
    # The authors' CIFAR recipe: RRC 32 (0.08-1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2.
    "cifar": dict(
        _COMMON,
        size=32,
        scale=(0.08, 1.0),
        interpolation="bilinear",
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        jitter_p=0.8,
        grayscale_p=0.2,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    ),
    # The authors' STL-10 recipe: jitter p 0.8 and grayscale p 0.1 on the full image, then RRC 64
    # (0.2-1, bicubic) and flip; hence color_first. Normalised with ImageNet statistics (override
    # mean/std to use others).
    "stl10": dict(
        _COMMON,
        size=64,
        scale=(0.2, 1.0),
        interpolation="bicubic",
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        jitter_p=0.8,
        grayscale_p=0.1,
        color_first=True,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
    # BYOL's asymmetric pair: views alternate A, B, A, B, ... (blur p 1.0 / 0.1, solarize p 0 / 0.2).
    "byol": dict(
        _COMMON,
        size=224,
        scale=(0.08, 1.0),
        interpolation="bicubic",
        brightness=0.4,
        contrast=0.4,
        saturation=0.2,
        hue=0.1,
        jitter_p=0.8,
        grayscale_p=0.2,
        blur_p=(1.0, 0.1),
        solarize_p=(0.0, 0.2),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
}


# ------------------------------------------------------------------------------------------ registry
AUGMENT_PRESETS = Registry("augmentation preset", "augment_presets")
_DOCS = {
    "cifar": "the authors' CIFAR recipe: RRC 32 (0.08-1), flip, jitter p 0.8, grayscale p 0.2",
    "stl10": "the authors' STL-10 recipe: jitter p 0.8 and grayscale p 0.1 first, then RRC 64 (0.2-1, bicubic)",
    "byol": "BYOL's asymmetric pair at 224 px: views alternate blur p 1.0 / 0.1 and solarize p 0 / 0.2",
}


def _register_preset(name: str, settings: dict) -> None:
    """A preset's entry: the builder returns a copy of its settings; the options are the override keys
    with the preset's values as defaults (their values are checked by MultiViewAugment: loose)."""
    keys = {**settings, "blur_kernel_size": None}  # the kernel size follows blur_sigma unless overridden
    section = options_section(name, **{k: (object, option(copy.deepcopy(v))) for k, v in keys.items()})
    AUGMENT_PRESETS.register(name, lambda: copy.deepcopy(settings), options=section,
                             doc=_DOCS.get(name, f"the {name} augmentation preset"), loose=True)


for _name, _settings in PRESETS.items():
    _register_preset(_name, _settings)

TRAIN_PRESETS = tuple(AUGMENT_PRESETS.names())
