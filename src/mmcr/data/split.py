"""A validation split carved from the training set, for monitoring and model selection.

The test split is for final numbers only; choosing checkpoints on it (as the authors' code does)
inflates them. The split is stratified by class and a pure function of (labels, val_fraction, seed).
Shards (``ShardSet``) are streams whose labels are not read up front: their validation split is the
first ``val_fraction`` of every shard, a random sample because shards are written shuffled.
"""

from __future__ import annotations

import numpy as np

from mmcr.data.decode import DatasetError
from mmcr.schema import check_seed


def split_train_val(ds, val_fraction: float = 0.1, seed: int = 0):
    """(train_ds, val_ds): a stratified, reproducible split; both keep the original relative order."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < float(val_fraction) < 1.0:
        raise DatasetError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    check_seed(seed, error=DatasetError)
    if hasattr(ds, "carve_val"):  # a stream of shards: the first val_fraction of every shard (no labels read)
        return ds.carve_val(val_fraction)
    labels = np.asarray(ds.labels)
    n = len(labels)
    n_val = int(round(n * val_fraction))
    if n_val < 1 or n_val >= n:
        raise DatasetError(f"val_fraction {val_fraction} of {n} images leaves an empty split; change val_fraction")
    idx = np.arange(n)
    labelled = labels >= 0
    if not labelled.all():
        raise DatasetError("the data set has unlabelled images (label -1); split a labelled set (e.g. stl10 'train')")
    counts = np.bincount(labels)
    present = counts[counts > 0]
    n_classes = len(present)
    if present.min() < 2 or n_val < n_classes or n - n_val < n_classes:
        raise DatasetError(
            f"cannot stratify {n} images of {n_classes} classes (smallest class {present.min()}) into a "
            f"{val_fraction} validation split; use more images per class or a different val_fraction"
        )
    tr, va = train_test_split(idx, test_size=n_val, stratify=labels, random_state=int(seed))
    return ds.subset(np.sort(tr), split="train"), ds.subset(np.sort(va), split="val")
