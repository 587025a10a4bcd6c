"""Frozen-backbone feature extraction: uint8 images in, float32 features out, in batches on the device.

Every evaluation (kNN, linear probe, transfer) goes through here so that the same preprocessing is used
for the training and the test split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ResizeNormalize(nn.Module):
    """Deterministic eval preprocessing of a uint8 batch (B, 3, H, W): optional resize of the shorter
    side, optional centre crop, scaling to [0, 1] and per-channel normalisation.

    Used when :mod:`mmcr.augment` is unavailable; it matches the usual resize + centre-crop protocol.
    """

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        resize: int | None = None,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ):
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 entries each with std > 0, got mean={mean}, std={std}")
        self.size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        self.resize = resize
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        x = images.float().div_(255.0)
        if self.resize is not None:
            x = TF.resize(x, [self.resize], antialias=True).clamp_(0.0, 1.0)
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            if x.shape[-2] < self.size[0] or x.shape[-1] < self.size[1]:
                raise ValueError(
                    f"eval crop {self.size} is larger than the images {tuple(x.shape[-2:])}; pass a resize "
                    "(--resize) at least as large as the crop"
                )
            x = TF.center_crop(x, list(self.size))
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def eval_settings(
    info: dict[str, Any] | None = None,
    size: int | None = None,
    resize: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> dict[str, Any]:
    """``{size, resize, mean, std}`` for evaluating the model described by ``info`` (from
    ``load_pretrained``): the arguments when given, else those of the run's training augmentation (as
    the trainer's own kNN monitor does), else the images' own size and ImageNet statistics."""
    aug_cfg = ((info or {}).get("config") or {}).get("augment") or {}
    over = dict(aug_cfg.get("overrides") or {})
    d_size, d_mean, d_std = over.get("size"), over.get("mean", IMAGENET_MEAN), over.get("std", IMAGENET_STD)
    if aug_cfg.get("preset"):
        try:
            from mmcr.augment import MultiViewAugment
        except ImportError:
            pass
        else:
            train_aug = MultiViewAugment(preset=aug_cfg["preset"], views=1, **over)
            d_size, d_mean, d_std = train_aug.size, train_aug.mean, train_aug.std
    size = size if size is not None else d_size
    if isinstance(size, (tuple, list)):
        size = int(size[0]) if len(set(size)) == 1 else tuple(int(v) for v in size)
    return {
        "size": size,
        "resize": resize,
        "mean": tuple(float(m) for m in (mean if mean is not None else d_mean)),
        "std": tuple(float(s) for s in (std if std is not None else d_std)),
    }


def eval_transform(
    info: dict[str, Any] | None = None,
    size: int | None = None,
    resize: int | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The deterministic eval preprocessing (uint8 batch -> normalised float batch) of
    :func:`eval_settings`: the eval preset of :class:`mmcr.augment.MultiViewAugment` when that module is
    installed, so evaluation matches training exactly, otherwise the equivalent :class:`ResizeNormalize`."""
    kw = eval_settings(info, size, resize, mean, std)
    try:
        from mmcr.augment import MultiViewAugment
    except ImportError:
        return ResizeNormalize(**kw)
    aug = MultiViewAugment(preset="eval", views=1, **{k: v for k, v in kw.items() if v is not None})

    def _apply(images: torch.Tensor) -> torch.Tensor:
        return aug(images)[:, 0]

    return _apply


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True):
    """A rich progress bar; yields ``advance(n)``. Disabled bars cost nothing."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)


def _batches(images: torch.Tensor | Iterable, labels: torch.Tensor | None, batch_size: int):
    if isinstance(images, torch.Tensor):
        for i in range(0, images.shape[0], batch_size):
            yield images[i : i + batch_size], None if labels is None else labels[i : i + batch_size]
    else:
        for batch in images:
            if isinstance(batch, (tuple, list)):
                yield batch[0], batch[1]
            else:
                yield batch, None


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    labels: torch.Tensor | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: bool = False,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of ``model`` (in eval mode) for every image.

    ``images`` is a uint8 tensor (N, 3, H, W) or an iterable of batches (uint8 tensors or
    ``(images, labels)`` pairs, e.g. a DataLoader). ``transform`` maps a uint8 batch on the device to a
    float batch (default: :func:`eval_transform` with no resize). Returns ``(features float32 (N, D) on
    CPU, labels int64 (N,) or None)``. Random transforms give one augmented pass per call.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    transform = transform if transform is not None else eval_transform()
    was_training = model.training
    model.eval().to(dev)
    total = images.shape[0] if isinstance(images, torch.Tensor) else (len(images) if hasattr(images, "__len__") else 0)
    feats, labs = [], []
    try:
        with progress_bar(total, description, enabled=progress and total > 0) as advance:
            for x, y in _batches(images, labels, batch_size):
                x = x.to(dev, non_blocking=True)
                f = model(transform(x))
                if f.ndim != 2:
                    f = torch.flatten(f, 1)
                feats.append(f.float().cpu())
                if y is not None:
                    labs.append(torch.as_tensor(y, dtype=torch.int64).cpu())
                advance(x.shape[0] if isinstance(images, torch.Tensor) else 1)
    finally:
        model.train(was_training)
    if not feats:
        raise ValueError("no images to extract features from (empty dataset)")
    out_labels = torch.cat(labs) if labs else None
    return torch.cat(feats), out_labels
