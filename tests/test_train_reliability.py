"""Bad steps, bad checkpoints, changed options and bad input: the run goes on, refuses by name, or says
in one line what to fix, and never loses work. Each case here is a row of tests/README.md."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mmcr.cli import main
from mmcr.run.config import ConfigError, load_config
from mmcr.rundir import layout
from mmcr.rundir.metrics import read_metrics
from mmcr.train import train

BASE = [
    "train.batch_size=32",
    "augment.views=2",
    "model.projector.hidden=[32]",
    "model.projector.out_dim=16",
    "train.progress=false",
    "train.tensorboard=false",
    "train.log_every_steps=1",
    "train.threads=2",
    "eval.knn_every_epochs=0",
    "eval.final=false",
]


def _cfg(out: Path, *extra: str):
    return load_config("digits", BASE + [f"out={out}", *extra])


def _ckpt(run: Path, step: int) -> dict:
    return torch.load(layout.checkpoint_path(run, step), weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


class _NanOnce(nn.Module):
    """Wraps an objective; its ``at``-th call returns NaN (a bad step in the middle of training)."""

    def __init__(self, inner: nn.Module, at: int):
        super().__init__()
        self.inner, self.at, self.calls = inner, at, 0

    def forward(self, *z):
        self.calls += 1
        loss = self.inner(*z)
        return loss * float("nan") if self.calls == self.at else loss


@pytest.mark.parametrize("optim,precision", [("adam", "fp32"), ("lars", "fp32"), ("sgd", "fp32"), ("adam", "fp16")])
def test_one_bad_step_is_skipped_and_training_goes_on(tmp_path, monkeypatch, optim, precision):
    import mmcr.train.trainer as trainer  # the trainer builds its objective through this name

    real = trainer.build_objective
    monkeypatch.setattr(trainer, "build_objective", lambda *a, **k: _NanOnce(real(*a, **k), at=3))
    extra = [f"optim.name={optim}", f"train.precision={precision}", "train.max_steps=5",
             "train.checkpoint_every_steps=1", "train.keep_checkpoints=0"]
    if optim != "adam":
        extra.append("optim.lr=0.05")
    summary = train(_cfg(tmp_path, *extra))
    assert summary["steps"] == 5 and summary["nonfinite_steps"] >= 1
    before, bad, after = _ckpt(tmp_path, 2), _ckpt(tmp_path, 3), _ckpt(tmp_path, 5)
    assert _same(before["model"], bad["model"])  # the NaN step changed no weight ...
    for a, b in zip(before["optimizer"]["state"].values(), bad["optimizer"]["state"].values()):
        assert all(torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k])) for k in a)  # ... nor optimiser state
    assert not _same(bad["model"], after["model"])  # and the steps after it trained
    recs = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5]
    assert np.isnan(recs[2]["loss"]) and np.isfinite(recs[3]["loss"])
    if precision == "fp32":
        assert [r["nonfinite_total"] for r in recs] == [0, 0, 1, 1, 1]


def test_every_checkpoint_corrupt_is_moved_aside_and_the_run_starts_over(tmp_path):
    train(_cfg(tmp_path, "train.max_steps=4", "train.checkpoint_every_steps=2"))
    ckdir = layout.checkpoint_dir(tmp_path)
    for p in ckdir.glob("ckpt_*.pt"):
        p.write_bytes(p.read_bytes()[:100])
    with pytest.warns(UserWarning, match="starting this run from step 0"):
        summary = train(_cfg(tmp_path, "train.max_steps=4", "train.checkpoint_every_steps=2", "train.resume=auto"))
    assert summary["steps"] == 4
    assert sorted(p.name for p in ckdir.glob("ckpt_*.pt")) == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert sorted(p.name for p in (ckdir / layout.CORRUPT_DIR).iterdir()) == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    assert _ckpt(tmp_path, 4)["step"] == 4  # loadable


def test_resume_with_changed_options_applies_or_refuses_by_name(tmp_path):
    train(_cfg(tmp_path, "train.max_steps=3", "optim.lr=1e-3"))
    with pytest.raises(ConfigError, match=r"optim.lr: 0.001 -> 0.002.*train.allow_config_change=true"):
        train(_cfg(tmp_path, "train.max_steps=6", "optim.lr=2e-3", "train.resume=auto"))
    with pytest.raises(ConfigError, match=r"different model.backbone: 'resnet_tiny' -> 'resnet_small'"):
        train(_cfg(tmp_path, "train.max_steps=6", "model.backbone=resnet_small", "train.resume=auto"))
    with pytest.raises(ConfigError, match=r"different train.batch_size: 32 -> 16"):
        train(_cfg(tmp_path, "train.max_steps=6", "train.batch_size=16", "train.resume=auto"))
    with pytest.raises(ConfigError, match=r"different data.options"):
        train(_cfg(tmp_path, "train.max_steps=6", "data.options.size=12", "train.resume=auto"))
    summary = train(_cfg(tmp_path, "train.max_steps=6", "optim.lr=2e-3", "train.resume=auto",
                         "train.allow_config_change=true"))
    assert summary["steps"] == 6
    recs = read_metrics(tmp_path)
    start = [r for r in recs if r.get("event") == "start"][-1]
    assert start["resumed"] and sorted(start["config_changes"]) == [
        "optim.lr: 0.001 -> 0.002", "train.allow_config_change: False -> True", "train.max_steps: 3 -> 6"]
    lrs = {r["step"]: r["lr"] for r in recs if "lr" in r}
    assert lrs[3] == pytest.approx(1e-3) and lrs[4] == pytest.approx(2e-3) and lrs[6] == pytest.approx(2e-3)
    assert _ckpt(tmp_path, 6)["config"]["optim"]["lr"] == pytest.approx(2e-3)


def test_resume_refuses_different_data_at_the_same_path(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=rng.integers(0, 255, (120, 8, 8, 3), dtype=np.uint8), y_train=np.arange(120) % 4)
    run = tmp_path / "run"
    args = ["data.name=npz", f"data.root={npz}", "data.options={}", "augment.overrides.size=8", "train.max_steps=2"]
    train(_cfg(run, *args))
    np.savez(npz, x_train=rng.integers(0, 255, (160, 8, 8, 3), dtype=np.uint8), y_train=np.arange(160) % 4)
    with pytest.raises(ConfigError, match=r"training data differs .*n_train 108 -> 144"):
        train(_cfg(run, *args, "train.resume=auto"))


def test_npz_without_split_keys_has_no_test_split(tmp_path, capsys):
    from mmcr.data import DatasetError, load_dataset

    rng = np.random.default_rng(0)
    npz = tmp_path / "one.npz"
    np.savez(npz, images=rng.integers(0, 255, (100, 8, 8), dtype=np.uint8), labels=np.arange(100) % 4)
    assert len(load_dataset("npz", npz, split="train")) == 100
    with pytest.raises(DatasetError, match="no split keys .* it has no 'test' split"):
        load_dataset("npz", npz, split="test")
    rc = main(["pretrain", "--out", str(tmp_path / "run"), "--no-progress", "--set", "data.name=npz",
               "--set", f"data.root={npz}", "--set", "data.options={}", "--set", "augment.overrides.size=8",
               "--set", "train.max_steps=2", "--set", "eval.knn_every_epochs=0"])
    assert rc == 0
    assert "final evaluation skipped:" in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "knn_top1_learned" not in summary and "no split keys" in summary["final_eval_skipped"]


def test_differing_class_folders_skip_the_final_evaluation_out_loud(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for split, classes in (("train", ("a", "b")), ("test", ("a", "c"))):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(40 if split == "train" else 4):
                Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    rc = main(["pretrain", "--out", str(tmp_path / "run"), "--no-progress", "--set", "data.name=imagefolder",
               "--set", f"data.root={root}", "--set", "data.options={}", "--set", f"data.cache_dir={tmp_path / 'c'}",
               "--set", "augment.overrides.size=8", "--set", "train.batch_size=16", "--set", "train.max_steps=2",
               "--set", "eval.knn_every_epochs=0"])
    assert rc == 0
    assert "final evaluation skipped:" in capsys.readouterr().out and "missing ['b'], extra ['c']" in json.loads(
        (tmp_path / "run" / "summary.json").read_text())["final_eval_skipped"]


def test_options_are_honoured_or_rejected_by_name(tmp_path):
    from mmcr.data import DatasetError, load_dataset
    from mmcr.models import build_backbone

    msg = r"unknown option 'lazy' for data set 'cifar10'; it takes size, download"
    with pytest.raises(DatasetError, match=msg):
        load_dataset("cifar10", tmp_path, lazy=True)
    with pytest.raises(DatasetError, match=r"for data set 'digits'; it takes size, test_fraction"):
        load_dataset("digits", on_error="raise")
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=np.zeros((4, 8, 10, 3), np.uint8), y_train=np.arange(4))
    assert load_dataset("npz", npz, size=6).images.shape == (4, 3, 6, 6)  # short side to 6, centre crop
    assert load_dataset("digits", size=12).images.shape[-2:] == (12, 12)
    bb = build_backbone("resnet_tiny", zero_init_residual=True)
    blocks = [m for m in bb.modules() if hasattr(m, "bn2")]
    assert blocks and all(torch.count_nonzero(b.bn2.weight) == 0 for b in blocks)
    with pytest.raises(ValueError, match="always has the CIFAR stem"):
        build_backbone("resnet_tiny", cifar_stem=False)
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_backbone("resnet_tiny", weights="DEFAULT")
    with pytest.raises(ValueError, match="timm weights 'IMAGENET' not understood"):  # timm: a dev dependency
        build_backbone("timm:resnet18", weights="IMAGENET")


def test_non_finite_pixels_are_refused(tmp_path):
    from mmcr.data import DatasetError, load_dataset

    x = np.random.default_rng(0).random((6, 8, 8, 3)).astype(np.float32)
    x[2, 3, 3, 1] = np.nan
    np.savez(tmp_path / "f.npz", images=x, labels=np.arange(6) % 2)
    with pytest.raises(DatasetError, match="contain 1 NaN/Inf value"):
        load_dataset("npz", tmp_path / "f.npz")


def test_a_cache_that_cannot_be_written_is_not_fatal(tmp_path, monkeypatch):
    import errno

    from mmcr.data import cache, load_dataset

    npz_images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    root = tmp_path / "folder" / "train"
    from PIL import Image

    for i, img in enumerate(npz_images):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"c{i % 2}" / f"{i}.png")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.np, "save", full)
    with pytest.warns(UserWarning, match="could not write the decoded-data cache: disk full"):
        ds = load_dataset("imagefolder", tmp_path / "folder", cache_dir=tmp_path / "cache")
    assert len(ds) == 6 and not [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]


def test_a_failed_checkpoint_write_stops_with_one_line_and_keeps_the_previous(tmp_path, monkeypatch, capsys):
    import mmcr.rundir.checkpoint as ck
    from mmcr.rundir.files import RunFileError

    real = ck.save_torch_atomic
    calls = {"n": 0}

    def flaky(obj, path, what):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RunFileError(f"cannot write {what}: the previous one is kept; disk full while writing {path} "
                               "(No space left on device); free space on that disk")
        return real(obj, path, what)

    monkeypatch.setattr(ck, "save_torch_atomic", flaky)
    rc = main(["pretrain", "--out", str(tmp_path), "--no-progress", *sum((["--set", a] for a in BASE), []),
               "--set", "train.max_steps=6", "--set", "train.checkpoint_every_steps=2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "disk full" in err
    assert [p.name for p in layout.checkpoint_dir(tmp_path).glob("ckpt_*.pt")] == ["ckpt_00000002.pt"]


@pytest.mark.parametrize(
    "argv,match",
    [
        (["pretrain", "--set", "train.log_every_steps=0"], "train.log_every_steps must be >= 1"),
        (["pretrain", "--device", "tpu"], "invalid value 'tpu' for --device"),
        (["pretrain", "--set", "train.threads=-1"], "train.threads must be in [1, 1024]"),
        (["pretrain", "--set", "seed=-1"], "seed must be in"),
        (["pretrain", "--set", "optim.grad_clip=-1"], "optim.grad_clip must be > 0"),
        (["pretrain", "--set", "train.max_steps=-5"], "train.max_steps must be >= 1"),
        (["eval", "knn", "torchvision:resnet5000"], "unknown architecture 'resnet5000'"),
        (["eval", "knn", "random:vgg"], "unknown architecture 'vgg'"),
        (["eval", "knn", "torchvision:resnet_tiny"], "not a torchvision model; use random:resnet_tiny"),
        (["analyze", "random:resnet_tiny", "--out", "{tmp}/a", "--fit-range", "500,11"],
         "fit_range must be two ranks [first, last]"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, match):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "pretrain":
        argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err, err


def test_file_system_mistakes_are_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    assert main(["pretrain", "--out", str(a_file)]) == 2
    assert "is a file; give a directory" in capsys.readouterr().err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: {epochs: 2\n")
    assert main(["pretrain", str(bad_yaml), "--out", str(tmp_path / "r")]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    data = tmp_path / "feats.npz"
    np.savez(data, x=np.zeros(3))
    assert main(["eval", "knn", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a readable checkpoint" in err
    # export below a file (no folder can be made there), and a run whose newest checkpoint is truncated
    run = tmp_path / "run"
    train(_cfg(run, "train.max_steps=4", "train.checkpoint_every_steps=2"))
    newest = layout.checkpoint_path(run, 4)
    newest.write_bytes(newest.read_bytes()[:200])
    assert main(["export", str(run), str(a_file / "bb.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot write export" in err
    with pytest.warns(UserWarning, match="skipping it"):
        assert main(["export", str(run), str(tmp_path / "bb.safetensors")]) == 0
    from mmcr.evaluate import read_exported

    assert read_exported(tmp_path / "bb.safetensors")[1]["step"] == 2  # the newest readable checkpoint
    assert newest.exists()  # readers never move or delete a run's files
