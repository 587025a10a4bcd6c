"""The method comparison's bookkeeping (benchmarks/compare_methods.py): seeds summarised as mean and
standard deviation, margins called inside or outside the spread, the method registry, and the
training-time axis of the run report's kNN curve."""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cm():
    spec = importlib.util.spec_from_file_location("compare_methods", ROOT / "benchmarks" / "compare_methods.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare_methods"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop("compare_methods", None)


def _rows():
    rows = []
    for seed, (a, b, c) in enumerate([(50.0, 47.0, 40.0), (51.0, 48.5, 41.0), (49.0, 47.5, 39.0)]):
        rows.append({"method": "mmcr-2", "objective": "mmcr", "views": 2, "seed": seed, "knn_top1": a,
                     "linear_top1": a + 4, "steps": 700 + seed, "images_seen": 64 * (700 + seed)})
        rows.append({"method": "simclr", "objective": "simclr", "views": 2, "seed": seed, "knn_top1": b,
                     "linear_top1": a + 4.5, "steps": 750, "images_seen": 48000})
        rows.append({"method": "vicreg", "objective": "vicreg", "views": 2, "seed": seed, "knn_top1": c,
                     "linear_top1": c, "steps": 730, "images_seen": 46720})
    return rows


def test_summary_is_mean_and_sample_std_over_seeds(cm):
    s = cm.summarise(_rows())
    assert s["mmcr-2"]["seeds"] == [0, 1, 2]
    assert s["mmcr-2"]["knn_top1"].mean == pytest.approx(50.0)
    assert s["mmcr-2"]["knn_top1"].std == pytest.approx(statistics.stdev([50.0, 51.0, 49.0]))  # = 1.0
    assert str(s["mmcr-2"]["knn_top1"]) == "50.00 ± 1.00"
    assert s["simclr"]["steps"].mean == 750 and s["simclr"]["steps"].std == 0.0


def test_margins_against_the_best_baseline(cm):
    comps = cm.comparisons(cm.summarise(_rows()))
    knn = next(c for c in comps if c["metric"] == "knn_top1")
    # the best baseline by mean is SimCLR (47.67 > 40.0); margin 2.33 > 2 sd = 2 x max(1.0, 0.76): outside
    assert knn["against"] == "simclr" and knn["margin"] == pytest.approx(50.0 - 47.666667, abs=1e-5)
    assert knn["two_sd"] == pytest.approx(2.0) and knn["verdict"] == "outside the spread"
    lin = next(c for c in comps if c["metric"] == "linear_top1")
    assert lin["margin"] == pytest.approx(-0.5) and lin["verdict"] == "inside the spread"
    one = cm.margin_verdict(cm.stat([50.0]), cm.stat([47.0]))
    assert one["verdict"] == "spread unknown (one seed)"
    md = cm.table(cm.summarise(_rows())) + "\n" + cm.margin_lines(comps)
    assert "| mmcr-2 | 2 | 3 |" in md and "50.00 ± 1.00" in md and "inside the spread" in md


def test_method_registry_and_parsing(cm):
    assert {"mmcr-2", "mmcr-4", "mmcr-8", "simclr", "barlow_twins", "vicreg"} <= set(cm.parse_methods(None))
    got = cm.parse_methods("mmcr-2,vicreg,mmcr:6")
    assert list(got) == ["mmcr-2", "vicreg", "mmcr-6"] and got["mmcr-6"].views == 6
    with pytest.raises(ValueError, match="unknown method 'sgd'"):
        cm.parse_methods("sgd")
    assert cm.config_has("augment.views") and not cm.config_has("augment.no_such_key")
    multires = cm.METHODS["mmcr-multires"]
    if not all(cm.config_has(k) for k in multires.requires):  # enabled once the config has the keys
        assert "mmcr-multires" not in cm.parse_methods(None)
        with pytest.raises(ValueError, match="config key"):
            cm.parse_methods("mmcr-multires")


def test_curve_interval_scales_with_views(cm):
    class A:
        curve_every, log_every = 100, 20

    assert cm.curve_every(A, cm.Method("mmcr", 2)) == 100
    assert cm.curve_every(A, cm.Method("mmcr", 8)) == 20  # a multiple of the logging interval, at least one
    assert cm.curve_every(A, cm.Method("mmcr", 40)) == 20


def test_knn_training_time_leaves_out_monitoring_and_resume_gaps(tmp_path):
    from mmcr.rundir.report import knn_training_time, write_report

    recs = [
        {"event": "start", "wall_time": 1000.0, "step": 0},
        {"step": 10, "wall_time": 1010.0, "loss": 1.0},
        {"step": 10, "wall_time": 1013.0, "knn_val_top1": 50.0},  # 3 s of monitoring
        {"step": 20, "wall_time": 1023.0, "loss": 0.9},
        {"step": 20, "wall_time": 1025.0, "knn_val_top1": 60.0},  # 2 s of monitoring
        # killed, resumed from the step-20 checkpoint an hour later
        {"event": "start", "wall_time": 5000.0, "step": 20},
        {"step": 30, "wall_time": 5010.0, "loss": 0.8, "step_time_s": 0.5},
        {"step": 34, "wall_time": 5015.0, "knn_val_top1": 70.0},  # step 34 ended at 5012 (4 x 0.5 s later)
        {"step": 40, "knn_val_top1": 75.0, "train_time_s": 44.0, "source": "checkpoint", "wall_time": 9999.0},
    ]
    got = knn_training_time(recs)
    assert [(round(t, 6), a, s) for t, a, s in got] == [(10.0, 50.0, 10), (20.0, 60.0, 20), (32.0, 70.0, 34),
                                                        (44.0, 75.0, 40)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    text = write_report(tmp_path).read_text()
    assert "knn_time.png" in text and (tmp_path / "knn_time.png").stat().st_size > 0
