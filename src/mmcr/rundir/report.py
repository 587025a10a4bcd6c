"""A run's ``report.md``: the pretraining summary with loss and kNN curves, then one line per
evaluation. Pretraining rewrites the top part; evaluation lines are appended and always kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mmcr.rundir import layout
from mmcr.rundir.files import open_append, save_figure, write_text_atomic
from mmcr.rundir.metrics import read_metrics

_EVAL_MARK = " · eval "  # what makes a report line an evaluation line (written and recognised only here)


def _plot(points: list[tuple[float, float]], ylabel: str, path: Path, marker: str | None = None,
          xlabel: str = "step") -> None:
    import matplotlib  # heavy (about 0.3 s); only a report with curves needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker=marker)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()

    save_figure(fig, path, dpi=100)
    plt.close(fig)


def _plot_geometry(recs: list[dict], path: Path) -> None:
    """The geometry records as the paper's Figure 2 over training: capacity, radius and dimension of the
    augmentation and class manifolds, and the spectrum's participation ratio and power-law alpha."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("capacity", "mean-field capacity"), ("radius", "manifold radius"), ("dimension", "manifold dimension"))
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, (key, label) in zip(axes, panels):
        for kind in ("aug", "class"):
            pts = [(r["step"], r[f"geo_{kind}_{key}"]) for r in recs if f"geo_{kind}_{key}" in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label={"aug": "augmentation", "class": "class"}[kind])
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[3]
    for key, label in (("geo_participation_ratio", "participation ratio"), ("geo_powerlaw_alpha", "power-law alpha")):
        pts = [(r["step"], r[key]) for r in recs if key in r]
        if pts:
            target = ax if key == "geo_participation_ratio" else ax.twinx()
            colour = "C2" if target is ax else "C3"
            target.plot(*zip(*pts), marker="o", color=colour, label=label)
            target.set_ylabel(label, fontsize=9, color=colour)
    ax.set_title("embedding spectrum", fontsize=10)
    for a in axes:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    fig.tight_layout()

    save_figure(fig, path, dpi=100)
    plt.close(fig)


def knn_training_time(recs: list[dict]) -> list[tuple[float, float, int]]:
    """``(training seconds, kNN val top-1, step)`` of every kNN-on-validation record of a metrics log.

    Training seconds are wall-clock since the run started, without the time spent in the online kNN
    evaluations themselves and without the gaps between a killed run and its resume (each ``start``
    event opens a segment that continues from the last time reached before it). A kNN record of step
    s is taken to start when step s ended: the last step record's time, plus its ``step_time_s`` for
    each step it lies behind s (the log is written every few steps); before the first step record of
    a segment the evaluation's own time cannot be told apart and stays in. A record carrying
    ``train_time_s`` (a checkpoint evaluated after training) gives its time itself.
    """
    out: list[tuple[float, float, int]] = []
    offset = 0.0  # training seconds reached before the current segment
    seg_start = None  # wall time of the current segment's start event
    monitoring = 0.0  # kNN evaluation seconds inside the current segment
    last = None  # the current segment's latest step record
    last_t = 0.0
    for r in recs:
        wall = r.get("wall_time")
        if "knn_val_top1" in r and "train_time_s" in r:
            out.append((float(r["train_time_s"]), r["knn_val_top1"], r.get("step", 0)))
        elif r.get("event") == "start" and wall is not None:
            offset, seg_start, monitoring, last = last_t, wall, 0.0, None
        elif seg_start is None or wall is None or "step" not in r:
            continue
        elif "knn_val_top1" in r:
            if last is not None:  # (with no step record yet, the evaluation's own time stays in)
                step_end = last["wall_time"] + max(0, r["step"] - last["step"]) * last.get("step_time_s", 0.0)
                monitoring += max(0.0, wall - step_end)
            last_t = offset + wall - seg_start - monitoring
            out.append((last_t, r["knn_val_top1"], r["step"]))
        elif "loss" in r:
            last = r
            last_t = offset + wall - seg_start - monitoring
    return sorted(out)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def eval_line(kind: str, tag: str | None, metrics: dict[str, float], details: dict[str, Any], json_name: str) -> str:
    """One report line for an evaluation result (accuracies in percent)."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    shown = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items())
    line = f"- {stamp}{_EVAL_MARK}{kind}{' ' + tag if tag else ''}: {shown}"
    if details:
        line += " (" + ", ".join(f"{k}={_fmt(v)}" for k, v in details.items()) + ")"
    return line + f" · {json_name}"


def append_eval_line(report: str | Path, line: str) -> None:
    """Append one evaluation line to ``report`` (never through a symbolic link)."""

    with open_append(report, what="a report line") as f:
        f.write(line.rstrip("\n") + "\n")


def _geometry_section(recs: list[dict], run_dir: Path) -> list[str]:
    """The report lines (and plot) of the geometry measured during training; none when it was off."""
    geo = [r for r in recs if "step" in r and any(k.startswith("geo_") for k in r)]
    if not geo:
        return []
    _plot_geometry(geo, run_dir / "geometry.png")
    first, last = geo[0], geo[-1]
    keys = [k for k in last if k.startswith("geo_") and k in first]
    change = ", ".join(f"{k[4:]} {first[k]:.3g} -> {last[k]:.3g}" for k in keys)
    cost = sum(r.get("geometry_s", 0.0) for r in geo)
    return ["## Geometry during training (validation subset)", "",
            "Augmentation manifolds (views of one image) and class manifolds of a fixed validation subset, and "
            "the spectrum of its eval-view features (`eval.geometry_every_epochs`).", "",
            "![geometry](geometry.png)", "",
            f"Step {first['step']} -> {last['step']}: {change}. Measured {len(geo)} times in {cost:.1f} s.", ""]


def write_report(run_dir: str | Path) -> Path:
    """(Re)write ``report.md`` from ``metrics.jsonl`` and ``summary.json``, keeping evaluation lines."""

    run_dir = Path(run_dir)
    recs = read_metrics(run_dir)
    loss = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    knn = sorted((r["step"], r["knn_val_top1"]) for r in recs if "knn_val_top1" in r)  # checkpoints come later
    lines = [f"# Pretraining report: {run_dir.name}", ""]
    summary_path = run_dir / layout.SUMMARY_FILE
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        lines += ["| metric | value |", "|---|---|"]
        for k, v in summary.items():
            lines.append(f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines.append("")
    if loss:
        _plot(loss, "training loss", run_dir / "loss.png")
        lines += ["## Training loss", "", "![loss](loss.png)", ""]
    if knn:
        _plot(knn, "kNN top-1 on validation split (%)", run_dir / "knn.png", marker="o")
        lines += ["## Online kNN (validation split carved from the training set)", "", "![knn](knn.png)", ""]
        timed = knn_training_time(recs)
        if timed:
            _plot([(t, a) for t, a, _ in timed], "kNN top-1 on validation split (%)", run_dir / "knn_time.png",
                  marker="o", xlabel="training time (s, without the kNN evaluations)")
            lines += ["![knn against training time](knn_time.png)", ""]
        lines += [f"Last: {knn[-1][1]:.2f}% at step {knn[-1][0]}.", ""]
    lines += _geometry_section(recs, run_dir)
    path = run_dir / layout.REPORT_FILE
    evals = [ln for ln in path.read_text().splitlines() if _EVAL_MARK in ln] if path.exists() else []
    lines += ["## Evaluations", "", *evals] if evals else ["## Evaluations", ""]

    write_text_atomic(path, "\n".join(lines) + "\n", what="report")
    return path
