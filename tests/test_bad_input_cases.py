"""Input that used to be accepted and wrong, or to end in a traceback: now one line naming the value or
file and what to do (a ValueError subclass from the library), a non-zero exit, nothing half-written.
Each case is a row of tests/README.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcr.cli import main
from mmcr.data import DatasetError, ImageDataset, LazyImageFolder, load_dataset
from mmcr.run.config import load_config
from mmcr.rundir import layout
from mmcr.train import train

BASE = [
    "train.batch_size=32", "augment.views=2", "model.projector.hidden=[32]", "model.projector.out_dim=16",
    "train.progress=false", "train.tensorboard=false", "train.log_every_steps=1", "train.threads=2",
    "eval.knn_every_epochs=0", "eval.final=false", "train.max_steps=2",
]
SETS = sum((["--set", a] for a in BASE), [])


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "run"
    train(load_config("digits", BASE + [f"out={out}"]))
    return out


def _one_line(capsys, rc: int, needle: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and needle in err, err
    return err


# ------------------------------------------------------------------------------- accepted and wrong
@pytest.mark.parametrize("value,needle", [
    ("optim.lr=.inf", "optim.lr must be > 0 and finite, got inf"),
    ("optim.lr=1e400", "optim.lr must be > 0 and finite, got inf"),
    ("optim.weight_decay=.inf", "optim.weight_decay must be >= 0 and finite, got inf"),
    ("optim.grad_clip=.nan", "optim.grad_clip must be > 0 and finite, got nan"),
    ("augment.overrides.std=[.nan,1,1]", "std must be finite, got nan"),
    ("augment.overrides.mean=[0,.inf,0]", "mean must be finite, got inf"),
    ("augment.overrides.brightness=.nan", "brightness must be finite, got nan"),
    ("augment.overrides.scale=[.nan,1]", "scale must be finite, got nan"),
    ("augment.overrides.ratio=[0.5,.inf]", "ratio must be finite, got inf"),
    ("data.options.size=100000", "data.options.size must be in [1, 4096], got 100000"),
    ("train.threads=100000", "train.threads must be in [1, 1024], got 100000"),
    ("seed=-1", "seed must be in [0, 4294967295], got -1"),
])
def test_non_finite_and_out_of_range_settings_are_refused(tmp_path, capsys, value, needle):
    assert main(["pretrain", "digits", "--out", str(tmp_path / "r"), *SETS, "--set", value]) == 2
    _one_line(capsys, 2, needle)
    assert not (tmp_path / "r").exists()


def test_weights_that_diverge_stop_the_run_before_a_checkpoint(tmp_path, capsys):
    """lr=1e308 is finite: the updates overflow to Inf/NaN; that is refused instead of saved."""
    out = tmp_path / "r"
    rc = main(["pretrain", "digits", "--out", str(out), *SETS, "--set", "optim.lr=1e308", "--set", "train.max_steps=3"])
    _one_line(capsys, rc, "weight(s) became NaN/Inf by step")
    assert not layout.list_checkpoints(out)


def test_non_finite_training_is_one_line_at_the_cli(tmp_path, capsys):
    rc = main(["pretrain", "digits", "--out", str(tmp_path / "r"), *SETS, "--set", "optim.lr=1e30",
               "--set", "optim.name=sgd", "--set", "train.max_nonfinite_steps=2", "--set", "train.max_steps=6"])
    _one_line(capsys, rc, "consecutive steps had a NaN/Inf loss or gradient")


def test_augmentation_arguments_are_checked_in_the_library():
    from mmcr import MultiViewAugment

    for kw, needle in [({"std": (math.nan, 1, 1)}, "std must be finite"), ({"scale": (0.2, math.nan)}, "scale"),
                       ({"ratio": (math.inf, 2.0)}, "ratio must be finite"), ({"hue": math.nan}, "hue"),
                       ({"seed": 2**70}, "seed must be in [0, 4294967295]"), ({"seed": -1}, "seed must be in"),
                       ({"views": 0}, "views must be a positive integer")]:
        with pytest.raises(ValueError, match=needle.replace("[", r"\[")):
            MultiViewAugment("cifar", **kw)
    with pytest.raises(ValueError, match="no images to make views of"):
        MultiViewAugment("cifar", seed=0)(torch.zeros(0, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.parametrize("argv,needle", [
    (["eval", "knn", "{run}", "--temperature", "nan"], "--temperature must be > 0 and finite, got nan"),
    (["eval", "knn", "{run}", "--k", "0"], "--k must be >= 1, got 0"),
    (["eval", "linear", "{run}", "--weight-decays", "1e-4,nan"], "--weight-decays must be >= 0 and finite, got nan"),
    (["eval", "linear", "{run}", "--aug-passes", "-1"], "--aug-passes must be >= 0, got -1"),
    (["eval", "linear", "{run}", "--val-fraction", "nan"], "--val-fraction must be in (0, 1)"),
    (["eval", "semi", "{run}", "--lr", "nan"], "--lr must be > 0 and finite, got nan"),
    (["eval", "semi", "{run}", "--head-lr", "inf"], "--head-lr must be > 0 and finite, got inf"),
    (["eval", "semi", "{run}", "--seed", "-1"], "--seed must be in [0, 4294967295]"),
    (["eval", "knn", "{run}", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["analyze", "{run}", "--out", "{tmp}/a", "--kappa", "nan"], "--kappa must be >= 0 and finite, got nan"),
])
def test_evaluation_flags_are_checked_before_any_work(run, tmp_path, capsys, argv, needle):
    argv = [a.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for a in argv] + ["--no-progress"]
    _one_line(capsys, main(argv), needle)
    assert not (run / layout.EVAL_DIR).exists()


def test_library_entry_points_refuse_empty_input_and_bad_numbers():
    from mmcr.evaluate import knn_accuracy, linear_probe
    from mmcr.geometry import manifold_capacity

    x, y = torch.randn(8, 4), torch.arange(8) % 2
    cases = [
        (lambda: knn_accuracy(x, y, x, y, temperature=math.nan), "temperature must be > 0 and finite"),
        (lambda: knn_accuracy(x, y + 3, x, y, num_classes=2), r"train_labels must be class indices in 0..1"),
        (lambda: knn_accuracy(x[:0], y[:0], x, y), "at least one training point"),
        (lambda: linear_probe(x, y, x, y, weight_decays=[math.nan]), "every weight decay must be >= 0 and finite"),
        (lambda: linear_probe(x[:0], y[:0], x, y), "at least one training feature vector"),
        (lambda: linear_probe(x, y, x, y, seed=2**70), "seed must be in"),
        (lambda: manifold_capacity(np.zeros((0, 5, 3))), "need at least 2 manifolds"),
        (lambda: manifold_capacity([]), "at least 2 arrays"),
    ]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 10, 20)) + 3 * rng.normal(size=(4, 1, 20))
    cases += [
        (lambda: manifold_capacity(X, center_subspace=np.full((20, 1), np.nan)), "center_subspace holds NaN"),
        (lambda: manifold_capacity(X, seed=-1), "seed must be in"),
        (lambda: manifold_capacity(X, seed=2**70), "seed must be in"),
    ]
    for call, needle in cases:
        with pytest.raises(ValueError, match=needle) as e:
            call()
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------- npz rules
def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_npz_layout_rule_and_ambiguous_arrays(tmp_path):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 255, (6, 4, 4, 3), dtype=np.uint8)
    f = _npz(tmp_path / "a.npz", images=hwc, labels=np.arange(6) % 2)
    with pytest.raises(DatasetError, match=r"could be channels-last .* layout=nhwc or layout=nchw"):
        load_dataset("npz", f)
    ds = load_dataset("npz", f, layout="nhwc")
    assert torch.equal(ds.images, torch.from_numpy(hwc).permute(0, 3, 1, 2))  # the pixels, unscrambled
    assert load_dataset("npz", f, layout="nchw").images.shape == (6, 3, 4, 3)  # RGBA, alpha dropped
    tiny = _npz(tmp_path / "t.npz", images=rng.integers(0, 255, (6, 1, 1, 3), dtype=np.uint8), labels=np.zeros(6, int))
    with pytest.raises(DatasetError, match="could be channels-last"):
        load_dataset("npz", tiny)
    assert load_dataset("npz", tiny, layout="nhwc").images.shape == (6, 3, 1, 1)
    # unambiguous arrays need no option
    assert load_dataset("npz", _npz(tmp_path / "c.npz", images=np.zeros((2, 3, 8, 8), np.uint8),
                                    labels=np.arange(2))).images.shape == (2, 3, 8, 8)
    assert load_dataset("npz", _npz(tmp_path / "d.npz", images=np.zeros((2, 8, 8, 3), np.uint8),
                                    labels=np.arange(2))).images.shape == (2, 3, 8, 8)
    with pytest.raises(DatasetError, match="invalid value .hwc. for layout; choose one of auto, nhwc, nchw"):
        load_dataset("npz", f, layout="hwc")


def test_npz_values_are_never_clipped_silently(tmp_path):
    rng = np.random.default_rng(0)
    signed = rng.uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
    signed[0, 0, 0, :2] = (-1, 1)
    with pytest.raises(DatasetError, match=r"floats in \[-1, 1\].*\(x \+ 1\) / 2"):
        load_dataset("npz", _npz(tmp_path / "f.npz", images=signed, labels=np.arange(4)))
    deep = rng.integers(0, 4096, (4, 8, 8, 3)).astype(np.int32)
    with pytest.raises(DatasetError, match=r"int32 with values in \[0, 40\d\d\], outside 0..255.*uint16"):
        load_dataset("npz", _npz(tmp_path / "i.npz", images=deep, labels=np.arange(4)))
    u16 = (deep * 16).astype(np.uint16)  # 16-bit data declared by its dtype: scaled to 8 bits
    assert int(load_dataset("npz", _npz(tmp_path / "u.npz", images=u16, labels=np.arange(4))).images.max()) > 200
    unit = rng.random((4, 8, 8, 3)).astype(np.float32)
    ds = load_dataset("npz", _npz(tmp_path / "p.npz", images=unit, labels=np.arange(4)))
    assert torch.equal(ds.images, torch.from_numpy(np.round(unit * 255).astype(np.uint8)).permute(0, 3, 1, 2))
    mask = load_dataset("npz", _npz(tmp_path / "b.npz", images=unit > 0.5, labels=np.arange(4)))
    assert set(mask.images.unique().tolist()) == {0, 255}


def test_npz_labels_are_checked_once_and_clearly(tmp_path, capsys):
    img = np.zeros((6, 8, 8, 3), np.uint8)
    with pytest.raises(DatasetError, match="labels in .* run up to 1000000000000 but the file holds 6 labelled"):
        load_dataset("npz", _npz(tmp_path / "h.npz", images=img, labels=np.array([0, 1, 2, 3, 4, 10**12])))
    with pytest.raises(DatasetError, match=r"exceed int64"):
        load_dataset("npz", _npz(tmp_path / "u.npz", images=img, labels=np.array([0, 1, 2, 3, 4, 2**63 + 5],
                                                                              dtype=np.uint64)))
    few = _npz(tmp_path / "few.npz", images=img, labels=np.arange(6) % 4, classes=np.array(["a", "b"]))
    with pytest.raises(DatasetError, match=r"labels of npz train must lie in 0..1 \(2 classes\).*got 2, 3"):
        load_dataset("npz", few)
    # pretraining on it: one line at load time, never the kNN monitor's index error
    rc = main(["pretrain", "digits", "--out", str(tmp_path / "r"), *SETS, "--set", "data.name=npz",
               "--set", f"data.root={few}", "--set", "data.options={}", "--set", "eval.knn_every_epochs=1"])
    _one_line(capsys, rc, "labels of npz train must lie in 0..1")


def test_test_labels_absent_from_training_are_named(tmp_path, capsys):
    rng = np.random.default_rng(0)
    f = _npz(tmp_path / "s.npz", x_train=rng.integers(0, 255, (64, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(64) % 2, x_test=rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8),
             y_test=np.arange(12) % 3)
    assert load_dataset("npz", f, split="train").classes == ["0", "1", "2"]  # classes agree across splits
    rc = main(["eval", "knn", "random:resnet_tiny", "--dataset", "npz", "--root", str(f), "--no-progress",
               "--out", str(tmp_path / "e")])
    _one_line(capsys, rc, f"the test split of npz {f} has labels 2 (4 images) that no image of the train split has")
    assert not (tmp_path / "e").exists()
    rc = main(["pretrain", "digits", "--out", str(tmp_path / "r"), "--no-progress", *SETS, "--set", "data.name=npz",
               "--set", f"data.root={f}", "--set", "data.options={}", "--set", "augment.overrides.size=8",
               "--set", "eval.final=true", "--set", "data.val_fraction=0"])
    assert rc == 0 and "final evaluation skipped:" in capsys.readouterr().out
    assert "labels 2 (4 images)" in json.loads((tmp_path / "r" / "summary.json").read_text())["final_eval_skipped"]


def test_truncated_archives_and_npz_files_are_one_line(tmp_path, capsys, cifar_archive):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(cifar_archive.read_bytes()[:100])
    rc = main(["pretrain", "digits", "--out", str(tmp_path / "r"), *SETS, "--set", "data.name=archive",
               "--set", f"data.root={cut}", "--set", "data.options={}", "--set", f"data.cache_dir={tmp_path / 'c'}"])
    _one_line(capsys, rc, "it is truncated or not an archive")
    good = _npz(tmp_path / "g.npz", images=np.zeros((4, 8, 8, 3), np.uint8), labels=np.arange(4))
    for name, data in (("half.npz", good.read_bytes()[: good.stat().st_size // 2]),
                       ("tail.npz", good.read_bytes()[:-30]), ("text.npz", b"not an npz at all, just text")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match="cannot read .* as .npz") as e:
            load_dataset("npz", tmp_path / name)
        assert "allow_pickle" not in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------- bounds and memory
def test_working_sizes_that_cannot_fit_are_refused_before_allocating(monkeypatch):
    import mmcr.data.datasets as D

    with pytest.raises(DatasetError, match=r"size must be in \[1, 4096\], got 100000"):
        load_dataset("digits", size=100000)
    monkeypatch.setattr(D, "available_memory", lambda: 10**9)
    with pytest.raises(DatasetError, match=r"size=1024 would need 4\.5 GB for 1437 images .* 1\.0 GB of memory"):
        load_dataset("digits", size=1024)


def test_threads_beyond_the_cores_are_clamped_with_a_warning(monkeypatch):
    import os

    from mmcr.train.trainer import _usable_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    with pytest.warns(UserWarning, match="train.threads=64 exceeds the 2 CPU core"):
        assert _usable_threads(64) == 2
    assert _usable_threads(2) == 2


# ------------------------------------------------------------------------------------- resume rules
def test_a_resume_never_continues_without_model_or_optimiser_state(run, tmp_path, capsys):
    real = torch.load(layout.checkpoint_path(run, 2), weights_only=True)
    for name, state, needle in [
        ("no_model.pt", {k: v for k, v in real.items() if k != "model"}, "(missing 'model')"),
        ("no_optim.pt", {k: v for k, v in real.items() if k != "optimizer"}, "(missing 'optimizer')"),
        ("empty_optim.pt", {**real, "optimizer": {"state": {}, "param_groups": []}},
         "its optimizer state does not fit"),
        ("empty_model.pt", {**real, "model": {}}, "holds no model state"),
    ]:
        torch.save(state, tmp_path / name)
        rc = main(["pretrain", "digits", "--out", str(tmp_path / name.replace(".pt", "")), "--resume",
                   str(tmp_path / name), *SETS, "--set", "train.max_steps=3"])
        _one_line(capsys, rc, needle)
        assert not layout.list_checkpoints(tmp_path / name.replace(".pt", ""))


# ------------------------------------------------------------------------------ labels, every source
def test_labels_are_checked_where_every_data_set_is_built():
    img = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    assert ImageDataset(img, torch.tensor([0, 1, -1]), ["a", "b"]).labels.dtype == torch.int64  # -1: unlabelled
    for labels, needle in [([0, 2, 1], r"must lie in 0..1 \(2 classes\) or be -1 .*got 2"),
                           ([0, -2, 1], "got -2"), ([0, 1], "3 images but labels of shape"),
                           ([0.0, 1.0, 1.0], "must be integers")]:
        with pytest.raises(DatasetError, match=needle):
            ImageDataset(img, torch.tensor(labels), ["a", "b"], "mine", "train")
    with pytest.raises(DatasetError, match="labels of imagefolder train must lie in 0..0"):
        LazyImageFolder(["a.png", "b.png"], [0, 1], ["only"], size=8, split="train")
    with pytest.raises(DatasetError, match="2 images but labels of shape"):
        LazyImageFolder(["a.png", "b.png"], [0], ["only"], size=8, split="train")
    # subsets are data sets too: they inherit the check
    ds = ImageDataset(img, torch.tensor([0, 1, 1]), ["a", "b"])
    assert len(ds.subset([0, 2])) == 2


# ----------------------------------------------------------------------------------- out of memory
def test_out_of_memory_in_detection_is_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch):
    import mmcr.evaluate.detection.run as det  # run_detection calls train_loop from there
    from test_evaluate_detection import SMALL, make_voc

    voc = make_voc(tmp_path / "voc", n_trainval=6, n_test=2)
    real = det.train_loop

    def oom_at_step_4(*args):
        after = args[-1]

        def cb(step, losses):
            after(step, losses)
            if step == 4:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1234 bytes.")
        return real(*args[:-1], cb)

    monkeypatch.setattr(det, "train_loop", oom_at_step_4)
    torch.set_num_threads(1)
    argv = ["eval", "detection", "random:resnet_tiny", "--root", str(voc), "--protocol", "voc07", "--no-progress",
            "--iterations", "6", "--out", str(tmp_path / "det"), "--device", "cpu",
            *sum((["--set", o] for o in [*SMALL, "solver.checkpoint_every=3", "solver.batch_size=2",
                                         "solver.precise_bn_iters=0"]), [])]
    err = _one_line(capsys, main(argv), "out of memory (DefaultCPUAllocator: can't allocate memory")
    assert "solver.batch_size" in err and "input.min_size_train" in err and "kept" in err
    ckpts = tmp_path / "det" / "detection" / "voc07" / "checkpoints"
    assert [p.name for p in ckpts.glob("*.pt")] == ["ckpt_00000003.pt"]
    monkeypatch.setattr(det, "train_loop", real)
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
