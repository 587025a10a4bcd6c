"""The ``mmcr analyze`` subcommand (registered by :func:`add_analyze_parser`)."""

from __future__ import annotations

import argparse
import json


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
    p.add_argument("--dataset", default=None,
                   help="data set name for mmcr.data.load_dataset (default: the run's own, else digits)")
    p.add_argument("--root", default=None, help="data set root / archive path (default: the run's data.root)")
    p.add_argument("--split", default="test", help="split to analyse (default test)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--layers", default=None, help="comma-separated module names ('output' = final features)")
    p.add_argument("--n-images", type=int, default=50, help="augmentation manifolds (images)")
    p.add_argument("--n-views", type=int, default=20, help="views per augmentation manifold")
    p.add_argument("--n-classes", type=int, default=10, help="class manifolds (classes)")
    p.add_argument("--n-per-class", type=int, default=20, help="images per class manifold")
    p.add_argument("--kappa", type=float, default=0.0, help="margin of the mean-field capacity")
    p.add_argument("--n-t", type=int, default=200, help="Gaussian samples per manifold")
    p.add_argument("--correlated", action="store_true", help="remove the centres' shared low-rank structure")
    p.add_argument("--simcap", action="store_true", help="also compute the simulated capacity (slower)")
    p.add_argument("--fit-range", default="11,500", help="rank range of the power-law fit, e.g. 11,500")
    p.add_argument("--max-features", type=int, default=4096, help="random projection above this many features")
    p.add_argument("--augment-preset", default=None,
                   help="augmentation preset for the views of models without a run (a run uses its own)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--gradient-coherence",
        default=None,
        metavar="OBJECTIVE",
        help="also measure gradient coherence of this objective (e.g. mmcr) on the model output",
    )
    p.add_argument("--gradient-images", type=int, default=16, help="augmentation manifolds for gradient coherence")
    p.add_argument(
        "--finite-sample-repeats",
        type=int,
        default=5,
        help="finite-sample check: repeats per subsample size of the points per manifold (0: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run_analyze)
    return p


def run_analyze(args: argparse.Namespace) -> int:
    """Handler of ``mmcr analyze``; returns the exit status."""
    from mmcr.geometry.analyze import run_analysis
    from mmcr.geometry.compare import compare_models

    try:
        lo, hi = (int(v) for v in str(args.fit_range).split(","))
    except ValueError:
        raise ValueError(f"--fit-range must be two integers like 11,500, got {args.fit_range!r}") from None
    if not 1 <= lo < hi:
        raise ValueError(f"--fit-range needs 1 <= first < last rank, got {lo},{hi}; e.g. --fit-range 11,500")
    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    if labels is not None and len(args.models) == 1:
        raise ValueError("--labels names the models of a comparison; give it with two or more models")
    kwargs = dict(
        data_root=args.root,
        split=args.split,
        layers=layers,
        n_images=args.n_images,
        n_views=args.n_views,
        n_classes=args.n_classes,
        n_per_class=args.n_per_class,
        kappa=args.kappa,
        n_t=args.n_t,
        correlated=args.correlated,
        simcap=args.simcap,
        fit_range=(lo, hi),
        max_features=args.max_features,
        augment_preset=args.augment_preset,
        batch_size=args.batch_size,
        device=args.device,
        seed=args.seed,
        gradient_objective=args.gradient_coherence,
        gradient_images=args.gradient_images,
        finite_sample_repeats=args.finite_sample_repeats,
        progress=not args.no_progress,
    )
    if len(args.models) == 1:
        res = run_analysis(args.models[0], args.dataset, args.out, **kwargs)
        line = {"out": str(args.out)}
        for kind in ("temporal", "augmentation"):
            if kind in res:
                line[f"{kind}_capacity"] = {n: round(res[kind][n]["capacity"]["capacity"], 4) for n in res["layers"]}
        print(json.dumps(line))
        return 0
    comp = compare_models(args.models, args.dataset, args.out, labels=labels, **kwargs)
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
