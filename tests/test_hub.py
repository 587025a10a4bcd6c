"""``hubconf.py``: ``torch.hub.load(<repo>, "mmcr_resnet50", source="local", weights=<file>)`` returns the
backbone that ``mmcr export`` wrote, loaded strictly and as data only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmcr.cli import main
from mmcr.evaluate import export_backbone
from mmcr.evaluate.sources import load_pretrained
from mmcr.models import build_encoder
from mmcr.run.config import load_config
from mmcr.rundir import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def resnet50_run(tmp_path_factory) -> Path:
    """A run directory with one checkpoint of the CIFAR recipe's ResNet-50 (CIFAR stem) and its two exports
    by ``mmcr export``; BatchNorm statistics are moved off their 0/1 start so that a wrong load would show."""
    run = tmp_path_factory.mktemp("hub") / "run"
    cfg = load_config("cifar10", ["model.projector.hidden=[32]", "model.projector.out_dim=16"])
    torch.manual_seed(0)
    enc = build_encoder(cfg.model)
    with torch.no_grad():
        enc.backbone.train()(torch.rand(4, 3, 32, 32))
    save_checkpoint({"config": cfg.to_dict(), "model": enc.state_dict(), "step": 5}, run, 5, keep=0)
    for suffix in (".safetensors", ".pt"):
        assert main(["export", str(run), str(run / f"resnet50_mmcr{suffix}")]) == 0
    return run


@pytest.fixture(scope="module")
def features(resnet50_run) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, the run's own backbone's features of them)."""
    backbone, _ = load_pretrained(resnet50_run)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, backbone(x)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_hub_loads_what_mmcr_export_wrote(resnet50_run, features, suffix):
    weights = resnet50_run / f"resnet50_mmcr{suffix}"
    model = torch.hub.load(str(ROOT), "mmcr_resnet50", source="local", weights=str(weights))
    assert type(model).__name__ == "ResNet" and not model.training and type(model.maxpool).__name__ == "Identity"
    x, expected = features
    with torch.no_grad():
        got = model(x)
    assert got.shape == (2, 2048) and torch.equal(got, expected)


def test_hub_entries_refuse_the_wrong_file_in_one_line(resnet50_run, tmp_path):
    weights = str(resnet50_run / "resnet50_mmcr.safetensors")
    with pytest.raises(ValueError, match="holds a resnet50 export, not resnet18; load it with the 'mmcr_backbone'"):
        torch.hub.load(str(ROOT), "mmcr_resnet18", source="local", weights=weights)
    with pytest.raises(ValueError, match="pass weights=<file written by `mmcr export`>"):
        torch.hub.load(str(ROOT), "mmcr_resnet50", source="local")
    with pytest.raises(ValueError, match="is not a file"):
        torch.hub.load(str(ROOT), "mmcr_resnet50", source="local", weights=str(tmp_path / "missing.pt"))


def test_hub_entry_of_the_default_runs_tiny_resnet(tmp_path):
    backbone, src = load_pretrained("random:resnet_tiny")
    weights = tmp_path / "tiny.safetensors"
    export_backbone(backbone, src, weights)
    model = torch.hub.load(str(ROOT), "mmcr_resnet_tiny", source="local", weights=str(weights))
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), backbone(x)) and model(x).shape == (2, 64)
