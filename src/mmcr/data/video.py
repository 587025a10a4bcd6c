"""Clips: sequences of uint8 frames + a label per clip, from video files, frame folders and npz arrays.

A clip set is what temporal MMCR trains on (see :mod:`mmcr.augment.temporal`): a manifold is a window
of one clip. Three sources, one interface (``len`` = clips, ``labels``, ``classes``, ``lengths`` and
``fps`` per clip, ``read(clip, frames)`` -> uint8 (k, 3, H, W), ``subset``, ``still_frames()``):

- :class:`ClipDataset`: every frame in memory (flat (F, 3, H, W) uint8 + per-clip start and length),
  batches gathered by index on the training device; npz ``videos_<split>`` arrays, the generated
  moving digits, and video files or frame folders small enough to decode once (``lazy=False`` or the
  automatic choice) live here;
- :class:`VideoClips`: video files read on demand in loader workers with PyAV. A one-time index (frame
  count, frame rate, duration, keyframes; cached) lets a window be read by seeking to the keyframe
  before it and decoding forward, resized while converting (libswscale), instead of decoding the file
  from its start;
- :class:`FrameFolderClips`: one folder of numbered image files per clip (ffmpeg frame dumps), the
  k files of a window decoded on demand.

Folders follow the image-folder rule: ``<root>/[<split>/][<class>/]<clip>``; class folders give labels
(used for evaluation only), clips outside class folders are unlabelled (-1). Evaluation sees a clip
set as still images: ``still_images(ds)`` takes ``still_frames`` evenly spaced frames of every clip,
labelled with the clip's label.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mmcr.data import cache as C
from mmcr.data.datasets import (
    ImageDataset,
    _check_classes,
    _class_dirs,
    _load_npz,
    _natural_key,
    _split_folder,
    check_labels,
    resize_square,
)
from mmcr.data.decode import BadFiles, DatasetError, decode_image, is_image_name
from mmcr.rundir.files import write_text_atomic

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg")
STILL_FRAMES = 4  # frames per clip that stand for it as still images in evaluation
IN_MEMORY_LIMIT = 1 << 30  # bytes of decoded frames below which lazy=None decodes a folder into memory
INDEX_VERSION = 1


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_EXTENSIONS)


def even_frames(length: int, m: int) -> np.ndarray:
    """``m`` evenly spaced frame indices of a clip of ``length`` frames (all of them when m >= length)."""
    if m >= length:
        return np.arange(length)
    return np.round(np.linspace(0, length - 1, m)).astype(np.int64)


def _check_still(still_frames) -> int:
    if isinstance(still_frames, bool) or not isinstance(still_frames, int) or still_frames < 1:
        raise DatasetError(f"still_frames must be a positive int (frames per clip used as still images), "
                           f"got {still_frames!r}")
    return still_frames


# ------------------------------------------------------------------------------------------ in memory
class ClipDataset:
    """Clips held in memory: ``frames`` (F, 3, H, W) uint8, clip ``c`` = frames[starts[c]:starts[c] +
    lengths[c]]; ``labels`` (N,) int64 (-1 = unlabelled), ``classes``; ``fps`` (N,) float64 or None."""

    def __init__(self, frames: torch.Tensor, lengths, labels, classes: list[str], name: str = "",
                 split: str = "", fps=None, still_frames: int = STILL_FRAMES, names: list[str] | None = None,
                 meta: dict | None = None, starts=None):
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise DatasetError(f"clip frames must be uint8 (F, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
        self.frames = frames
        self.lengths = torch.as_tensor(lengths, dtype=torch.int64)
        self.starts = (torch.cumsum(self.lengths, 0) - self.lengths) if starts is None else \
            torch.as_tensor(starts, dtype=torch.int64)
        self.classes = list(classes)
        self.labels = check_labels(labels, len(self.lengths), len(self.classes), f"{name} {split} clips".strip())
        if len(self.lengths) and int((self.starts + self.lengths).max()) > frames.shape[0]:
            raise DatasetError("clip lengths run past the stored frames")
        self.name, self.split = name, split
        self.fps = None if fps is None else torch.as_tensor(fps, dtype=torch.float64)
        self.still_frames = _check_still(still_frames)
        self.names = names if names is not None else [f"{name}:{split}[{i}]" for i in range(len(self.lengths))]
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.frames.shape[2]), int(self.frames.shape[3])

    def read(self, clip: int, frames) -> torch.Tensor:
        """Frames ``frames`` (indices within the clip) of clip ``clip``: uint8 (k, 3, H, W)."""
        idx = torch.as_tensor(frames, dtype=torch.int64) + self.starts[clip]
        return self.frames.index_select(0, idx)

    def subset(self, indices, split: str | None = None) -> ClipDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return ClipDataset(self.frames, self.lengths[idx], self.labels[idx], self.classes, self.name,
                           split if split is not None else self.split,
                           None if self.fps is None else self.fps[idx], self.still_frames,
                           [self.names[i] for i in idx.tolist()], self.meta, starts=self.starts[idx])

    def still_frames_of(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (M, 3, H, W), labels (M,), clip index (M,)): ``still_frames`` evenly spaced frames per clip."""
        rows, clips = [], []
        for c in range(len(self)):
            f = even_frames(int(self.lengths[c]), self.still_frames)
            rows.append(torch.from_numpy(f) + self.starts[c])
            clips.append(torch.full((len(f),), c, dtype=torch.int64))
        idx, clip = torch.cat(rows), torch.cat(clips)
        return self.frames.index_select(0, idx), self.labels[clip], clip

    def __repr__(self) -> str:
        return (f"ClipDataset(name={self.name!r}, split={self.split!r}, clips={len(self)}, "
                f"frames={int(self.lengths.sum())}, size={self.image_size}, classes={self.num_classes})")


def is_clip_set(ds) -> bool:
    """Whether ``ds`` holds clips (trained with temporal views) rather than still images."""
    return isinstance(ds, (ClipDataset, FileClips))


def still_images(ds):
    """A clip set as still images (``still_frames`` evenly spaced frames per clip, each labelled with its
    clip's label; ``meta["clip"]`` says which clip): what kNN, probes and geometry evaluate. An image
    data set is returned as it is."""
    if not is_clip_set(ds):
        return ds
    images, labels, clip = ds.still_frames_of()
    return ImageDataset(images, labels, ds.classes, ds.name, ds.split, {"clip": clip.tolist()})


def clips_from_array(videos: np.ndarray, labels: np.ndarray, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, H, W, 3) uint8 -> flat frames (N*T, 3, H, W) and lengths (N,), checking rank and dtype."""
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise DatasetError(f"{where} must be uint8 clips of shape (N, T, H, W, 3), got shape {videos.shape}")
    if videos.dtype != np.uint8:
        raise DatasetError(f"{where} must be uint8 (N, T, H, W, 3), got dtype {videos.dtype}; convert with "
                           "np.clip(x, 0, 255).astype(np.uint8)")
    n, t = videos.shape[:2]
    if t < 1:
        raise DatasetError(f"{where} has clips of 0 frames")
    if len(labels) != n:
        raise DatasetError(f"{where}: {n} clips but {len(labels)} labels")
    flat = np.ascontiguousarray(videos.reshape(n * t, *videos.shape[2:]).transpose(0, 3, 1, 2))
    return torch.from_numpy(flat), torch.full((n,), t, dtype=torch.int64)


def load_npz(root, split: str, cache_dir=None, size: int | None = None, layout: str = "auto",
             still_frames: int | None = None):
    """An .npz of clips (``videos_<split>`` (N, T, H, W, 3) uint8, optional ``labels_<split>`` (N,) and
    ``classes``) as a :class:`ClipDataset`; any other .npz is read as images (``mmcr.data`` npz, whose
    ``layout`` rule applies to them)."""
    if root is None or not _npz_has_videos(Path(root).expanduser()):
        if still_frames is not None:
            raise DatasetError("still_frames applies to .npz files of clips (videos_train, videos_test arrays); "
                               "this file holds images")
        return _load_npz(root, split, size=size, layout=layout)
    if layout != "auto":
        raise DatasetError(f"layout={layout!r} applies to image arrays; clips (videos_*) are always (N, T, H, W, 3)")
    path = Path(root).expanduser()
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        vk = f"videos_{split}"
        if vk not in keys:
            have = sorted(k[len("videos_"):] for k in keys if k.startswith("videos_"))
            raise DatasetError(f"{path} has no {vk} array (its clip splits: {have}); pass one of those as split")
        videos = z[vk]
        lk = f"labels_{split}"
        labels = np.asarray(z[lk]).reshape(-1) if lk in keys else np.full(len(videos), -1, dtype=np.int64)
        classes = [str(c) for c in z["classes"]] if "classes" in keys else None
    if lk in keys and not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{path}:{lk} must hold integer labels, got {labels.dtype}")
    frames, lengths = clips_from_array(videos, labels, f"{path}:{vk}")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) and labels.max() >= 0 else []
    return ClipDataset(resize_square(frames, size), lengths, labels.astype(np.int64), classes, "npz", split,
                       still_frames=STILL_FRAMES if still_frames is None else still_frames, names=None,
                       meta={"source": str(path)})


def _npz_has_videos(path: Path) -> bool:
    try:
        with np.load(path, allow_pickle=False) as z:
            return any(k.startswith("videos_") for k in z.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False  # the image loader reports what is wrong with the file


# ------------------------------------------------------------------------------------------ files
class FileClips(torch.utils.data.Dataset):
    """Clips read from files on demand (in DataLoader workers); subclasses decode their files in
    ``_decode(clip, frames) -> uint8 (k, size, size, 3)``. Items are ``(clip, frames)`` pairs (the
    loader chooses the window); ``dataset[(clip, frames)]`` -> (uint8 (k, 3, size, size), label).
    An undecodable clip follows ``on_error``: "raise", or "skip" (the next readable clip is read at the
    same positions, clamped to its length; counted in ``skipped``)."""

    name = "files"

    def __init__(self, entries: list[dict], root: str, classes: list[str], size: int, on_error: str = "skip",
                 split: str = "", still_frames: int = STILL_FRAMES, cache_dir=None):
        BadFiles(on_error)  # validates the policy
        self.entries = list(entries)
        self.root = root
        self.classes = list(classes)
        self.size = int(size)
        self.on_error = on_error
        self.split = split
        self.still_frames = _check_still(still_frames)
        self.cache_dir = cache_dir
        self.labels = torch.as_tensor([e["label"] for e in self.entries], dtype=torch.int64)
        self.lengths = torch.as_tensor([e["frames"] for e in self.entries], dtype=torch.int64)
        fps = [e.get("fps") for e in self.entries]
        self.fps = None if any(f is None for f in fps) else torch.as_tensor(fps, dtype=torch.float64)
        self.names = [e["path"] for e in self.entries]
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.size, self.size

    def path(self, clip: int) -> str:
        return os.path.join(self.root, self.entries[clip]["path"])

    def read(self, clip: int, frames) -> torch.Tensor:
        return self._read(clip, frames)[0]

    def _read(self, clip: int, frames) -> tuple[torch.Tensor, int]:
        """The frames and the clip they came from (another one when ``clip`` was skipped)."""
        frames = [int(f) for f in frames]
        for step in range(len(self.entries)):
            c = (clip + step) % len(self.entries)
            want = [min(f, int(self.lengths[c]) - 1) for f in frames]
            try:
                arr = self._decode(c, want)
                return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), c
            except (OSError, ValueError, SyntaxError) as exc:
                if self.on_error == "raise":
                    raise DatasetError(f"cannot decode clip {self.path(c)}: {exc}; fix or delete it, or pass "
                                       "on_error='skip'") from exc
                self.skipped += 1
                warnings.warn(f"skipped undecodable clip {self.path(c)} ({exc}); {self.skipped} skipped so far in "
                              "this process (pass on_error='raise' to stop instead)", stacklevel=2)
        raise DatasetError(f"no clip of {self.split!r} could be decoded; check the files")

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:
        x, used = self._read(*item)
        return x, int(self.labels[used])

    def subset(self, indices, split: str | None = None):
        return type(self)([self.entries[int(i)] for i in indices], self.root, self.classes, self.size,
                          self.on_error, split if split is not None else self.split, self.still_frames,
                          self.cache_dir)

    def still_frames_of(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The still frames of every clip, decoded once and cached (like decoded images)."""
        key = C.cache_key("stills", type(self).__name__, self.root, [(e["path"], e["frames"], e.get("stamp"))
                                                                     for e in self.entries],
                          self.size, self.still_frames)
        entry = C.entry_path(self.cache_dir, f"stills-{Path(self.root).name}-{self.split}", key)
        hit = C.load_split(entry, "stills")
        if hit is None:
            images, clips = [], []
            for c in range(len(self)):
                f = even_frames(int(self.lengths[c]), self.still_frames)
                x, used = self._read(c, f)  # a skipped clip's stand-in keeps its own label
                images.append(x.numpy())
                clips.append(np.full(len(f), used, dtype=np.int64))
            arr, clip = np.concatenate(images), np.concatenate(clips)
            if C.write_entry(entry, {"stills": (arr, clip)}, {"source": self.root}):
                hit = C.load_split(entry, "stills")
            else:
                hit = (arr, clip, {})
        images, clip = torch.from_numpy(hit[0]), torch.from_numpy(hit[1])
        return images, self.labels[clip], clip

    def decode_all(self) -> ClipDataset:
        """Every frame of every clip in memory (cached), for sets small enough to hold."""
        key = C.cache_key("clips", type(self).__name__, self.root, [(e["path"], e["frames"], e.get("stamp"))
                                                                    for e in self.entries], self.size)
        entry = C.entry_path(self.cache_dir, f"clips-{Path(self.root).name}-{self.split}", key)
        hit = C.load_split(entry, "clips")
        if hit is None:
            arr = np.concatenate([self.read(c, range(int(self.lengths[c]))).numpy() for c in range(len(self))])
            if C.write_entry(entry, {"clips": (arr, self.labels.numpy())}, {"source": self.root}):
                hit = C.load_split(entry, "clips")
            else:
                hit = (arr, self.labels.numpy(), {})
        return ClipDataset(torch.from_numpy(hit[0]), self.lengths, self.labels, self.classes, self.name, self.split,
                           self.fps, self.still_frames, list(self.names), {"source": self.root})

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_reader", None)  # open containers stay in the process that opened them
        return state


# ------------------------------------------------------------------------------------------ PyAV
def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DatasetError("reading video files needs PyAV: pip install av") from exc
    return av


class _VideoError(ValueError):
    """A video file that cannot be used; the message says why (not a video, truncated, ...)."""


def _av_errors():
    av = _av()
    return (av.error.FFmpegError, OSError, EOFError, IndexError)


def index_video(path: str) -> dict:
    """What reading windows needs about one video file, from its packets (no full decode): frames,
    frame rate, time base, first pts and pts step, duration, keyframe positions and frame size.
    Raises _VideoError for files that are not usable videos (and says why)."""
    av = _av()
    if os.path.getsize(path) == 0:
        raise _VideoError("is empty (0 bytes)")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise _VideoError("has no video stream (truncated, or audio only)")
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            pts, keys = [], []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None:
                    raise _VideoError("has packets without timestamps; remux it (ffmpeg -i in -c copy out.mkv)")
                pts.append(int(t))
                keys.append(bool(packet.is_keyframe))
            time_base = stream.time_base
            rate = stream.average_rate or stream.base_rate
            width, height = stream.codec_context.width, stream.codec_context.height
            container.seek(0, stream=stream)
            first = next(container.decode(stream), None)  # the codec must decode its first frame
            if first is None:
                raise _VideoError("has no decodable frame")
    except _av_errors() as exc:
        raise _VideoError(f"is not a readable video ({type(exc).__name__}: {exc})") from exc
    if not pts:
        raise _VideoError("has no frames")
    if declared and len(pts) < declared:
        raise _VideoError(f"is truncated: {len(pts)} of its {declared} frames are present")
    order = np.argsort(pts, kind="stable")
    sorted_pts = np.asarray(pts, dtype=np.int64)[order]
    keyframes = np.flatnonzero(np.asarray(keys)[order]).tolist()
    if not keyframes or keyframes[0] != 0:
        keyframes = [0] + keyframes
    if len(sorted_pts) > 1:
        d = np.diff(sorted_pts)
        step = int(np.median(d))
        if step <= 0 or int(d.max() - d.min()) > max(2, 0.05 * step):
            ms = lambda v: 1000.0 * float(v * time_base)  # noqa: E731
            raise _VideoError(f"has a variable frame rate (frame intervals {ms(d.min()):.1f}-{ms(d.max()):.1f} ms); "
                              "re-encode it at a constant rate, e.g. ffmpeg -i in.mp4 -fps_mode cfr -r 30 out.mp4")
    else:
        step = max(1, int(round(1.0 / float(rate * time_base)))) if rate else 1
    fps = 1.0 / float(step * time_base)
    return {"frames": int(len(sorted_pts)), "fps": fps, "time_base": [time_base.numerator, time_base.denominator],
            "pts0": int(sorted_pts[0]), "step": step, "duration": len(sorted_pts) / fps, "keyframes": keyframes,
            "width": int(width), "height": int(height)}


def _scaled(width: int, height: int, size: int) -> tuple[int, int]:
    """Short side -> size, aspect kept (the resize part of short-side + centre-crop)."""
    s = size / min(width, height)
    return max(size, round(width * s)), max(size, round(height * s))


def _centre(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top: top + size, left: left + size]


class WindowReader:
    """Reads chosen frames of a video by seeking: one seek to the keyframe at or before the first
    frame asked for, then decoding forward; only the frames asked for are converted to RGB, resized by
    libswscale to ``size`` on the short side (area averaging) and centre-cropped. Containers stay open
    (the ``keep`` most recent) so that consecutive windows of a file do not reopen it. One decoding
    thread per reader: parallelism comes from loader workers."""

    def __init__(self, size: int, keep: int = 4):
        self.size = int(size)
        self.keep = int(keep)
        self._open: OrderedDict[str, object] = OrderedDict()

    def _container(self, path: str):
        c = self._open.pop(path, None)
        if c is None:
            av = _av()
            c = av.open(path)
            c.streams.video[0].codec_context.thread_count = 1
            while len(self._open) >= self.keep:
                self._open.popitem(last=False)[1].close()
        self._open[path] = c
        return c

    def read(self, path: str, info: dict, frames: list[int]) -> np.ndarray:
        """uint8 (k, size, size, 3): the frames ``frames`` (indices into the file's frames, any order,
        repeats allowed) of the video ``path`` described by ``info`` (:func:`index_video`)."""
        wanted = sorted(set(frames))
        if wanted[0] < 0 or wanted[-1] >= info["frames"]:
            raise ValueError(f"frames {wanted[0]}..{wanted[-1]} outside the {info['frames']} frames of {path}")
        try:
            got = self._decode(path, info, wanted)
        except _av_errors() as exc:
            self._close(path)
            raise OSError(f"decoding failed ({type(exc).__name__}: {exc})") from exc
        if len(got) < len(wanted):
            self._close(path)
            raise OSError(f"the file ended after frame {max(got, default=-1)}, before frame {wanted[-1]} "
                          "(truncated since it was indexed?)")
        return np.stack([got[f] for f in frames])

    def _decode(self, path: str, info: dict, wanted: list[int]) -> dict[int, np.ndarray]:
        container = self._container(path)
        stream = container.streams.video[0]
        keys = info["keyframes"]
        kf = keys[int(np.searchsorted(keys, wanted[0], side="right")) - 1]
        container.seek(info["pts0"] + kf * info["step"], stream=stream, backward=True, any_frame=False)
        want = set(wanted)
        got: dict[int, np.ndarray] = {}
        width, height = _scaled(info["width"], info["height"], self.size)
        n = kf
        for frame in container.decode(stream):
            i = round((frame.pts - info["pts0"]) / info["step"]) if frame.pts is not None else n
            n = i + 1
            if i in want:
                arr = frame.to_ndarray(width=width, height=height, format="rgb24", interpolation="AREA")
                got[i] = _centre(arr, self.size)
            if i >= wanted[-1]:
                break
        return got

    def _close(self, path: str) -> None:
        c = self._open.pop(path, None)
        if c is not None:
            c.close()

    def close(self) -> None:
        for c in self._open.values():
            c.close()
        self._open.clear()


class VideoClips(FileClips):
    """Video files (see :class:`FileClips`), windows read with a :class:`WindowReader` per process."""

    name = "videofolder"

    def _decode(self, clip: int, frames: list[int]) -> np.ndarray:
        reader = self.__dict__.get("_reader")
        if reader is None:
            reader = self._reader = WindowReader(self.size)
        return reader.read(self.path(clip), self.entries[clip], frames)


class FrameFolderClips(FileClips):
    """Frame folders (see :class:`FileClips`): frame i of a clip is its i-th image file in natural order."""

    name = "framefolder"

    def _decode(self, clip: int, frames: list[int]) -> np.ndarray:
        files = self.entries[clip]["files"]
        folder = self.path(clip)
        cache: dict[int, np.ndarray] = {}
        for f in frames:
            if f not in cache:
                cache[f] = decode_image(os.path.join(folder, files[f]), self.size)
        return np.stack([cache[f] for f in frames])


# ------------------------------------------------------------------------------------------ folders
def _clip_layout(folder: Path, is_clip) -> tuple[list[str], list[tuple[str, int]]]:
    """(classes, [(clip path relative to folder, label)]): entries of ``folder`` that are clips are
    unlabelled (-1); sub-folders holding no clip themselves are class folders of clips."""
    entries = sorted(os.scandir(folder), key=lambda e: _natural_key(e.name))
    loose = [e.name for e in entries if not e.name.startswith(".") and is_clip(e)]
    classes = [c for c in _class_dirs(folder) if c not in loose]
    clips = [(name, -1) for name in loose]
    for label, cls in enumerate(classes):
        inner = sorted(os.scandir(folder / cls), key=lambda e: _natural_key(e.name))
        clips += [(f"{cls}/{e.name}", label) for e in inner if not e.name.startswith(".") and is_clip(e)]
    if loose and classes:
        raise DatasetError(f"{folder} mixes clips ({loose[0]}, ...) with class folders ({classes[0]}, ...); put "
                           "every clip in a class folder, or none")
    return (classes if not loose else []), clips


def _is_video_entry(e: os.DirEntry) -> bool:
    return e.is_file() and is_video_name(e.name)


def _is_frame_folder(e: os.DirEntry) -> bool:
    if not e.is_dir():
        return False
    return any(is_image_name(n) for n in os.listdir(e.path))


def _stamp(path: str) -> list:
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def _cached_index(kind: str, root: Path, folder: Path, split: str, items: list[tuple[str, int]], cache_dir,
                  build) -> dict:
    """The index of a folder's clips, built once by ``build(path, label)`` and kept in the cache as JSON
    (keyed by every file's size and modification time)."""
    stamps = [(rel, _stamp(str(folder / rel))) for rel, _ in items]
    key = C.cache_key(kind, INDEX_VERSION, str(folder.resolve()), stamps)
    path = Path(str(C.entry_path(cache_dir, f"{kind}-{root.name}-{split}", key)) + ".json")
    if path.exists():
        return json.loads(path.read_text())
    index = build()
    try:

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(index), what="video index")
    except (OSError, ValueError) as exc:
        warnings.warn(f"could not write the clip index {path} ({exc}); it is rebuilt next time", stacklevel=3)
    return index


def _report_skipped(skipped: list[str], where: str, what: str) -> None:
    if skipped:
        shown = "; ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unusable {what} in {where}: {shown} (pass on_error='raise' to stop at "
                      "the first one)", stacklevel=4)


def _folder_spec(kind: str, root, split: str, size, on_error: str, still_frames) -> tuple[Path, Path, list | None]:
    if root is None:
        raise DatasetError(f"{kind} needs root=<folder> laid out as <root>/[<split>/][<class>/]<clip>")
    if size is None:
        raise DatasetError(f"{kind} needs size=<working size in px>: frames are resized (short side) and "
                           "centre-cropped to it when decoded")
    BadFiles(on_error)
    _check_still(STILL_FRAMES if still_frames is None else still_frames)
    root = Path(root).expanduser()
    folder, ref = _split_folder(root, split)
    return root, folder, ref


def _finish(ds: FileClips, lazy, where: str):
    if not len(ds):
        raise DatasetError(f"no usable clips in {where}")
    if lazy is None:  # decode into memory when the frames fit comfortably
        lazy = int(ds.lengths.sum()) * 3 * ds.size * ds.size > IN_MEMORY_LIMIT
    if not isinstance(lazy, bool):
        raise DatasetError(f"lazy must be true, false or null (automatic), got {lazy!r}")
    return ds if lazy else ds.decode_all()


def load_videofolder(root, split: str, cache_dir=None, size: int | None = None, on_error: str = "skip",
                     lazy: bool | None = None, still_frames: int | None = None):
    """Video files under ``<root>/[<split>/][<class>/]`` as clips (see the module docstring). Files that
    are not usable videos (unreadable, truncated, empty, no video stream, variable frame rate) are
    skipped and counted, or raise with ``on_error='raise'``. ``lazy``: true streams windows from the
    files, false decodes every frame once (cached), null decides by size (in memory below 1 GiB)."""
    root, folder, ref = _folder_spec("videofolder", root, split, size, on_error, still_frames)
    classes, items = _clip_layout(folder, _is_video_entry)
    if not items:
        raise DatasetError(f"no video files in {folder}; expected <class>/<video> or <video> with extensions "
                           f"{', '.join(VIDEO_EXTENSIONS)}")
    if classes:
        _check_classes(classes, ref, str(root), split)

    def build() -> dict:
        entries, skipped = [], []
        for rel, label in items:
            try:
                info = index_video(str(folder / rel))
            except _VideoError as exc:
                if on_error == "raise":
                    raise DatasetError(f"video {folder / rel} {exc}; fix or delete it, or pass on_error='skip'") \
                        from exc
                skipped.append(f"{rel} {exc}")
                continue
            entries.append({"path": rel, "label": label, "stamp": _stamp(str(folder / rel)), **info})
        return {"classes": classes, "entries": entries, "skipped": skipped}

    index = _cached_index("videoindex", root, folder, split, items, cache_dir, build)
    _report_skipped(index["skipped"], str(folder), "video file(s)")
    if not index["entries"]:
        raise DatasetError(f"none of the {len(items)} video files in {folder} could be read; first: "
                           f"{index['skipped'][0]}")
    ds = VideoClips(index["entries"], str(folder), index["classes"], size, on_error, split,
                    STILL_FRAMES if still_frames is None else still_frames, cache_dir)
    return _finish(ds, lazy, str(folder))


def load_framefolder(root, split: str, cache_dir=None, size: int | None = None, on_error: str = "skip",
                     lazy: bool | None = None, still_frames: int | None = None, fps: float | None = None):
    """Frame folders (one folder of numbered images per clip) under ``<root>/[<split>/][<class>/]``.
    All frames of a clip must have one size (else the clip is refused, naming the folder and sizes);
    ``fps`` gives the frame rate that windows in seconds need (frame folders carry none)."""
    root, folder, ref = _folder_spec("framefolder", root, split, size, on_error, still_frames)
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0):
        raise DatasetError(f"fps must be a positive number (frames per second of the dumps), got {fps!r}")
    classes, items = _clip_layout(folder, _is_frame_folder)
    if not items:
        raise DatasetError(f"no frame folders in {folder}; expected <class>/<clip>/<frame image> or "
                           "<clip>/<frame image>")
    if classes:
        _check_classes(classes, ref, str(root), split)

    def build() -> dict:

        entries, skipped = [], []
        for rel, label in items:
            files = sorted((n for n in os.listdir(folder / rel) if is_image_name(n)), key=_natural_key)
            sizes = set()
            bad = None
            for n in files:
                try:
                    with Image.open(folder / rel / n) as im:
                        sizes.add(im.size)
                except (OSError, ValueError, SyntaxError) as exc:
                    bad = f"{rel}/{n} is not a readable image ({exc})"
                    break
            if bad is None and len(sizes) > 1:
                shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
                raise DatasetError(f"frames of {folder / rel} have different sizes ({shown}); a clip's frames "
                                   "must share one size: re-extract them, or remove the odd frames")
            if bad is not None:
                if on_error == "raise":
                    raise DatasetError(f"frame folder {folder / rel}: {bad}; fix or delete it, or pass on_error='skip'")
                skipped.append(bad)
                continue
            entries.append({"path": rel, "label": label, "files": files, "frames": len(files),
                            "stamp": _stamp(str(folder / rel))})
        return {"classes": classes, "entries": entries, "skipped": skipped}

    index = _cached_index("frameindex", root, folder, split, items, cache_dir, build)
    _report_skipped(index["skipped"], str(folder), "frame folder(s)")
    if not index["entries"]:
        raise DatasetError(f"none of the {len(items)} frame folders in {folder} could be read")
    entries = [dict(e, fps=None if fps is None else float(fps)) for e in index["entries"]]
    ds = FrameFolderClips(entries, str(folder), index["classes"], size, on_error, split,
                          STILL_FRAMES if still_frames is None else still_frames, cache_dir)
    return _finish(ds, lazy, str(folder))
