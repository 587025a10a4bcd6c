"""timm backbones through ``timm:<name>``, end to end: pretrain 2 steps, kNN, export (and torch.hub), analyze.

A ResNet-50 and a ViT-S (built for 32 px inputs with ``model.backbone_options.img_size``) on 32 px digits
saved as an .npz, batch 4, 2 views: a few seconds per model on 2 CPU cores. timm is a development
dependency, so nothing here skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm  # a development dependency: a missing timm fails here instead of skipping
import torch

from mmcr.cli import main
from mmcr.evaluate import read_exported
from mmcr.evaluate.sources import load_pretrained
from mmcr.models import build_backbone

ROOT = Path(__file__).resolve().parents[1]

# name, img_size option, the layers analyze taps (the last stage or block, and the output)
MODELS = {
    "resnet50": ("timm:resnet50", None, "model.layer4,output"),
    "vit_small": ("timm:vit_small_patch16_224", 32, "model.blocks.11,output"),
}


@pytest.fixture(scope="module")
def digits32(tmp_path_factory) -> Path:
    """64 training and 40 test digits at 32 px in one .npz (the npz loader's split keys)."""
    from mmcr.data import load_dataset

    tr = load_dataset("digits", split="train", size=32)
    te = load_dataset("digits", split="test", size=32)
    path = tmp_path_factory.mktemp("data") / "digits32.npz"
    np.savez(path, x_train=tr.images[:64].numpy(), y_train=tr.labels[:64].numpy(),
             x_test=te.images[:40].numpy(), y_test=te.labels[:40].numpy())
    return path


@pytest.mark.parametrize("key", list(MODELS))
def test_timm_backbone_pretrains_evaluates_exports_and_analyzes(key, digits32, tmp_path, capsys):
    name, img_size, layers = MODELS[key]
    run = tmp_path / "run"
    sets = [f"model.backbone={name}", "model.cifar_stem=false", "data.name=npz", f"data.root={digits32}",
            "data.val_fraction=0",
            "augment.overrides.size=32", "augment.views=2", "train.batch_size=4", "train.max_steps=2",
            "eval.knn_every_epochs=0", "eval.final=false", "eval.knn_k=5", "model.projector.hidden=[32]",
            "model.projector.out_dim=16"]
    if img_size is not None:
        sets.append(f"model.backbone_options={{img_size: {img_size}}}")
    argv = ["pretrain", "digits", "--out", str(run), "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["stopped_by"] == "max_steps"

    assert main(["eval", "knn", str(run), "--no-progress"]) == 0
    knn = json.loads(next((run / "eval").glob("knn_npz*.json")).read_text())
    assert knn["k"] == 5 and 0.0 <= knn["top1"] <= 100.0

    out = tmp_path / f"{key}.safetensors"
    assert main(["export", str(run), str(out)]) == 0
    meta = read_exported(out)[1]
    assert meta["arch"] == name and meta["backbone_options"] == ({"img_size": img_size} if img_size else {})
    backbone, _ = load_pretrained(run)
    x = torch.rand(3, 3, 32, 32)
    hub = torch.hub.load(str(ROOT), "mmcr_backbone", source="local", weights=str(out))  # load_exported's model
    assert isinstance(hub, timm.models.ResNet if key == "resnet50" else timm.models.VisionTransformer)
    with torch.no_grad():
        assert torch.equal(hub(x), backbone(x))  # the plain timm model, loaded strictly
    with pytest.raises(ValueError, match="load it with the 'mmcr_backbone' entry"):
        torch.hub.load(str(ROOT), "mmcr_resnet50", source="local", weights=str(out))

    geo = tmp_path / "geo"
    capsys.readouterr()
    assert main(["analyze", str(run), "--out", str(geo), "--n-images", "4", "--n-views", "3", "--n-classes", "3",
                 "--n-per-class", "3", "--n-t", "10", "--fit-range", "2,10", "--finite-sample-repeats", "0",
                 "--layers", layers, "--no-progress"]) == 0
    res = json.loads((geo / "results.json").read_text())
    assert res["dataset"] == "npz" and res["layers"] == layers.split(",")
    assert all(res["augmentation"][layer]["capacity"]["capacity"] > 0 for layer in res["layers"])


def test_backbone_options_are_honoured_or_refused_by_name():
    vit = build_backbone("timm:vit_small_patch16_224", options={"img_size": 32})
    assert vit(torch.rand(2, 3, 32, 32)).shape == (2, 384) and vit.options == {"img_size": 32}
    with pytest.raises(ValueError, match=r"timm:resnet50 does not take model.backbone_options \['img_size'\]"):
        build_backbone("timm:resnet50", options={"img_size": 32})
    with pytest.raises(ValueError, match=r"\['num_classes'\] are set by mmcr"):
        build_backbone("timm:resnet50", options={"num_classes": 10})
    for arch in ("resnet18", "resnet_tiny"):
        with pytest.raises(ValueError, match=f"{arch} takes no model.backbone_options"):
            build_backbone(arch, options={"img_size": 32})
    assert main(["pretrain", "digits", "--set", "model.backbone_options={img_size: 32}", "--set",
                 "train.max_steps=1"]) == 2
