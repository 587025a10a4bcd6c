"""Tables and plots of ``mmcr analyze`` results, for one model or several overlaid layer by layer.

Every function takes ``entries``: a list of ``(label, results)`` pairs, ``results`` being what
:func:`mmcr.geometry.analyze.run_analysis` returns; with one entry the model column is left out. Values
that are undefined (a power law that could not be fitted, no same-class pairs, a layer one model does
not have) are shown as a dash, never as ``nan``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mmcr.rundir.files import save_figure

DASH = "—"
KINDS = ("temporal", "augmentation", "class")  # temporal: clip data sets only
QUANTITIES = ("capacity", "radius", "dimension")


def fmt(v: Any, spec: str = ".4f") -> str:
    """``v`` formatted with ``spec``; a dash for None, NaN or a non-number, and +-inf as the symbol."""
    if v is None or isinstance(v, bool):
        return DASH
    try:
        f = float(v)
    except (TypeError, ValueError):
        return DASH
    if math.isnan(f):
        return DASH
    if math.isinf(f):
        return "∞" if f > 0 else "-∞"
    return format(f, spec)


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and NaN/inf as None (strict JSON has neither)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def kinds_in(entries: list[tuple[str | None, dict]]) -> list[str]:
    """The manifold kinds some model's results have, in the order of KINDS."""
    return [k for k in KINDS if any(k in res for _, res in entries)]


def layer_union(entries: list[tuple[str | None, dict]]) -> list[str]:
    """All layer names, in the order the models list them (first model first), the output last."""
    out: list[str] = []
    for _, res in entries:
        out += [n for n in res["layers"] if n not in out]
    return [n for n in out if n != "output"] + (["output"] if "output" in out else [])


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _measure_cells(r: dict | None) -> list[str]:
    """The geometry table's cells for one layer's results (all dashes when the layer is missing)."""
    cap = _get(r, "capacity", "capacity")
    sim = _get(r, "simulated_capacity", "capacity")
    cap_cell = fmt(cap) + ("" if sim is None else f" (sim. {fmt(sim)})")
    pl = _get(r, "spectrum", "power_law") or {}
    alpha = pl.get("alpha")
    pl_cell = DASH if alpha is None else f"{fmt(alpha, '.3f')} ({fmt(pl.get('r2'), '.2f')})"
    return [
        cap_cell,
        fmt(_get(r, "capacity", "radius")),
        fmt(_get(r, "capacity", "dimension"), ".3f"),
        fmt(_get(r, "capacity", "center_correlation"), ".3f"),
        fmt(_get(r, "elliptical", "radius")),
        fmt(_get(r, "elliptical", "dimension"), ".3f"),
        fmt(_get(r, "spectrum", "participation_ratio"), ".2f"),
        pl_cell,
        f"{fmt(_get(r, 'centroid_similarity', 'same_mean'), '.3f')} / "
        f"{fmt(_get(r, 'centroid_similarity', 'different_mean'), '.3f')}",
        f"{fmt(_get(r, 'subspace_alignment', 'same_mean'), '.3f')} / "
        f"{fmt(_get(r, 'subspace_alignment', 'different_mean'), '.3f')}",
    ]


GEOMETRY_HEADER = [
    "capacity",
    "radius",
    "dimension",
    "centre corr.",
    "ellip. R",
    "ellip. D",
    "PR",
    "power-law alpha (R2)",
    "centroid cos same/diff",
    "subspace align same/diff",
]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def geometry_table(entries: list[tuple[str | None, dict]], kind: str) -> list[str]:
    """Markdown lines: one row per layer (and per model when there are several)."""
    many = len(entries) > 1
    rows = []
    for layer in layer_union(entries):
        for label, res in entries:
            r = res.get(kind, {}).get(layer)
            rows.append([layer] + ([str(label)] if many else []) + _measure_cells(r))
    return _table(["layer"] + (["model"] if many else []) + GEOMETRY_HEADER, rows)


def _finite_sample_points(entries, kinds=KINDS) -> list[int]:
    pts: set[int] = set()
    for _, res in entries:
        for kind in kinds:
            for r in res.get(kind, {}).values():
                pts |= {row["points"] for row in _get(r, "finite_sample", "rows") or []}
    return sorted(pts)


def finite_sample_table(entries: list[tuple[str | None, dict]], kind: str) -> list[str]:
    """Markdown lines: capacity (mean +- spread over repeats) at each subsample size, and the relative
    change of capacity, radius and dimension from half the points to all of them; empty when the check
    was not run."""
    pts = _finite_sample_points(entries, (kind,))
    if not pts:
        return []
    many = len(entries) > 1
    rows = []
    for layer in layer_union(entries):
        for label, res in entries:
            fs = _get(res, kind, layer, "finite_sample")
            by_m = {row["points"]: row for row in (fs or {}).get("rows", [])}
            cells = []
            for m in pts:
                row = by_m.get(m)
                cells.append(DASH if row is None else f"{fmt(row['capacity'])} ± {fmt(row['capacity_std'])}")
            for q in QUANTITIES:
                cells.append(fmt(_half_change(fs, q), "+.1%"))
            rows.append([layer] + ([str(label)] if many else []) + cells)
    header = ["layer"] + (["model"] if many else []) + [f"capacity, m={m}" for m in pts]
    header += [f"{q} change M/2 -> M" for q in QUANTITIES]
    return _table(header, rows)


def _half_change(fs: dict | None, key: str) -> float | None:
    """(value at all M points - value at the largest m <= M/2) / value at M, from a finite-sample dict."""
    if not fs or not fs.get("rows"):
        return None
    rows = fs["rows"]
    M = fs.get("max_points") or rows[-1]["points"]
    half = [r for r in rows if r["points"] <= M / 2]
    full = [r for r in rows if r["points"] == M]
    if not half or not full or not full[0][key]:
        return None
    return (full[0][key] - half[-1][key]) / full[0][key]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def overlay_plot(entries: list[tuple[str | None, dict]], path: Path) -> None:
    """Mean-field capacity, radius and dimension per layer; rows: manifold kinds; one line per model."""
    plt = _plt()
    layers = layer_union(entries)
    kinds = kinds_in(entries)
    fig, axes = plt.subplots(len(kinds), 3, figsize=(13, 3.4 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, q in enumerate(QUANTITIES):
            ax = axes[row, col]
            for label, res in entries:
                y = _series([_get(res, kind, n, "capacity", q) for n in layers])
                ax.plot(range(len(layers)), y, marker="o", label=str(label) if label is not None else None)
            ax.set_title(f"{kind} manifolds: mean-field {q}", fontsize=10)
            ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    if len(entries) > 1:
        axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)


def finite_sample_plot(entries: list[tuple[str | None, dict]], path: Path) -> bool:
    """Capacity, radius and dimension against points per manifold (mean +- spread over repeats), one
    line per layer and model; False (nothing written) when the check was not run."""
    if not _finite_sample_points(entries):
        return False
    plt = _plt()
    layers = layer_union(entries)
    styles = ["-", "--", ":", "-."]
    cmap = plt.get_cmap("viridis")
    kinds = kinds_in(entries)
    fig, axes = plt.subplots(len(kinds), 3, figsize=(13, 3.4 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, q in enumerate(QUANTITIES):
            ax = axes[row, col]
            for e, (label, res) in enumerate(entries):
                for i, layer in enumerate(layers):
                    fs = _get(res, kind, layer, "finite_sample")
                    if not fs:
                        continue
                    m = [r["points"] for r in fs["rows"]]
                    y = _series([r[q] for r in fs["rows"]])
                    err = _series([r[f"{q}_std"] for r in fs["rows"]])
                    name = layer if label is None else f"{label}: {layer}"
                    color = cmap(i / max(1, len(layers) - 1))
                    ax.errorbar(m, y, yerr=err, ls=styles[e % len(styles)], color=color, marker=".", label=name)
            ax.set_title(f"{kind} manifolds: {q}", fontsize=10)
            ax.set_xlabel("points per manifold (subsampled)", fontsize=8)
            ax.set_xticks(_finite_sample_points(entries, (kind,)))
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def settings_line(res: dict) -> str:
    s = res["settings"]
    fs = s.get("finite_sample_repeats", 0)
    return (
        f"Augmentation manifolds: {s['n_images']} images x {s['n_views']} views ({s['augment_preset']} preset); "
        f"class manifolds: {len(s['classes'])} classes x {s['n_per_class']} images. kappa={s['kappa']}, "
        f"n_t={s['n_t']}, correlated={s['correlated']}, seed={s['seed']}"
        + (f", finite-sample check with {fs} repeats per size" if fs else "")
        + "."
        + (f" Temporal manifolds: {t['n_clips']} clips x {t['frames_per_window']} frames of a window of "
           f"{t['window']:g} {t['unit']} ({t['sampling']})." if (t := s.get("temporal")) else "")
    )


def geometry_sections(entries: list[tuple[str | None, dict]]) -> list[str]:
    """The per-kind geometry tables and finite-sample tables, as markdown lines."""
    lines: list[str] = []
    for kind in kinds_in(entries):
        lines += [f"## {kind.capitalize()} manifolds", ""] + geometry_table(entries, kind) + [""]
        fs = finite_sample_table(entries, kind)
        if fs:
            lines += [
                f"Finite-sample check ({kind} manifolds): capacity on random subsets of m points per manifold "
                "(mean ± spread over repeats), and how much capacity, radius and dimension still move from "
                "half the points to all of them; values that still move are not yet those of the manifolds.",
                "",
            ]
            lines += fs + [""]
    return lines
