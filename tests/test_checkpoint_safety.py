"""Checkpoints are data: a file whose unpickling would run code is refused with one line by every
command and library function that reads one, and the code never runs. Old (format v1) checkpoints that
hold only data keep loading. Each case is a row of tests/README.md."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmcr.cli import main
from mmcr.run.config import load_config
from mmcr.rundir import layout
from mmcr.rundir.checkpoint import (
    CheckpointError,
    InvalidCheckpointError,
    UnsafeCheckpointError,
    find_checkpoint,
    load_latest,
    read_checkpoint,
)
from mmcr.train import train

BASE = [
    "train.batch_size=32", "augment.views=2", "model.projector.hidden=[32]", "model.projector.out_dim=16",
    "train.progress=false", "train.tensorboard=false", "train.log_every_steps=1", "train.threads=2",
    "eval.knn_every_epochs=0", "eval.final=false", "train.max_steps=2",
]


class Payload:
    """Unpickling this creates ``marker``: the stand-in for any code a hostile file could run."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real") / "run"
    train(load_config("digits", BASE + [f"out={out}"]))
    return out


@pytest.fixture
def hostile(run, tmp_path):
    """(marker, files): a pure payload .pt, a raw pickle, a real checkpoint with one payload entry, and a
    copy of the run whose newest checkpoint carries the payload."""
    marker = tmp_path / "PAYLOAD_RAN"
    pure = tmp_path / "evil.pt"
    torch.save(Payload(marker), pure)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    real = torch.load(layout.checkpoint_path(run, 2), weights_only=True)
    embedded = tmp_path / "real_plus_payload.pt"
    torch.save({**real, "notes": Payload(marker)}, embedded)
    run_copy = tmp_path / "received_run"
    shutil.copytree(run, run_copy)
    shutil.copy(embedded, layout.checkpoint_path(run_copy, 99))
    assert not marker.exists()
    return marker, {"pure": pure, "raw": raw, "embedded": embedded, "run": run_copy}


def _one_line_refusal(capsys, rc: int) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and "refusing" in err and "could run code" in err, err
    return err


@pytest.mark.parametrize("kind", ["pure", "raw", "embedded", "run"])
def test_a_checkpoint_that_would_run_code_is_refused_by_every_command(hostile, tmp_path, capsys, kind):
    marker, files = hostile
    src = str(files[kind])
    commands = [
        ["eval", "knn", src, "--no-progress"],
        ["eval", "linear", src, "--no-progress"],
        ["eval", "semi", src, "--no-progress"],
        ["eval", "transfer", src, "--dataset", "dtd", "--root", str(tmp_path), "--no-progress"],
        ["eval", "detection", src, "--root", str(tmp_path), "--no-progress", "--device", "cpu"],
        ["export", src, str(tmp_path / "out" / "bb.safetensors")],
        ["export", "brainscore", src, str(tmp_path / "out" / "plugin"), "--identifier", "evil_model"],
        ["analyze", src, "--out", str(tmp_path / "geo"), "--no-progress"],
        ["analyze", src, "random:resnet_tiny", "--out", str(tmp_path / "geo2"), "--no-progress"],
        ["pretrain", "digits", "--resume", src, "--out", str(tmp_path / "resumed"),
         *sum((["--set", a] for a in BASE), [])],
    ]
    if kind == "run":
        commands.append(["pretrain", "digits", "--resume", "auto", "--out", src,
                         *sum((["--set", a] for a in BASE), [])])
    for argv in commands:
        _one_line_refusal(capsys, main(argv))
        assert not marker.exists(), argv
    # nothing was written for the refused commands, and nothing of the received run was moved or deleted
    assert not (tmp_path / "out").exists() and not (tmp_path / "geo").exists()
    assert not (tmp_path / "resumed" / layout.CHECKPOINT_DIR).exists()
    if kind == "run":
        assert layout.checkpoint_path(files["run"], 99).exists()
        assert not (layout.checkpoint_dir(files["run"]) / layout.CORRUPT_DIR).exists()


def test_a_checkpoint_that_would_run_code_is_refused_by_every_library_function(hostile, tmp_path):
    from mmcr.evaluate import load_exported, read_exported
    from mmcr.evaluate.api import run_export, run_knn
    from mmcr.evaluate.brainscore import export_brainscore_plugin
    from mmcr.evaluate.sources import load_pretrained
    from mmcr.geometry.analyze import run_analysis
    from mmcr.rundir.checkpoint import load_torch_data

    marker, files = hostile
    renamed = tmp_path / "evil_export.pt"  # an "exported backbone" carrying the payload
    shutil.copy(files["embedded"], renamed)
    calls = [
        lambda: load_torch_data(files["pure"]),
        lambda: read_checkpoint(files["embedded"]),
        lambda: read_checkpoint(files["raw"]),
        lambda: find_checkpoint(files["embedded"]),
        lambda: find_checkpoint(files["run"]),
        lambda: load_latest(files["run"]),
        lambda: load_latest(files["run"], move_corrupt=True),
        lambda: load_pretrained(files["pure"]),
        lambda: load_pretrained(files["run"]),
        lambda: read_exported(renamed),
        lambda: load_exported(renamed),
        lambda: run_knn(files["embedded"], progress=False),
        lambda: run_export(files["run"], tmp_path / "x.pt"),
        lambda: export_brainscore_plugin(files["embedded"], tmp_path / "plugin", "evil_model"),
        lambda: run_analysis(str(files["raw"]), None, tmp_path / "geo", progress=False),
        lambda: train(load_config("digits", BASE + [f"out={tmp_path / 'r'}", f"train.resume={files['embedded']}"])),
        lambda: train(load_config("digits", BASE + [f"out={files['run']}", "train.resume=auto"])),
    ]
    for call in calls:
        with pytest.raises(UnsafeCheckpointError, match="could run code") as e:
            call()
        assert "\n" not in str(e.value) and isinstance(e.value, ValueError)
        assert not marker.exists()
    assert layout.checkpoint_path(files["run"], 99).exists()  # refused, never moved aside as "corrupt"
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "geo").exists()
    assert not (tmp_path / "plugin").exists()


def test_format_v2_checkpoints_hold_only_tensors_and_plain_containers(run):
    state = torch.load(layout.checkpoint_path(run, 2), weights_only=True)  # no allow-list needed
    assert state["format"] == "mmcr-checkpoint-v2"
    assert torch.serialization.get_unsafe_globals_in_checkpoint(layout.checkpoint_path(run, 2)) == []
    assert isinstance(state["rng"]["numpy"]["key"], torch.Tensor)


def test_format_v1_checkpoints_keep_loading_and_resuming(run, tmp_path):
    """v1 wrote numpy's RNG tuple (a numpy array): exactly that is allowed for v1 files, nothing else."""
    old = tmp_path / "old"
    shutil.copytree(run, old)
    path = layout.checkpoint_path(old, 2)
    state = torch.load(path, weights_only=True)
    np.random.seed(5)
    state.update(format="mmcr-checkpoint-v1", rng={**state["rng"], "numpy": np.random.get_state()})
    torch.save(state, path)
    assert read_checkpoint(path)["format"] == "mmcr-checkpoint-v1"
    from mmcr.evaluate.sources import load_pretrained

    assert load_pretrained(old)[1].step == 2  # what eval, export and analyze read
    summary = train(load_config("digits", BASE + [f"out={old}", "train.resume=auto", "train.max_steps=3"]))
    assert summary["steps"] == 3
    assert read_checkpoint(layout.checkpoint_path(old, 3))["format"] == "mmcr-checkpoint-v2"
    # numpy arrays in a file that does not say it is v1 are refused
    torch.save({"format": "mmcr-checkpoint-v2", "x": np.zeros(3)}, tmp_path / "np.pt")
    with pytest.raises(UnsafeCheckpointError, match="only mmcr's format v1"):
        read_checkpoint(tmp_path / "np.pt")


def test_foreign_and_ill_typed_checkpoints_are_refused_by_name(run, tmp_path, capsys):
    real = torch.load(layout.checkpoint_path(run, 2), weights_only=True)
    cases = {
        "no_format.pt": ({"model": real["model"]}, "not an mmcr checkpoint (missing 'format')"),
        "no_config.pt": ({"format": real["format"], "model": real["model"]}, "(missing 'config')"),
        "no_model.pt": ({k: v for k, v in real.items() if k != "model"}, "(missing 'model')"),
        "bad_model.pt": ({**real, "model": [1, 2]}, "entry 'model' is a list, not a state dict"),
        "bad_step.pt": ({**real, "step": "x"}, "entry 'step' is a str, not a count"),
        "other_format.pt": ({**real, "format": "someone-else-v9"}, "format 'someone-else-v9'"),
    }
    for name, (state, msg) in cases.items():
        torch.save(state, tmp_path / name)
        with pytest.raises(InvalidCheckpointError) as e:
            find_checkpoint(tmp_path / name)
        assert msg in str(e.value), (name, str(e.value))
        assert main(["eval", "knn", str(tmp_path / name), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and msg in err
    # a wrong-shaped model entry: one line, not torch's multi-line load_state_dict report
    torch.save({**real, "model": {"w": torch.zeros(2)}}, tmp_path / "shape.pt")
    assert main(["export", str(tmp_path / "shape.pt"), str(tmp_path / "bb.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "the weights do not match the model its config describes" in err
    assert not (tmp_path / "bb.pt").exists()
    # a foreign file among a run's checkpoints is refused, not skipped in favour of an older one
    received = tmp_path / "received"
    shutil.copytree(run, received)
    torch.save({"format": real["format"], "step": 9}, layout.checkpoint_path(received, 9))
    with pytest.raises(InvalidCheckpointError, match=r"missing 'config', 'model'.*move it out"):
        find_checkpoint(received)
    with pytest.raises(InvalidCheckpointError, match=r"ckpt_00000009.pt is not an mmcr checkpoint \(missing 'config'"):
        train(load_config("digits", BASE + [f"out={received}", "train.resume=auto"]))  # --resume auto: refused too
    assert layout.checkpoint_path(received, 9).exists()  # and left where it is
    # truncated files (a kill mid-copy) are still skipped with a warning, as before
    layout.checkpoint_path(received, 9).write_bytes(b"PK\x03\x04 cut")
    with pytest.warns(UserWarning, match="skipping it"):
        assert find_checkpoint(received)[1] == layout.checkpoint_path(received, 2)


def test_nan_weights_are_refused_by_evaluation_and_export(run, tmp_path, capsys):
    real = torch.load(layout.checkpoint_path(run, 2), weights_only=True)
    model = {k: (v.fill_(float("nan")) if v.is_floating_point() else v) for k, v in real["model"].items()}
    torch.save({**real, "model": model}, tmp_path / "diverged.pt")
    for argv in (["eval", "knn", str(tmp_path / "diverged.pt"), "--no-progress"],
                 ["export", str(tmp_path / "diverged.pt"), str(tmp_path / "bb.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "NaN/Inf weight(s)" in err and "the run diverged" in err
    assert not (tmp_path / "bb.safetensors").exists()


def test_exports_are_read_as_data(run, tmp_path):
    from mmcr.evaluate import load_exported, read_exported

    assert main(["export", str(run), str(tmp_path / "bb.pt")]) == 0
    assert load_exported(tmp_path / "bb.pt") is not None
    torch.save({"w": torch.zeros(1), "meta": {"a": 1}}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="not an exported backbone"):
        read_exported(tmp_path / "mixed.pt")
    (tmp_path / "cut.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        read_exported(tmp_path / "cut.safetensors")
