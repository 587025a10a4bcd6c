"""A run interrupted mid-way (Ctrl-C, then SIGKILL) and resumed each time ends with the same weights,
bit for bit, as an uninterrupted run; and the trainer's guards (existing run directory, NaN losses)
behave."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mmcr.rundir import layout
from mmcr.rundir.files import save_torch_atomic
from mmcr.rundir.metrics import read_metrics
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
    return torch.load(ckpts[-1], weights_only=True)


def _start(out: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "mmcr.cli", "pretrain", "digits", "--out", str(out)]
    for a in ARGS + (["train.resume=auto"] if resume else []):
        cmd += ["--set", a]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, ready) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, f"run finished before it could be interrupted: {proc.stderr.read()[-2000:]}"


def test_interrupt_then_kill_then_resume_is_bitwise_identical(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    train(load_config("digits", ARGS + [f"out={ref_dir}"]))
    # Ctrl-C after step 5: the run writes a checkpoint of the last finished step (not a multiple of
    # checkpoint_every_steps) and exits with 130, saying where it stopped
    proc = _start(run_dir, resume=False)
    _wait_for(proc, lambda: sum(1 for r in read_metrics(run_dir) if "loss" in r) >= 5)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    line = [ln for ln in err.splitlines() if "interrupted at step" in ln][-1]
    step = int(line.split("interrupted at step ")[1].split(";")[0])
    assert f"ckpt_{step:08d}.pt" in line and layout.checkpoint_path(run_dir, step).exists()
    # resumed, then SIGKILLed as soon as a later mid-epoch checkpoint exists
    proc = _start(run_dir, resume=True)
    _wait_for(proc, lambda: any(s >= step + 4 for s, _ in layout.list_checkpoints(run_dir)))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps_before = [s for s, _ in layout.list_checkpoints(run_dir)]
    assert steps_before and 160 not in steps_before
    summary = train(load_config("digits", ARGS + [f"out={run_dir}", "train.resume=auto"]))
    killed_dir = run_dir
    assert summary["steps"] == 160
    ref, res = _final_model(ref_dir), _final_model(killed_dir)
    assert ref["step"] == res["step"] == 160
    for key, tensor in ref["model"].items():
        assert torch.equal(tensor, res["model"][key]), f"{key} differs after resume"
    for a, b in zip(ref["optimizer"]["state"].values(), res["optimizer"]["state"].values()):
        for k in a:
            assert torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))
    # the metrics log of the resumed run equals the uninterrupted one, step for step
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


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    """The data order depends on the world size, so a checkpoint written by 2 processes does not resume
    in 1 (the checkpoint is rewritten as a 2-process run's would be: no torchrun needed)."""
    out = tmp_path / "run"
    args = ARGS + [f"out={out}", "train.max_steps=2", "eval.knn_every_epochs=0"]
    train(load_config("digits", args))
    path = sorted((out / layout.CHECKPOINT_DIR).glob("ckpt_*.pt"))[-1]
    state = torch.load(path, weights_only=True)
    assert state["world_size"] == 1
    state["world_size"] = 2
    save_torch_atomic(state, path)
    with pytest.raises(ValueError, match=r"written by 2 process\(es\) but this run has 1"):
        train(load_config("digits", args[:-2] + ["train.max_steps=4", "eval.knn_every_epochs=0", "train.resume=auto"]))
