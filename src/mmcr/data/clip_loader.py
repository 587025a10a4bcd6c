"""Batches of windows: uint8 frames (B, k, 3, H, W) whose clips and frames are a pure function of
(seed, epoch, rank, world_size), like the image loaders of :mod:`mmcr.data.loader`.

The loader permutes the samples of a clip set (clips, or segments of clips) with the image loaders'
order rule (``set_epoch(epoch, start_batch)`` resumes mid-epoch), and a window sampler (an object with
``table(lengths, fps, names)`` and ``frames_of(table, epoch, samples)``, e.g.
:class:`mmcr.augment.temporal.WindowSampler`) says which frames of which clip each sample takes. Clips
in memory are gathered by index on the stored tensor (on the training device when it was moved
there); clips in files are decoded by DataLoader workers, each reading only its window.
"""

from __future__ import annotations

import torch

from mmcr.data.decode import DatasetError
from mmcr.data.loader import _Base
from mmcr.data.video import ClipDataset, FileClips, is_clip_set


class _WindowBase(_Base):
    def __init__(self, ds, windows, batch_size: int, **kw):
        try:
            self.table = windows.table(ds.lengths.numpy(), None if ds.fps is None else ds.fps.numpy(), ds.names)
        except ValueError as exc:
            raise DatasetError(str(exc)) from exc
        super().__init__(range(len(self.table)), batch_size, **kw)
        self.clips = ds
        self.windows = windows

    def windows_of(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip (B,), frames (B, k)) of a batch of sample indices in the current epoch."""
        clip, frames = self.windows.frames_of(self.table, self.epoch, idx.numpy())
        return torch.from_numpy(clip), torch.from_numpy(frames)


class InMemoryClipLoader(_WindowBase):
    """Windows gathered from a :class:`ClipDataset` (moved to ``device`` once when given)."""

    def __init__(self, ds: ClipDataset, windows, batch_size: int, device=None, **kw):
        super().__init__(ds, windows, batch_size, **kw)
        self.frames = ds.frames if device is None else ds.frames.to(device)
        self.labels = ds.labels if device is None else ds.labels.to(device)
        self._flat = self.frames.reshape(self.frames.shape[0], -1)
        self._starts = ds.starts

    def __iter__(self):
        shape = self.frames.shape[1:]
        for idx in self._batch_indices():
            clip, frames = self.windows_of(idx)
            rows = (frames + self._starts[clip][:, None]).reshape(-1).to(self.frames.device)
            out = self._flat.index_select(0, rows).view(len(clip), frames.shape[1], *shape)
            yield out, self.labels.index_select(0, clip.to(self.labels.device))


class _WindowSampler(torch.utils.data.Sampler):
    """Batches of ``(clip, frames)`` items for the workers (windows chosen here, decoded there)."""

    def __init__(self, loader: WorkerClipLoader):
        self.loader = loader

    def __iter__(self):
        for idx in self.loader._batch_indices():
            clip, frames = self.loader.windows_of(idx)
            yield [(int(c), tuple(f)) for c, f in zip(clip.tolist(), frames.tolist())]

    def __len__(self) -> int:
        return self.loader._batches - self.loader.start_batch


class WorkerClipLoader(_WindowBase):
    """Windows decoded from files (:class:`FileClips`) in ``num_workers`` DataLoader processes."""

    def __init__(self, ds: FileClips, windows, batch_size: int, num_workers: int = 0, **kw):
        super().__init__(ds, windows, batch_size, **kw)
        self._dl = torch.utils.data.DataLoader(ds, batch_sampler=_WindowSampler(self), num_workers=num_workers,
                                               collate_fn=_collate, persistent_workers=False,
                                               pin_memory=torch.cuda.is_available())

    def __iter__(self):
        return iter(self._dl)


def _collate(items):
    return torch.stack([x for x, _ in items]), torch.tensor([lb for _, lb in items], dtype=torch.int64)


def make_clip_loader(ds, windows, batch_size: int, shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                     rank: int = 0, world_size: int = 1, num_workers: int = 0, device=None):
    """A re-iterable loader of (uint8 windows (B, k, 3, H, W), int64 clip labels (B,)) batches; see
    :func:`mmcr.data.make_loader` for the order rule and arguments. ``windows`` chooses the frames."""
    common = dict(shuffle=shuffle, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size)
    if not is_clip_set(ds):
        raise DatasetError(f"make_clip_loader needs a clip set (mmcr.data.video), got {type(ds).__name__}")
    if isinstance(ds, ClipDataset):
        return InMemoryClipLoader(ds, windows, batch_size, device=device, **common)
    return WorkerClipLoader(ds, windows, batch_size, num_workers=num_workers, **common)
