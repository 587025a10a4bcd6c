"""Host synchronisations per training step: none between logging steps, one read at each.

On a GPU every value read back to the host (``.item()``, ``bool(t)``, ``.tolist()``, ``float(t)``) stalls
the step until the device has caught up. This test counts those calls on the CPU by patching the tensor
methods, and attributes each to the step during which it happened.

Exempt by design: the augmentation parameters and the batch indices are drawn on the host from CPU
generators for every device (mmcr/augment, mmcr/data); reading them is not a device synchronisation.
The objective runs the nuclear norm's device path (``method="newton_schulz"``, what "auto" picks on
CUDA): the CPU path ("gram") decides its float32/float64 split from the singular values on the host,
which costs nothing on the CPU and is never used on a GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import mmcr.train.trainer as trainer
from mmcr.run.config import load_config
from mmcr.train import train

LOG_EVERY = 4
STEPS = 12
PKG = Path(trainer.__file__).resolve().parents[1]  # src/mmcr
EXEMPT = (PKG / "augment", PKG / "data")
READS = ("item", "tolist", "__bool__", "__float__", "__int__")


class SyncCounter:
    """Counts host reads of tensor values made from mmcr's code, per training step."""

    def __init__(self):
        self.step = None  # index of the step in progress (None outside the loop)
        self.by_step: dict[int, list[str]] = {}

    def record(self, name: str) -> None:
        if self.step is None:
            return
        frame = sys._getframe(2)
        while frame is not None:  # the innermost caller inside the mmcr package names the call site
            path = Path(frame.f_code.co_filename).resolve()
            if PKG in path.parents:
                if any(folder in path.parents for folder in EXEMPT):
                    return
                where = f"{path.relative_to(PKG)}:{frame.f_lineno} {name}"
                self.by_step.setdefault(self.step, []).append(where)
                return
            frame = frame.f_back


@pytest.mark.parametrize("objective,optim", [("mmcr", "adam"), ("mmcr", "lars"), ("barlow_twins", "adam")])
def test_no_host_reads_between_logging_steps(tmp_path, monkeypatch, objective, optim):
    counter = SyncCounter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def patched(self, *a, __original=original, __name=name, **k):
            counter.record(__name)
            return __original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, patched)

    step_fn = trainer.train_step
    calls = {"n": 0}

    def counted_step(ctx, state, images):
        counter.step = calls["n"]
        calls["n"] += 1
        return step_fn(ctx, state, images)

    monkeypatch.setattr(trainer, "train_step", counted_step)
    epoch_fn = trainer.train_one_epoch

    def counted_epoch(*a, **k):  # the run's closing reads (summary, last checkpoint) are not a step's
        try:
            return epoch_fn(*a, **k)
        finally:
            counter.step = None

    monkeypatch.setattr(trainer, "train_one_epoch", counted_epoch)
    kwargs = ["objective.kwargs={method: newton_schulz}"] if objective == "mmcr" else []
    cfg = load_config("digits", [
        f"out={tmp_path / 'run'}", f"objective.name={objective}", f"optim.name={optim}", *kwargs,
        "train.batch_size=32", "augment.views=4", "model.projector.hidden=[32]", "model.projector.out_dim=16",
        f"train.max_steps={STEPS}", f"train.log_every_steps={LOG_EVERY}", "train.checkpoint_every_steps=0",
        "train.progress=false", "train.tensorboard=false", "train.threads=2",
        "eval.knn_every_epochs=0", "eval.final=false",
    ])
    train(cfg)
    assert calls["n"] == STEPS
    for step in range(STEPS):
        reads = counter.by_step.get(step, [])
        if (step + 1) % LOG_EVERY:
            assert reads == [], f"step {step + 1} (not a logging step) read values back: {reads}"
        else:
            assert len(reads) == 1 and reads[0].startswith("train/hooks.py"), (
                f"logging step {step + 1} should read its figures back once, in the logger: {reads}")
