"""``mmcr analyze``: manifold geometry of a model's layers on a data set, as JSON, plots and a report.

Two kinds of manifolds are built from the data set, three for clip data sets:

- augmentation manifolds: P images x M augmented views (the manifolds MMCR compresses);
- class manifolds: P classes x M clean images each;
- temporal manifolds (clip sets): P clips x M frames of one window (the run's window rule), the
  manifolds temporal MMCR compresses; the images of the other two kinds are the clips' still frames.

Features are taken at chosen layers with forward hooks (conv maps are flattened and, above
``max_features`` dimensions, reduced by a fixed Gaussian random projection, which preserves the
geometry up to small distortions), then every measure of :mod:`mmcr.geometry` is computed per layer.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from mmcr.augment import IMAGENET_MEAN, IMAGENET_STD, MultiViewAugment
from mmcr.augment.temporal import WindowSampler
from mmcr.data import is_clip_set, load_dataset, still_images
from mmcr.evaluate.api import dataset_spec
from mmcr.evaluate.sources import load_pretrained
from mmcr.geometry._arrays import checked_seed
from mmcr.geometry.alignment import centroid_similarity, gradient_coherence, subspace_alignment
from mmcr.geometry.capacity import manifold_capacity
from mmcr.geometry.elliptical import elliptical_geometry
from mmcr.geometry.report import (
    finite_sample_plot,
    fmt,
    geometry_sections,
    json_safe,
    overlay_plot,
    settings_line,
)
from mmcr.geometry.sampling import capacity_vs_points
from mmcr.geometry.settings import AnalysisSettings
from mmcr.geometry.simcap import simulated_capacity
from mmcr.geometry.spectra import effective_rank, eigenspectrum, participation_ratio, power_law_exponent
from mmcr.objectives import build_objective
from mmcr.run.config import TemporalConfig
from mmcr.rundir.files import check_output, save_figure, write_text_atomic
from mmcr.schema import resolve

OUTPUT_LAYER = "output"


def default_layers(model: nn.Module) -> list[str]:
    """The residual stages of a ResNet-like backbone (``layerN`` or ``layers.N``) plus its output."""
    pattern = re.compile(r"(^|\.)(layer\d+|layers\.\d+)$")
    names = [n for n, _ in model.named_modules() if pattern.search(n)]
    return names + [OUTPUT_LAYER]


class FeatureTaps:
    """Forward hooks that keep the flattened output of chosen modules (``"output"`` = the model's)."""

    def __init__(self, model: nn.Module, layers: list[str], max_features: int = 4096, seed: int = 0):
        modules = dict(model.named_modules())
        unknown = [n for n in layers if n != OUTPUT_LAYER and n not in modules]
        if unknown:
            some = [n for n in modules if n][:12]
            raise ValueError(f"unknown layer(s) {unknown}; choose from module names such as {some} or 'output'")
        self.model = model
        self.layers = layers
        self.max_features = int(max_features)
        self.seed = seed
        self._store: dict[str, torch.Tensor] = {}
        self._proj: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in layers if n != OUTPUT_LAYER]

    def _hook(self, name: str):
        def fn(_module, _inp, out):
            self._store[name] = out

        return fn

    def _reduce(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).to(torch.float32)
        if x.shape[1] <= self.max_features:
            return x
        if name not in self._proj:
            g = torch.Generator().manual_seed(self.seed + len(self._proj))
            w = torch.randn(x.shape[1], self.max_features, generator=g) / np.sqrt(self.max_features)
            self._proj[name] = w.to(x.device)
        return x @ self._proj[name]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self._store.clear()
        out = self.model(images)
        feats = {n: self._reduce(n, self._store[n] if n != OUTPUT_LAYER else out).cpu() for n in self.layers}
        self._store.clear()
        return feats

    def close(self) -> None:
        for h in self._handles:
            h.remove()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    )


def _pick_images(labels: torch.Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
    """n image indices spread evenly over classes (round-robin over shuffled per-class lists)."""
    lab = labels.numpy()
    pools = [rng.permutation(np.flatnonzero(lab == c)).tolist() for c in np.unique(lab[lab >= 0])]
    out: list[int] = []
    while len(out) < n and any(pools):
        for p in pools:
            if p and len(out) < n:
                out.append(p.pop())
    return np.array(out)


def _layer_measures(manifolds: np.ndarray, labels: np.ndarray | None, opts: dict, seed: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    cap = manifold_capacity(manifolds, kappa=opts["kappa"], n_t=opts["n_t"], correlated=opts["correlated"], seed=seed)
    res["capacity"] = cap.to_dict()
    res["elliptical"] = elliptical_geometry(manifolds).to_dict()
    if opts["simcap"]:
        res["simulated_capacity"] = simulated_capacity(manifolds, n_rep=opts["simcap_reps"], seed=seed).to_dict()
    lam = eigenspectrum(manifolds.reshape(-1, manifolds.shape[-1]))
    spec: dict[str, Any] = {"participation_ratio": participation_ratio(lam), "effective_rank": effective_rank(lam)}
    try:
        fit = power_law_exponent(lam, fit_range=opts["fit_range"])
        spec["power_law"] = fit.to_dict()
        spec["_fit"] = fit
    except ValueError as e:
        spec["power_law"] = {"error": str(e)}
    res["spectrum"] = spec
    cs = centroid_similarity(manifolds, labels, center=True)
    sa = subspace_alignment(manifolds, labels, n_components=opts["n_components"])
    res["centroid_similarity"] = cs.to_dict()
    res["subspace_alignment"] = sa.to_dict()
    res["_hist"] = (cs.same, cs.different)
    if opts["finite_sample_repeats"] and manifolds.shape[1] >= 2:
        res["finite_sample"] = capacity_vs_points(
            manifolds,
            repeats=opts["finite_sample_repeats"],
            kappa=opts["kappa"],
            n_t=opts["n_t"],
            seed=seed,
            correlated=opts["correlated"],
        ).to_dict()
    return res


def _views_for(model: str, own, reference, augment_preset: str | None, n_views: int, seed: int, size: int):
    """The augmentation of the manifolds and its preset name: the model's run's, the comparison's
    reference (in the model's own statistics), or ``augment_preset`` at the images' size."""
    views_cfg = reference.augment if reference is not None else (own.augment if own is not None else None)
    if views_cfg is None:  # a model without a run: the preset at the images' size
        preset = augment_preset or "cifar"
        return MultiViewAugment(preset, views=n_views, seed=seed, size=size), preset
    over = dict(views_cfg.overrides)
    if reference is not None and own is not None:  # each model sees the views in its own statistics
        own_aug = MultiViewAugment.from_config(own.augment, views=1, seed=0)
        over.update(mean=list(own_aug.mean), std=list(own_aug.std))
    elif reference is not None and not model.startswith("random:"):  # torchvision/timm weights
        over.update(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))
    return MultiViewAugment(views_cfg.preset, views=n_views, seed=seed, **over), views_cfg.preset


def _class_manifolds(labels: torch.Tensor, n_classes: int, n_per_class: int, rng, dataset) -> tuple[list, np.ndarray]:
    """P classes x M clean images: the first ``n_classes`` classes with ``n_per_class`` images."""
    classes = [c for c in np.unique(labels.numpy()) if c >= 0]
    counts = {c: int((labels == int(c)).sum()) for c in classes}
    classes = [c for c in classes if counts[c] >= n_per_class][:n_classes]
    if len(classes) < 2:
        raise ValueError(f"fewer than 2 classes of {dataset!r} have {n_per_class} images; lower --n-per-class")
    idx = np.stack([rng.choice(np.flatnonzero(labels.numpy() == c), n_per_class, replace=False) for c in classes])
    return classes, idx


def _features(ds, taps, layer_names, aug, clean, img_idx, cls_idx, n_views, batch_size, n_grad, dev, progress):
    """Layer features of the augmentation manifolds (P images x M views) and the class manifolds, and
    the first ``n_grad`` images' views (for the gradient coherence)."""
    feats_aug: dict[str, list[torch.Tensor]] = {n: [] for n in layer_names}
    feats_cls: dict[str, list[torch.Tensor]] = {n: [] for n in layer_names}
    per_batch = max(1, batch_size // n_views)
    kept_views: list[torch.Tensor] = []
    try:
        with _progress() as bar:
            task = bar.add_task("features: augmentation manifolds", total=len(img_idx), visible=progress)
            for s in range(0, len(img_idx), per_batch):
                idx = torch.as_tensor(img_idx[s : s + per_batch])
                views = aug(ds.images[idx].to(dev))  # (b, M, 3, h, w)
                if sum(len(v) for v in kept_views) < n_grad:
                    kept_views.append(views[: n_grad - sum(len(v) for v in kept_views)])
                f = taps(views.flatten(0, 1))
                for n in layer_names:
                    feats_aug[n].append(f[n].reshape(len(idx), n_views, -1))
                bar.advance(task, len(idx))
            flat = cls_idx.reshape(-1)
            task = bar.add_task("features: class manifolds", total=len(flat), visible=progress)
            for s in range(0, len(flat), batch_size):
                idx = torch.as_tensor(flat[s : s + batch_size])
                f = taps(clean(ds.images[idx].to(dev)))
                for n in layer_names:
                    feats_cls[n].append(f[n])
                bar.advance(task, len(idx))
    finally:
        taps.close()
    return feats_aug, feats_cls, kept_views


def _measure(results, feats_aug, feats_cls, temporal, layer_names, img_labels, n_classes, n_per_class, opts, seed,
             progress) -> dict:
    """Every measure per layer and kind of manifold into ``results``; the plots' extras returned."""
    extras: dict[str, dict[str, Any]] = {"augmentation": {}, "class": {}}
    if temporal is not None:
        results["temporal"], extras["temporal"] = {}, {}
        results["settings"]["temporal"] = temporal["settings"]
    with _progress() as bar:
        task = bar.add_task("geometry per layer", total=len(extras) * len(layer_names), visible=progress)
        for n in layer_names:
            A = torch.cat(feats_aug[n]).double().numpy()
            C = torch.cat(feats_cls[n]).double().numpy().reshape(n_classes, n_per_class, -1)
            kinds = [("augmentation", A, img_labels), ("class", C, None)]
            if temporal is not None:
                kinds.insert(0, ("temporal", temporal["features"][n], temporal["labels"]))
            for kind, X, lab in kinds:
                r = _layer_measures(X, lab, opts, seed)
                extras[kind][n] = {"fit": r["spectrum"].pop("_fit", None), "hist": r.pop("_hist")}
                results[kind][n] = r
                bar.advance(task)
    return extras


def _load(model: str, dataset, data_root, split: str, reference, seed: int, dev: torch.device, out: Path):
    """The backbone (seeded: random-init baselines are reproducible) and the data set's still images
    (and its clips, for a clip set)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, model_src = load_pretrained(model, map_location=dev)
    (out / "plots").mkdir(parents=True, exist_ok=True)  # after the model: a refused source writes nothing
    data_src = model_src.config if reference is None else reference
    if dataset is None and data_src is None:
        dataset = "digits"
    name, root, options, cache_dir = dataset_spec(data_src, dataset, data_root)
    ds = load_dataset(name, root=root, split=split, cache_dir=cache_dir, **options)
    clips = ds if is_clip_set(ds) else None
    return backbone.to(dev).eval(), model_src, name, still_images(ds), clips


def run_analysis(model: str, dataset: str | None = None, out_dir: str | Path | None = None,
                 settings: AnalysisSettings | None = None, *, device: str = "cpu", reference=None,
                 **changes: Any) -> dict[str, Any]:
    """Analyse ``model`` (any :func:`mmcr.evaluate.sources.load_pretrained` source) on ``dataset`` and write
    ``results.json``, ``plots/*.png`` and ``report.md`` into ``out_dir``. Returns the results dict.

    ``gradient_objective`` (e.g. "mmcr") adds the gradient coherence of that objective on the model's
    output for the first ``gradient_images`` augmentation manifolds, over the last ~2M parameters.
    ``finite_sample_repeats`` (0: off) repeats of :func:`mmcr.geometry.capacity_vs_points` per subsample
    size show whether the points per manifold suffice.

    Views and data follow the model's run (its own augmentation, normalisation and data set); a model
    without a run uses ``augment_preset`` at the images' size. ``reference`` (a ``RunConfig``; used by
    comparisons) fixes the data set and the views' geometry and colour for every model, so that all
    see the same images and views; each model keeps its own normalisation (a random-init model takes
    the reference's).

    ``settings`` is an :class:`~mmcr.geometry.settings.AnalysisSettings` (None: its defaults);
    ``changes`` are its fields (``n_images=8``, ``root=...``), checked like it; ``dataset`` is its
    ``dataset`` field,positional as before.

    Examples:
        >>> import pathlib, tempfile
        >>> from mmcr.geometry.analyze import run_analysis
        >>> tmp = tempfile.TemporaryDirectory()
        >>> result = run_analysis("random:resnet_tiny", "digits", tmp.name, layers=["output"], n_images=3, n_views=2,
        ...                       n_classes=2, n_per_class=2, n_t=5, finite_sample_repeats=0,
        ...                       progress=False)  # doctest: +NORMALIZE_WHITESPACE
        >>> list(result["layers"]), sorted(p.name for p in pathlib.Path(tmp.name).iterdir())
        (['output'], ['plots', 'report.md', 'results.json'])
        >>> tmp.cleanup()
    """
    if out_dir is None:
        raise ValueError("run_analysis needs out_dir, the folder for results.json, plots and report.md")
    s = resolve(AnalysisSettings, settings, {"dataset": dataset, **changes} if dataset is not None else changes)
    out = Path(out_dir)
    for fname in ("report.md", "results.json"):  # never over a run's own report (--out RUN)
        check_output(out / fname, what="the analysis")
    t0 = time.time()
    dev = torch.device(device)
    backbone, model_src, name, ds, clips = _load(model, s.dataset, s.root, s.split, reference, s.seed, dev, out)
    own = model_src.config
    aug, preset = _views_for(model, own, reference, s.augment_preset, s.n_views, s.seed, int(ds.images.shape[-1]))
    clean = aug.eval_transform()
    layer_names = s.layers or default_layers(backbone)
    taps = FeatureTaps(backbone, layer_names, max_features=s.max_features, seed=s.seed)
    rng = np.random.default_rng(checked_seed(s.seed))
    opts = dict(kappa=s.kappa, n_t=s.n_t, correlated=s.correlated, simcap=s.simcap, simcap_reps=s.simcap_reps,
                n_components=s.n_components,
                fit_range=tuple(s.fit_range), finite_sample_repeats=s.finite_sample_repeats)
    img_idx = _pick_images(ds.labels, s.n_images, rng)  # augmentation manifolds: P images x M views
    classes, cls_idx = _class_manifolds(ds.labels, s.n_classes, s.n_per_class, rng, s.dataset)
    n_grad = min(int(s.gradient_images), len(img_idx)) if s.gradient_objective else 0
    feats_aug, feats_cls, kept_views = _features(ds, taps, layer_names, aug, clean, img_idx, cls_idx, s.n_views,
                                                 s.batch_size, n_grad, dev, s.progress)
    temporal = None
    if clips is not None:  # temporal manifolds: P clips x M frames of one window
        temporal_cfg = (reference or own).temporal if (reference or own) is not None else None
        temporal = _temporal_manifolds(clips, temporal_cfg, s.n_images, s.n_views, layer_names, backbone,
                                       clean, s.max_features, s.batch_size, dev, rng, s.seed)
    img_labels = ds.labels[torch.as_tensor(img_idx)].numpy()
    recorded = dict(opts, n_images=len(img_idx), n_views=s.n_views, n_per_class=s.n_per_class,
                    classes=[str(ds.classes[c]) if c < len(ds.classes) else str(c) for c in classes],
                    max_features=s.max_features, augment_preset=preset, views=aug.config,
                    clean_view=clean.config, seed=s.seed, fit_range=list(s.fit_range))
    results: dict[str, Any] = {"model": str(model), "model_info": model_src.describe(), "dataset": name,
                               "split": s.split, "layers": layer_names, "settings": recorded,
                               "augmentation": {}, "class": {}}
    extras = _measure(results, feats_aug, feats_cls, temporal, layer_names, img_labels, len(classes), s.n_per_class,
                      opts, s.seed, s.progress)
    if n_grad >= 2:
        results["gradient_coherence"] = _gradient_coherence(
            backbone, s.gradient_objective, torch.cat(kept_views), img_labels[:n_grad]
        )
    results["elapsed_s"] = time.time() - t0
    plots = _plots(results, extras, out / "plots")
    write_text_atomic(out / "results.json", json.dumps(json_safe(results), indent=2), what="analysis results")
    write_text_atomic(out / "report.md", _report(results, plots), what="analysis report")
    return results


def _temporal_manifolds(clips, temporal_cfg, n_clips: int, n_frames: int, layers: list[str], backbone, clean,
                        max_features: int, batch_size: int, dev, rng, seed: int) -> dict[str, Any]:
    """Features of P clips x M frames of one window each (the run's window rule, or the defaults),
    the clips spread over classes: the manifolds temporal MMCR compresses."""

    t = temporal_cfg if temporal_cfg is not None else TemporalConfig()
    sampler = WindowSampler.from_config(t, n_frames, seed)
    table = sampler.table(clips.lengths.numpy(), None if clips.fps is None else clips.fps.numpy(), clips.names)
    picked = _pick_images(clips.labels, n_clips, rng)
    first_sample = {int(c): i for i, c in reversed(list(enumerate(table.clip.tolist())))}
    clip_ids, frames = sampler.frames_of(table, 0, [first_sample[int(c)] for c in picked])
    taps = FeatureTaps(backbone, layers, max_features=max_features, seed=seed)
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    per_batch = max(1, batch_size // n_frames)
    try:
        for s in range(0, len(clip_ids), per_batch):
            windows = [clips.read(int(c), f) for c, f in zip(clip_ids[s: s + per_batch], frames[s: s + per_batch])]
            f = taps(clean(torch.cat(windows).to(dev)))
            for n in layers:
                feats[n].append(f[n].reshape(len(windows), n_frames, -1))
    finally:
        taps.close()
    settings = {"n_clips": len(clip_ids), "frames_per_window": n_frames, "window": t.window, "unit": t.unit,
                "sampling": t.sampling}
    return {"features": {n: torch.cat(v).double().numpy() for n, v in feats.items()},
            "labels": clips.labels[torch.as_tensor(clip_ids)].numpy(), "settings": settings}


def _last_parameters(model: nn.Module, limit: int = 2_000_000) -> list[str]:
    """Names of the last trainable parameters of ``model`` holding at most ``limit`` values (at least one),
    which keeps per-example gradients of large backbones within memory."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    out: list[str] = []
    total = 0
    for n, p in reversed(named):
        if out and total + p.numel() > limit:
            break
        out.append(n)
        total += p.numel()
    return out[::-1]


def _gradient_coherence(model: nn.Module, objective: str, views: torch.Tensor, labels: np.ndarray) -> dict:

    names = _last_parameters(model)
    for p in model.parameters():
        p.requires_grad_(True)
    gc = gradient_coherence(model, build_objective(objective), views, labels, params=names)
    n_params = sum(p.numel() for n, p in model.named_parameters() if n in set(names))
    return dict(gc.to_dict(), objective=objective, parameters=len(names), n_values=int(n_params))


def _plots(results: dict, extras: dict, folder: Path) -> list[str]:
    import matplotlib  # heavy (about 0.3 s): imported when plots are drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = results["layers"]
    entries = [(None, results)]
    overlay_plot(entries, folder / "geometry_per_layer.png")
    files = ["plots/geometry_per_layer.png"]
    if finite_sample_plot(entries, folder / "finite_sample.png"):
        files.append("plots/finite_sample.png")
    for n in layers:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", n)
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        fit = extras["class"][n]["fit"]
        if fit is not None:
            ranks = np.arange(1, fit.spectrum.size + 1)
            pos = fit.spectrum > fit.spectrum[0] * 1e-12
            axes[0].loglog(ranks[pos], fit.spectrum[pos], label="eigenvalues")
            lo, hi = fit.fit_range
            axes[0].loglog(
                ranks[lo - 1 : hi], fit.fitted[lo - 1 : hi], "--", label=f"alpha={fit.alpha:.2f}, R2={fit.r2:.2f}"
            )
            axes[0].legend()
        axes[0].set_title(f"{n}: class-manifold spectrum")
        axes[0].set_xlabel("rank")
        same, diff = extras["augmentation"][n]["hist"]
        bins = 40
        if diff.size:
            axes[1].hist(diff, bins=bins, alpha=0.6, density=True, label="different class")
        if same.size:
            axes[1].hist(same, bins=bins, alpha=0.6, density=True, label="same class")
        axes[1].set_title(f"{n}: centroid cosine similarity (centred)")
        axes[1].legend()
        fig.tight_layout()
        save_figure(fig, folder / f"layer_{safe}.png", dpi=110)
        plt.close(fig)
        files.append(f"plots/layer_{safe}.png")
    return files


def _report(results: dict, plots: list[str]) -> str:
    lines = [
        f"# Manifold geometry: {results['model']} on {results['dataset']} ({results['split']})",
        "",
        settings_line(results) + f" Took {results['elapsed_s']:.1f} s.",
        "",
    ]
    lines += geometry_sections([(None, results)])
    if "gradient_coherence" in results:
        g = results["gradient_coherence"]
        lines += [
            "## Gradient coherence",
            "",
            f"Objective {g['objective']} on the model output, {g['n_values']} parameters (last {g['parameters']} "
            f"tensors): mean cosine of per-example gradients, same class {fmt(g['same_mean'], '.3f')}, "
            f"different class {fmt(g['different_mean'], '.3f')}.",
            "",
        ]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)
