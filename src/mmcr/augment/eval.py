"""The deterministic view used for evaluation: the counterpart of a training augmentation.

uint8 (B, 3, H, W) -> float32 (B, 3, h, w): optional resize of the short side, centre crop,
scaling to [0, 1] and the training run's normalisation. Images smaller than the crop are first
resized up to it (the training crops were resized to that size too), so a run's evaluation never
fails on its own images. Build it from a run (:func:`mmcr.augment.multiview.eval_transform_of`) or from the
training augmentation (:meth:`mmcr.augment.MultiViewAugment.eval_transform`) so that evaluation
sees the same size and statistics as training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision.transforms.v2.functional as TF

from mmcr.augment.functional import check_images
from mmcr.augment.presets import IMAGENET_MEAN, IMAGENET_STD

_MODES = {"bilinear": TF.InterpolationMode.BILINEAR, "bicubic": TF.InterpolationMode.BICUBIC}


def _size(value, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return (value, value)
    if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")


class EvalTransform:
    """Resize (optional) + centre crop (optional) + normalise; ImageNet statistics by default (the
    convention of torchvision/timm models); runs carry
    their own through :func:`~mmcr.augment.multiview.eval_transform_of`.

    Call it on uint8 images (B, 3, H, W) to get float32 (B, 3, h, w), on the images' device.

    Args:
        size: centre-crop size, an int or (height, width); None keeps the (resized) size.
        resize: resize the short side to this many pixels first; None keeps it.
        mean: 3 per-channel means of images in [0, 1].
        std: 3 per-channel standard deviations (> 0).
        interpolation: "bilinear" or "bicubic" (antialiased).

    Raises:
        ValueError: a bad size, resize, interpolation or statistics; on call, images that are not uint8
            (B, 3, H, W).

    Examples:
        >>> import torch
        >>> from mmcr.augment import CIFAR_MEAN, CIFAR_STD, EvalTransform
        >>> view = EvalTransform(size=24, resize=28, mean=CIFAR_MEAN, std=CIFAR_STD)
        >>> out = view(torch.full((2, 3, 32, 40), 128, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([2, 3, 24, 24]), torch.float32)
        >>> expected = (128 / 255 - torch.tensor(CIFAR_MEAN)) / torch.tensor(CIFAR_STD)  # a flat image
        >>> torch.allclose(out[0, :, 0, 0], expected, atol=1e-5)
        True
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        resize: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ):
        self.size = _size(size, "size")
        if resize is not None and (not isinstance(resize, int) or isinstance(resize, bool) or resize < 1):
            raise ValueError(f"resize must be a positive integer, got {resize!r}")
        self.resize = resize
        if interpolation not in _MODES:
            raise ValueError(f"interpolation must be one of {sorted(_MODES)}, got {interpolation!r}")
        self.interpolation = interpolation
        mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not all(map(math.isfinite, mean + std)):
            raise ValueError(f"mean and std need 3 finite values each with std > 0, got mean={mean} std={std}")
        self.mean, self.std = mean, std

    @property
    def config(self) -> dict:
        """The settings as a JSON-ready dict (size, resize, mean, std, interpolation)."""
        return {"size": None if self.size is None else list(self.size), "resize": self.resize,
                "mean": list(self.mean), "std": list(self.std), "interpolation": self.interpolation}

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size}, resize={self.resize}, mean={self.mean}, std={self.std})"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float32 (B, 3, h, w)."""
        x = check_images(images).to(torch.float32).mul_(1.0 / 255.0)
        mode = _MODES[self.interpolation]
        if self.resize is not None:
            x = TF.resize(x, [self.resize], interpolation=mode, antialias=True)
        if self.size is not None:
            short = min(x.shape[-2:])
            need = max(self.size)
            if short < need:  # smaller than the crop: resize up first, as the training crops were
                x = TF.resize(x, [need], interpolation=mode, antialias=True)
            x = TF.center_crop(x, list(self.size))
        x = x.clamp_(0.0, 1.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std
