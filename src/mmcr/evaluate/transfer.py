"""Transfer linear probes on other datasets, read by torchvision from local roots (never downloaded).

Standard splits (Kornblith et al. 2019's protocol): datasets with an official validation split
(Flowers-102, DTD partition 1) select the regularisation on it and refit on train + val; the others
(Food-101, CIFAR-100, STL-10) carve a validation split from train. All report once on test.
Expected layouts under ``root``: ``flowers-102/`` (jpg/, imagelabels.mat, setid.mat), ``dtd/dtd/``
(images/, labels/), ``food-101/`` (images/, meta/), ``cifar-100-python/``, ``stl10_binary/`` -- what
torchvision's ``download=True`` leaves behind.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import datasets as tvd
from torchvision import transforms as T

from mmcr.evaluate.features import eval_transform_for, extract_features
from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS, linear_probe


@dataclass(frozen=True)
class TransferSpec:
    cls: type
    num_classes: int
    native_size: int | None  # fixed image size of the dataset, None when sizes vary
    has_val: bool

    def make(self, root: str | Path, split: str, transform) -> Any:
        if self.cls in (tvd.CIFAR100,):
            return self.cls(str(root), train=(split == "train"), transform=transform, download=False)
        if self.cls is tvd.DTD:
            return self.cls(str(root), split=split, partition=1, transform=transform, download=False)
        return self.cls(str(root), split=split, transform=transform, download=False)


TRANSFER_DATASETS: dict[str, TransferSpec] = {
    "flowers102": TransferSpec(tvd.Flowers102, 102, None, True),
    "dtd": TransferSpec(tvd.DTD, 47, None, True),
    "food101": TransferSpec(tvd.Food101, 101, None, False),
    "cifar100": TransferSpec(tvd.CIFAR100, 100, 32, False),
    "stl10": TransferSpec(tvd.STL10, 10, 96, False),
}


def default_transfer_size(name: str, cifar_stem: bool) -> int:
    """224 px for ImageNet-stem models; for CIFAR-stem models the native size, or 64 px for the
    variable-size datasets (the authors' STL-10 crop size)."""
    if not cifar_stem:
        return 224
    return TRANSFER_DATASETS[name].native_size or 64


def transfer_dataset(name: str, root: str | Path, split: str, size: int):
    """A torchvision dataset whose items are uint8 tensors (3, size, size) (shorter side resized to
    ``size``, then centre-cropped) and integer labels."""
    if name not in TRANSFER_DATASETS:
        raise ValueError(f"unknown transfer dataset {name!r}; choose one of {', '.join(TRANSFER_DATASETS)}")
    spec = TRANSFER_DATASETS[name]
    tf = T.Compose([T.Resize(size, antialias=True), T.CenterCrop(size), T.PILToTensor()])
    try:
        return spec.make(root, split, tf)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise ValueError(
            f"{name} ({split}) not found under {root}: {e}. Place the dataset there (torchvision's layout); "
            "evaluation never downloads."
        ) from e


def transfer_probe(
    backbone: nn.Module,
    name: str,
    root: str | Path,
    model_src=None,
    size: int | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    weight_decays=DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict:
    """Extract features of every split once and run :func:`mmcr.evaluate.linear.linear_probe`."""
    t0 = time.perf_counter()
    size = size or default_transfer_size(name, bool(model_src is not None and model_src.cifar_stem))
    spec = TRANSFER_DATASETS.get(name)
    if spec is None:
        raise ValueError(f"unknown transfer dataset {name!r}; choose one of {', '.join(TRANSFER_DATASETS)}")
    tf = eval_transform_for(model_src, crop=False)  # images arrive at their final size; this normalises
    splits = ["train", "val", "test"] if spec.has_val else ["train", "test"]
    feats = {}
    for split in splits:
        ds = transfer_dataset(name, root, split, size)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        feats[split] = extract_features(
            backbone, loader, transform=tf, device=device, progress=progress, description=f"{name} {split}"
        )
    kw = {}
    if spec.has_val:
        kw = {"val_feats": feats["val"][0], "val_labels": feats["val"][1]}
    res = linear_probe(
        feats["train"][0],
        feats["train"][1],
        feats["test"][0],
        feats["test"][1],
        weight_decays=weight_decays,
        val_fraction=val_fraction,
        seed=seed,
        num_classes=spec.num_classes,
        device=device,
        progress=progress,
        **kw,
    )
    res.update({"dataset": name, "size": size, "seconds": time.perf_counter() - t0})
    return res
