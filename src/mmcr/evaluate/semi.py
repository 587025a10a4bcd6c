"""Semi-supervised evaluation: fine-tune the whole network (backbone + a new linear head) on a small
labelled subset (1 % or 10 % of the training labels) and report once on the test split.

Subsets are class-balanced draws from a seed, or read from a file (ImageNet's standard ``1percent.txt``
/ ``10percent.txt`` lists of file names, or one index per line). Hyperparameters are fixed in advance
(as in SimCLR's protocol); nothing is selected on the test split.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from mmcr.augment import IMAGENET_MEAN, IMAGENET_STD
from mmcr.distributed import resolve_device
from mmcr.evaluate.features import progress_bar
from mmcr.evaluate.knn import topk_accuracy


def class_balanced_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``round(fraction * n_c)`` (at least 1) random images of each class ``c``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        n = max(1, int(round(fraction * idx.numel())))
        picked.append(idx[torch.randperm(idx.numel(), generator=g)[:n]])
    return torch.sort(torch.cat(picked)).values


def read_subset_file(path: str | Path, names: Sequence[str] | None = None) -> torch.Tensor:
    """Indices listed in ``path``: one integer index per line, or one file name per line (ImageNet's
    subset lists) matched against ``names`` (the dataset's file names; directories are ignored)."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"subset file {path} is empty")
    if all(ln.isdigit() for ln in lines):
        return torch.tensor(sorted(int(ln) for ln in lines), dtype=torch.int64)
    if names is None:
        raise ValueError(
            f"subset file {path} lists file names but the dataset exposes none; use a file of integer indices"
        )
    where = {Path(n).name: i for i, n in enumerate(names)}
    missing = [ln for ln in lines if Path(ln).name not in where]
    if missing:
        raise ValueError(f"{len(missing)} names of {path} are not in the dataset (first: {missing[0]!r})")
    return torch.tensor(sorted(where[Path(ln).name] for ln in lines), dtype=torch.int64)


class FinetuneAugment(nn.Module):
    """The usual supervised fine-tuning augmentation, batched: random crop after reflect-padding by
    size/8, horizontal flip, normalisation (after resizing to ``size`` when given, as eval does).
    Lighter than the SSL views on purpose: labels are scarce here, not invariances."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, pad_fraction: float = 0.125, size=None):
        super().__init__()
        self.pad_fraction = pad_fraction
        self.size = None if size is None else ((size, size) if isinstance(size, int) else tuple(size))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.size is not None and tuple(images.shape[-2:]) != self.size:
            images = TF.center_crop(TF.resize(images, [min(self.size)], antialias=True), list(self.size))
        B, _, H, W = images.shape
        dev = images.device
        p = max(1, int(round(self.pad_fraction * min(H, W))))
        x = F.pad(images.float(), (p, p, p, p), mode="reflect")
        oy = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(dev)
        ox = torch.randint(0, 2 * p + 1, (B,), generator=generator).to(dev)
        rows = (oy[:, None] + torch.arange(H, device=dev))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(W, device=dev))[:, None, None, :]
        x = x[
            torch.arange(B, device=dev)[:, None, None, None],
            torch.arange(3, device=dev)[None, :, None, None],
            rows,
            cols,
        ]
        flip = (torch.rand(B, generator=generator) < 0.5).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return (x / 255.0 - self.mean.to(dev)) / self.std.to(dev)


def finetune(
    backbone: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int | None = None,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 0.01,
    head_lr: float = 0.1,
    weight_decay: float = 0.0,
    train_transform: Callable | None = None,
    eval_transform: Callable | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict:
    """Fine-tune ``backbone`` (modified in place) with a new linear head by SGD (momentum 0.9, Nesterov)
    and a cosine schedule over ``epochs``; ``lr`` for the backbone, ``head_lr`` for the head.

    Images are uint8 (N, 3, H, W). ``train_transform(images, generator)`` defaults to
    :class:`FinetuneAugment`, ``eval_transform(images)`` to :class:`mmcr.augment.EvalTransform`'s default.
    Returns test top-1/top-5 (percent), the
    final training loss and sizes.
    """
    from mmcr.augment import EvalTransform

    if train_images.shape[0] != train_labels.shape[0] or train_images.shape[0] == 0:
        raise ValueError(f"need a non-empty labelled set, got {train_images.shape[0]} images")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    C = int(num_classes) if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    train_transform = train_transform if train_transform is not None else FinetuneAugment().to(dev)
    eval_tf = eval_transform if eval_transform is not None else EvalTransform()
    with torch.no_grad():
        was = backbone.training
        dim = backbone.eval()(eval_tf(train_images[:2])).shape[1]
        backbone.train(was)
    head = nn.Linear(dim, C)
    model = nn.Sequential(backbone, head).to(dev)
    opt = torch.optim.SGD(
        [{"params": backbone.parameters(), "lr": lr}, {"params": head.parameters(), "lr": head_lr}],
        momentum=0.9,
        nesterov=True,
        weight_decay=weight_decay,
    )
    N = train_images.shape[0]
    bs = min(batch_size, N)
    steps_per_epoch = math.ceil(N / bs)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    y_all = train_labels.to(torch.int64)
    last_loss = float("nan")
    model.train()
    with progress_bar(total, "fine-tune", enabled=progress) as advance:
        for _ in range(epochs):
            perm = torch.randperm(N, generator=gen)
            for i in range(0, N, bs):
                idx = perm[i : i + bs]
                if idx.numel() < 2 and N >= 2:  # BatchNorm needs two samples; fold the straggler away
                    continue
                x = train_transform(train_images[idx].to(dev), generator=gen)
                loss = F.cross_entropy(model(x), y_all[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                last_loss = loss.item()
                advance()
    model.eval()
    scores = []
    with torch.no_grad():
        for i in range(0, test_images.shape[0], batch_size):
            scores.append(model(eval_tf(test_images[i : i + batch_size].to(dev))).float())
    acc = topk_accuracy(torch.cat(scores), test_labels.to(dev))
    return {
        "top1": acc["top1"],
        "top5": acc["top5"],
        "n_labelled": int(N),
        "n_test": int(test_images.shape[0]),
        "epochs": epochs,
        "lr": lr,
        "head_lr": head_lr,
        "weight_decay": weight_decay,
        "final_train_loss": last_loss,
        "seconds": time.perf_counter() - t0,
    }
