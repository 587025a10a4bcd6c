"""MMCR scaling on a small preset: batch size, views, embedding dimension at fixed compute, and compute itself.

    PYTHONPATH=src .venv/bin/python benchmarks/scaling.py                       # CPU grid (mnist5k, minutes)
    PYTHONPATH=src python3 benchmarks/scaling.py --grid gpu --set train.device=cuda   # the larger grid
    PYTHONPATH=src .venv/bin/python benchmarks/scaling.py --preset digits --set optim.lr=1e-3

Compute is counted in views embedded (batch x views x steps: the encoder's forward and backward dominate
a step, benchmarks/RESULTS.md). Around a centre point (batch B0, views k0, projector output d0, C0
views) each axis is swept alone: batch size and views at fixed compute (steps = C0 / (B k)), embedding
dimension at fixed steps, and compute through the number of steps. Every run ends with the online kNN
on the validation split the trainer carves from the training set (never the test split); its final loss
is the mean of the last logged losses, also divided by the batch size (MMCR's -||C||_* grows with B).
Each sweep gets a power law y = a x^b fitted by least squares in log-log space to the kNN error
(100 - top-1) and to the per-image loss magnitude; the script prints a Markdown table of the runs and the
fitted exponents, writes ``--out``/scaling.jsonl and plots ``--plot`` (default benchmarks/scaling.png).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np

GRIDS = {
    # centre (batch, views, dim, compute in views) and the values of each axis
    "cpu": dict(centre=(32, 4, 64, 16384), batch=(8, 16, 32, 64, 128), views=(2, 4, 8, 16),
                dim=(16, 32, 64, 128, 256), compute=(4096, 8192, 16384, 32768, 65536)),
    "gpu": dict(centre=(256, 8, 512, 1 << 21), batch=(32, 64, 128, 256, 512, 1024), views=(2, 4, 8, 16, 32),
                dim=(64, 128, 256, 512, 1024, 2048, 4096), compute=tuple(1 << e for e in range(18, 24))),
}
BASE = ["train.progress=false", "train.tensorboard=false", "eval.final=false", "eval.knn_every_epochs=100000",
        "eval.geometry_every_epochs=0", "train.epochs=100000", "train.log_every_steps=2",
        "train.checkpoint_every_steps=0", "train.keep_checkpoints=1"]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_point(preset: str, extra: list[str], batch: int, views: int, dim: int, compute: int, out: Path) -> dict:
    from mmcr.run.config import load_config
    from mmcr.rundir.metrics import read_metrics
    from mmcr.train import train

    steps = max(1, round(compute / (batch * views)))
    cfg = load_config(preset, [*BASE, *extra, f"train.batch_size={batch}", f"augment.views={views}",
                               f"model.projector.out_dim={dim}", f"train.max_steps={steps}", f"out={out}"])
    c0, w0 = _cpu_s(), time.perf_counter()
    train(cfg)
    recs = read_metrics(out)
    losses = [r["loss"] for r in recs if "loss" in r]
    knn = [r["knn_val_top1"] for r in recs if "knn_val_top1" in r]
    final = float(np.mean(losses[-3:]))
    return {"batch": batch, "views": views, "dim": dim, "compute_views": steps * batch * views, "steps": steps,
            "final_loss": round(final, 5), "loss_per_image": round(final / batch, 6),
            "knn_val_top1": knn[-1] if knn else None, "cpu_s": round(_cpu_s() - c0, 1),
            "wall_s": round(time.perf_counter() - w0, 1)}


def power_law(x, y) -> dict:
    """y = a x^b by least squares on (log x, log y); b, a and R^2 in log space."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    b, loga = np.polyfit(lx, ly, 1)
    pred = loga + b * lx
    ss = float(np.sum((ly - ly.mean()) ** 2))
    return {"b": float(b), "a": float(np.exp(loga)), "r2": 1.0 - float(np.sum((ly - pred) ** 2)) / ss if ss else 1.0}


AXES = (("batch", "batch size (fixed compute)"), ("views", "views per image (fixed compute)"),
        ("dim", "embedding dimension (fixed steps)"), ("compute_views", "compute (views embedded)"))


def fits(rows: list[dict]) -> dict:
    out = {}
    for key, _ in AXES:
        pts = [r for r in rows if r["axis"] == key and r["knn_val_top1"] is not None]
        if len(pts) >= 3:
            xs = [r[key] for r in pts]
            out[key] = {"knn_error": power_law(xs, [max(100.0 - r["knn_val_top1"], 1e-3) for r in pts]),
                        "loss_per_image": power_law(xs, [abs(r["loss_per_image"]) for r in pts])}
    return out


def plot(rows: list[dict], fitted: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 4, figsize=(15, 6.5))
    for j, (key, label) in enumerate(AXES):
        pts = sorted((r for r in rows if r["axis"] == key), key=lambda r: r[key])
        xs = np.array([r[key] for r in pts], float)
        series = (("knn_error", "kNN val error (%)", lambda r: 100 - r["knn_val_top1"]),
                  ("loss_per_image", "|final loss| / batch", lambda r: abs(r["loss_per_image"])))
        for i, (ykey, ylabel, f) in enumerate(series):
            ax = axes[i, j]
            ax.loglog(xs, [f(r) for r in pts], "o", label="runs")
            if key in fitted:
                p = fitted[key][ykey]
                grid = np.geomspace(xs.min(), xs.max(), 50)
                ax.loglog(grid, p["a"] * grid ** p["b"], "-", label=f"fit b={p['b']:.2f} (R2 {p['r2']:.2f})")
            plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)  # a y range inside one decade has only minor ticks
            ax.set_xlabel(label, fontsize=9)
            ax.set_ylabel(ylabel, fontsize=9)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default="cpu")
    ap.add_argument("--preset", default="mnist5k")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override a.b=value")
    ap.add_argument("--out", type=Path, default=Path("/tmp/mmcr-scaling"))
    ap.add_argument("--plot", type=Path, default=Path(__file__).resolve().parent / "scaling.png")
    ap.add_argument("--replot", type=Path, default=None, help="redraw --plot from a sweep's fits.json; no training")
    args = ap.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())
        plot(saved["rows"], saved["fits"], args.plot)
        return
    g = GRIDS[args.grid]
    b0, k0, d0, c0 = g["centre"]
    points = ([("batch", (b, k0, d0, c0)) for b in g["batch"]] + [("views", (b0, k, d0, c0)) for k in g["views"]]
              + [("dim", (b0, k0, d, c0)) for d in g["dim"]]
              + [("compute_views", (b0, k0, d0, c)) for c in g["compute"]])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"scaling sweep, grid {args.grid}, preset {args.preset}, {stamp}")
    done: dict = {}
    rows = []
    args.out = args.out / time.strftime("%Y%m%d-%H%M%S")  # a fresh folder: runs never resume an old sweep
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "scaling.jsonl"
    for axis, (b, k, d, c) in points:
        if (b, k, d, c) not in done:  # the centre point serves every axis
            done[(b, k, d, c)] = run_point(args.preset, args.overrides, b, k, d, c, args.out / f"b{b}-k{k}-d{d}-c{c}")
            with open(log, "a") as f:
                f.write(json.dumps(done[(b, k, d, c)]) + "\n")
        rows.append({"axis": axis, **done[(b, k, d, c)]})
    fitted = fits(rows)
    print("\n| axis | batch | views | dim | compute (views) | steps | final loss | loss / batch | kNN val top-1 "
          "| CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['axis']} | {r['batch']} | {r['views']} | {r['dim']} | {r['compute_views']} | {r['steps']} | "
              f"{r['final_loss']:.3f} | {r['loss_per_image']:.4f} | {r['knn_val_top1']:.2f} | {r['cpu_s']} |")
    print("\n| axis | kNN error exponent b (R2) | loss/batch exponent b (R2) |")
    print("|---|---:|---:|")
    for key, f in fitted.items():
        e, lo = f["knn_error"], f["loss_per_image"]
        print(f"| {key} | {e['b']:.3f} ({e['r2']:.2f}) | {lo['b']:.3f} ({lo['r2']:.2f}) |")
    total = sum(r["cpu_s"] for r in done.values())
    print(f"\n{len(done)} runs, {total:.0f} CPU s in all")
    plot(rows, fitted, args.plot)
    with open(args.out / "fits.json", "w") as f:
        json.dump({"rows": rows, "fits": fitted}, f, indent=1)


if __name__ == "__main__":
    main()
