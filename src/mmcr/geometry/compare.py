"""``mmcr analyze`` with several models: one analysis per model on the same images and views, then one
report that overlays them layer by layer (as the paper's figures compare methods), e.g. a trained run
next to its random-init twin.

Each model's full analysis (results.json, plots, report.md) goes to ``<out>/<label>/``; the comparison
(``comparison.json``, ``report.md``, ``plots/``) to ``<out>/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from mmcr.evaluate.results import run_dir_of
from mmcr.geometry.analyze import run_analysis
from mmcr.geometry.report import (
    QUANTITIES,
    finite_sample_plot,
    fmt,
    geometry_sections,
    json_safe,
    kinds_in,
    layer_union,
    overlay_plot,
    settings_line,
)
from mmcr.run.config import RunConfig
from mmcr.rundir.checkpoint import find_checkpoint
from mmcr.rundir.files import check_output, write_text_atomic


def source_label(source: str) -> str:
    """A short name for a model source: the run directory's name (plus the checkpoint's for a checkpoint
    file), else the source string itself (``random:resnet18``, ``torchvision:resnet50``)."""

    run = run_dir_of(source)
    if run is None:
        return str(source)
    p = Path(str(source))
    return run.name if p.is_dir() else f"{run.name}/{p.stem}"


def _unique_labels(sources: list[str], labels: list[str] | None) -> list[str]:
    if labels is not None:
        if len(labels) != len(sources):
            raise ValueError(f"got {len(labels)} labels for {len(sources)} models; give one label per model")
        if len(set(labels)) != len(labels):
            raise ValueError(f"labels must be distinct, got {labels}")
        return list(labels)
    out: list[str] = []
    for s in sources:
        name = source_label(s)
        base, k = name, 2
        while name in out:
            name = f"{base} #{k}"
            k += 1
        out.append(name)
    return out


def _folder(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


def compare_models(
    sources: list[str],
    dataset: str,
    out_dir: str | Path,
    labels: list[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Analyse every model in ``sources`` with :func:`mmcr.geometry.analyze.run_analysis` (same data set,
    images, views and settings: ``kwargs``) and write the overlaid comparison. Returns the comparison
    dict (also written as ``comparison.json``).

    The first source that is a run of ours is the reference: its data set and its augmentation (crops,
    colour) make the images and views every model sees; each model keeps its own normalisation."""

    if len(sources) < 2:
        raise ValueError("compare_models needs at least 2 model sources; use run_analysis for one")
    names = _unique_labels([str(s) for s in sources], labels)
    folders: list[str] = []
    for n in names:
        f, k = _folder(n), 2
        while f in folders:
            f = f"{_folder(n)}_{k}"
            k += 1
        folders.append(f)
    out = Path(out_dir)
    for name in ("report.md", "comparison.json"):  # never over a run's own report (--out RUN)
        check_output(out / name, what="the comparison")
    configs = [_run_config(s) for s in sources]  # every source read (and checked) before anything is written
    reference = next((c for c in configs if c is not None), None)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    entries = []
    for src, name, folder in zip(sources, names, folders):
        entries.append((name, run_analysis(str(src), dataset, out / folder, reference=reference, **kwargs)))
    comparison = {
        "models": [
            {"label": n, "source": str(s), "dir": f, "model_info": r.get("model_info", {})}
            for n, s, f, (_, r) in zip(names, sources, folders, entries)
        ],
        "dataset": entries[0][1]["dataset"],
        "split": entries[0][1]["split"],
        "settings": entries[0][1]["settings"],
        "layers": layer_union(entries),
        "summary": _summary(entries),
    }
    plots = ["plots/geometry_per_layer.png"]
    overlay_plot(entries, out / plots[0])
    if finite_sample_plot(entries, out / "plots" / "finite_sample.png"):
        plots.append("plots/finite_sample.png")
    write_text_atomic(out / "comparison.json", json.dumps(json_safe(comparison), indent=2), what="comparison")
    write_text_atomic(out / "report.md", comparison_report(entries, comparison, plots), what="comparison report")
    return comparison


def _run_config(source):
    """The RunConfig of a run directory or checkpoint of ours, else None."""

    s = str(source)
    if s.startswith(("torchvision:", "timm:", "random:")) or not Path(s).exists():
        return None
    state, _ = find_checkpoint(s)
    return RunConfig.from_dict(state["config"])


def _summary(entries) -> dict[str, Any]:
    """kind -> layer -> label -> {capacity, radius, dimension} (None where a model lacks the layer)."""
    out: dict[str, Any] = {}
    for kind in kinds_in(entries):
        out[kind] = {}
        for layer in layer_union(entries):
            out[kind][layer] = {}
            for label, res in entries:
                r = res.get(kind, {}).get(layer)
                out[kind][layer][label] = None if r is None else {q: r["capacity"][q] for q in QUANTITIES}
    return out


def comparison_report(entries, comparison: dict, plots: list[str]) -> str:
    first = entries[0][1]
    lines = [
        f"# Manifold geometry: {len(entries)} models on {comparison['dataset']} ({comparison['split']})",
        "",
        "All models see the same images and augmented views; each model's own report (with spectra and "
        "similarity histograms per layer) is in its folder.",
        "",
        "| model | source | folder |",
        "|---|---|---|",
    ]
    lines += [f"| {m['label']} | {m['source']} | [{m['dir']}/]({m['dir']}/report.md) |" for m in comparison["models"]]
    lines += ["", settings_line(first), ""]
    lines += geometry_sections(entries)
    grads = [(label, res["gradient_coherence"]) for label, res in entries if "gradient_coherence" in res]
    if grads:
        lines += ["## Gradient coherence", "", "| model | objective | same class | different class |"]
        lines += ["|---|---|---|---|"]
        lines += [
            f"| {label} | {g['objective']} | {fmt(g['same_mean'], '.3f')} | {fmt(g['different_mean'], '.3f')} |"
            for label, g in grads
        ]
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
