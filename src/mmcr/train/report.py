"""A short, readable report per run: ``report.md`` with the summary, loss and kNN curves as PNG."""

from __future__ import annotations

import json
from pathlib import Path

from mmcr.train.monitor import read_metrics


def _plot(points: list[tuple[float, float]], ylabel: str, path: Path, marker: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker=marker)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    recs = read_metrics(run_dir)
    loss = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    knn = [(r["step"], r["knn_val_top1"]) for r in recs if "knn_val_top1" in r]
    lines = [f"# Pretraining report: {run_dir.name}", ""]
    summary_path = run_dir / "summary.json"
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
        lines += [f"Last: {knn[-1][1]:.2f}% at step {knn[-1][0]}.", ""]
    path = run_dir / "report.md"
    # Evaluations (mmcr eval ...) append their lines to report.md; keep them when the report is rewritten.
    evals = [ln for ln in path.read_text().splitlines() if " · eval " in ln] if path.exists() else []
    lines += ["## Evaluations", "", *evals] if evals else ["## Evaluations", ""]
    path.write_text("\n".join(lines) + "\n")
    return path
