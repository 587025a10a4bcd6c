"""Geometry during training (eval.geometry_every_epochs): the figures reach metrics.jsonl and report.md,
and measuring them leaves training unchanged bit for bit."""

from __future__ import annotations

import torch

from mmcr.evaluate.geometry_monitor import GEOMETRY_KEYS
from mmcr.run.config import load_config
from mmcr.rundir import layout
from mmcr.rundir.metrics import read_metrics
from mmcr.train import train

ARGS = ["train.batch_size=32", "augment.views=2", "model.projector.hidden=[32]", "model.projector.out_dim=16",
        "train.progress=false", "train.tensorboard=false", "train.threads=1", "eval.knn_every_epochs=0",
        "eval.final=false", "train.max_steps=3", "eval.geometry_images=120", "eval.geometry_manifolds=12",
        "eval.geometry_views=4"]


def _weights(out):
    step, path = layout.list_checkpoints(out)[-1]
    return torch.load(path, weights_only=True)["model"]


def test_geometry_is_logged_plotted_and_leaves_training_unchanged(tmp_path):
    on, off = tmp_path / "on", tmp_path / "off"
    train(load_config("digits", ARGS + ["eval.geometry_every_epochs=1", f"out={on}"]))
    train(load_config("digits", ARGS + [f"out={off}"]))
    geo = [r for r in read_metrics(on) if "geo_aug_capacity" in r]
    assert [r["step"] for r in geo] == [0, 3]  # the initial weights, then the end of training
    assert all(set(GEOMETRY_KEYS) <= set(r) and r["geometry_s"] >= 0 for r in geo)
    assert all(0 < r["geo_aug_capacity"] and r["geo_aug_radius"] > 0 and r["geo_participation_ratio"] >= 1
               for r in geo)
    report = (on / layout.REPORT_FILE).read_text()
    assert "## Geometry during training" in report and "![geometry](geometry.png)" in report
    assert (on / "geometry.png").stat().st_size > 0
    assert not any("geo_aug_capacity" in r for r in read_metrics(off))
    assert "Geometry during training" not in (off / layout.REPORT_FILE).read_text()
    a, b = _weights(on), _weights(off)
    assert all(torch.equal(a[k], b[k]) for k in a)
