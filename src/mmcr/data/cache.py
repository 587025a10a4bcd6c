"""On-disk cache of decoded splits: decode a source once, load it as arrays in well under a second.

An entry is a folder ``<cache_dir>/<name>-<key>/`` holding ``<split>.images.npy`` (N, 3, H, W) uint8,
``<split>.labels.npy`` int64 and ``meta.json``. The key hashes the source's identity (path, size and
modification time of every file read), so a changed source is decoded again. Entries are written into
a temporary folder and renamed into place, so a crash or a concurrent writer never leaves half a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np

from mmcr.rundir.files import default_mode, describe_write_failure

CACHE_VERSION = 2  # 2: per-image file names in meta.json


def default_cache_dir() -> Path:
    """``$MMCR_CACHE`` if set, else ``~/.cache/mmcr``."""
    env = os.environ.get("MMCR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mmcr"


def file_identity(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def cache_key(*parts) -> str:
    blob = json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def entry_path(cache_dir: str | Path | None, name: str, key: str) -> Path:
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return root / f"{name}-{key}"


def load_split(entry: Path, split: str) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """(images, labels, meta) of a cached split, or None when the entry or split is absent."""
    meta_file = entry / "meta.json"
    if not meta_file.exists():
        return None
    meta = json.loads(meta_file.read_text())
    if split not in meta.get("splits", {}):
        return None
    images = np.load(entry / f"{split}.images.npy")
    labels = np.load(entry / f"{split}.labels.npy")
    return images, labels, meta


def write_entry(entry: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], meta: dict) -> bool:
    """Write all splits of one source atomically (temp folder + rename). A cache that cannot be
    written (disk full, read-only folder) is not an error: a warning says so, the data set is used
    from memory and decoded again next time. Returns whether the entry is on disk."""
    if (entry / "meta.json").exists():
        return True  # a complete entry for the same key is already there
    tmp = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
        for split, (images, labels) in splits.items():
            np.save(tmp / f"{split}.images.npy", np.ascontiguousarray(images, dtype=np.uint8))
            np.save(tmp / f"{split}.labels.npy", np.ascontiguousarray(labels, dtype=np.int64))
        meta = dict(meta, splits={s: int(len(v[1])) for s, v in splits.items()}, version=CACHE_VERSION)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.chmod(tmp, default_mode(directory=True))  # mkdtemp's 0700 would hide the cache from the group
        try:
            os.rename(tmp, entry)
        except OSError:
            if not (entry / "meta.json").exists():  # another writer won the race only if it finished
                raise
        return True
    except OSError as e:
        warnings.warn(f"could not write the decoded-data cache: {describe_write_failure(entry, e)}; using the "
                      "data from memory (it is decoded again next time; set $MMCR_CACHE or data.cache_dir "
                      "to a folder with space)", stacklevel=3)
        return False
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
