"""Equal-budget comparison of self-supervised objectives over seeds: MMCR (several view counts),
SimCLR, Barlow Twins and VICReg, each trained with the same backbone, projector, optimiser, image batch
and wall-clock budget on the CIFAR-10 training split of the shared archive, then evaluated on the test
split by weighted kNN and by the linear probe (regularisation chosen on a split of the training set,
never on test).

The budget is wall-clock per run (``train.time_budget_s``), so a method that spends more compute per
image (more views) sees fewer images: that is the trade-off being compared. Every method runs once per
seed (``--seeds``, three by default); the table gives the mean and the sample standard deviation over
seeds, and each MMCR variant's margin over the best baseline is called *inside the spread* when it is
smaller than two standard deviations (the larger of the two methods'). A random-init backbone is the
floor. The load average is sampled while each run trains (the budget is wall-clock: other work on the
machine costs a run steps) and reported with the process's CPU share.

Learning curves: a validation split (``--val-fraction`` of the training split, the same images for
every method of a seed) is held out of training. Checkpoints written every ``--curve-every`` steps
(scaled by 2 / views, so every method gets about as many points) are evaluated after training by the
trainer's own online kNN (:func:`mmcr.evaluate.monitor.knn_top1`, the run's k, T and memory-bank
size) on that split, so the budget goes to training only. The results are appended to the run's
``metrics.jsonl`` as ``knn_val_top1`` records with ``train_time_s`` (wall-clock training time at that
step, from the run's own step records) and ``source: "checkpoint"``; the run's ``report.md`` then shows
them against training time (``knn_time.png``). All runs are drawn in one PNG (``--plot``).

Methods are the entries of ``METHODS`` (``--methods`` picks some by name; ``objective:views`` also
works). An entry whose config keys this version lacks (``requires``) is skipped with a message.

CPU (2 cores), the recorded comparison (about 4 min x methods x seeds, on an otherwise idle machine):
    .venv/bin/python benchmarks/compare_methods.py --budget-min 4 --eval-train 20000 --no-progress \\
        --out runs/compare4 --plot benchmarks/compare_methods_knn.png
GPU, larger backbone and budget:
    python benchmarks/compare_methods.py --device cuda --backbone resnet18 --budget-min 60 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


@dataclass(frozen=True)
class Method:
    """One compared recipe: the objective, the views per image and any further config overrides.
    ``requires`` names config keys (``section.key``) the overrides need; without them it is skipped."""

    objective: str
    views: int = 2
    overrides: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()


METHODS: dict[str, Method] = {
    "mmcr-2": Method("mmcr", 2),
    "mmcr-4": Method("mmcr", 4),
    "mmcr-8": Method("mmcr", 8),
    # 2 full-resolution views plus 6 small crops (multi-crop); enabled once the config has the key
    "mmcr-multires": Method("mmcr", 2, ("augment.small_views=6",), requires=("augment.small_views",)),
    "simclr": Method("simclr", 2),
    "barlow_twins": Method("barlow_twins", 2),
    "vicreg": Method("vicreg", 2),
}
BASELINES = ("simclr", "barlow_twins", "vicreg")  # objectives MMCR is compared against


def config_has(key: str) -> bool:
    """Whether ``section.key`` is a field of the run config of this version."""
    from mmcr.run.config import RunConfig

    node = RunConfig().to_dict()
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def parse_methods(text: str | None) -> dict[str, Method]:
    """``--methods``: names of ``METHODS`` and/or ``objective:views``, comma-separated (None = all
    registered methods whose config keys exist)."""
    from mmcr.objectives import OBJECTIVES

    if text is None:
        return {n: m for n, m in METHODS.items() if all(config_has(k) for k in m.requires)}
    out: dict[str, Method] = {}
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item in METHODS:
            method = METHODS[item]
            missing = [k for k in method.requires if not config_has(k)]
            if missing:
                raise ValueError(f"method {item!r} needs the config key(s) {', '.join(missing)}, which this "
                                 "version does not have; leave it out of --methods")
            out[item] = method
            continue
        name, sep, views = item.partition(":")
        if not sep or name not in OBJECTIVES or not views.isdigit() or int(views) < 1:
            raise ValueError(f"unknown method {item!r} in --methods; use one of {', '.join(METHODS)} or "
                             f"objective:views with an objective of {', '.join(sorted(OBJECTIVES))}")
        out[f"{name}-{views}" if name == "mmcr" else f"{name}:{views}"] = Method(name, int(views))
    if not out:
        raise ValueError("--methods is empty; name at least one method")
    return out


def curve_every(args, method: Method) -> int:
    """Checkpoint interval for the learning curve: ``--curve-every`` at 2 views, fewer steps for more
    views (their steps are slower), a multiple of the logging interval (so the step has a record)."""
    steps = max(1, round(args.curve_every * 2 / method.views / args.log_every)) * args.log_every
    return steps


def train_config(args, name: str, method: Method, seed: int, run_dir: Path):
    """The shared recipe with only the method's objective, views and overrides changed."""
    from mmcr.run.config import load_config

    overrides = [
        f"name=compare-{name}",
        f"out={run_dir}",
        f"seed={seed}",
        "data.name=archive",
        f"data.root={args.archive}",
        f"data.cache_dir={args.out / 'cache'}",
        f"data.val_fraction={args.val_fraction}",
        "augment.preset=cifar",
        f"augment.views={method.views}",
        f"model.backbone={args.backbone}",
        "model.cifar_stem=true",
        f"model.projector.hidden=[{args.proj_hidden}]",
        f"model.projector.out_dim={args.proj_out}",
        f"objective.name={method.objective}",
        "optim.name=adam",
        f"optim.lr={args.lr}",
        "optim.weight_decay=1e-6",
        "optim.schedule=constant",
        "train.epochs=100000",  # the time budget ends training
        f"train.batch_size={args.batch_size}",
        f"train.time_budget_s={args.budget_min * 60}",
        f"train.device={args.device}",
        f"train.checkpoint_every_steps={curve_every(args, method) if args.val_fraction > 0 else 0}",
        "train.keep_checkpoints=0",  # all kept until the curve is measured, then all but the last removed
        f"train.log_every_steps={args.log_every}",
        f"train.progress={str(not args.no_progress).lower()}",
        "train.tensorboard=false",
        # no online kNN inside the budget; the last state is measured once the budget is spent
        f"eval.knn_every_epochs={1 if args.val_fraction > 0 else 0}",
        f"eval.knn_max_train={args.curve_bank}",
        "eval.final=false",
        *method.overrides,
    ]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    return load_config(None, overrides)


class LoadSampler:
    """Samples the 1-minute load average every ``every`` seconds in a thread (mean and max), and the
    process's CPU time over the same interval."""

    def __init__(self, every: float = 5.0):
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._t0, self._c0 = time.perf_counter(), self._cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        self.wall = time.perf_counter() - self._t0
        self.cpu = self._cpu() - self._c0

    def summary(self) -> dict:
        return {"load_mean": round(statistics.fmean(self.samples), 2), "load_max": round(max(self.samples), 2),
                "cpu_s": round(self.cpu, 1), "wall_s": round(self.wall, 1),
                "cpu_share": round(self.cpu / max(self.wall, 1e-9) / torch.get_num_threads(), 3)}


def measure_curve(run_dir: Path, device, keep_last: bool = True) -> list[dict]:
    """kNN on the run's validation split for every checkpoint (the trainer's monitor function and
    settings), appended to ``metrics.jsonl`` with the training time of the step; then the checkpoints
    but the last are removed and the run's report is rewritten (with the kNN-against-time plot)."""
    from mmcr.data import load_dataset, split_train_val
    from mmcr.distributed import DistInfo
    from mmcr.evaluate.features import eval_transform_for
    from mmcr.evaluate.monitor import KnnSettings, knn_top1
    from mmcr.evaluate.sources import load_pretrained
    from mmcr.rundir import layout
    from mmcr.rundir.metrics import read_metrics
    from mmcr.rundir.report import write_report

    recs = read_metrics(run_dir)
    start = next(r["wall_time"] for r in recs if r.get("event") == "start")
    step_wall = {r["step"]: r["wall_time"] for r in recs if "loss" in r and "step" in r}
    done = {r["step"] for r in recs if "knn_val_top1" in r}
    ckpts = sorted(layout.checkpoint_dir(run_dir).glob("ckpt_*.pt"), key=layout.checkpoint_step)
    if not ckpts:
        return []
    cfg = load_pretrained(ckpts[-1])[1].config
    d = cfg.data
    full = load_dataset(d.name, root=d.root, split=d.train_split, cache_dir=d.cache_dir, **d.options)
    bank, val = split_train_val(full, d.val_fraction, cfg.seed)
    dist = DistInfo(device=torch.device(device))
    new = []
    for path in ckpts:
        step = layout.checkpoint_step(path)
        if step in done or step not in step_wall:
            continue
        backbone, src = load_pretrained(path)
        acc = knn_top1(backbone, bank, val, eval_transform_for(src), KnnSettings.from_config(cfg.eval), dist)
        new.append({"step": step, "wall_time": time.time(), "knn_val_top1": acc["top1"],
                    "knn_val_top5": acc["top5"], "train_time_s": step_wall[step] - start, "source": "checkpoint"})
    with open(run_dir / layout.METRICS_FILE, "a") as f:
        for r in new:
            f.write(json.dumps(r) + "\n")
    for path in ckpts[:-1] if keep_last else ckpts:
        path.unlink()
    write_report(run_dir)
    return new


def evaluate(backbone, tf, train, test, args, seed: int, device) -> dict:
    """kNN and linear probe of a frozen backbone on the test split (``tf``: the eval view)."""
    from mmcr.evaluate import extract_features, knn_accuracy, linear_probe

    n = len(train.labels) if args.eval_train is None else min(args.eval_train, len(train.labels))
    g = torch.Generator().manual_seed(seed)
    idx = torch.sort(torch.randperm(len(train.labels), generator=g)[:n]).values
    t = time.perf_counter()
    ftr, _ = extract_features(backbone, train.images[idx], transform=tf, device=device, progress=not args.no_progress)
    fte, _ = extract_features(backbone, test.images, transform=tf, device=device, progress=not args.no_progress)
    ytr, yte = train.labels[idx], test.labels
    knn = knn_accuracy(ftr, ytr, fte, yte, k=200, temperature=0.1, num_classes=len(train.classes), device=device)
    lin = linear_probe(ftr, ytr, fte, yte, num_classes=len(train.classes), seed=seed, device=device)
    return {
        "knn_top1": knn["top1"],
        "knn_top5": knn["top5"],
        "linear_top1": lin["top1"],
        "linear_top5": lin["top5"],
        "linear_weight_decay": lin["weight_decay"],
        "eval_train_images": n,
        "eval_seconds": time.perf_counter() - t,
    }


# ------------------------------------------------------------------------------------------ summary
@dataclass
class Stat:
    mean: float
    std: float  # sample standard deviation over seeds (0 with one seed)
    n: int
    values: list[float] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


def stat(values: list[float]) -> Stat:
    vals = [float(v) for v in values]
    return Stat(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), vals)


def summarise(rows: list[dict]) -> dict[str, dict]:
    """Per method: mean and standard deviation over its seeds of kNN, linear probe, steps and time."""
    out: dict[str, dict] = {}
    for r in rows:
        entry = out.setdefault(r["method"], {"objective": r.get("objective"), "views": r["views"], "rows": []})
        entry["rows"].append(r)
    for m in out.values():
        rs = m.pop("rows")
        m["seeds"] = [r["seed"] for r in rs]
        for key in ("knn_top1", "linear_top1", "steps", "images_seen", "train_seconds", "load_mean", "cpu_share"):
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                m[key] = stat(vals)
    return out


def margin_verdict(a: Stat, b: Stat) -> dict:
    """``a`` minus ``b``, and whether that margin lies inside the spread: smaller than two standard
    deviations over seeds (the larger of the two); with fewer than 2 seeds the spread is unknown."""
    margin = a.mean - b.mean
    two_sd = 2 * max(a.std, b.std)
    if min(a.n, b.n) < 2:
        verdict = "spread unknown (one seed)"
    elif abs(margin) < two_sd:
        verdict = "inside the spread"
    else:
        verdict = "outside the spread"
    return {"margin": margin, "two_sd": two_sd, "verdict": verdict}


def comparisons(summary: dict[str, dict]) -> list[dict]:
    """Every MMCR method against the best baseline (by mean), on kNN and on the linear probe."""
    out = []
    base = {n: s for n, s in summary.items() if s["objective"] in BASELINES}
    mmcr = {n: s for n, s in summary.items() if s["objective"] == "mmcr"}
    for metric in ("knn_top1", "linear_top1"):
        if not base:
            break
        best_name = max(base, key=lambda n: base[n][metric].mean)
        for name, s in mmcr.items():
            v = margin_verdict(s[metric], base[best_name][metric])
            out.append({"metric": metric, "method": name, "against": best_name, **v})
    return out


def table(summary: dict[str, dict]) -> str:
    head = ("| method | views | seeds | steps | images seen | train s | kNN top-1 | linear top-1 | "
            "load avg (mean) | CPU share |")
    lines = [head, "|---|---|---|---|---|---|---|---|---|---|"]

    def f(m, key, fmt):
        return fmt.format(m[key].mean) if key in m else "-"

    for name, m in summary.items():
        lines.append(
            f"| {name} | {m['views']} | {len(m['seeds'])} | {f(m, 'steps', '{:.0f}')} | "
            f"{f(m, 'images_seen', '{:.0f}')} | {f(m, 'train_seconds', '{:.0f}')} | {m['knn_top1']} | "
            f"{m['linear_top1']} | {f(m, 'load_mean', '{:.2f}')} | {f(m, 'cpu_share', '{:.2f}')} |"
        )
    return "\n".join(lines)


def margin_lines(comps: list[dict]) -> str:
    names = {"knn_top1": "kNN", "linear_top1": "linear"}
    return "\n".join(
        f"- {c['method']} vs {c['against']} ({names[c['metric']]}): {c['margin']:+.2f} points, "
        f"2 sd = {c['two_sd']:.2f}: {c['verdict']}"
        for c in comps
    )


def plot_curves(curves: dict[str, list[list[tuple[float, float]]]], path: Path, title: str) -> None:
    """kNN on the validation split against training time: one colour per method, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(curves.items()):
        for j, pts in enumerate(runs):
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, color=colours[i % len(colours)],
                        label=name if j == 0 else None, alpha=0.85)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("kNN top-1 on validation split (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, default=10.0, help="wall-clock training minutes per run")
    ap.add_argument("--methods", default=None,
                    help=f"comma-separated names ({', '.join(METHODS)}) or objective:views (default: all)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, one run per method and seed")
    ap.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="CIFAR-10 image-folder archive")
    ap.add_argument("--backbone", default="resnet_small")
    ap.add_argument("--proj-hidden", type=int, default=512)
    ap.add_argument("--proj-out", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64, help="images per step (all methods)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-train", type=int, default=None, help="training images used by kNN/probe (default all)")
    ap.add_argument("--val-fraction", type=float, default=0.05,
                    help="validation split held out of training for the learning curves (0 = no curves)")
    ap.add_argument("--curve-every", type=int, default=100, help="checkpoint interval in steps at 2 views")
    ap.add_argument("--curve-bank", type=int, default=5000, help="memory-bank images of the curve's kNN")
    ap.add_argument("--log-every", type=int, default=20, help="train.log_every_steps")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "compare_methods")
    ap.add_argument("--plot", type=Path, default=None, help="combined kNN-vs-time PNG (default <out>/knn_vs_time.png)")
    ap.add_argument("--no-random-baseline", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"CIFAR-10 archive not found: {args.archive} (pass --archive)")
    if not 0.0 <= args.val_fraction < 1.0:
        raise SystemExit(f"--val-fraction must lie in [0, 1), got {args.val_fraction}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        methods = parse_methods(args.methods)
    except ValueError as e:
        raise SystemExit(f"compare_methods: {e}") from None
    if not seeds:
        raise SystemExit("--seeds is empty; give at least one seed, e.g. --seeds 0,1,2")
    skipped = [n for n, m in METHODS.items() if args.methods is None and n not in methods]
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmcr.augment import MultiViewAugment
    from mmcr.data import load_dataset
    from mmcr.distributed import resolve_device
    from mmcr.evaluate import eval_transform_for
    from mmcr.evaluate.sources import load_pretrained
    from mmcr.rundir.metrics import read_metrics
    from mmcr.rundir.report import knn_training_time
    from mmcr.train import train

    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    train_ds = load_dataset("archive", root=str(args.archive), split="train", cache_dir=str(cache))
    test_ds = load_dataset("archive", root=str(args.archive), split="test", cache_dir=str(cache))
    load_start = os.getloadavg()
    print(
        f"CIFAR-10: {len(train_ds.labels)} train / {len(test_ds.labels)} test images; device {device}; "
        f"budget {args.budget_min:g} min per run; backbone {args.backbone}; seeds {seeds}; "
        f"load average {load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    for name in skipped:
        print(f"(skipping {name}: this version lacks {', '.join(METHODS[name].requires)})")
    rows, curves = [], {}
    for name, method in methods.items():
        for seed in seeds:
            run_dir = args.out / name / f"seed{seed}"
            if run_dir.exists():  # a fresh run: an old directory would be resumed or mixed into the curve
                shutil.rmtree(run_dir)
            print(f"== {name} (seed {seed}): training for {args.budget_min:g} min -> {run_dir}", flush=True)
            with LoadSampler() as load:
                summary = train(train_config(args, name, method, seed, run_dir))
            recs = read_metrics(run_dir)
            start = next(r["wall_time"] for r in recs if r.get("event") == "start")
            trained_s = max(r["wall_time"] for r in recs if "loss" in r) - start  # without the final kNN
            curve = measure_curve(run_dir, device) if args.val_fraction > 0 else []
            curves.setdefault(name, []).append([(t, a) for t, a, _ in knn_training_time(read_metrics(run_dir))])
            backbone, src = load_pretrained(run_dir)
            res = evaluate(backbone, eval_transform_for(src), train_ds, test_ds, args, seed, device)
            row = {
                "method": name,
                "objective": method.objective,
                "views": method.views,
                "seed": seed,
                "steps": summary["steps"],
                "images_seen": summary["steps"] * args.batch_size,
                "train_seconds": trained_s,
                "curve_points": len(curve),
                **load.summary(),
                **res,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    if not args.no_random_baseline:
        for seed in seeds:
            torch.manual_seed(seed)
            backbone, _ = load_pretrained(f"random:{args.backbone}")
            res = evaluate(backbone, MultiViewAugment("cifar").eval_transform(), train_ds, test_ds, args, seed, device)
            rows.append({"method": "random init", "views": "-", "seed": seed, "steps": 0, "images_seen": 0,
                         "train_seconds": 0, **res})
    summary = summarise(rows)
    comps = comparisons(summary)
    load_end = os.getloadavg()
    md = table(summary) + "\n\n" + margin_lines(comps)
    plot = args.plot or args.out / "knn_vs_time.png"
    if any(pts for runs in curves.values() for pts in runs):
        plot_curves(curves, plot, f"CIFAR-10, {args.backbone}, {args.budget_min:g} min per run, seeds {seeds}")
        md += f"\n\nkNN on the validation split against training time: {plot}"
    meta = {
        "budget_min": args.budget_min,
        "seeds": seeds,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "val_fraction": args.val_fraction,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "skipped_methods": skipped,
    }
    stats = {n: {k: (v.__dict__ if isinstance(v, Stat) else v) for k, v in m.items()} for n, m in summary.items()}
    (args.out / "compare_results.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "summary": stats, "comparisons": comps}, indent=2) + "\n"
    )
    (args.out / "compare_table.md").write_text(md + "\n")
    print(md)
    print(f"load average at the end: {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}")


if __name__ == "__main__":
    main()
