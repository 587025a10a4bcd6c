"""Tar shards in the webdataset layout, streamed per rank and per worker, resumable mid-epoch.

A shard is a tar of samples ``<key>.<image ext>`` + ``<key>.cls`` (the label as text), the format
solo-learn and open_clip read. ``mmcr data shard FOLDER OUT_DIR`` (:func:`write_shards`) writes them
from an image folder, shuffled, with ``manifest.json`` (classes, and the samples per shard and class).

A :class:`ShardSet` is a list of ranges [start, stop) of shards: a split is every shard whole; the
validation split carved from it is the first ``val_fraction`` of every shard (the shards are written
shuffled, so a prefix is a random sample, and no stream is read into memory). The shards' counts come
from the manifest or, for local shards without one, from one scan of their headers (cached).

Training order, a pure function of (seed, epoch): the epoch permutes the ranges, concatenates them
and gives stream s = rank * streams + worker the s-th equal piece of that sequence (a shard may be
split between two streams; each stream reads only its own part). Each stream shuffles its samples
in a buffer seeded by (seed, epoch, stream) and yields the same number of batches, so every rank has
the same number of steps; the DataLoader interleaves its workers' batches round-robin. Resuming at
batch b of an epoch skips, in each stream, the raw samples of the batches already consumed (read,
not decoded) and rotates the workers so that batch b comes next: nothing consumed is repeated.
Undecodable samples are replaced by another sample of their batch (counted), so every batch keeps
its size and the skipping stays exact; a truncated shard ends early (counted) and its stream starts
over to fill its batches.
"""

from __future__ import annotations

import json
import os
import random
import tarfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from mmcr.data import cache as C
from mmcr.data import views as V
from mmcr.data.decode import IMAGE_EXTENSIONS, BadFiles, DatasetError, decode_image
from mmcr.data.order import epoch_order, one_line_worker_errors
from mmcr.rundir.files import write_text_atomic

MANIFEST = "manifest.json"
FORMAT = "mmcr-shards/1"
IMAGE_KEYS = tuple(e.lstrip(".") for e in IMAGE_EXTENSIONS)


def _wds():
    try:
        import webdataset
    except ImportError as exc:  # pragma: no cover - an optional dependency
        raise DatasetError("data.name=webdataset needs the webdataset package: "
                           "pip install 'mmcr-toolkit[webdataset]'") from exc
    return webdataset


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://") or url.startswith("pipe:")


def _local_path(url: str) -> Path:
    return Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()


# ------------------------------------------------------------------------------------------ ranges
@dataclass(frozen=True)
class ShardRange:
    """Samples [start, stop) of one shard; ``offset`` is the global id of the shard's sample 0."""

    url: str
    start: int
    stop: int
    offset: int

    def __len__(self) -> int:
        return self.stop - self.start


def _proportional(sizes: list[int], n: int) -> list[int]:
    """n split over ranges of the given sizes in proportion (largest remainders), each <= its size."""
    total = sum(sizes)
    exact = [n * s / total for s in sizes]
    out = [int(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: n - sum(out)]:
        out[i] += 1
    return [min(o, s) for o, s in zip(out, sizes)]


def _pieces(ranges: list[ShardRange], lo: int, hi: int) -> list[ShardRange]:
    """Samples [lo, hi) of the concatenation of ``ranges``, as sub-ranges."""
    out, pos = [], 0
    for r in ranges:
        a, b = max(lo, pos), min(hi, pos + len(r))
        if a < b:
            out.append(replace(r, start=r.start + a - pos, stop=r.start + b - pos))
        pos += len(r)
    return out


class ShardSet:
    """A split of tar shards: ranges of samples, their classes and how to decode them.

    ``size``: the square (short side resized, centre crop) that evaluation and device-side crops
    take; ``with_crops(spec)``: the recipe's views from each full image instead (:mod:`mmcr.data.views`).
    """

    name = "webdataset"

    def __init__(self, ranges: list[ShardRange], classes: list[str], size: int, on_error: str = "skip",
                 split: str = "train", shuffle_buffer: int = 1000):
        BadFiles(on_error)  # validates the policy
        self.ranges = [r for r in ranges if len(r) > 0]
        self.classes = list(classes)
        self.size = int(size)
        self.on_error = on_error
        self.split = split
        self.shuffle_buffer = int(shuffle_buffer)
        self.crops = None
        self.encoded = False

    def __len__(self) -> int:
        return sum(len(r) for r in self.ranges)

    def __repr__(self) -> str:
        return f"ShardSet(split={self.split!r}, n={len(self)}, shards={len(self.ranges)}, classes={self.num_classes})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.crops.size) if self.crops is not None else (self.size, self.size)

    def _with_ranges(self, ranges, split=None) -> ShardSet:
        out = ShardSet(ranges, self.classes, self.size, self.on_error, split or self.split, self.shuffle_buffer)
        out.crops, out.encoded = self.crops, self.encoded
        return out

    def with_crops(self, spec, encoded: bool = False) -> ShardSet:
        """The same samples as the recipe's views from the full image (``encoded``: JPEG bytes + boxes)."""
        out = self._with_ranges(self.ranges)
        out.crops, out.encoded = spec, bool(encoded)
        return out

    def carve_val(self, val_fraction: float) -> tuple[ShardSet, ShardSet]:
        """(train, val): val is the first ``val_fraction`` of every shard (in proportion to its size)."""
        n = len(self)
        n_val = int(round(n * val_fraction))
        if n_val < 1 or n_val >= n:
            raise DatasetError(f"val_fraction {val_fraction} of {n} samples leaves an empty split; change val_fraction")
        take = _proportional([len(r) for r in self.ranges], n_val)
        val = [replace(r, stop=r.start + m) for r, m in zip(self.ranges, take)]
        train = [replace(r, start=r.start + m) for r, m in zip(self.ranges, take)]
        return self._with_ranges(train, "train"), self._with_ranges(val, "val")

    def head(self, n: int) -> ShardSet:
        """At most n samples, the first ones of every shard in proportion (a spread, not one shard)."""
        if n >= len(self):
            return self
        take = _proportional([len(r) for r in self.ranges], n)
        return self._with_ranges([replace(r, stop=r.start + m) for r, m in zip(self.ranges, take)])

    # ---------------------------------------------------------------------------------- reading
    def read(self, r: ShardRange, errors: list):
        """(sample id, image bytes, label) of the samples of range ``r``, in shard order. Samples
        without an image are skipped; a truncated or corrupt tar ends the range (both counted in
        ``errors``); ``on_error="raise"`` raises instead."""
        wds = _wds()
        try:
            stream = wds.gopen(r.url)
        except Exception as exc:
            raise DatasetError(f"cannot read shard {r.url} ({type(exc).__name__}: {exc}); check the path or "
                               "URL") from exc

        def handler(exn) -> bool:
            what = str(exn.args[0]).split(" @ ")[0] if exn.args else type(exn).__name__  # webdataset appends context
            if isinstance(exn, DatasetError):  # raised by this handler below, passed up through webdataset
                raise DatasetError(what) from None
            if isinstance(exn, OSError):  # the source failed (a missing file, a failing command, the network)
                raise DatasetError(f"cannot read shard {r.url} ({what}); check the path or URL") from exn
            if self.on_error == "raise":
                raise DatasetError(f"shard {r.url} is truncated or corrupt ({what}); re-copy it, or pass "
                                   "on_error='skip'") from exn
            errors.append(f"{r.url}: {what}")
            return False  # stop reading this shard

        files = wds.tariterators.tar_file_expander([{"url": r.url, "stream": stream}], handler=handler)
        try:
            for pos, sample in enumerate(wds.tariterators.group_by_keys(files, handler=handler)):
                if pos >= r.stop:
                    break
                if pos < r.start:
                    continue
                key = next((k for k in IMAGE_KEYS if k in sample), None)
                if key is None:
                    if self.on_error == "raise":
                        raise DatasetError(f"sample {sample.get('__key__')} of {r.url} has no image "
                                           f"({', '.join(IMAGE_KEYS)}); fix the shard or pass on_error='skip'")
                    errors.append(f"{r.url}:{sample.get('__key__')}: no image")
                    continue
                yield r.offset + pos, sample[key], _label(sample.get("cls"))
        finally:
            try:
                stream.close()
            except OSError as exc:  # a pipe reports its command's failure when closed
                raise DatasetError(f"cannot read shard {r.url} ({exc}); check the path or URL") from exc

    def decode(self, sid: int, data: bytes, epoch: int):
        """One sample as the loader hands it on: the square, the views, or the views' JPEG + boxes."""
        if self.crops is None:
            return torch.from_numpy(decode_image(bytes(data), self.size)).permute(2, 0, 1).contiguous()
        make = V.encode_views if self.encoded else V.decode_views
        return make(data, self.crops, epoch, sid)


def _label(cls: bytes | None) -> int:
    """The ``.cls`` member as an int; -1 (unlabelled, left out of evaluation) when absent or not a number."""
    try:
        return int(cls) if cls is not None else -1
    except ValueError:
        return -1


# ------------------------------------------------------------------------------------------ loader
def _stream_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([0x5348, int(seed), int(epoch), int(stream)]).generate_state(1)[0])


@dataclass
class _Plan:
    """One rank's epoch: what each of its streams reads, how many batches it yields and skips."""

    ds: ShardSet
    pieces: list[list[ShardRange]]
    quota: int
    skip: list[int]
    batch: int
    epoch: int
    seed: int
    first_stream: int  # the stream worker 0 serves (rotated on resume)
    train: bool
    stream_base: int = 0  # global number of this rank's stream 0 (seeds its shuffle buffer)


class _ShardStream(torch.utils.data.IterableDataset):
    def __init__(self, plan: _Plan):
        self.plan = plan

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers = 1 if info is None else info.num_workers
        wid = 0 if info is None else info.id
        p = self.plan
        for k in range(wid, len(p.pieces), workers):
            s = (k + p.first_stream) % len(p.pieces)
            yield from (_train_batches if p.train else _eval_batches)(p, s)


def _one_pass(ds: ShardSet, pieces, errors):
    for r in pieces:
        yield from ds.read(r, errors)


def _raw_samples(p: _Plan, s: int, errors: list):
    """The stream's samples, shuffled in a seeded buffer; passes repeat only if a pass falls short."""
    wds = _wds()
    rng = random.Random(_stream_seed(p.seed, p.epoch, p.stream_base + s))
    while True:
        n = 0
        buf = max(1, p.ds.shuffle_buffer)
        for item in wds.shuffle(buf, initial=buf, rng=rng)(iter(_one_pass(p.ds, p.pieces[s], errors))):
            n += 1
            yield item
        if n == 0:
            raise DatasetError(f"no readable sample in {', '.join(sorted({r.url for r in p.pieces[s]}))}; "
                               "check the shards")


def _new(errors: list, seen: list) -> int:
    """How many errors arrived since the last call (``seen`` holds the count reported so far)."""
    fresh = len(errors) - seen[0]
    seen[0] = len(errors)
    return fresh


def _train_batches(p: _Plan, s: int):
    errors: list = []
    seen = [0]
    raw = _raw_samples(p, s, errors)
    for b in range(p.quota):
        chunk = [next(raw) for _ in range(p.batch)]
        if b < p.skip[s]:
            continue  # consumed before the resume: read, not decoded
        items, labels, bad = [], [], []
        for sid, data, label in chunk:
            try:
                items.append(p.ds.decode(sid, data, p.epoch))
                labels.append(label)
            except V.DECODE_ERRORS as exc:
                if p.ds.on_error == "raise":
                    raise DatasetError(f"cannot decode sample {sid} of {p.ds.split!r}: {exc}; fix the shard or "
                                       "pass on_error='skip'") from exc
                bad.append(len(items))
                items.append(None)
                labels.append(label)
        good = [i for i, it in enumerate(items) if it is not None]
        if not good:
            raise DatasetError(f"none of the {p.batch} samples of a batch of {p.ds.split!r} could be decoded; "
                               "check the shards")
        for n, i in enumerate(bad):  # a broken sample takes another one's place: batches keep their size
            items[i], labels[i] = items[good[n % len(good)]], labels[good[n % len(good)]]
        yield _stack(items), torch.tensor(labels, dtype=torch.int64), len(bad), _new(errors, seen)


def _eval_batches(p: _Plan, s: int):
    errors: list = []
    seen = [0]
    items, labels, bad = [], [], 0
    for sid, data, label in _one_pass(p.ds, p.pieces[s], errors):
        if label < 0:
            continue
        try:
            items.append(p.ds.decode(sid, data, p.epoch))
            labels.append(label)
        except V.DECODE_ERRORS as exc:
            if p.ds.on_error == "raise":
                raise DatasetError(f"cannot decode sample {sid} of {p.ds.split!r}: {exc}; fix the shard or pass "
                                   "on_error='skip'") from exc
            bad += 1
        if len(items) == p.batch:
            yield _stack(items), torch.tensor(labels, dtype=torch.int64), bad, _new(errors, seen)
            items, labels, bad = [], [], 0
    if items:
        yield _stack(items), torch.tensor(labels, dtype=torch.int64), bad, _new(errors, seen)


def _stack(items):
    return list(items) if isinstance(items[0], tuple) else torch.stack(items)


class ShardLoader:
    """Batches of (uint8 images or views, labels) from a :class:`ShardSet`, like the other loaders:
    ``set_epoch(epoch, start_batch)`` then iterate; ``len()`` batches per epoch on every rank.

    Training (``shuffle``): one stream per worker (``streams``, at least 1), fixed batches per stream
    (``drop_last``). Evaluation (``shuffle=False``): each rank reads a contiguous share in shard
    order, every labelled sample once, last batch partial.
    """

    def __init__(self, ds: ShardSet, batch_size: int, shuffle: bool = True, drop_last: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, decode_device=None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DatasetError(f"batch_size must be a positive int, got {batch_size!r}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DatasetError(f"need 0 <= rank < world_size, got rank={rank} world_size={world_size}")
        if len(ds) == 0:
            raise DatasetError(f"the {ds.split!r} shards hold no samples; check the shards and the manifest")
        if decode_device is not None and not ds.encoded:
            raise DatasetError("decode_device needs shards with_crops(spec, encoded=True) (JPEG bytes and boxes)")
        if shuffle != drop_last:
            raise DatasetError("shard streams train with shuffle and drop_last together, or evaluate with neither")
        self.dataset, self.batch_size, self.train = ds, batch_size, shuffle
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.num_workers, self.decode_device = num_workers, decode_device
        self.streams = max(1, num_workers) if shuffle else 1
        self.per_stream = len(ds) // (world_size * self.streams)
        n = len(ds)
        share = n * (rank + 1) // world_size - n * rank // world_size
        self._batches = self.streams * (self.per_stream // batch_size) if shuffle else -(-share // batch_size)
        if shuffle and self._batches == 0:
            raise DatasetError(
                f"{len(ds)} samples give each of the {world_size} rank(s) x {self.streams} stream(s) "
                f"{self.per_stream}, less than one batch of {batch_size}; use a smaller batch, fewer workers or "
                "more data")
        self.epoch, self.start_batch = 0, 0
        self.skipped = 0  # undecodable samples (replaced in their batch when training), seen by this process
        self.damaged = 0  # truncated or corrupt shards cut short, and samples without an image

    def __len__(self) -> int:
        return self._batches

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self._batches:
            raise DatasetError(f"start_batch must be in [0, {self._batches}], got {start_batch}")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def plan(self) -> _Plan:
        """This rank's streams for the current epoch (shard order a pure function of (seed, epoch))."""
        ranges = self.dataset.ranges
        if not self.train:
            n = len(self.dataset)
            lo, hi = n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size
            return _Plan(self.dataset, [_pieces(ranges, lo, hi)], 0, [0], self.batch_size, self.epoch, self.seed, 0,
                         False)
        order = epoch_order(len(ranges), self.seed, self.epoch).tolist()
        shuffled = [ranges[i] for i in order]
        first = self.rank * self.streams
        pieces = [_pieces(shuffled, (first + w) * self.per_stream, (first + w + 1) * self.per_stream)
                  for w in range(self.streams)]
        skip = [len(range(w, self.start_batch, self.streams)) for w in range(self.streams)]
        return _Plan(self.dataset, pieces, self.per_stream // self.batch_size, skip, self.batch_size, self.epoch,
                     self.seed, self.start_batch % self.streams, True, first)

    def __iter__(self):
        plan = self.plan()
        dl = torch.utils.data.DataLoader(_ShardStream(plan), batch_size=None, num_workers=self.num_workers,
                                         pin_memory=torch.cuda.is_available(), persistent_workers=False)
        for images, labels, bad, damaged in one_line_worker_errors(dl):
            self.skipped += int(bad)
            self.damaged += int(damaged)
            if self.decode_device is not None:
                images, lost = V.decode_encoded(images, self.dataset.crops, self.decode_device, self.dataset.on_error)
                self.skipped += lost
            yield images, labels
        if self.skipped or self.damaged:
            warnings.warn(f"{self.dataset.split!r} shards: {self.skipped} undecodable sample(s) skipped and "
                          f"{self.damaged} truncated/corrupt shard(s) or image-less sample(s) so far (pass "
                          "on_error='raise' to stop at the first)", stacklevel=2)


# ------------------------------------------------------------------------------------------ sources
def read_manifest(path: str | Path) -> dict:
    """A shard manifest (as :func:`mmcr.data.shardwrite.write_shards` writes it), checked for shape."""
    path = Path(path).expanduser()
    try:
        man = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the shard manifest {path} ({exc}); check the file") from exc
    if not isinstance(man, dict) or not isinstance(man.get("splits"), dict) or not isinstance(man.get("classes"), list):
        raise DatasetError(f"{path} is not a shard manifest (needs 'classes' and 'splits'); write shards with "
                           "`mmcr data shard FOLDER OUT_DIR`")
    return man


def scan_shard(path: Path, cache_dir=None) -> dict:
    """Samples and labels of a local shard without a manifest, from one pass over its tar headers and
    ``.cls`` members (cached by the file's identity): ``{"count", "labels"}``."""
    key = C.cache_key("shard-scan", C.file_identity(path))
    entry = C.entry_path(cache_dir, "shard-scan", key).with_suffix(".json")
    if entry.exists():
        try:
            return json.loads(entry.read_text())
        except (OSError, ValueError):
            pass
    keys, labels = [], {}
    split_name = _wds().tariterators.base_plus_ext
    try:
        with tarfile.open(path, "r:*") as tf:
            for m in tf:
                base, ext = split_name(m.name) if m.isfile() else (None, None)
                if base is None:
                    continue
                if not keys or keys[-1] != base:
                    keys.append(base)
                if ext.lower() == "cls":
                    labels[base] = int(tf.extractfile(m).read().strip() or -1)
    except (tarfile.TarError, OSError, EOFError, ValueError):
        pass  # counted up to the damage; reading reports it
    out = {"count": len(keys), "labels": [labels.get(k, -1) for k in keys]}
    try:

        write_text_atomic(entry, json.dumps(out), what="shard index")
    except (OSError, ValueError):
        pass  # the scan is repeated next time
    return out


def expand_shards(pattern: str) -> list[str]:
    """Shard URLs of a path, brace pattern (``train-{000000..000146}.tar``), ``::``-joined list or URL;
    a local folder means its ``*.tar`` files."""
    local = _local_path(pattern)
    if not is_remote(pattern) and local.is_dir():
        return sorted(str(p) for p in local.glob("*.tar"))
    urls = _wds().shardlists.expand_urls(pattern)
    if not is_remote(pattern):
        missing = [u for u in urls if not _local_path(u).is_file()]
        if len(missing) == len(urls):
            raise DatasetError(f"shard pattern {pattern} matches no file; check the path and the brace range")
        if missing:
            raise DatasetError(f"shard {missing[0]} of {pattern} not found ({len(missing)} of {len(urls)} missing); "
                               "check the brace range")
        unreadable = [u for u in urls if not os.access(_local_path(u), os.R_OK)]
        if unreadable:
            raise DatasetError(f"shard {unreadable[0]} is not readable (permissions); check the files")
    return urls


def _counted(urls: list[str], man: dict | None, split: str, cache_dir, where: str) -> tuple[list, list[str]]:
    """(ranges of whole shards with global offsets, classes) from the manifest, else from scans."""
    counts, classes = [], None
    if man is not None:
        entries = {sh["name"]: sh for s in man["splits"].values() for sh in s.get("shards", [])}
        for u in urls:
            sh = entries.get(os.path.basename(u))
            if sh is None:
                raise DatasetError(f"shard {u} is not in the manifest of {where}; rewrite the manifest or drop "
                                   "the shard")
            counts.append(int(sh["count"]))
        classes = [str(c) for c in man["classes"]]
    else:
        remote = [u for u in urls if is_remote(u)]
        if remote:
            raise DatasetError(f"remote shards ({remote[0]}) need their counts: pass data.options.manifest=<local "
                               "manifest.json> (as `mmcr data shard` writes it)")
        scans = [scan_shard(_local_path(u), cache_dir) for u in urls]
        counts = [sc["count"] for sc in scans]
        top = max((max(sc["labels"], default=-1) for sc in scans), default=-1)
        classes = [str(i) for i in range(top + 1)]
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist() if counts else []
    return [ShardRange(u, 0, c, o) for u, c, o in zip(urls, counts, offsets)], classes


def load_webdataset(root, split: str = "train", cache_dir=None, size: int | None = None, on_error: str = "skip",
                    shuffle_buffer: int = 1000, manifest: str | None = None, lazy: bool = True) -> ShardSet:
    """A split of tar shards. ``root``: a folder with ``manifest.json`` (its splits), or shards of
    one split ("train"): a folder of .tar files, a path, a brace pattern or URLs (with ``manifest``
    giving their counts when they are not local). ``size``: the working square of evaluation.
    Shards are always streamed (``lazy`` may only be true, so a lazy-folder config switches over)."""
    if not lazy:
        raise DatasetError("webdataset shards are always streamed; drop lazy=false (or use imagefolder/archive)")
    if root is None:
        raise DatasetError("webdataset needs root=<folder with manifest.json, or a shard pattern like "
                           "train-{000000..000146}.tar>")
    if size is None:
        raise DatasetError("webdataset needs size=<working size in px> (evaluation views are cut from that square)")
    if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise DatasetError(f"shuffle_buffer must be a positive int (samples held per stream), got {shuffle_buffer!r}")
    root = str(root)
    folder = _local_path(root)
    man_path = Path(manifest).expanduser() if manifest else None
    if man_path is None and not is_remote(root) and (folder / MANIFEST).is_file():
        man_path = folder / MANIFEST
    man = read_manifest(man_path) if man_path is not None else None
    if man is not None and not is_remote(root) and folder.is_dir():
        if split not in man["splits"]:
            raise DatasetError(f"split {split!r} not in the shards of {root} (has {sorted(man['splits'])}); pass one "
                               "of those")
        urls = [str(folder / sh["name"]) for sh in man["splits"][split]["shards"]]
        missing = [u for u in urls if not Path(u).is_file()]
        if missing:
            raise DatasetError(f"shard {missing[0]} listed in {man_path} not found; re-copy the shards")
    else:
        if split not in ("train", "all"):
            raise DatasetError(f"{root} is one split of shards (loaded as 'train'); it has no {split!r} split: "
                               "write the splits with `mmcr data shard` (a folder with a manifest)")
        urls = expand_shards(root)
        if not urls:
            raise DatasetError(f"no .tar shards in {root}; check the folder")
        if man is None and not is_remote(root):
            beside = _local_path(urls[0]).parent / MANIFEST
            man = read_manifest(beside) if beside.is_file() else None
    ranges, classes = _counted(urls, man, split, cache_dir, str(man_path or root))
    return ShardSet(ranges, classes, int(size), on_error, split, shuffle_buffer)
