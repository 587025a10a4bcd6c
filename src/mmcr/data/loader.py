"""Batches of uint8 images whose order is a pure function of (seed, epoch, rank, world_size).

That property is what lets a resumed run replay exactly the batches it would have seen:
``loader.set_epoch(epoch, start_batch=b)`` skips the first b batches of that epoch's order without
touching any other random state. Every rank draws the same permutation and takes its own
interleaved share (like ``DistributedSampler``), so ranks never see the same image in an epoch.

In-memory data sets (``ImageDataset``) are batched by index gathers on the stored tensor: no
per-image Python, no worker processes. File-backed ``LazyImageFolder`` data sets go through a
``torch.utils.data.DataLoader`` whose workers decode and resize files; the same order rule applies.
"""

from __future__ import annotations

import math

import torch

from mmcr.data.datasets import ImageDataset, LazyImageFolder
from mmcr.data.decode import DatasetError
from mmcr.data.order import epoch_order, one_line_worker_errors
from mmcr.data.shards import ShardLoader, ShardSet
from mmcr.data.views import decode_encoded
from mmcr.schema import check_seed

__all__ = ["InMemoryLoader", "ShardLoader", "WorkerLoader", "epoch_order", "make_loader"]


class _Base:
    def __init__(self, ds, batch_size: int, shuffle: bool, drop_last: bool, seed: int, rank: int, world_size: int):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch_size must be a positive int, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DatasetError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        n = len(ds)
        if n == 0:
            raise DatasetError("the data set is empty; check the split and the files")
        self.dataset = ds
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = check_seed(seed, error=DatasetError)
        self.rank = rank
        self.world_size = world_size
        # Equal shares per rank: drop the tail when dropping, else pad by wrapping around.
        self.per_rank = n // world_size if drop_last else math.ceil(n / world_size)
        nb = self.per_rank // batch_size if drop_last else math.ceil(self.per_rank / batch_size)
        if nb == 0:
            raise DatasetError(
                f"batch_size {batch_size} exceeds the {self.per_rank} images per rank with drop_last=True; "
                "use a smaller batch_size or drop_last=False"
            )
        self._batches = nb
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch's order; start at batch ``start_batch`` (to resume mid-epoch)."""
        if not 0 <= start_batch <= self._batches:
            raise DatasetError(f"start_batch must be in [0, {self._batches}], got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        """Batches per epoch for this rank (a full epoch, whatever start_batch is)."""
        return self._batches

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch, in order (before start_batch skipping)."""
        order = epoch_order(len(self.dataset), self.seed, self.epoch, self.shuffle)
        total = self.per_rank * self.world_size
        if total > len(order):
            order = torch.cat([order, order[: total - len(order)]])
        mine = order[:total][self.rank :: self.world_size]
        if self.drop_last:
            mine = mine[: self._batches * self.batch_size]
        return mine

    def _batch_indices(self):
        mine = self.indices()
        for b in range(self.start_batch, self._batches):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]


class InMemoryLoader(_Base):
    """Gathers batches from an in-memory ``ImageDataset`` (optionally moved to ``device`` once)."""

    def __init__(self, ds: ImageDataset, *args, device=None, **kw):
        super().__init__(ds, *args, **kw)
        self.images = ds.images if device is None else ds.images.to(device)
        self.labels = ds.labels if device is None else ds.labels.to(device)
        self._flat = self.images.reshape(len(ds), -1)  # 2-D index_select is the fast gather path

    def __iter__(self):
        shape = self.images.shape[1:]
        for idx in self._batch_indices():
            idx = idx.to(self.images.device)
            yield self._flat.index_select(0, idx).view(-1, *shape), self.labels.index_select(0, idx)


class _OrderedSampler(torch.utils.data.Sampler):
    def __init__(self, loader: _Base):
        self.loader = loader

    def __iter__(self):
        return iter([idx.tolist() for idx in self.loader._batch_indices()])

    def __len__(self) -> int:
        return self.loader._batches - self.loader.start_batch


class WorkerLoader(_Base):
    """Decodes a ``LazyImageFolder`` in DataLoader worker processes; yields (uint8 batch, labels).

    The batch is (B, 3, size, size), or (B, k, 3, h, w) views for a folder ``with_crops``; with
    ``decode_device`` (a folder ``with_crops(spec, encoded=True)``) the workers read the files and
    draw the boxes, and the JPEGs of each batch are decoded together on that device.
    """

    def __init__(self, ds: LazyImageFolder, *args, num_workers: int = 0, decode_device=None, **kw):
        super().__init__(ds, *args, **kw)
        if decode_device is not None and not ds.encoded:
            raise DatasetError("decode_device needs a folder with_crops(spec, encoded=True) (JPEG bytes and boxes)")
        self.decode_device = decode_device
        self.skipped = 0  # undecodable files found on the decode device
        self._dl = torch.utils.data.DataLoader(
            ds,
            batch_sampler=_OrderedSampler(self),
            num_workers=num_workers,
            collate_fn=_collate,
            persistent_workers=False,
            pin_memory=torch.cuda.is_available(),
        )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch, start_batch)
        self.dataset.epoch = self.epoch  # the full-image views' boxes depend on it (copied into the workers)

    def __iter__(self):
        for images, labels in one_line_worker_errors(self._dl):
            if self.decode_device is not None:
                images, bad = decode_encoded(images, self.dataset.crops, self.decode_device, self.dataset.on_error)
                self.skipped += bad
            yield images, labels


def _collate(items):
    labels = torch.tensor([lb for _, lb in items], dtype=torch.int64)
    if isinstance(items[0][0], tuple):  # encoded views (see mmcr.data.views.encode_views), decoded later
        return [it for it, _ in items], labels
    return torch.stack([im for im, _ in items]), labels


def make_loader(
    ds,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = True,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    device=None,
    decode_device=None,
):
    """A re-iterable loader of (uint8 images (B, 3, H, W), int64 labels (B,)) batches.

    Call ``set_epoch(epoch, start_batch=0)`` before iterating each epoch; the order depends only on
    (seed, epoch, rank, world_size), so resuming at (epoch, start_batch) replays the same batches.
    ``device`` moves an in-memory data set there once (then batches are gathered on the device);
    ``num_workers`` applies to file-backed (lazy) data sets; ``decode_device`` decodes the JPEGs of a
    folder ``with_crops(spec, encoded=True)`` in batches there (``torchvision.io.decode_jpeg``).
    """
    common = dict(shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size)
    if isinstance(ds, ImageDataset):
        return InMemoryLoader(ds, batch_size, device=device, **common)
    if isinstance(ds, LazyImageFolder):
        return WorkerLoader(ds, batch_size, num_workers=num_workers, decode_device=decode_device, **common)
    if isinstance(ds, ShardSet):
        return ShardLoader(ds, batch_size, num_workers=num_workers, decode_device=decode_device, **common)
    raise DatasetError(f"make_loader needs an ImageDataset, LazyImageFolder or ShardSet (from load_dataset), got "
                       f"{type(ds)}")
