"""Temporal MMCR against augmentation MMCR on the moving digits, at the same wall time per method.

Methods (the ``moving-digits`` preset with one or two config changes each):

- temporal: a manifold is a window of 16 frames of one clip, its 8 frames the views, no augmentation;
- temporal+aug: the same windows, each frame also augmented on its own (crop + jitter of the preset);
- aug-only: a window of one frame (a still), its 8 views augmentations of that frame: MMCR on frames
  treated as still images;

and, from the same runs' final evaluation, the random-init twin (same architecture and seed) and raw
pixels. Everything is evaluated as ``mmcr pretrain`` does: weighted kNN (the preset's k and T) on 4
still frames of each test clip against those of the training clips; the validation kNN (frames of
clips carved from the training split) is reported beside it, and only it may choose between recipes.

Equal wall time. Methods cost differently per step (augmenting frames costs time), so the budget is
set in steps from measured step times: each method trains ``--calibrate`` steps first (in the same
process and under the same load as the comparison), and gets ``steps = budget / seconds per step``,
``budget`` being what ``--steps`` steps of the temporal method take. The final runs then use those step
counts, so the figures do not depend on load during them. The load average is recorded.

    PYTHONPATH=src python benchmarks/compare_temporal.py --quick            # 1 seed, 20 steps: a check
    flock /tmp/mmcr-bench.lock env PYTHONPATH=src python benchmarks/compare_temporal.py --out runs/ct
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = {
    "temporal": [],
    "temporal+aug": ["temporal.spatial=frame"],
    "aug-only": ["temporal.spatial=frame", "temporal.window=1"],
}


def _compare_methods():
    """The seed statistics of compare_methods.py (mean, sample sd, margins inside/outside the spread)."""
    spec = importlib.util.spec_from_file_location("compare_methods", HERE / "compare_methods.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["compare_methods"] = mod
    spec.loader.exec_module(mod)
    return mod


def _config(args, method: str, seed: int, out: Path, steps: int, final: bool):
    from mmcr.run.config import load_config

    over = [*METHODS[method], f"seed={seed}", f"out={out}", f"train.max_steps={steps}", "train.epochs=1000",
            "train.progress=false", "train.tensorboard=false", f"eval.final={str(final).lower()}",
            f"eval.knn_every_epochs={100000 if final else 0}",  # final runs: the validation kNN once, at the end
            "train.log_every_steps=1" if not final else "train.log_every_steps=10",
            f"data.cache_dir={args.cache}" if args.cache else None, *args.set]
    return load_config(args.preset, [o for o in over if o])


def seconds_per_step(args, method: str, out: Path) -> float:
    """Median step time of ``--calibrate`` steps (after 2 warm-up steps) of ``method``."""
    from mmcr.train import train
    from mmcr.train.monitor import read_metrics

    train(_config(args, method, 0, out, args.calibrate + 2, final=False))
    times = [r["step_time_s"] for r in read_metrics(out) if "step_time_s" in r and r["step"] > 2]
    return statistics.median(times)


def val_knn(run_dir: Path) -> float:
    """The trainer's own kNN on the validation clips' still frames, measured when the run finished."""
    from mmcr.train.monitor import read_metrics

    return [r["knn_val_top1"] for r in read_metrics(run_dir) if "knn_val_top1" in r][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="moving-digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="steps of the temporal method (default: the preset's)")
    ap.add_argument("--calibrate", type=int, default=6, help="timed steps per method for the step budget")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--set", action="append", default=[], help="extra config override for every run")
    ap.add_argument("--cache", default=None, help="data.cache_dir for every run")
    ap.add_argument("--out", type=Path, default=Path("runs/compare-temporal"))
    ap.add_argument("--quick", action="store_true", help="one seed, 20 temporal steps, 3 calibration steps")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.steps, args.calibrate = "0", 20, 3
    from mmcr.run.config import load_config
    from mmcr.train import train

    cm = _compare_methods()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = load_config(args.preset, args.set)
    if args.steps is None:
        n_train = 4000 * (1 - base.data.val_fraction)  # the moving digits' training clips
        args.steps = base.train.epochs * int(n_train // base.train.batch_size)
    load_start = os.getloadavg()
    step_s = {m: seconds_per_step(args, m, args.out / "calibrate" / m) for m in methods}
    budget = args.steps * step_s.get("temporal", min(step_s.values()))
    steps = {m: max(1, round(budget / step_s[m])) for m in methods}
    print(json.dumps({"seconds_per_step": step_s, "steps": steps, "budget_s": budget}), flush=True)
    rows = []
    for seed in seeds:
        for m in methods:
            run = args.out / f"{m}-s{seed}"
            with cm.LoadSampler() as load:
                summary = train(_config(args, m, seed, run, steps[m], final=True))
            row = {"method": m, "seed": seed, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
                   "knn_test": summary["knn_top1_learned"], "knn_val": val_knn(run),
                   "knn_random_init": summary["knn_top1_random_init"], "knn_raw_pixels": summary["knn_top1_raw_pixels"],
                   **load.summary()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = summarise(cm, rows, methods)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_start": load_start,
            "load_average_end": os.getloadavg(), "seconds_per_step": step_s, "steps": steps, "budget_s": budget,
            "seeds": seeds, "preset": args.preset, "overrides": args.set}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare_temporal.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "compare_temporal.md").write_text(table + "\n")
    print(table)


def summarise(cm, rows: list[dict], methods: list[str]) -> str:
    """Markdown: mean ± sd over seeds of test and validation kNN per method, the baselines, and the
    margins of every method over the best other one (test; inside/outside two standard deviations)."""
    stats = {m: {k: cm.stat([r[k] for r in rows if r["method"] == m]) for k in ("knn_test", "knn_val", "steps",
                                                                               "load_mean")} for m in methods}
    stats["random init"] = {"knn_test": cm.stat([r["knn_random_init"] for r in rows])}
    stats["raw pixels"] = {"knn_test": cm.stat([r["knn_raw_pixels"] for r in rows])}
    lines = ["| method | seeds | steps | kNN test top-1 | kNN val top-1 | load (mean) |", "|---|---|---|---|---|---|"]
    for name, s in stats.items():
        cells = [str(s["knn_test"].n), str(s["steps"]) if "steps" in s else "", str(s["knn_test"]),
                 str(s["knn_val"]) if "knn_val" in s else "", str(s["load_mean"]) if "load_mean" in s else ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in methods:
        others = {n: s for n, s in stats.items() if n != m}
        best = max(others, key=lambda n: others[n]["knn_test"].mean)
        v = cm.margin_verdict(stats[m]["knn_test"], others[best]["knn_test"])
        lines.append(f"- {m} vs {best} (best other): {v['margin']:+.2f} points ({v['verdict']}; 2 sd = {v['two_sd']:.2f})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
