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
set in steps from measured step costs: each method trains ``--calibrate`` steps first (CPU seconds per
step, in one process; see ``seconds_per_step``), and gets ``steps = budget / seconds per step``,
``budget`` being what ``--steps`` steps of the preset's recipe (temporal+aug) take. The final runs then
use those step counts, so the figures do not depend on load during them (the calibration does: run it
under the bench lock). ``--calibrate-only`` writes the step counts to ``<out>/calibration.json`` and
``--calibration FILE`` reuses them, so seeds can run as separate processes. Finished runs are reused.

    PYTHONPATH=src python benchmarks/compare_temporal.py --quick            # 1 seed, 20 steps: a check
    flock /tmp/mmcr-bench.lock env PYTHONPATH=src python benchmarks/compare_temporal.py --out runs/ct
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
METHODS = {
    "temporal": ["temporal.spatial=none"],
    "temporal+aug": ["temporal.spatial=frame"],  # the preset's own recipe
    "aug-only": ["temporal.spatial=frame", "temporal.window=1"],
}
ANCHOR = "temporal+aug"  # the budget is what --steps steps of this method take


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
    """CPU seconds per step of ``method``: the process CPU time of a run of 2 + ``--calibrate`` steps minus
    that of a run of 2 steps (set-up, data loading and warm-up cancel), over ``--calibrate``. CPU time
    rather than wall time: on a shared machine the wall time of a few steps mostly measures the load."""
    from mmcr.train import train

    used = []
    for n, tag in ((2, "short"), (2 + args.calibrate, "long")):
        c0 = _cpu()
        train(_config(args, method, 0, out / tag, n, final=False))
        used.append(_cpu() - c0)
    return max(used[1] - used[0], 1e-6) / args.calibrate


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def val_knn(run_dir: Path) -> float:
    """The trainer's own kNN on the validation clips' still frames, measured when the run finished."""
    from mmcr.rundir.metrics import read_metrics

    return [r["knn_val_top1"] for r in read_metrics(run_dir) if "knn_val_top1" in r][-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="moving-digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=None, help="steps of the preset's recipe (default: the preset's)")
    ap.add_argument("--calibrate-only", action="store_true", help="measure step times, write calibration.json, stop")
    ap.add_argument("--calibration", type=Path, default=None, help="a calibration.json to reuse (no timing)")
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
    if args.calibration is not None:
        cal = json.loads(args.calibration.read_text())
    else:
        step_s = {m: seconds_per_step(args, m, args.out / "calibrate" / m) for m in METHODS}
        budget = args.steps * step_s[ANCHOR]
        cal = {"seconds_per_step": step_s, "budget_s": budget, "anchor_steps": args.steps,
               "steps": {m: max(1, round(budget / step_s[m])) for m in METHODS},
               "load_average": load_start, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "calibration.json").write_text(json.dumps(cal, indent=2) + "\n")
    steps, step_s, budget = cal["steps"], cal["seconds_per_step"], cal["budget_s"]
    print(json.dumps(cal), flush=True)
    if args.calibrate_only:
        return
    rows = []
    for seed in seeds:
        for m in methods:
            rows.append(run_method(args, cm, m, seed, steps[m]))
            print(json.dumps(rows[-1]), flush=True)
    table = summarise(cm, rows, methods)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average_start": load_start,
            "load_average_end": os.getloadavg(), "seconds_per_step": step_s, "steps": steps, "budget_s": budget,
            "seeds": seeds, "preset": args.preset, "overrides": args.set}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare_temporal.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "compare_temporal.md").write_text(table + "\n")
    print(table)


def run_method(args, cm, method: str, seed: int, steps: int) -> dict:
    """Train and evaluate one method at one seed (a finished run with its row is reused)."""
    from mmcr.train import train

    run = args.out / f"{method}-s{seed}"
    done = run / "row.json"
    if done.exists():
        return json.loads(done.read_text())
    with cm.LoadSampler() as load:
        summary = train(_config(args, method, seed, run, steps, final=True))
    row = {"method": method, "seed": seed, "steps": summary["steps"], "train_seconds": summary["train_seconds"],
           "knn_test": summary["knn_top1_learned"], "knn_val": val_knn(run),
           "knn_random_init": summary["knn_top1_random_init"], "knn_raw_pixels": summary["knn_top1_raw_pixels"],
           **load.summary()}
    done.write_text(json.dumps(row) + "\n")
    return row


def summarise(cm, rows: list[dict], methods: list[str]) -> str:
    """Markdown: mean ± sd over seeds of test and validation kNN per method, the baselines, and the
    margins of every method over the best other one (test; inside/outside two standard deviations)."""
    stats = {m: {k: cm.stat([r[k] for r in rows if r["method"] == m]) for k in ("knn_test", "knn_val", "steps",
                                                                               "load_mean")} for m in methods}
    one = [r for r in rows if r["method"] == methods[0]]  # the same twin and pixels for every method of a seed
    stats["random init"] = {"knn_test": cm.stat([r["knn_random_init"] for r in one])}
    stats["raw pixels"] = {"knn_test": cm.stat([r["knn_raw_pixels"] for r in one])}
    lines = ["| method | seeds | steps | kNN test top-1 | kNN val top-1 | load (mean) |", "|---|---|---|---|---|---|"]
    for name, s in stats.items():
        cells = [str(s["knn_test"].n), f"{s['steps'].mean:.0f}" if "steps" in s else "", str(s["knn_test"]),
                 str(s["knn_val"]) if "knn_val" in s else "", str(s["load_mean"]) if "load_mean" in s else ""]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    for m in methods:
        others = {n: s for n, s in stats.items() if n != m}
        best = max(others, key=lambda n: others[n]["knn_test"].mean)
        v = cm.margin_verdict(stats[m]["knn_test"], others[best]["knn_test"])
        lines.append(f"- {m} vs {best} (best other): {v['margin']:+.2f} points ({v['verdict']}; "
                     f"2 sd = {v['two_sd']:.2f})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
