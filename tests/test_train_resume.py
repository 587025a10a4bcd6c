"""A run killed mid-way (SIGKILL) and resumed ends with the same weights, bit for bit, as an
uninterrupted run; and the trainer's guards (existing run directory, NaN losses) behave."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmcr.train import load_config, train

ARGS = [
    "train.epochs=4",
    "train.batch_size=32",
    "augment.views=4",
    "train.checkpoint_every_steps=4",
    "train.keep_checkpoints=2",
    "train.log_every_steps=1",
    "train.progress=false",
    "train.tensorboard=false",
    "train.threads=1",
    "eval.final=false",
    "eval.knn_every_epochs=2",
    "model.projector.hidden=[64]",
    "model.projector.out_dim=32",
]


def _final_model(run_dir: Path) -> dict:
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt_*.pt"))
    return torch.load(ckpts[-1], weights_only=False)


def test_sigkill_then_resume_is_bitwise_identical(tmp_path):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    train(load_config("digits", ARGS + [f"out={ref_dir}"]))
    cmd = [sys.executable, "-m", "mmcr.cli", "pretrain", "digits", "--out", str(killed_dir)]
    for a in ARGS:
        cmd += ["--set", a]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    # kill as soon as a mid-epoch checkpoint exists (step 8 of ~40 per epoch)
    while time.time() < deadline and proc.poll() is None:
        if any((killed_dir / "checkpoints").glob("ckpt_0000000[8-9].pt")):
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"run finished before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_before = sorted(p.name for p in (killed_dir / "checkpoints").glob("*.pt"))
    assert steps_before and "ckpt_00000160.pt" not in steps_before
    summary = train(load_config("digits", ARGS + [f"out={killed_dir}", "train.resume=auto"]))
    assert summary["steps"] == 160
    ref, res = _final_model(ref_dir), _final_model(killed_dir)
    assert ref["step"] == res["step"] == 160
    for key, tensor in ref["model"].items():
        assert torch.equal(tensor, res["model"][key]), f"{key} differs after resume"
    for a, b in zip(ref["optimizer"]["state"].values(), res["optimizer"]["state"].values()):
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))
    # the metrics log of the resumed run equals the uninterrupted one, step for step
    from mmcr.train.monitor import read_metrics

    losses = lambda d: [(r["step"], r["loss"]) for r in read_metrics(d) if "loss" in r]  # noqa: E731
    assert losses(ref_dir) == losses(killed_dir)


def test_existing_run_dir_needs_resume(tmp_path):
    out = tmp_path / "run"
    args = ARGS + [f"out={out}", "train.max_steps=2", "eval.knn_every_epochs=0"]
    train(load_config("digits", args))
    with pytest.raises(ValueError, match="--resume auto"):
        train(load_config("digits", args))


def test_nonfinite_guard_stops_with_clear_message(tmp_path):
    from mmcr.train import NonFiniteLossError

    args = ARGS + [f"out={tmp_path / 'nan'}", "optim.lr=1e30", "optim.name=sgd", "train.max_nonfinite_steps=3",
                   "eval.knn_every_epochs=0"]
    with pytest.raises(NonFiniteLossError, match="consecutive steps"):
        train(load_config("digits", args))
