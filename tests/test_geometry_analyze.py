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
         "--gradient-coherence", "mmcr", "--gradient-images", "6", "--finite-sample-repeats", "2", "--no-progress"]
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
    from mmcr.evaluate.sources import load_pretrained

    model, _ = load_pretrained("random:resnet_tiny")
    assert default_layers(model)[-1] == "output"
    with pytest.raises(ValueError, match="unknown layer"):
        FeatureTaps(model, ["nope"])


def _run_with_own_statistics(run):
    """A run directory whose checkpoint was made with other statistics than CIFAR's and a 12 px crop."""
    from mmcr.models import build_encoder
    from mmcr.run.config import load_config
    from mmcr.rundir import save_checkpoint

    cfg = load_config("digits", ["augment.overrides.size=12", "augment.overrides.mean=[0.3, 0.2, 0.1]",
                                 "augment.overrides.std=[0.7, 0.6, 0.5]", "model.projector.hidden=[16]"])
    save_checkpoint({"config": cfg.to_dict(), "model": build_encoder(cfg.model).state_dict(), "step": 3}, run, 3,
                    keep=0)
    return run


def test_analyze_uses_the_runs_own_augmentation_and_normalisation(tmp_path):
    """A run trained with other statistics than CIFAR's (and a 12 px crop) is analysed with its own."""
    from mmcr.geometry.analyze import run_analysis

    run = _run_with_own_statistics(tmp_path / "run")
    res = run_analysis(str(run), None, tmp_path / "geo", n_images=4, n_views=3, n_classes=3, n_per_class=4,
                       n_t=10, fit_range=(2, 10), layers=["output"], progress=False)
    s = res["settings"]
    assert res["dataset"] == "digits"  # the run's own data (its options: 16 px digits)
    assert s["views"]["mean"] == [0.3, 0.2, 0.1] and s["views"]["std"] == [0.7, 0.6, 0.5]
    assert s["views"]["size"] == [12, 12] and s["views"]["scale"] == [0.4, 1.0]  # the run's crops, not cifar's
    assert s["clean_view"]["mean"] == [0.3, 0.2, 0.1] and s["clean_view"]["size"] == [12, 12]


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
         "--labels", "tiny,r18", "--no-progress"]
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown layer"):  # each model must have the layers asked for
        args.func(args)
    args = parser.parse_args(
        ["analyze", "random:resnet_tiny", "random:resnet18", "--dataset", "digits", "--out", str(out),
         "--n-images", "6", "--n-views", "3", "--n-classes", "3", "--n-per-class", "4", "--n-t", "10",
         "--fit-range", "2,15", "--finite-sample-repeats", "1", "--labels", "tiny,r18", "--no-progress"]
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
    with pytest.raises(ValueError, match="labels"):
        bad = parser.parse_args(["analyze", "random:resnet_tiny", "--out", str(out), "--labels", "a"])
        bad.func(bad)


def _no_nan(token):
    raise AssertionError(f"non-standard JSON constant {token}")


def test_a_comparison_shows_every_model_the_references_images_and_views(tmp_path):
    """A run next to its random-init twin: both analysed on the run's data set and views (the twin in the
    run's statistics, since it was never trained with any of its own)."""
    from mmcr.geometry.compare import compare_models

    run = _run_with_own_statistics(tmp_path / "run")
    comp = compare_models(["random:resnet_tiny", str(run)], None, tmp_path / "cmp", n_images=4, n_views=3,
                          n_classes=3, n_per_class=4, n_t=10, fit_range=(2, 10), layers=["output"],
                          finite_sample_repeats=0, progress=False)
    assert comp["dataset"] == "digits"
    views = [json.loads((tmp_path / "cmp" / m["dir"] / "results.json").read_text())["settings"]["views"]
             for m in comp["models"]]
    assert views[0] == views[1] and views[0]["size"] == [12, 12] and views[0]["mean"] == [0.3, 0.2, 0.1]
