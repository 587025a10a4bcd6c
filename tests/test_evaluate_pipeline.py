"""Evaluation plumbing: export that torchvision loads strictly, semi-supervised subsets and fine-tuning,
transfer datasets from fake on-disk copies (never downloaded), result files, CLI wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

import mmcr.data as mmcr_data
from mmcr.evaluate import (
    class_balanced_subset,
    export_backbone,
    finetune,
    load_exported,
    read_exported,
    read_subset_file,
    record_result,
    transfer_dataset,
    transfer_probe,
)
from mmcr.evaluate.cli import add_eval_parser, add_export_parser
from mmcr.evaluate.sources import load_pretrained
from mmcr.models import build_encoder
from mmcr.run.config import RunConfig
from mmcr.rundir import CHECKPOINT_FORMAT

MODEL_CFG = {"backbone": "resnet_tiny", "cifar_stem": True, "projector": {"hidden": [32], "out_dim": 16}}


def _encoder(model_cfg: dict):
    """The encoder a run's ``model`` mapping describes."""
    return build_encoder(RunConfig.from_dict({"model": model_cfg}).model)


def _fake_run(tmp_path: Path, model_cfg=MODEL_CFG, crop: int = 32) -> Path:
    """A run directory holding one checkpoint in our format."""
    torch.manual_seed(0)
    enc = _encoder(model_cfg)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    over = {"size": crop, "mean": [0.5] * 3, "std": [0.25] * 3}
    cfg = {"model": model_cfg, "augment": {"preset": "cifar", "overrides": over}, "eval": {"knn_k": 10}}
    torch.save(
        {"format": CHECKPOINT_FORMAT, "config": cfg, "model": enc.state_dict(), "step": 7},
        run / "checkpoints" / "ckpt_00000007.pt",
    )
    return run


@pytest.mark.parametrize("cifar_stem", [False, True])
def test_export_loads_strictly_into_torchvision(tmp_path, cifar_stem):
    cfg = {"backbone": "resnet18", "cifar_stem": cifar_stem, "projector": {"hidden": [], "out_dim": 8}}
    backbone, src = load_pretrained(_fake_run(tmp_path, cfg))
    meta = export_backbone(backbone, src, tmp_path / "bb.pt")
    assert meta["arch"] == "resnet18" and meta["cifar_stem"] is cifar_stem and meta["feature_dim"] == 512
    sd = torch.load(tmp_path / "bb.pt", weights_only=True)
    model = torchvision.models.resnet18()
    if cifar_stem:  # the documented CIFAR stem
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model.eval()(x), backbone(x))
    torch.testing.assert_close(load_exported(tmp_path / "bb.pt")(x), backbone(x))


def test_export_safetensors_and_small_backbone(tmp_path):
    backbone, src = load_pretrained(_fake_run(tmp_path))
    export_backbone(backbone, src, tmp_path / "bb.safetensors")
    sd, meta = read_exported(tmp_path / "bb.safetensors")
    assert meta["arch"] == "resnet_tiny" and meta["step"] == 7
    from mmcr.models import build_backbone

    plain = build_backbone("resnet_tiny")
    plain.load_state_dict(sd, strict=True)
    x = torch.randn(3, 3, 16, 16)
    torch.testing.assert_close(plain.eval()(x), backbone(x))
    torch.testing.assert_close(load_exported(tmp_path / "bb.safetensors")(x), backbone(x))
    with pytest.raises(ValueError, match=".safetensors"):
        export_backbone(backbone, src, tmp_path / "bb.bin")


def test_class_balanced_subset_is_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(100)
    idx = class_balanced_subset(labels, 0.01, seed=3)
    assert torch.bincount(labels[idx]).tolist() == [1] * 10
    idx10 = class_balanced_subset(labels, 0.1, seed=3)
    assert torch.bincount(labels[idx10]).tolist() == [10] * 10
    assert torch.equal(idx10, class_balanced_subset(labels, 0.1, seed=3))
    assert not torch.equal(idx10, class_balanced_subset(labels, 0.1, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        class_balanced_subset(labels, 0.0)


def test_read_subset_file(tmp_path):
    (tmp_path / "idx.txt").write_text("5\n2\n\n9\n")
    assert read_subset_file(tmp_path / "idx.txt").tolist() == [2, 5, 9]
    names = ["train/n01/n01_1.JPEG", "train/n01/n01_2.JPEG", "train/n02/n02_7.JPEG"]
    (tmp_path / "1percent.txt").write_text("n02_7.JPEG\nn01_1.JPEG\n")
    assert read_subset_file(tmp_path / "1percent.txt", names).tolist() == [0, 2]
    (tmp_path / "bad.txt").write_text("n03_1.JPEG\n")
    with pytest.raises(ValueError, match="not in the dataset"):
        read_subset_file(tmp_path / "bad.txt", names)


def _colour_images(n, seed):
    """Two easy classes: reddish vs bluish noise images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 120, (n, 3, 16, 16), generator=g)
    x[:, 0] += (y * 120)[:, None, None]
    x[:, 2] += ((1 - y) * 120)[:, None, None]
    return x.to(torch.uint8), y


@pytest.mark.parametrize("head_init", ["linear", "random"])
def test_finetune_learns_an_easy_task(head_init):
    from mmcr.models import build_backbone

    torch.manual_seed(0)
    xtr, ytr = _colour_images(48, 0)
    xte, yte = _colour_images(32, 1)
    res = finetune(
        build_backbone("resnet_tiny"),
        xtr[:, :, :12, :12],
        ytr,
        xte[:, :, :12, :12],
        yte,
        epochs=2,
        min_steps=0,
        batch_size=16,
        head_init=head_init,
        grad_clip=None if head_init == "random" else 1.0,
        seed=0,
    )
    assert res["top1"] >= 90.0 and res["n_labelled"] == 48 and np.isfinite(res["final_train_loss"])
    assert res["steps"] == 6 and res["epochs"] == 2
    assert ("linear_top1" in res) == (head_init == "linear")
    with pytest.raises(ValueError, match="head_init"):
        finetune(build_backbone("resnet_tiny"), xtr, ytr, xte, yte, head_init="zeros")


def _fake_dtd(root: Path, classes=("banded", "dotted"), per_split=3) -> None:
    data = root / "dtd" / "dtd"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        lines = []
        for ci, c in enumerate(classes):
            (data / "images" / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_split):
                name = f"{c}_{split}_{i}.jpg"
                arr = rng.integers(0, 60, (40, 30, 3)) + 180 * np.eye(3, dtype=int)[ci % 3]
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(data / "images" / c / name)
                lines.append(f"{c}/{name}")
        (data / "labels").mkdir(parents=True, exist_ok=True)
        (data / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def _fake_food(root: Path, classes=("apple_pie", "ramen"), n=4) -> None:
    base = root / "food-101"
    rng = np.random.default_rng(1)
    meta = {"train": {}, "test": {}}
    for split in meta:
        for ci, c in enumerate(classes):
            (base / "images" / c).mkdir(parents=True, exist_ok=True)
            ids = []
            for i in range(n):
                stem = f"{split}{i}"
                arr = rng.integers(0, 60, (24, 36, 3)) + 180 * np.eye(3, dtype=int)[ci % 3]
                Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(base / "images" / c / f"{stem}.jpg")
                ids.append(f"{c}/{stem}")
            meta[split][c] = ids
    (base / "meta").mkdir(parents=True, exist_ok=True)
    for split, m in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(m))


def test_transfer_on_fake_dtd_and_food101(tmp_path):
    _fake_dtd(tmp_path)
    _fake_food(tmp_path)
    ds = transfer_dataset("dtd", tmp_path, "val", size=20)
    img, label = ds[0]
    assert img.dtype == torch.uint8 and img.shape == (3, 20, 20) and label == 0
    bb, src = load_pretrained("random:resnet_tiny")
    res = transfer_probe(bb, "dtd", tmp_path, model_src=src, size=16, batch_size=4, weight_decays=(1e-1, 1e-2))
    assert res["val_source"] == "official" and res["n_train"] == 12 and res["n_test"] == 6
    # the fake classes differ in colour (red vs green): even random-init features separate them
    assert res["top1"] == 100.0
    res = transfer_probe(bb, "food101", tmp_path, model_src=src, size=16, weight_decays=(1e-1,), val_fraction=0.25)
    assert res["val_source"] == "carved" and res["n_test"] == 8 and res["top1"] == 100.0


def test_transfer_missing_root_is_a_clean_error(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        transfer_dataset("flowers102", tmp_path, "train", size=32)
    with pytest.raises(ValueError, match="unknown transfer dataset"):
        transfer_dataset("mnist", tmp_path, "train", size=32)


def test_record_result_writes_json_and_report_line(tmp_path):
    run = _fake_run(tmp_path)
    ckpt = next((run / "checkpoints").glob("*.pt"))
    path = record_result("knn", {"top1": 81.234, "top5": 99.0, "k": 200}, ckpt, tag="cifar10", details=("k",))
    assert path == run / "eval" / "knn_cifar10.json"
    data = json.loads(path.read_text())
    assert data["top1"] == 81.234 and data["source"] == str(ckpt)
    line = (run / "report.md").read_text().splitlines()[-1]
    assert "eval knn cifar10" in line and "top1 81.23" in line and "k=200" in line
    out = record_result("linear", {"top1": 50.0}, "torchvision:resnet18", out=tmp_path / "x" / "res.json")
    assert out == tmp_path / "x" / "res.json" and (tmp_path / "x" / "report.md").exists()


def _parser():
    parser = argparse.ArgumentParser(prog="mmcr")
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_parser(sub)
    add_export_parser(sub)
    return parser


def test_cli_parsers_set_handlers():
    p = _parser()
    for argv in (
        ["eval", "knn", "run", "--k", "20", "--temperature", "0.5"],
        ["eval", "linear", "run", "--weight-decays", "1e-3,1e-4", "--aug-passes", "2"],
        ["eval", "semi", "run", "--fraction", "0.1"],
        ["eval", "transfer", "run", "--dataset", "dtd", "--root", "x"],
        ["export", "run", "out.pt"],
    ):
        args = p.parse_args(argv)
        assert callable(args.func)
    from mmcr.evaluate.settings import LinearSettings, TransferSettings
    from mmcr.schema import ConfigError, config_from_args

    args = p.parse_args(["eval", "linear", "r", "--weight-decays", "1e-3,1e-4"])
    assert config_from_args(args, LinearSettings).weight_decays == [1e-3, 1e-4]
    with pytest.raises(ConfigError, match="invalid value 'mnist' for --dataset; choose one of .*dtd"):
        config_from_args(p.parse_args(["eval", "transfer", "r", "--dataset", "mnist", "--root", "x"]),
                         TransferSettings)


def test_cli_export_end_to_end(tmp_path, capsys):
    run = _fake_run(tmp_path)
    args = _parser().parse_args(["export", str(run), str(tmp_path / "bb.safetensors")])
    assert args.func(args) == 0
    assert "exported resnet_tiny" in capsys.readouterr().out
    assert read_exported(tmp_path / "bb.safetensors")[1]["source"].endswith("ckpt_00000007.pt")


def test_cli_knn_and_linear_on_digits(tmp_path):
    data = mmcr_data
    if not hasattr(data, "load_dataset"):
        pytest.skip("mmcr.data.load_dataset not available yet")
    from mmcr.data import load_dataset
    from mmcr.evaluate import knn_accuracy, linear_probe
    from mmcr.evaluate.features import eval_transform_for, extract_features

    run = _fake_run(tmp_path, crop=12)  # digits are 8 px: also covers the upsampling to the run's crop
    p = _parser()
    args = p.parse_args(["eval", "knn", str(run), "--dataset", "digits", "--no-progress"])
    assert args.func(args) == 0
    res = json.loads((run / "eval" / "knn_digits.json").read_text())
    assert res["k"] == 10 and res["temperature"] == 0.1  # the run's own eval.knn_k (and default T)
    # the CLI's number is the weighted kNN of the run's backbone on the run's eval view of the two splits
    bb, src = load_pretrained(run)
    tf = eval_transform_for(src)
    assert tf.size == (12, 12) and tf.mean == (0.5,) * 3
    tr, te = load_dataset("digits", split="train"), load_dataset("digits", split="test")
    ftr, fte = extract_features(bb, tr.images, transform=tf)[0], extract_features(bb, te.images, transform=tf)[0]
    expected = knn_accuracy(ftr, tr.labels, fte, te.labels, k=10, temperature=0.1)["top1"]
    assert res["top1"] == pytest.approx(expected) and expected > 50.0  # chance is 10 %
    args = p.parse_args(
        ["eval", "linear", str(run), "--dataset", "digits", "--weight-decays", "1e-1,1e-2", "--no-progress"]
    )
    assert args.func(args) == 0
    res = json.loads((run / "eval" / "linear_digits.json").read_text())
    direct = linear_probe(ftr, tr.labels, fte, te.labels, weight_decays=(1e-1, 1e-2))
    assert res["weight_decay"] == direct["weight_decay"] and res["top1"] == pytest.approx(direct["top1"], abs=0.3)
    assert res["top1"] > 50.0
    report = (run / "report.md").read_text()
    assert "eval knn digits" in report and "eval linear digits" in report


def _with_data_statistics(run: Path, images: torch.Tensor) -> None:
    """Give a fake run's BatchNorm layers the statistics of ``images`` under the run's eval view, as a
    pretrained checkpoint has them (a fresh network's 0/1 statistics fit no data)."""
    from mmcr.evaluate.features import eval_transform_for

    path = next((run / "checkpoints").glob("*.pt"))
    state = torch.load(path, weights_only=True)
    enc = _encoder(MODEL_CFG)
    enc.load_state_dict(state["model"])
    for m in enc.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the one pass
    with torch.no_grad():
        enc.backbone.train()(eval_transform_for(load_pretrained(run)[1])(images))
    state["model"] = enc.state_dict()
    torch.save(state, path)


def test_cli_semi_on_digits(tmp_path):
    data = mmcr_data
    if not hasattr(data, "load_dataset"):
        pytest.skip("mmcr.data.load_dataset not available yet")
    tr = data.load_dataset("digits", split="train")
    run = _fake_run(tmp_path, crop=12)
    _with_data_statistics(run, tr.images)
    argv = ["eval", "semi", str(run), "--dataset", "digits", "--fraction", "0.1", "--min-steps", "100",
            "--no-progress"]
    args = _parser().parse_args(argv)
    assert args.func(args) == 0
    res = json.loads((run / "eval" / "semi_digits_0.1.json").read_text())
    per_class = torch.bincount(tr.labels)
    n = int(sum(max(1, round(0.1 * int(c))) for c in per_class))
    assert res["n_labelled"] == n  # class-balanced 10 %
    assert res["subset"].startswith("0.1") and res["n_test"] == 360
    # the step floor, not the 30 default epochs of one full-batch step each, sets the schedule
    assert res["batch_size"] == n and res["steps"] == 100 and res["epochs"] == 100
    # fine-tuning starts from the linear probe on the same subset and does not end below it
    assert res["head_init"] == "linear" and res["linear_top1"] > 50.0  # chance is 10 %
    assert res["top1"] >= res["linear_top1"] - 1.0
    line = (run / "report.md").read_text().splitlines()[-1]
    assert "eval semi digits_0.1" in line and f"linear_top1={res['linear_top1']:.4g}" in line
