"""Tar shards: `mmcr data shard` writes them with a manifest; the stream's order is a function of
(seed, epoch), ranks read disjoint shares, resume skips exactly what was consumed, damage is skipped
and counted; and `mmcr pretrain imagenet-mini` trains from a folder and from its shards."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mmcr.cli import main
from mmcr.data import CropSpec, DatasetError, ShardSet, load_dataset, make_loader, split_train_val


def _folder(root, per_class=(8, 3), classes=("cat", "dog", "fox")):
    """train/ and val/ splits of JPEGs of varied sizes (40-130 px) and contents."""
    rng = np.random.default_rng(1)
    for split, n in zip(("train", "val"), per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                h, w = (int(v) for v in rng.integers(40, 130, 2))
                arr = np.clip(rng.integers(0, 255, (1, 1, 3)) + rng.normal(0, 40, (h, w, 3)), 0, 255)
                Image.fromarray(arr.astype(np.uint8)).save(root / split / c / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    base = tmp_path_factory.mktemp("shards")
    folder = _folder(base / "folder")
    assert main(["data", "shard", str(folder), str(base / "out"), "--shard-size", "5", "--seed", "3"]) == 0
    return folder, base / "out"


def _ids(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest()[:12] for x in images]


def test_shard_writer_manifest_counts_and_contents(shards, capsys):
    folder, out = shards
    man = json.loads((out / "manifest.json").read_text())
    assert man["classes"] == ["cat", "dog", "fox"] and sorted(man["splits"]) == ["train", "val"]
    train = man["splits"]["train"]
    assert train["count"] == 24 and train["per_class"] == [8, 8, 8]
    assert [sh["count"] for sh in train["shards"]] == [5, 5, 5, 5, 4]
    assert np.sum([sh["per_class"] for sh in train["shards"]], axis=0).tolist() == [8, 8, 8]
    assert sorted(p.name for p in out.glob("*.tar")) == [f"train-{i:06d}.tar" for i in range(5)] + [
        "val-000000.tar", "val-000001.tar"]
    assert not list(out.glob(".*"))  # no temporary files left
    ds = load_dataset("webdataset", out, split="train", size=32)
    assert isinstance(ds, ShardSet) and len(ds) == 24 and ds.classes == ["cat", "dog", "fox"]
    # every sample once, with its label and the file's own bytes
    wanted = {p.read_bytes(): ["cat", "dog", "fox"].index(p.parent.name) for p in (folder / "train").rglob("*.jpg")}
    got = [(data, label) for r in ds.ranges for _, data, label in ds.read(r, [])]
    assert len(got) == 24 and all(wanted[data] == label for data, label in got)
    assert main(["data", "shard", str(folder), str(out)]) == 2  # refuses to mix with existing shards
    assert "already holds shards" in capsys.readouterr().err


def _epoch(ds, epoch=0, start=0, rank=0, world=1, workers=0, batch=3):
    loader = make_loader(ds, batch_size=batch, seed=5, rank=rank, world_size=world, num_workers=workers)
    loader.set_epoch(epoch, start_batch=start)
    return loader, [(_ids(x), y.tolist()) for x, y in loader]


def test_stream_order_ranks_and_resume(shards):
    _, out = shards
    ds = load_dataset("webdataset", out, split="train", size=24, shuffle_buffer=4)
    loader, first = _epoch(ds)
    assert len(first) == len(loader) == 8  # 24 samples, batches of 3
    assert _epoch(ds)[1] == first  # a pure function of (seed, epoch)
    assert _epoch(ds, epoch=1)[1] != first
    seen = [i for ids, _ in first for i in ids]
    assert len(set(seen)) == 24  # every sample once in the epoch
    for start in (1, 5):  # resuming mid-epoch continues with exactly the batches not yet consumed
        assert _epoch(ds, start=start)[1] == first[start:]
    # two ranks: the same number of batches, disjoint samples
    r0, r1 = _epoch(ds, rank=0, world=2)[1], _epoch(ds, rank=1, world=2)[1]
    assert len(r0) == len(r1) == 4
    assert not {i for ids, _ in r0 for i in ids} & {i for ids, _ in r1 for i in ids}
    # two worker processes (one stream each); resuming rotates the workers so the order is kept
    loader2, both = _epoch(ds, workers=2, batch=2)
    assert loader2.streams == 2 and len(both) == 12
    assert _epoch(ds, workers=2, batch=2, start=3)[1] == both[3:]


def test_validation_split_is_a_prefix_of_every_shard_and_evaluation_reads_it(shards):
    _, out = shards
    ds = load_dataset("webdataset", out, split="train", size=24)
    train, val = split_train_val(ds, 0.25, seed=0)
    assert (len(train), len(val)) == (18, 6) and len(val.ranges) == 5
    assert all(v.stop == t.start and v.url == t.url for v, t in zip(val.ranges, train.ranges))
    loader = make_loader(val, batch_size=4, shuffle=False, drop_last=False)
    loader.set_epoch(0)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 2] and len(loader) == 2
    from mmcr.evaluate.features import dataset_features

    feats, labels = dataset_features(torch.nn.Flatten(), val, lambda x: x.float(), max_n=5)
    assert feats.shape == (5, 3 * 24 * 24) and labels.shape == (5,)


def test_full_image_views_from_shards(shards):
    _, out = shards
    ds = load_dataset("webdataset", out, split="train", size=24).with_crops(CropSpec(2, (16, 16), seed=1))
    assert ds.image_size == (16, 16)
    loader = make_loader(ds, batch_size=4, seed=0)
    loader.set_epoch(0)
    x, y = next(iter(loader))
    assert x.shape == (4, 2, 3, 16, 16) and x.dtype == torch.uint8 and y.shape == (4,)


def test_damaged_shards_are_skipped_and_counted(shards, tmp_path):
    _, out = shards
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = (bad / "train-000001.tar").read_bytes()
    (bad / "train-000001.tar").write_bytes(data[: len(data) // 2])  # truncated mid-sample
    import webdataset as wds

    good = _any_jpeg(out)
    with open(bad / "train-000002.tar", "wb") as f, wds.TarWriter(f, encoder=False) as tw:  # a corrupt JPEG
        for i in range(5):
            tw.write({"__key__": f"x{i}", "jpg": b"\xff\xd8 broken" if i == 2 else good, "cls": b"1"})
    ds = load_dataset("webdataset", bad, split="train", size=24, shuffle_buffer=2)
    loader = make_loader(ds, batch_size=3, seed=0)
    loader.set_epoch(0)
    with pytest.warns(UserWarning, match="undecodable sample"):
        batches = list(loader)
    assert len(batches) == len(loader) and all(x.shape[0] == 3 for x, _ in batches)  # batches keep their size
    assert loader.skipped >= 1 and loader.damaged >= 1
    raising = load_dataset("webdataset", bad, split="train", size=24, on_error="raise")
    loader = make_loader(raising, batch_size=3, seed=0)
    loader.set_epoch(0)
    with pytest.raises(DatasetError, match="truncated or corrupt|cannot decode sample"):
        list(loader)


def _any_jpeg(out) -> bytes:
    ds = load_dataset("webdataset", out, split="val", size=24)
    return next(iter(ds.read(ds.ranges[0], [])))[1]


def test_bad_shard_sources_are_one_line(shards, tmp_path, capsys):
    _, out = shards
    cases = [
        (str(tmp_path / "none-{000000..000003}.tar"), "matches no file"),
        (str(out / "train-{000000..000009}.tar"), "train-000005.tar of .* not found"),
        ("https://example.invalid/s-{0..3}.tar", "remote shards .* need their counts"),
    ]
    for root, msg in cases:
        with pytest.raises(DatasetError, match=msg):
            load_dataset("webdataset", root, size=24)
    with pytest.raises(DatasetError, match="has no 'test' split|not in the shards"):
        load_dataset("webdataset", out, split="test", size=24)
    with pytest.raises(DatasetError, match="needs size="):
        load_dataset("webdataset", out)
    with pytest.raises(DatasetError, match="always streamed"):
        load_dataset("webdataset", out, size=24, lazy=False)
    # an unreadable URL (here a command that fails), counted by a manifest: one line naming it
    url = "pipe:cat " + str(tmp_path / "missing.tar")
    (tmp_path / "m.json").write_text(json.dumps({"classes": ["a"], "splits": {"train": {"shards": [
        {"name": "missing.tar", "count": 4}]}}}))
    ds = load_dataset("webdataset", url, size=24, manifest=str(tmp_path / "m.json"))
    loader = make_loader(ds, batch_size=2)
    loader.set_epoch(0)
    with pytest.raises(DatasetError, match="missing.tar") as err:
        list(loader)
    assert "\n" not in str(err.value)
    rc = main(["pretrain", "imagenet-mini", "--set", "data.name=webdataset", "--set",
               f"data.root={tmp_path / 'nothing-{0..3}.tar'}", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "matches no file" in err


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_pretrain_imagenet_mini_from_a_folder_and_from_shards(shards, tmp_path, source):
    folder, out = shards
    data = ["--set", f"data.root={folder}"] if source == "folder" else [
        "--set", "data.name=webdataset", "--set", f"data.root={out}"]
    run = tmp_path / "run"
    rc = main(["pretrain", "imagenet-mini", *data, "--out", str(run), "--no-progress",
               "--set", "data.options.size=36", "--set", "augment.overrides.size=32", "--set", "train.batch_size=8",
               "--set", "train.max_steps=1", "--set", "data.val_fraction=0.25", "--set", "eval.knn_k=5",
               "--set", "model.projector.hidden=[64]", "--set", "model.projector.out_dim=32"])
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["eval_split"] == "val" and "knn_top1_learned" in summary
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("knn_val_top1" in m for m in metrics)  # the online monitor ran on the carved validation split
