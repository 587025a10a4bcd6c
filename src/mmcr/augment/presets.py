"""Augmentation presets, one per recipe of the paper, and the normalisation statistics (defined once).

``PRESETS`` is the registry of training augmentation presets: a run config's ``augment.preset`` must
name one of them, and ``augment.overrides`` may change any of their keys.
"""

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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

TRAIN_PRESETS = tuple(PRESETS)
