"""The detection data: the protocol's VOC image sets, a resumable training stream (each rank its share of
seeded, flipped batches) and the test set split across ranks."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from mmcr.data.voc import VOCDetectionData, load_voc_split


class StreamSampler(torch.utils.data.Sampler):
    """Per-rank batches ``[(index, flip), ...]`` of iterations ``start .. stop - 1`` of an endless
    stream: epoch ``e`` is a permutation drawn from ``(seed, e)``, iteration ``t`` takes global
    positions ``t*B .. (t+1)*B - 1`` and rank ``r`` its ``r``-th share. The stream is a pure function
    of the iteration, so a resumed run sees exactly the batches it would have seen."""

    def __init__(self, n: int, batch: int, start: int, stop: int, rank: int, world: int, seed: int, flip: bool):
        if batch % world:
            raise ValueError(f"solver.batch_size {batch} must be divisible by the {world} ranks")
        self.n, self.batch, self.start, self.stop = n, batch, start, stop
        self.rank, self.world, self.seed, self.flip = rank, world, seed, flip
        self._epoch: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _order(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._epoch is None or self._epoch[0] != e:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            self._epoch = (e, torch.randperm(self.n, generator=g), torch.rand(self.n, generator=g) < 0.5)
        return self._epoch[1], self._epoch[2]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        b = self.batch // self.world
        for t in range(self.start, self.stop):
            out = []
            for pos in range(t * self.batch + self.rank * b, t * self.batch + (self.rank + 1) * b):
                perm, flips = self._order(pos // self.n)
                j = pos % self.n
                out.append((int(perm[j]), bool(flips[j]) and self.flip))
            yield out


def _as_list(batch):
    return batch


def make_loader(ds, batch_sampler, workers: int, pin: bool):
    return torch.utils.data.DataLoader(
        ds, batch_sampler=batch_sampler, collate_fn=_as_list, num_workers=workers, pin_memory=pin
    )


def to_device(batch, dev: torch.device):
    images = [img.to(dev, non_blocking=True).float().div_(255.0) for img, _ in batch]
    targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for _, t in batch]
    return images, targets


def load_protocol_data(root: str | Path, protocol: dict) -> tuple[list, list]:
    """Records of the protocol's training image sets (concatenated) and of its test set."""
    train = []
    for spec in protocol["train"]:
        year, image_set = spec.split("/")
        train.extend(load_voc_split(root, year, image_set))
    year, image_set = protocol["test"].split("/")
    return train, load_voc_split(root, year, image_set)


class TestBatches(torch.utils.data.Sampler):
    def __init__(self, indices: list[int], batch: int):
        self.indices, self.batch = indices, batch

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch)

    def __iter__(self):
        for s in range(0, len(self.indices), self.batch):
            yield [(i, False) for i in self.indices[s : s + self.batch]]


class IndexedData(torch.utils.data.Dataset):
    """Test items carry their index so that ranks' detections can be put back in order."""

    def __init__(self, ds: VOCDetectionData):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, item):
        return self.ds[item], item[0]


def collate_indexed(batch):
    return [b[0] for b in batch], [b[1] for b in batch]
