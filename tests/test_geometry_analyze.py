"""`mmcr analyze` end to end on tiny sizes: random tiny ResNet on the bundled digits."""

from __future__ import annotations

import argparse
import json

import pytest

from mmcr.geometry.analyze import FeatureTaps, default_layers
from mmcr.geometry.cli import add_analyze_parser


def test_analyze_writes_json_plots_and_report(tmp_path):
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers())
    out = tmp_path / "geo"
    args = parser.parse_args(
        ["analyze", "random:resnet_tiny", "--dataset", "digits", "--out", str(out), "--n-images", "8",
         "--n-views", "4", "--n-classes", "4", "--n-per-class", "5", "--n-t", "20", "--fit-range", "2,30",
         "--gradient-coherence", "mmcr", "--gradient-images", "6", "--finite-sample-repeats", "2", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["layers"] == ["layers.0", "layers.1", "layers.2", "output"]
    for kind in ("augmentation", "class"):
        for layer in res["layers"]:
            r = res[kind][layer]
            assert r["capacity"]["capacity"] > 0 and len(r["capacity"]["alpha"]) in (8, 4)
            assert "alpha" in r["spectrum"]["power_law"]
            assert r["elliptical"]["dimension"] > 0
            fs = r["finite_sample"]
            assert fs["repeats"] == 2 and fs["rows"][-1]["points"] == (4 if kind == "augmentation" else 5)
    assert (out / "plots" / "geometry_per_layer.png").stat().st_size > 0
    assert (out / "plots" / "finite_sample.png").stat().st_size > 0
    assert (out / "plots" / "layer_output.png").exists()
    report = (out / "report.md").read_text()
    assert "| layers.0 |" in report and "Finite-sample check" in report
    assert "nan" not in report  # augmentation manifolds of distinct images: no same-class pairs -> a dash
    gc = res["gradient_coherence"]
    # 6 images drawn round-robin over the 10 digit classes: every pair is a different-class pair.
    assert gc["objective"] == "mmcr" and -1 <= gc["different_mean"] <= 1 and gc["n_different"] == 15


def test_feature_taps_reject_unknown_layers():
    from mmcr.models import load_pretrained

    model, _ = load_pretrained("random:resnet_tiny")
    assert default_layers(model)[-1] == "output"
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureTaps(model, ["nope"])


def test_analyze_compares_models_layer_by_layer(tmp_path):
    """A small ResNet of ours next to a torchvision ResNet-18 (different layer names): one report, one
    row per layer and model, dashes where a model has no such layer, and each model's own analysis."""
    parser = argparse.ArgumentParser()
    add_analyze_parser(parser.add_subparsers())
    out = tmp_path / "cmp"
    args = parser.parse_args(
        ["analyze", "random:resnet_tiny", "random:resnet18", "--dataset", "digits", "--out", str(out),
         "--n-images", "6", "--n-views", "3", "--n-classes", "3", "--n-per-class", "4", "--n-t", "10",
         "--fit-range", "2,15", "--finite-sample-repeats", "1", "--layers", "layers.2,layer4,output",
         "--labels", "tiny,r18", "--quiet"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown layer"):  # each model must have the layers asked for
        args.func(args)
    args = parser.parse_args(
        ["analyze", "random:resnet_tiny", "random:resnet18", "--dataset", "digits", "--out", str(out),
         "--n-images", "6", "--n-views", "3", "--n-classes", "3", "--n-per-class", "4", "--n-t", "10",
         "--fit-range", "2,15", "--finite-sample-repeats", "1", "--labels", "tiny,r18", "--quiet"]
    )  # fmt: skip
    assert args.func(args) == 0
    comp = json.loads((out / "comparison.json").read_text(), parse_constant=_no_nan)
    assert [m["label"] for m in comp["models"]] == ["tiny", "r18"]
    assert comp["layers"][:3] == ["layers.0", "layers.1", "layers.2"] and comp["layers"][-1] == "output"
    s = comp["summary"]["class"]
    assert s["layers.0"]["r18"] is None and s["model.layer4"]["tiny"] is None
    assert s["output"]["tiny"]["capacity"] > 0 and s["output"]["r18"]["capacity"] > 0
    report = (out / "report.md").read_text()
    assert "| model.layer4 | tiny | — |" in report and "| output | r18 |" in report and "nan" not in report
    for d in ("tiny", "r18"):
        res = json.loads((out / d / "results.json").read_text(), parse_constant=_no_nan)
        assert res["layers"][-1] == "output"
    assert (out / "plots" / "geometry_per_layer.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="labels"):
        bad = parser.parse_args(["analyze", "random:resnet_tiny", "--out", str(out), "--labels", "a"])
        bad.func(bad)


def _no_nan(token):
    raise AssertionError(f"non-standard JSON constant {token}")
