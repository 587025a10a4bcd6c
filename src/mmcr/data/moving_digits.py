"""Moving digits: the offline clip set of temporal MMCR, generated from the mnist5k digits.

Each clip shows one digit moving across a black ``size`` x ``size`` canvas: the side of the digit's
20 x 20 core changes smoothly (a sinusoid between 0.3 and 0.6 of the canvas, random phase and period)
while it travels at a random constant speed and direction, bouncing off the canvas edges. Clips of
the train split are made from the mnist5k train digits, those of the test split from its test
digits, so the two never share a digit image. The label of a clip is its digit. Everything is a pure
function of ``seed`` (and the split): numpy draws the trajectories, and each frame is the digit
resampled into its box by a pair of antialiased (triangle-filter) matrices in float64. Generated
clips are cached like decoded data.
"""

from __future__ import annotations

import numpy as np
import torch

from mmcr.data import cache as C
from mmcr.data.datasets import _load_mnist5k
from mmcr.data.decode import DatasetError
from mmcr.data.video import STILL_FRAMES, ClipDataset

VERSION = 1  # of the generator: a change makes new cache entries
SIDE = (0.3, 0.6)  # digit box side as a fraction of the canvas (min, max)
SPEED = (0.04, 0.10)  # travel per frame as a fraction of the free range


def trajectories(n: int, frames: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digit box side (n, T) and centre (n, T, 2) in canvas pixels: smooth scale, bouncing motion."""
    t = np.arange(frames)[None, :]
    period = rng.uniform(1.0, 2.5, (n, 1)) * frames
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    mid, amp = (SIDE[0] + SIDE[1]) / 2, (SIDE[1] - SIDE[0]) / 2
    side = size * (mid + amp * np.sin(2 * np.pi * t / period + phase))
    angle = rng.uniform(0, 2 * np.pi, (n, 1))
    speed = rng.uniform(*SPEED, (n, 1))
    start = rng.uniform(0, 1, (n, 2))
    centre = np.empty((n, frames, 2))
    for axis, trig in enumerate((np.cos, np.sin)):
        u = start[:, axis: axis + 1] + speed * trig(angle) * t  # unbounded path, folded into [0, 1]
        folded = np.abs((u % 2.0) - 1.0)
        folded = 1.0 - folded  # bounce: a triangle wave, continuous at the edges
        lo, hi = side / 2, size - side / 2
        centre[..., axis] = lo + folded * (hi - lo)
    return side, centre


def _weights(side: torch.Tensor, centre: torch.Tensor, size: int, src: int) -> torch.Tensor:
    """Resampling matrices (n, size, src) along one axis: output pixel x reads the digit around
    u = (x + 0.5 - (centre - side / 2)) * src / side - 0.5 with a triangle filter widened by the
    downscaling factor (antialiased), so pixels outside the box get zero weight."""
    f = src / side  # source pixels per canvas pixel
    a = torch.clamp(f, min=1.0)[:, None, None]
    x = torch.arange(size, dtype=torch.float64)[None, :, None] + 0.5
    u = (x - (centre - side / 2)[:, None, None]) * f[:, None, None] - 0.5
    j = torch.arange(src, dtype=torch.float64)[None, None, :]
    return torch.clamp(1 - (j - u).abs() / a, min=0) / a


def render(digits: np.ndarray, side: np.ndarray, centre: np.ndarray, size: int) -> np.ndarray:
    """uint8 (n, T, size, size): digit i drawn in box ``side[i, t]`` centred at ``centre[i, t]``
    (separable resampling: one pair of matrices per frame, float64)."""
    n, frames = side.shape
    src = digits.shape[-1]
    s = torch.from_numpy(side).reshape(-1)
    wy = _weights(s, torch.from_numpy(centre[..., 1]).reshape(-1), size, src).view(n, frames, size, src)
    wx = _weights(s, torch.from_numpy(centre[..., 0]).reshape(-1), size, src).view(n, frames, size, src)
    img = torch.from_numpy(digits).to(torch.float64)[:, None]  # (n, 1, src, src)
    rows = torch.bmm(wy.reshape(n, frames * size, src), img[:, 0]).view(n * frames, size, src)
    out = torch.bmm(rows, wx.reshape(n * frames, size, src).transpose(1, 2)).view(n, frames, size, size)
    return out.clamp_(0, 255).round_().to(torch.uint8).numpy()


def moving_digits(split: str, size: int = 32, frames: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clips uint8 (N, T, size, size), labels (N,)): one clip per mnist5k digit of ``split``."""
    ds = _load_mnist5k(split)
    digits = ds.images[:, 0, 4:24, 4:24].numpy()  # MNIST centres each digit in a 20 x 20 box
    rng = np.random.default_rng([int(seed), {"train": 0, "test": 1}[split]])
    side, centre = trajectories(len(digits), frames, size, rng)
    return render(digits, side, centre, size), ds.labels.numpy()


def load_moving_digits(root, split: str, cache_dir=None, size: int = 32, frames: int = 16, seed: int = 0,
                       still_frames: int = STILL_FRAMES) -> ClipDataset:
    """The generated moving digits of ``split`` ("train": 4,000 clips from the mnist5k train digits,
    "test": 1,000 from its test digits) as an in-memory :class:`ClipDataset`."""
    if root is not None:
        raise DatasetError("moving-digits is generated from the mnist5k digits; it takes no root (remove data.root)")
    if split not in ("train", "test"):
        raise DatasetError(f"moving-digits has splits 'train' and 'test', got {split!r}")
    for name, value, least in (("size", size, 8), ("frames", frames, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DatasetError(f"{name} must be an int >= {least}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DatasetError(f"seed must be a non-negative int, got {seed!r}")
    key = C.cache_key("moving-digits", VERSION, split, size, frames, seed)
    entry = C.entry_path(cache_dir, f"moving-digits-{split}", key)
    hit = C.load_split(entry, split)
    if hit is None:
        clips, labels = moving_digits(split, size, frames, seed)
        grey = clips.reshape(len(clips) * frames, 1, size, size)
        hit = (grey, labels) if not C.write_entry(entry, {split: (grey, labels)}, {"seed": seed}) else \
            C.load_split(entry, split)
    grey, labels = hit[0], hit[1]
    n = len(labels)
    flat = torch.from_numpy(grey).expand(-1, 3, -1, -1).contiguous()
    return ClipDataset(flat, torch.full((n,), frames), torch.from_numpy(labels), [str(i) for i in range(10)],
                       "moving-digits", split, still_frames=still_frames,
                       meta={"size": size, "frames": frames, "seed": seed})
