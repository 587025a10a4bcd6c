"""The one frozen-backbone feature extractor: uint8 images in, float32 features out, in batches on the
device, optionally sharded over ranks and gathered (every rank then holds all features).

Every evaluation (kNN, linear probe, transfer, the trainer's kNN monitor and final evaluation, geometry)
goes through here, with the eval view of :func:`eval_transform_for`, so that the same preprocessing is
used for the training and the test split and for every consumer of a run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from mmcr.augment import EvalTransform, eval_transform_of
from mmcr.data import ShardSet, make_loader
from mmcr.distributed import DistInfo, gather_rows, resolve_device

if TYPE_CHECKING:
    from mmcr.evaluate.sources import ModelSource

def eval_transform_for(
    model_src: ModelSource | None = None, size=None, resize: int | None = None, crop: bool = True
) -> EvalTransform:
    """The deterministic eval view of how a model was trained: a run's own crop size, interpolation and
    normalisation (from its config); ImageNet statistics and the images' own size for torchvision/timm/
    random models. ``size``/``resize`` override the crop and the short-side resize; ``crop=False`` keeps
    the images' size (data already at its final size, as in transfer).

    Args:
        model_src: the :class:`~mmcr.models.ModelSource` of the model (None: a plain ImageNet-statistics view).
        size: centre-crop size, overriding the run's.
        resize: short-side resize before the crop, overriding the run's.
        crop: False keeps the images' own size (no crop).

    Returns:
        An :class:`~mmcr.augment.EvalTransform`: uint8 (B, 3, H, W) -> float32 (B, 3, h, w).

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import eval_transform_for
        >>> view = eval_transform_for(size=24)  # no run: ImageNet statistics, a 24 px centre crop
        >>> out = view(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([2, 3, 24, 24]), torch.float32)
    """
    cfg = model_src.config if model_src is not None else None
    tf = eval_transform_of(cfg.augment, size=size, resize=resize) if cfg is not None else EvalTransform(
        size=size, resize=resize
    )
    if not crop:
        tf.size = None
    return tf


@contextmanager
def progress_bar(total: int, description: str, enabled: bool = True):
    """A rich progress bar; yields ``advance(n)``. Disabled bars cost nothing."""
    if not enabled:
        yield lambda n=1: None
        return

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
    dist_info: DistInfo | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of ``model`` (in eval mode) for every image; random transforms give one augmented pass per call.

    Args:
        model: maps a float batch (B, 3, h, w) to (B, D) features (or anything flattened to that).
        images: uint8 (N, 3, H, W), or an iterable of batches (uint8 tensors or ``(images, labels)``).
        labels: (N,) labels to pass through with a tensor of images.
        transform: uint8 batch -> float batch on the device (default ``EvalTransform()``).
        batch_size: images per forward pass, >= 1.
        device: where the model runs (default: the best available).
        progress: show a progress bar.
        description: the progress bar's label.
        dist_info: a :class:`~mmcr.distributed.DistInfo` of several ranks: each extracts a contiguous shard of a
            tensor of images (an iterable is its own shard) and every rank returns all features, in order.

    Returns:
        ``(features, labels)``: float32 (N, D) on the CPU, and int64 (N,) labels or None.

    Raises:
        ValueError: batch_size < 1, no images, or fewer images than ranks.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import extract_features
        >>> model, images = torch.nn.Flatten(), torch.full((5, 3, 4, 4), 128, dtype=torch.uint8)
        >>> feats, labels = extract_features(model, images, labels=torch.arange(5), batch_size=2, device="cpu")
        >>> feats.shape, feats.dtype, labels.tolist()
        (torch.Size([5, 48]), torch.float32, [0, 1, 2, 3, 4])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device) if dist_info is None else dist_info.device
    transform = transform if transform is not None else EvalTransform()
    sharded = dist_info is not None and dist_info.enabled
    if sharded and isinstance(images, torch.Tensor):
        n, w, r = images.shape[0], dist_info.world_size, dist_info.rank
        if n < w:
            raise ValueError(f"{n} images cannot be shared by {w} ranks; extract them in one process")
        lo, hi = n * r // w, n * (r + 1) // w
        images = images[lo:hi]
        labels = None if labels is None else labels[lo:hi]
    was_training = model.training
    model.eval().to(dev)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    total = images.shape[0] if isinstance(images, torch.Tensor) else (len(images) if hasattr(images, "__len__") else 0)
    feats, labs = [], []
    try:
        with progress_bar(total, description, enabled=progress and total > 0) as advance:
            for x, y in _batches(images, labels, batch_size):
                x = x.to(dev, non_blocking=True)
                f = model(transform(x).to(dtype))
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
    out = torch.cat(feats)
    out_labels = torch.cat(labs) if labs else None
    if sharded:
        if out_labels is None:
            (out,) = gather_rows(out.to(dev), info=dist_info)
        else:
            out, out_labels = gather_rows(out.to(dev), out_labels.to(dev), info=dist_info)
        out, out_labels = out.cpu(), None if out_labels is None else out_labels.cpu()
    return out, out_labels


def dataset_features(
    model: nn.Module,
    ds,
    transform: Callable[[torch.Tensor], torch.Tensor],
    device: str | torch.device | None = None,
    dist_info: DistInfo | None = None,
    max_n: int | None = None,
    batch_size: int = 256,
    progress: bool = False,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of the labelled images of a data set (in memory or a lazy folder), at most
    ``max_n`` of them (a seeded random subset, not the first, class-sorted rows); sharded over ranks
    and gathered when ``dist_info`` has several.

    Args:
        model: maps a float batch (B, 3, h, w) to (B, D) features.
        ds: an :class:`~mmcr.data.ImageDataset`, a lazy image folder or a :class:`~mmcr.data.ShardSet`.
        transform: uint8 batch -> float batch on the device (e.g. :func:`eval_transform_for`).
        device: where the model runs.
        dist_info: the process group's :class:`~mmcr.distributed.DistInfo`, to shard over ranks.
        max_n: at most this many labelled images (a subset seeded with 0).
        batch_size: images per forward pass.
        progress: show a progress bar.
        description: the progress bar's label.

    Returns:
        ``(features, labels)``: float32 (n, D) and int64 (n,) on the CPU, unlabelled (-1) images left out.

    Raises:
        ValueError: the split has no labelled images.

    Examples:
        >>> import torch
        >>> from mmcr.data import ImageDataset
        >>> from mmcr.evaluate import dataset_features, eval_transform_for
        >>> _ = torch.manual_seed(0)
        >>> images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
        >>> ds = ImageDataset(images, torch.tensor([0, 1, -1, 0, 1, 1]), classes=["a", "b"])  # -1: unlabelled
        >>> model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> feats, labels = dataset_features(model, ds, eval_transform_for(), device="cpu", max_n=4)
        >>> feats.shape, labels.shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    if isinstance(ds, ShardSet):  # a stream: the first max_n samples spread over its shards, the labelled ones
        return _stream_features(model, ds.head(max_n) if max_n is not None else ds, transform, device, dist_info,
                                batch_size, progress, description)
    labelled = torch.nonzero(ds.labels >= 0).flatten()
    if max_n is not None and len(labelled) > max_n:
        labelled = labelled[torch.randperm(len(labelled), generator=torch.Generator().manual_seed(0))[:max_n]]
        labelled = labelled.sort().values
    if len(labelled) < len(ds):
        ds = ds.subset(labelled)
    if len(ds) == 0:
        raise ValueError("the split has no labelled images; evaluate on a labelled split (e.g. train, test)")
    rank, world = (dist_info.rank, dist_info.world_size) if dist_info is not None else (0, 1)
    loader = make_loader(ds, batch_size=batch_size, shuffle=False, drop_last=False, seed=0, rank=rank,
                         world_size=world)
    loader.set_epoch(0)
    dev = dist_info.device if dist_info is not None else device
    return extract_features(model, loader, transform=transform, device=dev, progress=progress,
                            description=description, dist_info=dist_info)


def _stream_features(model, ds, transform, device, dist_info, batch_size, progress, description):
    """``dataset_features`` of a shard stream: each rank reads its contiguous share once."""

    rank, world = (dist_info.rank, dist_info.world_size) if dist_info is not None else (0, 1)
    loader = make_loader(ds, batch_size=batch_size, shuffle=False, drop_last=False, seed=0, rank=rank,
                         world_size=world)
    loader.set_epoch(0)
    dev = dist_info.device if dist_info is not None else device
    return extract_features(model, loader, transform=transform, device=dev, progress=progress,
                            description=description, dist_info=dist_info)


class _LayerOutputs(nn.Module):
    """``model`` whose forward returns the flattened outputs of the named modules side by side, so that
    :func:`extract_features` (eval mode, dtype, batching, the eval view) serves intermediate layers too."""

    def __init__(self, model: nn.Module, layers: list[str]):
        super().__init__()
        modules = dict(model.named_modules())
        unknown = [n for n in layers if n not in modules or not n]
        if unknown:
            raise ValueError(f"the model has no layer {', '.join(map(repr, unknown))}; it has {layer_summary(model)}")
        self.model = model
        self.layers = list(layers)
        self._targets = [modules[n] for n in self.layers]
        self.widths: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        store: dict[int, torch.Tensor] = {}

        def keep(i):  # a copy: a later in-place op (ReLU(inplace=True)) must not change what was recorded
            return lambda _m, _inp, out: store.__setitem__(i, out.detach().flatten(1).clone())

        handles = [m.register_forward_hook(keep(i)) for i, m in enumerate(self._targets)]
        try:
            self.model(x)
        finally:
            for h in handles:
                h.remove()
        outs = [store[i] for i in range(len(self.layers))]
        self.widths = [o.shape[1] for o in outs]
        return torch.cat(outs, 1)


def layer_summary(model: nn.Module, depth: int = 2, limit: int = 40) -> str:
    """The module names of ``model`` down to ``depth`` dots, for messages that say which layers exist."""
    names = [n for n, _ in model.named_modules() if n and n.count(".") < depth]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def layer_features(
    model: nn.Module,
    images: torch.Tensor,
    layers: list[str],
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Flattened outputs (float32 (N, D_layer) on the CPU) of the named modules of ``model`` for uint8
    images (N, 3, H, W), through :func:`extract_features` with ``transform`` (the eval view)."""
    tapped = _LayerOutputs(model, layers)
    feats, _ = extract_features(tapped, images, transform=transform, batch_size=batch_size, device=device)
    out, start = {}, 0
    for name, width in zip(tapped.layers, tapped.widths):
        out[name] = feats[:, start : start + width]
        start += width
    return out
