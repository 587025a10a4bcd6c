"""Semi-supervised evaluation: fine-tune the whole network (backbone + a linear head) on a small
labelled subset (1 % or 10 % of the training labels) and report once on the test split.

Two choices keep fine-tuning from ending below what the frozen features already give:

- the head starts from the linear probe fitted on the same subset's frozen features (LP-FT, Kumar
  et al. 2022): fine-tuning then begins at the probe's solution instead of distorting the features
  under a random head; the probe's own test accuracy is reported beside the fine-tuned one;
- the schedule has a floor of optimiser steps (``min_steps``), because a fixed number of epochs over
  a tiny subset is only a handful of steps (142 images at batch 256: one step per epoch).

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

from mmcr.augment import IMAGENET_MEAN, IMAGENET_STD, EvalTransform
from mmcr.distributed import resolve_device
from mmcr.evaluate.features import extract_features, progress_bar
from mmcr.evaluate.knn import check_class_labels, topk_accuracy
from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS, fit_logistic, linear_probe
from mmcr.evaluate.settings import HEAD_INITS, MIN_STEPS, FinetuneSettings  # noqa: F401 - re-exported
from mmcr.schema import Range, check_seed, resolve


def class_balanced_subset(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``round(fraction * n_c)`` (at least 1) random images of each class ``c``: the
    labelled subset of semi-supervised evaluation, the same for a given seed.

    Args:
        labels: (N,) class of every training image.
        fraction: share of each class to keep, in (0, 1].
        seed: seeds the draw.

    Returns:
        (n,) int64 indices, ascending.

    Raises:
        ValueError: fraction outside (0, 1] or a bad seed.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import class_balanced_subset
        >>> labels = torch.tensor([0] * 10 + [1] * 4)
        >>> idx = class_balanced_subset(labels, fraction=0.5, seed=0)
        >>> idx.shape, torch.bincount(labels[idx]).tolist()  # half of each class
        (torch.Size([7]), [5, 2])
    """
    Range(0, 1, lo_open=True).check("fraction", fraction)
    g = torch.Generator().manual_seed(check_seed(seed))
    labels = labels.cpu()
    picked = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        n = max(1, int(round(fraction * idx.numel())))
        picked.append(idx[torch.randperm(idx.numel(), generator=g)[:n]])
    return torch.sort(torch.cat(picked)).values


def read_subset_file(path: str | Path, names: Sequence[str] | None = None) -> torch.Tensor:
    """Indices listed in ``path``: one integer index per line, or one file name per line (ImageNet's
    subset lists) matched against ``names`` (the dataset's file names; directories are ignored).

    Args:
        path: the subset file.
        names: the data set's file names, in index order (needed for a file of names).

    Returns:
        (n,) int64 indices, ascending.

    Raises:
        ValueError: an empty file, names without ``names``, or names the data set lacks.

    Examples:
        >>> import pathlib, tempfile
        >>> from mmcr.evaluate import read_subset_file
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "1percent.txt"
        >>> _ = path.write_text("n01_b.JPEG\\nn01_a.JPEG\\n")
        >>> read_subset_file(path, names=["train/n01/n01_a.JPEG", "train/n01/n01_b.JPEG", "train/n02/x.JPEG"])
        tensor([0, 1])
        >>> tmp.cleanup()
    """
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
    size/8, horizontal flip with probability ``flip_p``, normalisation (after resizing to ``size`` when
    given, as eval does). Lighter than the SSL views on purpose: labels are scarce here, not
    invariances. A run trained without flips (digits) should be fine-tuned without them too.

    Call it on uint8 images (B, 3, H, W) (and an optional ``generator``) to get float32 (B, 3, h, w).

    Args:
        mean: 3 per-channel means of images in [0, 1].
        std: 3 per-channel standard deviations.
        pad_fraction: reflect padding as a fraction of the image side.
        size: resize (short side) and centre-crop to this size first; None keeps the images' size.
        flip_p: probability of a horizontal flip, in [0, 1].

    Raises:
        ValueError: flip_p outside [0, 1].

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import FinetuneAugment
        >>> aug = FinetuneAugment(size=24, flip_p=0.0)
        >>> images = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
        >>> out = aug(images, generator=torch.Generator().manual_seed(0))
        >>> out.shape, out.dtype
        (torch.Size([2, 3, 24, 24]), torch.float32)
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, pad_fraction: float = 0.125, size=None,
                 flip_p: float = 0.5):
        super().__init__()
        if not 0.0 <= float(flip_p) <= 1.0:
            raise ValueError(f"flip_p must lie in [0, 1], got {flip_p}")
        self.pad_fraction = pad_fraction
        self.flip_p = float(flip_p)
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
        flip = (torch.rand(B, generator=generator) < self.flip_p).to(dev)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return (x / 255.0 - self.mean.to(dev)) / self.std.to(dev)


def _probe_head(
    backbone: nn.Module,
    eval_tf: Callable,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    weight_decays,
    seed: int,
    batch_size: int,
    dev: torch.device,
) -> tuple[nn.Linear, dict]:
    """The linear probe on the subset's frozen features as an ``nn.Linear`` (its standardisation folded
    into the weights, so the head gives the probe's scores on raw features) and its test accuracy."""

    ftr, _ = extract_features(backbone, train_images, transform=eval_tf, batch_size=batch_size, device=dev)
    fte, _ = extract_features(backbone, test_images, transform=eval_tf, batch_size=batch_size, device=dev)
    # weight decay chosen on a split carved from the labelled subset (the probe's own protocol)...
    chosen = linear_probe(ftr, train_labels, fte, test_labels, weight_decays=weight_decays, seed=seed,
                          num_classes=num_classes, device=dev)
    # ...then one fit on the whole subset, started from zero: the head fine-tuning starts from
    probe = fit_logistic(ftr, train_labels, chosen["weight_decay"], num_classes, device=dev)
    acc = topk_accuracy(probe.scores(fte), test_labels.to(probe.weight.device))
    head = nn.Linear(ftr.shape[1], num_classes)
    with torch.no_grad():
        w = probe.weight / probe.std
        head.weight.copy_(w)
        head.bias.copy_(probe.bias - w @ probe.mean)
    return head, {"linear_top1": acc["top1"], "linear_top5": acc["top5"],
                  "linear_weight_decay": chosen["weight_decay"]}


def finetune(backbone: nn.Module, train_images: torch.Tensor, train_labels: torch.Tensor, test_images: torch.Tensor,
             test_labels: torch.Tensor, num_classes: int | None = None, settings: FinetuneSettings | None = None, *,
             train_transform: Callable | None = None, eval_transform: Callable | None = None,
             device: str | torch.device | None = None, **changes) -> dict:
    """Fine-tune ``backbone`` (modified in place) with a linear head by SGD (momentum 0.9, Nesterov) and
    a cosine schedule; ``lr`` for the backbone, ``head_lr`` for the head.

    The schedule runs ``epochs`` epochs, or more when that is fewer than ``min_steps`` optimiser steps
    (then as many whole epochs as reach ``min_steps``). ``head_init="linear"`` starts the head from the
    linear probe on the same subset's frozen features (weight decay chosen among ``probe_weight_decays``
    on a split of the subset) and reports that probe's test accuracy as ``linear_top1``;
    ``"random"`` starts from PyTorch's default initialisation (no probe is fitted).

    Images are uint8 (N, 3, H, W). ``train_transform(images, generator)`` defaults to
    :class:`FinetuneAugment`, ``eval_transform(images)`` to :class:`mmcr.augment.EvalTransform`'s default.
    Returns test top-1/top-5 (percent), the linear probe's beside them, the final training loss, the
    number of steps and sizes. ``settings`` is a :class:`~mmcr.evaluate.settings.FinetuneSettings`
    (None: its defaults); ``changes`` are its fields (``epochs=2``, ``lr=0.05``), checked like it.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import finetune, load_pretrained
        >>> backbone, _ = load_pretrained("random:resnet_tiny:cifar")
        >>> images, labels = torch.zeros(8, 3, 16, 16, dtype=torch.uint8), torch.arange(8) % 2
        >>> result = finetune(backbone, images, labels, images[:4], labels[:4], epochs=1, min_steps=1, batch_size=4,
        ...                   head_init="random", device="cpu")
        >>> result["steps"], result["n_labelled"], 0.0 <= result["top1"] <= 100.0
        (2, 8, True)
    """
    s = resolve(FinetuneSettings, settings, changes)
    if train_images.shape[0] != train_labels.shape[0] or train_images.shape[0] == 0:
        raise ValueError(f"need a non-empty labelled set, got {train_images.shape[0]} images")
    t0 = time.perf_counter()
    dev = resolve_device(device)
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    C = int(num_classes) if num_classes is not None else int(max(train_labels.max(), test_labels.max())) + 1
    check_class_labels(train_labels, C, "train_labels")
    check_class_labels(test_labels, C, "test_labels")
    train_transform = train_transform if train_transform is not None else FinetuneAugment().to(dev)
    eval_tf = eval_transform if eval_transform is not None else EvalTransform()
    was = backbone.training
    probe: dict = {}
    if s.head_init == "linear":
        head, probe = _probe_head(backbone, eval_tf, train_images, train_labels, test_images, test_labels, C,
                                  s.probe_weight_decays or DEFAULT_WEIGHT_DECAYS, s.seed, s.batch_size, dev)
    else:
        with torch.no_grad():
            dim = backbone.eval()(eval_tf(train_images[:2].to(dev))).shape[1]
        head = nn.Linear(dim, C)
    backbone.train(was)
    model = nn.Sequential(backbone, head).to(dev)
    opt = torch.optim.SGD(
        [{"params": backbone.parameters(), "lr": s.lr}, {"params": head.parameters(), "lr": s.head_lr}],
        momentum=0.9,
        nesterov=True,
        weight_decay=s.weight_decay,
    )
    N = train_images.shape[0]
    bs = min(s.batch_size, N)
    steps_per_epoch = N // bs + (N % bs >= 2)  # a straggler batch of one image is skipped (see below)
    epochs = max(s.epochs, math.ceil(s.min_steps / steps_per_epoch))
    steps, last_loss = _train(model, opt, train_images, train_labels, train_transform, epochs, steps_per_epoch, bs,
                              s.grad_clip, gen, dev, s.progress)
    acc = _test_accuracy(model, eval_tf, test_images, test_labels, s.batch_size, dev)
    return {
        "top1": acc["top1"],
        "top5": acc["top5"],
        **probe,
        "head_init": s.head_init,
        "n_labelled": int(N),
        "n_test": int(test_images.shape[0]),
        "epochs": epochs,
        "steps": steps,
        "min_steps": s.min_steps,
        "batch_size": bs,
        "lr": s.lr,
        "head_lr": s.head_lr,
        "weight_decay": s.weight_decay,
        "final_train_loss": last_loss,
        "seconds": time.perf_counter() - t0,
    }


def _train(model, opt, images, labels, transform, epochs: int, steps_per_epoch: int, bs: int, grad_clip, gen,
           dev, progress: bool) -> tuple[int, float]:
    """SGD over ``epochs`` shuffled epochs with the cosine schedule; the steps taken and the last loss."""
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    y_all = labels.to(torch.int64)
    N = images.shape[0]
    last_loss = float("nan")
    steps = 0
    model.train()
    with progress_bar(total, "fine-tune", enabled=progress) as advance:
        for _ in range(epochs):
            perm = torch.randperm(N, generator=gen)
            for i in range(0, N, bs):
                idx = perm[i : i + bs]
                if idx.numel() < 2 and N >= 2:  # BatchNorm needs two samples; fold the straggler away
                    continue
                x = transform(images[idx].to(dev), generator=gen)
                loss = F.cross_entropy(model(x), y_all[idx].to(dev))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                sched.step()
                steps += 1
                advance()
            last_loss = loss.item()
    return steps, last_loss


def _test_accuracy(model, eval_tf, images, labels, batch_size: int, dev) -> dict:
    model.eval()
    scores = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            scores.append(model(eval_tf(images[i : i + batch_size].to(dev))).float())
    return topk_accuracy(torch.cat(scores), labels.to(dev))
