"""``mmcr data shard FOLDER OUT_DIR``: an image folder as tar shards in the webdataset layout.

Each split (``train/``, ``val/``, ``test/`` sub-folders, or the folder itself as "train") is shuffled
with a seed and cut into shards ``<split>-000000.tar`` of ``shard_size`` samples; a sample is the
file's bytes as they are (``<key>.jpg``, ``.png``, ...; nothing is re-encoded) and its label
(``<key>.cls``). Classes come from the folder names, as for ``imagefolder``. Every shard is written
to a temporary file and renamed into place, and ``manifest.json`` (classes, samples per shard and per
class) is written last, so a folder with a manifest is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mmcr.data.datasets import SPLIT_NAMES, _check_classes, _scan_folder, _split_folder
from mmcr.data.decode import DatasetError
from mmcr.data.shards import FORMAT, MANIFEST, _wds
from mmcr.rundir.files import write_atomic, write_text_atomic


def _splits(root: Path) -> list[str]:
    present = [s for s in SPLIT_NAMES if (root / s).is_dir()]
    return present or ["train"]


def _write_shard(path: Path, rows: list[tuple[str, str, int]]) -> None:
    """One tar of (key, file, label) rows, through an atomic temporary file."""

    wds = _wds()
    samples = []
    for key, file, label in rows:
        try:
            data = Path(file).read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read {file} ({exc.strerror}); check its permissions") from exc
        ext = os.path.splitext(file)[1].lower().lstrip(".")
        samples.append({"__key__": key, ext: data, "cls": str(label).encode()})

    def write(f) -> None:
        with wds.TarWriter(f, encoder=False, mtime=0.0) as tw:
            for sample in samples:
                tw.write(sample)

    write_atomic(path, write, what="shard")


def write_shards(folder, out_dir, shard_size: int = 1000, seed: int = 0) -> dict:
    """Write the shards and the manifest of an image folder; returns the manifest."""
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise DatasetError(f"--shard-size must be a positive number of samples, got {shard_size!r}")
    root, out = Path(folder).expanduser(), Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; give a folder for the shards")
    if (out / MANIFEST).exists() or (out.is_dir() and any(out.glob("*.tar"))):
        raise DatasetError(f"{out} already holds shards; choose an empty or new folder")
    splits = _splits(root)
    ref = None
    manifest = {"format": FORMAT, "classes": [], "source": str(root.resolve()), "seed": int(seed),
                "shard_size": shard_size, "splits": {}}
    for split in splits:
        where, _ = _split_folder(root, split)
        classes, files = _scan_folder(where, str(where))
        _check_classes(classes, ref, str(root), split)
        ref = ref or classes
        order = np.random.default_rng([int(seed), len(files)]).permutation(len(files))
        shards = []
        for j, lo in enumerate(range(0, len(files), shard_size)):
            rows = [(f"{split}{i:08d}", files[i][0], files[i][1]) for i in order[lo : lo + shard_size].tolist()]
            name = f"{split}-{j:06d}.tar"
            _write_shard(out / name, rows)
            per_class = np.bincount([lb for _, _, lb in rows], minlength=len(classes)).tolist()
            shards.append({"name": name, "count": len(rows), "per_class": per_class})
        per_class = np.sum([sh["per_class"] for sh in shards], axis=0).astype(int).tolist()
        manifest["splits"][split] = {"count": len(files), "per_class": per_class, "shards": shards}
    manifest["classes"] = ref

    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n", what="shard manifest")
    return manifest
