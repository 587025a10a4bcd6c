"""Temporal views: a manifold is a window of one clip, its k frames the views (the paper's discussion).

Two pieces, used by the trainer for clip data sets (``mmcr.data.video``):

- :class:`WindowSampler` chooses, for every sample of an epoch, which k frames of which clip form its
  manifold: k frames inside a window of w consecutive frames (``temporal.window``, in frames or
  seconds), evenly spaced ("strided") or drawn at random without replacement ("random"). A sample is
  one segment of a clip (the whole clip by default; ``temporal.segment`` cuts long clips into
  segments of that length), so the windows of one batch come from different clips or from disjoint
  stretches of one clip. The choice is a pure function of (seed, epoch, sample): a resumed run replays
  the same windows, and every rank draws the same ones.
- :class:`TemporalViews` turns the uint8 frames of the windows (B, k, 3, H, W) into float views
  (B, k, 3, h, w) with optional spatial augmentation: "none" (the frames as they are, in the eval
  view's size and normalisation), "window" (one random crop/colour draw for the whole window) or
  "frame" (an independent draw per frame). With a window of one frame and "frame", a manifold is k
  augmentations of one still frame: augmentation-only MMCR on frames. Nothing downstream changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmcr.augment.functional import check_images
from mmcr.augment.multiview import MultiViewAugment, map_params

SAMPLING = ("random", "strided")
SPATIAL = ("none", "window", "frame")
UNITS = ("frames", "seconds")
_SALT = 0x7E3F  # separates the window stream from the data order (same seed)


@dataclass
class SampleTable:
    """The samples of an epoch: clip index, first frame and end (exclusive) of its segment, and its
    window length in frames (one row per sample)."""

    clip: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    window: np.ndarray

    def __len__(self) -> int:
        return int(self.clip.shape[0])


class WindowSampler:
    """Which frames make each manifold (see the module docstring). ``frames``: k; ``window``: w in
    ``unit`` ("frames" or "seconds"); ``sampling``: "random" or "strided"; ``segment``: length of the
    segments long clips are cut into (same unit; None: one sample per clip)."""

    def __init__(self, frames: int, window: float = 8, unit: str = "frames", sampling: str = "random",
                 segment: float | None = None, seed: int = 0):
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"frames per window must be a positive int, got {frames!r}")
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
        if sampling not in SAMPLING:
            raise ValueError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
        if not window > 0 or (unit == "frames" and float(window) != int(window)):
            raise ValueError(f"window must be a positive {'integer' if unit == 'frames' else 'number'}, got {window!r}")
        if segment is not None and not segment >= window:
            raise ValueError(f"segment ({segment}) must be at least the window ({window})")
        self.frames, self.window, self.unit, self.sampling, self.segment = frames, window, unit, sampling, segment
        self.seed = int(seed)

    @classmethod
    def from_config(cls, temporal_cfg, frames: int, seed: int) -> WindowSampler:
        t = temporal_cfg
        return cls(frames, t.window, t.unit, t.sampling, t.segment, seed)

    def _in_frames(self, value: float, fps) -> np.ndarray:
        if self.unit == "frames":
            return np.full(len(fps), int(value), dtype=np.int64)
        return np.maximum(1, np.round(value * fps)).astype(np.int64)

    def table(self, lengths, fps=None, names: list[str] | None = None) -> SampleTable:
        """The samples of clips of ``lengths`` frames (at ``fps``; needed for windows in seconds).
        A clip shorter than its window is refused, naming it."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if self.unit == "seconds":
            if fps is None:
                raise ValueError("temporal.unit=seconds needs the clips' frame rate, which this data set lacks "
                                 "(npz arrays, generated clips, frame folders without data.options.fps); give the "
                                 "window in frames (temporal.unit=frames)")
            fps = np.asarray(fps, dtype=np.float64)
        else:
            fps = np.ones(len(lengths))
        window = self._in_frames(self.window, fps)
        short = np.flatnonzero(lengths < window)
        if short.size:
            c = int(short[0])
            who = names[c] if names is not None else f"clip {c}"
            raise ValueError(f"{who} has {lengths[c]} frames, shorter than the window of {window[c]} frames "
                             f"({short.size} clip(s) are); lower temporal.window or remove the short clips")
        seg = lengths if self.segment is None else np.minimum(lengths, self._in_frames(self.segment, fps))
        counts = np.maximum(1, lengths // seg)
        clip = np.repeat(np.arange(len(lengths)), counts)
        k = np.arange(len(clip)) - np.repeat(np.cumsum(counts) - counts, counts)  # segment number in its clip
        lo = k * seg[clip]
        hi = np.where(k == counts[clip] - 1, lengths[clip], lo + seg[clip])  # the last segment takes the rest
        return SampleTable(clip, lo, hi, window[clip])

    def frames_of(self, table: SampleTable, epoch: int, samples) -> tuple[np.ndarray, np.ndarray]:
        """(clip (B,), frame indices within the clip (B, k)) of the given samples in ``epoch``."""
        samples = np.asarray(samples, dtype=np.int64).reshape(-1)
        out = np.empty((len(samples), self.frames), dtype=np.int64)
        for row, s in enumerate(samples.tolist()):
            rng = np.random.default_rng([self.seed, int(epoch), s, _SALT])
            w = int(table.window[s])
            start = int(table.lo[s]) + int(rng.integers(0, int(table.hi[s] - table.lo[s]) - w + 1))
            if self.sampling == "strided":
                offsets = np.round(np.linspace(0, w - 1, self.frames)).astype(np.int64)
            elif self.frames <= w:
                offsets = np.sort(rng.choice(w, self.frames, replace=False))
            else:
                offsets = np.sort(rng.integers(0, w, self.frames))
            out[row] = start + offsets
        return table.clip[samples], out


@dataclass
class NoParams:
    """The (empty) parameters of un-augmented frames (spatial="none")."""


class TemporalViews:
    """uint8 frames of B windows (B, k, 3, H, W) -> float32 views (B, k, 3, h, w), normalised.

    ``base``: the spatial augmentation of one frame (a :class:`MultiViewAugment` with one view);
    ``spatial``: "none", "window" or "frame" (see the module docstring). Like MultiViewAugment it
    draws parameters on the CPU (``sample_params``) and applies them on the frames' device
    (``apply``); parameter rows are ordered frame by frame within each window, so a rank's share of a
    global batch selects its rows as for images (``mmcr.train.step.augment_shard``)."""

    def __init__(self, base: MultiViewAugment, frames: int, spatial: str = "none"):
        if spatial not in SPATIAL:
            raise ValueError(f"spatial must be one of {SPATIAL}, got {spatial!r}")
        if base.views != 1:
            raise ValueError("the base augmentation of temporal views makes one view per frame")
        self.base, self.views, self.spatial = base, int(frames), spatial
        self.size = base.size
        self.generator = base.generator
        self._plain = base.eval_transform()

    @classmethod
    def from_config(cls, augment_cfg, temporal_cfg, seed: int | None = None) -> TemporalViews:
        base = MultiViewAugment.from_config(augment_cfg, views=1, seed=seed)
        return cls(base, augment_cfg.views, temporal_cfg.spatial)

    def eval_transform(self, size=None, resize: int | None = None):
        return self.base.eval_transform(size=size, resize=resize)

    def sample_params(self, batch: int, height: int, width: int, generator: torch.Generator | None = None):
        """Parameters of ``batch`` windows of k frames (``batch * k`` rows)."""
        g = self.generator if generator is None else generator
        if self.spatial == "none":
            return NoParams()
        if self.spatial == "frame":
            return self.base.sample_params(batch * self.views, height, width, g)
        p = self.base.sample_params(batch, height, width, g)
        return map_params(p, lambda t: t.repeat_interleave(self.views, dim=0))

    def apply(self, frames: torch.Tensor, params) -> torch.Tensor:
        if not isinstance(frames, torch.Tensor) or frames.ndim != 5:
            got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"expected uint8 window frames of shape (B, k, 3, H, W), got {got}")
        b, k = frames.shape[:2]
        if k != self.views:
            raise ValueError(f"windows of {k} frames, but these temporal views make {self.views}")
        flat = check_images(frames.flatten(0, 1))
        out = self._plain(flat) if self.spatial == "none" else self.base.apply(flat, params)
        return out.reshape(b, k, 3, *self.size)

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        b, _, _, h, w = frames.shape
        return self.apply(frames, self.sample_params(b, h, w, generator))

    def __repr__(self) -> str:
        return f"TemporalViews(frames={self.views}, spatial={self.spatial!r}, size={self.size})"
