"""mmcr.data: every format, the decode cache, bad input, loaders and the train/val split."""

from __future__ import annotations

import os
import pickle
import tarfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import mmcr.data.datasets as D
from mmcr.data import (
    DatasetError,
    ImageDataset,
    LazyImageFolder,
    load_dataset,
    make_loader,
    split_train_val,
)

CIFAR_ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


def _rgb(seed, h=12, w=12):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _tree(root: Path, splits=("train", "test"), classes=("cat", "dog"), per_class=3, size=(12, 12)):
    """root/<split>/<class>/<i>.png with known pixel content."""
    for s in splits:
        for c in classes:
            d = root / s / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(_rgb(hash((s, c, i)) % 1000, *size)).save(d / f"{i}.png")
    return root


# ------------------------------------------------------------------------------------------ digits
def test_digits_fixed_stratified_split():
    tr = load_dataset("digits", split="train")
    te = load_dataset("digits", split="test")
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.images.dtype == torch.uint8 and tr.images.shape[1:] == (3, 8, 8) and tr.labels.dtype == torch.int64
    assert tr.classes == [str(i) for i in range(10)] and tr.images.max() == 255
    assert np.allclose(np.bincount(te.labels) / 360, np.bincount(tr.labels) / 1437, atol=0.01)
    again = load_dataset("digits", split="test")
    assert torch.equal(again.images, te.images)
    big = load_dataset("digits", split="test", size=32)
    assert big.images.shape == (360, 3, 32, 32)
    # The two splits partition the whole set.
    everything = load_dataset("digits", split="all")
    assert len(everything) == 1797
    assert torch.equal(torch.bincount(tr.labels) + torch.bincount(te.labels), torch.bincount(everything.labels))


# ------------------------------------------------------------------------------------------- npz
def test_npz_layouts_and_dtypes(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 10, 10, 3), dtype=np.uint8)
    y = np.arange(6) % 3
    np.savez(tmp_path / "a.npz", images=x, labels=y, classes=np.array(["a", "b", "c"]))
    ds = load_dataset("npz", tmp_path / "a.npz")
    assert torch.equal(ds.images, torch.from_numpy(x.transpose(0, 3, 1, 2)))
    assert ds.classes == ["a", "b", "c"]
    np.savez(tmp_path / "b.npz", x_train=x.astype(np.float32) / 255, y_train=y, x_test=x[:2, ..., 0], y_test=y[:2])
    tr = load_dataset("npz", tmp_path / "b.npz", split="train")
    assert (tr.images.int() - torch.from_numpy(x.transpose(0, 3, 1, 2)).int()).abs().max() <= 1
    te = load_dataset("npz", tmp_path / "b.npz", split="test")
    assert te.images.shape == (2, 3, 10, 10) and torch.equal(te.images[:, 0], te.images[:, 2])
    np.savez(tmp_path / "c.npz", images=(x.astype(np.uint16) * 257), labels=y)
    assert torch.equal(load_dataset("npz", tmp_path / "c.npz").images, ds.images)
    np.savez(tmp_path / "bad.npz", pictures=x)
    with pytest.raises(DatasetError, match="images array and a labels array"):
        load_dataset("npz", tmp_path / "bad.npz")
    with pytest.raises(DatasetError, match="no images for split"):
        load_dataset("npz", tmp_path / "b.npz", split="val")


# ------------------------------------------------------------------------------------ imagefolder
def test_imagefolder_reads_converts_and_caches(tmp_path, monkeypatch):
    root = _tree(tmp_path / "data")
    d = root / "train" / "cat"
    Image.fromarray(_rgb(1)[..., 0]).save(d / "gray.png")
    rgba = np.dstack([_rgb(2), np.full((12, 12), 128, np.uint8)])
    Image.fromarray(rgba).save(d / "rgba.png")
    Image.fromarray(_rgb(3)).convert("P", palette=Image.ADAPTIVE).save(d / "pal.png")
    sixteen = (np.arange(144, dtype=np.uint16).reshape(12, 12) * 400).astype(np.uint16)
    Image.fromarray(sixteen).save(d / "deep.png")
    Image.fromarray(_rgb(4)).save(d / "photo.jpg", quality=90)
    cache = tmp_path / "cache"
    ds = load_dataset("imagefolder", root, split="train", cache_dir=cache)
    assert len(ds) == 2 * 3 + 5 and ds.classes == ["cat", "dog"]
    assert ds.images.shape[1:] == (3, 12, 12)
    names = ["0", "1", "2", "deep", "gray", "pal", "photo", "rgba"]  # natural order inside the class
    by_name = {n: ds.images[i] for i, n in enumerate(names)}
    assert torch.equal(by_name["gray"][0], by_name["gray"][1])
    assert torch.equal(by_name["rgba"].permute(1, 2, 0), torch.from_numpy(_rgb(2)))
    assert torch.equal(by_name["deep"][0], torch.from_numpy((sixteen >> 8).astype(np.uint8)))
    assert (ds.labels == torch.tensor([0] * 8 + [1] * 3)).all()
    # Second load comes from the cache: decoding is not called.
    monkeypatch.setattr(D, "BadFiles", None)
    again = load_dataset("imagefolder", root, split="train", cache_dir=cache)
    assert torch.equal(again.images, ds.images)
    monkeypatch.undo()
    # A changed file invalidates the cache.
    Image.fromarray(_rgb(99)).save(root / "train" / "dog" / "0.png")
    changed = load_dataset("imagefolder", root, split="train", cache_dir=cache)
    assert not torch.equal(changed.images, ds.images)
    te = load_dataset("imagefolder", root, split="test", cache_dir=cache)
    assert len(te) == 6


def test_imagefolder_sizes_and_resize(tmp_path):
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    Image.fromarray(_rgb(0, 20, 30)).save(root / "a" / "x.png")
    Image.fromarray(_rgb(1, 16, 16)).save(root / "b" / "y.png")
    with pytest.raises(DatasetError, match="different sizes"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "c")
    ds = load_dataset("imagefolder", root, cache_dir=tmp_path / "c", size=8)
    assert ds.images.shape == (2, 3, 8, 8)
    with pytest.raises(DatasetError, match="single split"):
        load_dataset("imagefolder", root, split="test", cache_dir=tmp_path / "c")


def test_corrupt_and_truncated_images(tmp_path):
    root = _tree(tmp_path / "d", splits=("train",))
    (root / "train" / "cat" / "junk.jpg").write_bytes(b"not an image at all")
    good = root / "train" / "dog" / "0.png"
    Image.fromarray(_rgb(5, 40, 40)).save(tmp_path / "big.jpg")
    data = (tmp_path / "big.jpg").read_bytes()
    (root / "train" / "dog" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match=r"skipped 2 corrupt or truncated"):
        ds = load_dataset("imagefolder", root, cache_dir=tmp_path / "c1")
    assert len(ds) == 6 and len(ds.meta["skipped"]) == 2
    with pytest.warns(UserWarning, match=r"2 corrupt or truncated image\(s\) .* were skipped"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "c1")  # the cache remembers
    with pytest.raises(DatasetError, match=r"cannot decode image .*(junk|trunc)\.jpg"):
        load_dataset("imagefolder", root, cache_dir=tmp_path / "c2", on_error="raise")
    assert good.exists()


def test_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("imagefolder", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_dataset("imagefolder", tmp_path / "empty")
    (tmp_path / "e2" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetError, match="has no images"):
        load_dataset("imagefolder", tmp_path / "e2")
    root = _tree(tmp_path / "mismatch")
    os.rename(root / "test" / "dog", root / "test" / "wolf")
    with pytest.raises(DatasetError, match=r"differ from 'train'.*missing \['dog'\].*extra \['wolf'\]"):
        load_dataset("imagefolder", root, split="test", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="split 'val' not found"):
        load_dataset("imagefolder", root, split="val", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="unknown data set"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="unknown option"):
        load_dataset("digits", colour=True)
    with pytest.raises(DatasetError, match="on_error"):
        load_dataset("imagefolder", root, on_error="ignore")


def test_lazy_folder_with_workers(tmp_path):
    root = tmp_path / "big"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(_rgb(i, 30 + i, 20)).save(root / "train" / c / f"{i}.jpg")
    (root / "train" / "b" / "bad.jpg").write_bytes(b"broken")
    ds = load_dataset("imagefolder", root, split="train", lazy=True, size=16)
    assert isinstance(ds, LazyImageFolder) and len(ds) == 11
    loader = make_loader(ds, batch_size=4, seed=3, num_workers=1)
    loader.set_epoch(0)
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    x, y = batches[0]
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.uint8 and y.dtype == torch.int64
    inline = make_loader(ds, batch_size=4, seed=3)
    inline.set_epoch(0)
    inline_batches = list(inline)
    assert len(inline_batches) == len(batches)
    for (xw, yw), (xi, yi) in zip(batches, inline_batches):  # worker decoding = inline decoding, pixel for pixel
        assert torch.equal(yw, yi) and torch.equal(xw, xi)
    with pytest.raises(DatasetError, match="cannot decode"):
        LazyImageFolder(ds.files, ds.labels.tolist(), ds.classes, 16, on_error="raise")[ds.files.index(
            str(root / "train" / "b" / "bad.jpg"))]
    with pytest.raises(DatasetError, match="size="):
        load_dataset("imagefolder", root, lazy=True)


# --------------------------------------------------------------------------------------- archives
def _tar(tmp_path: Path, src: Path, name="d.tar.gz", prefix="") -> Path:
    out = tmp_path / name
    with tarfile.open(out, "w:gz" if name.endswith("gz") else "w") as tf:
        tf.add(src, arcname=prefix or ".")
    return out


def test_archive_splits_prefix_and_errors(tmp_path):
    root = _tree(tmp_path / "tree", per_class=2)
    arc = _tar(tmp_path, root, prefix="mydata")
    tr = load_dataset("archive", arc, split="train", cache_dir=tmp_path / "c")
    te = load_dataset("archive", arc, split="test", cache_dir=tmp_path / "c")
    ref = load_dataset("imagefolder", root, split="train", cache_dir=tmp_path / "c")
    assert torch.equal(tr.images, ref.images) and torch.equal(tr.labels, ref.labels) and len(te) == 4
    with pytest.raises(DatasetError, match="split 'val' not in archive"):
        load_dataset("archive", arc, split="val", cache_dir=tmp_path / "c")
    empty = tmp_path / "nothing"
    (empty / "train").mkdir(parents=True)
    (empty / "train" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="no images found in archive"):
        load_dataset("archive", _tar(tmp_path, empty, "e.tar"), cache_dir=tmp_path / "c")
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match="archive"):
        load_dataset("archive", tmp_path / "junk.tar.gz", cache_dir=tmp_path / "c")
    with pytest.raises(DatasetError, match="not found"):
        load_dataset("archive", tmp_path / "missing.tar.gz")
    os.rename(root / "test" / "dog", root / "test" / "wolf")
    with pytest.raises(DatasetError, match="differ from 'train'"):
        load_dataset("archive", _tar(tmp_path, root, "m.tar"), cache_dir=tmp_path / "c")


@pytest.fixture(scope="session")
def cifar_cached(tmp_path_factory):
    """The shared CIFAR-10 archive decoded once per session into a temporary cache."""
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"shared CIFAR-10 archive not found: {CIFAR_ARCHIVE}")
    cache = tmp_path_factory.mktemp("cifar-cache")
    t0 = time.perf_counter()
    test = load_dataset("archive", CIFAR_ARCHIVE, split="test", cache_dir=cache)
    return CIFAR_ARCHIVE, cache, test, time.perf_counter() - t0


def test_shared_cifar_archive(cifar_cached):
    path, cache, test, decode_s = cifar_cached
    t0 = time.perf_counter()
    train = load_dataset("archive", path, split="train", cache_dir=cache)
    cached_s = time.perf_counter() - t0
    assert (len(train), len(test)) == (50000, 10000)
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (torch.bincount(train.labels) == 5000).all() and (torch.bincount(test.labels) == 1000).all()
    means = train.images.float().mean(dim=(0, 2, 3)) / 255
    assert torch.allclose(means, torch.tensor([0.4913, 0.4821, 0.4465]), atol=0.003)
    assert cached_s < decode_s  # the cache is what makes later loads cheap (absolute time: see benchmarks)


# ------------------------------------------------------------------------------------- torchvision
def test_cifar_and_stl_torchvision_layouts(tmp_path, monkeypatch):
    from torchvision import datasets

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    monkeypatch.setattr(datasets.CIFAR10, "_check_integrity", lambda self: True)
    names = [f"c{i}" for i in range(10)]
    monkeypatch.setattr(datasets.CIFAR10, "_load_meta", lambda self: setattr(self, "classes", names))
    ds = load_dataset("cifar10", tmp_path, split="train")
    assert ds.images.shape == (20, 3, 32, 32) and ds.labels.tolist()[:4] == [0, 1, 2, 3]
    with pytest.raises(DatasetError, match="download=True"):
        load_dataset("cifar100", tmp_path)
    with pytest.raises(DatasetError, match="stl10_binary"):
        load_dataset("stl10", tmp_path)
    stl = tmp_path / "stl10_binary"
    stl.mkdir()
    rng.integers(0, 256, 2 * 3 * 96 * 96, dtype=np.uint8).tofile(stl / "train_X.bin")
    np.array([1, 10], dtype=np.uint8).tofile(stl / "train_y.bin")
    (stl / "class_names.txt").write_text("\n".join(f"k{i}" for i in range(10)))
    monkeypatch.setattr(datasets.STL10, "_check_integrity", lambda self: True)
    s = load_dataset("stl10", tmp_path, split="train")
    assert s.images.shape == (2, 3, 96, 96) and s.labels.tolist() == [0, 9] and s.classes[0] == "k0"


# ----------------------------------------------------------------------------------------- loader
def _toy(n=103, classes=5):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 4, 4), dtype=torch.uint8, generator=g)
    images[:, 0, 0, 0] = torch.arange(n, dtype=torch.uint8)  # identify images in batches
    return ImageDataset(images, torch.arange(n) % classes, [str(i) for i in range(classes)], "toy", "train")


def _ids(batch):
    return batch[0][:, 0, 0, 0].long()


def test_loader_order_is_pure_and_resumable():
    ds = _toy()
    a = make_loader(ds, batch_size=10, seed=7)
    b = make_loader(ds, batch_size=10, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    full = [_ids(x) for x in a]
    assert len(full) == len(a) == 10
    assert all(torch.equal(x, _ids(y)) for x, y in zip(full, b))
    b.set_epoch(3, start_batch=4)
    assert all(torch.equal(x, _ids(y)) for x, y in zip(full[4:], b))
    a.set_epoch(4)
    assert not torch.equal(torch.cat(full), torch.cat([_ids(x) for x in a]))
    x, y = next(iter(a))
    assert x.dtype == torch.uint8 and y.dtype == torch.int64 and torch.equal(y, _ids((x, y)) % 5)
    c = make_loader(ds, batch_size=10, shuffle=False)
    c.set_epoch(0)
    assert torch.equal(_ids(next(iter(c))), torch.arange(10))
    with pytest.raises(DatasetError, match="batch_size"):
        make_loader(ds, batch_size=500)
    with pytest.raises(DatasetError, match="start_batch"):
        a.set_epoch(0, start_batch=11)


def test_loader_ranks_partition_the_epoch():
    ds = _toy(100)
    seen = []
    for rank in range(4):
        ld = make_loader(ds, batch_size=5, seed=1, rank=rank, world_size=4)
        ld.set_epoch(2)
        assert len(ld) == 5
        seen.append(torch.cat([_ids(x) for x in ld]))
    allids = torch.cat(seen)
    assert len(set(allids.tolist())) == 100
    padded = make_loader(_toy(10), batch_size=4, rank=1, world_size=3, drop_last=False)
    padded.set_epoch(0)
    assert sum(len(x[1]) for x in padded) == 4 and len(padded) == 1


def test_split_train_val_stratified_reproducible():
    ds = _toy(200, classes=4)
    tr, va = split_train_val(ds, val_fraction=0.25, seed=3)
    tr2, va2 = split_train_val(ds, val_fraction=0.25, seed=3)
    assert torch.equal(va.images, va2.images) and (len(tr), len(va)) == (150, 50)
    assert set(torch.bincount(va.labels).tolist()) <= {12, 13}  # 50 of 200 over 4 equal classes
    ids_tr, ids_va = set(tr.images[:, 0, 0, 0].tolist()), set(va.images[:, 0, 0, 0].tolist())
    assert not ids_tr & ids_va and len(ids_tr | ids_va) == 200
    _, other = split_train_val(ds, val_fraction=0.25, seed=4)
    assert not torch.equal(other.images, va.images)
    with pytest.raises(DatasetError, match="val_fraction"):
        split_train_val(ds, val_fraction=1.5)
    tiny = ImageDataset(ds.images[:5], torch.tensor([0, 1, 2, 3, 4]), list("01234"))
    with pytest.raises(DatasetError, match="cannot stratify"):
        split_train_val(tiny, 0.4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(split_train_val(load_dataset("digits"), 0.1)[1]) == 144


def test_file_names_follow_images_through_cache_and_subset(tmp_path):
    """Per-image file names (ImageNet's subset lists name files) stay aligned with the stacked images."""
    from PIL import Image

    from mmcr.data import load_dataset
    from mmcr.evaluate.semi import read_subset_file

    root, value_of = tmp_path / "tree", {}
    for split in ("train", "val"):
        for c, cls in enumerate(("b_cls", "a_cls")):
            (root / split / cls).mkdir(parents=True)
            for i in (10, 2):
                value_of[f"{cls}/{cls}_{i}.png"] = v = 40 * c + i  # unique names, as ImageNet's are
                Image.new("RGB", (4, 4), (v, v, v)).save(root / split / cls / f"{cls}_{i}.png")
    for _ in range(2):  # decoded, then read back from the cache
        ds = load_dataset("imagefolder", root=str(root), split="train", cache_dir=str(tmp_path / "cache"))
        files = ds.meta["files"]
        assert len(files) == len(ds) == 4
        assert [int(im[0, 0, 0]) for im in ds.images] == [value_of[f] for f in files]
        assert ds.subset([3, 0]).meta["files"] == [files[3], files[0]]
    (tmp_path / "subset.txt").write_text(files[2].split("/")[-1] + "\n")
    assert read_subset_file(tmp_path / "subset.txt", files).tolist() == [2]
