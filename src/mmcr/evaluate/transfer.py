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
"""The transfer data sets by name: torchvision class, number of classes, native image size (None when sizes
vary) and whether an official validation split exists."""


def default_transfer_size(name: str, cifar_stem: bool) -> int:
    """224 px for ImageNet-stem models; for CIFAR-stem models the native size, or 64 px for the
    variable-size datasets (the authors' STL-10 crop size)."""
    if not cifar_stem:
        return 224
    return TRANSFER_DATASETS[name].native_size or 64


def transfer_dataset(name: str, root: str | Path, split: str, size: int):
    """A torchvision dataset whose items are uint8 tensors (3, size, size) (shorter side resized to
    ``size``, then centre-cropped) and integer labels, read from ``root`` and never downloaded.

    Args:
        name: a key of :data:`TRANSFER_DATASETS`.
        root: the folder holding the data set in torchvision's layout (see the module docstring).
        split: "train", "val" (Flowers-102, DTD) or "test".
        size: output image size in pixels.

    Returns:
        The torchvision dataset; item i is ``(uint8 (3, size, size), int label)``.

    Raises:
        ValueError: unknown name, or the data set is not under root.

    Examples:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> from mmcr.evaluate import TRANSFER_DATASETS, transfer_dataset
        >>> sorted(TRANSFER_DATASETS)
        ['cifar100', 'dtd', 'flowers102', 'food101', 'stl10']
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dtd = pathlib.Path(tmp.name) / "dtd" / "dtd"  # a one-image DTD in torchvision's layout
        >>> (dtd / "images" / "banded").mkdir(parents=True)
        >>> (dtd / "labels").mkdir()
        >>> Image.new("RGB", (40, 30), (200, 10, 10)).save(dtd / "images" / "banded" / "a.png")
        >>> _ = (dtd / "labels" / "test1.txt").write_text("banded/a.png\\n")
        >>> image, label = transfer_dataset("dtd", tmp.name, "test", size=16)[0]
        >>> image.shape, image.dtype, label
        (torch.Size([3, 16, 16]), torch.uint8, 0)
        >>> tmp.cleanup()
    """
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
    """Extract features of every split once and run :func:`mmcr.evaluate.linear.linear_probe`.

    The regularisation is chosen on the official validation split where the data set has one (then the
    refit uses train + val), else on a split carved from train; test is used once, for the report.

    Args:
        backbone: maps float (B, 3, size, size) images to (B, D) features.
        name: a key of :data:`TRANSFER_DATASETS`.
        root: the folder holding the data set (never downloaded).
        model_src: the backbone's :class:`~mmcr.models.ModelSource` (its stem and normalisation), or None.
        size: image size (default: 224, or the native/64 px size for CIFAR-stem models).
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding the images.
        weight_decays: candidate L2 penalties of the probe.
        val_fraction: share of train carved out for validation where there is no official split.
        seed: seeds the carved split.
        device: where the backbone and probe run.
        progress: show progress bars.

    Returns:
        The :func:`~mmcr.evaluate.linear.linear_probe` result plus ``dataset``, ``size`` and ``seconds``.

    Raises:
        ValueError: unknown name, or a split is not under root.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import transfer_probe
        >>> transfer_probe(torch.nn.Flatten(), "dtd", "/no/such/folder", size=8)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: dtd (train) not found under /no/such/folder: ... evaluation never downloads.

        A run on a (tiny, made-up) DTD folder is the example of :func:`~mmcr.evaluate.run_transfer`.
    """
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
