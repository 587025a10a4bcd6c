"""The ``mmcr analyze`` subcommand (registered by :func:`add_analyze_parser`)."""

from __future__ import annotations

import argparse
import json

from mmcr.geometry.settings import AnalysisSettings
from mmcr.schema import add_config_arguments, config_flag, config_from_args, print_config


def add_analyze_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``analyze`` on ``subparsers``; the handler is set as ``func``."""
    p = subparsers.add_parser(
        "analyze",
        help="manifold geometry (capacity, radius, dimension, spectra, alignment) of a model's layers",
        description="Extract features at chosen layers for augmentation manifolds (images x views) and class "
        "manifolds (classes x images), compute the geometry per layer and write results.json, plots and "
        "report.md into --out. With several models, each is analysed on the same images and views into "
        "--out/<label>/ and --out/report.md overlays them layer by layer.",
    )
    p.add_argument(
        "models",
        nargs="+",
        metavar="model",
        help="run directory, checkpoint .pt, torchvision:<arch>, timm:<name> or random:<arch>; several to compare",
    )
    p.add_argument("--labels", default=None, help="comma-separated names of the models in the comparison")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--device", default="cpu")
    add_config_arguments(p, AnalysisSettings, what="analysis settings")
    S = AnalysisSettings
    for flag, key in (("--dataset", "dataset"), ("--root", "root"), ("--split", "split"),
                      ("--augment-preset", "augment_preset")):
        config_flag(p, flag, key, S)
    config_flag(p, "--layers", "layers", S, type=_names,
                help="comma-separated module names ('output' = final features)")
    for flag, key, typ in (("--n-images", "n_images", int), ("--n-views", "n_views", int),
                           ("--n-classes", "n_classes", int), ("--n-per-class", "n_per_class", int),
                           ("--kappa", "kappa", float), ("--n-t", "n_t", int),
                           ("--max-features", "max_features", int), ("--batch-size", "batch_size", int),
                           ("--seed", "seed", int), ("--gradient-images", "gradient_images", int),
                           ("--finite-sample-repeats", "finite_sample_repeats", int)):
        config_flag(p, flag, key, S, type=typ)
    config_flag(p, "--fit-range", "fit_range", S, type=_ranks, help="rank range of the power-law fit, e.g. 11,500")
    config_flag(p, "--gradient-coherence", "gradient_objective", S, metavar="OBJECTIVE",
                help="also measure gradient coherence of this objective (e.g. mmcr) on the model output")
    config_flag(p, "--correlated", "correlated", S, action="store_const", const=True)
    config_flag(p, "--simcap", "simcap", S, action="store_const", const=True)
    config_flag(p, "--no-progress", "progress", S, action="store_const", const=False, help="hide progress bars")
    p.set_defaults(func=run_analyze)
    return p


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _ranks(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be two integers like 11,500, got {text!r}") from None


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of ``mmcr analyze``; returns the exit status."""
    from mmcr.geometry.analyze import run_analysis
    from mmcr.geometry.compare import compare_models

    settings = config_from_args(args, AnalysisSettings)
    if print_config(args, settings):
        return 0
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(args.models) == 1:
        raise ValueError("--labels names the models of a comparison; give it with two or more models")
    if len(args.models) == 1:
        res = run_analysis(args.models[0], None, args.out, settings, device=args.device)
        line = {"out": str(args.out)}
        for kind in ("temporal", "augmentation"):
            if kind in res:
                line[f"{kind}_capacity"] = {n: round(res[kind][n]["capacity"]["capacity"], 4) for n in res["layers"]}
        print(json.dumps(line))
        return 0
    comp = compare_models(args.models, None, args.out, labels=labels, settings=settings, device=args.device)
    line = {"out": str(args.out)}
    for kind in ("temporal", "augmentation"):
        if kind in comp["summary"]:
            line[f"{kind}_capacity"] = {
                m["label"]: {
                    layer: round(v[m["label"]]["capacity"], 4)
                    for layer, v in comp["summary"][kind].items()
                    if v[m["label"]] is not None
                }
                for m in comp["models"]
            }
    print(json.dumps(line))
    return 0
