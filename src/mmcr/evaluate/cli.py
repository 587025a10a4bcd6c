"""argparse wiring for ``mmcr eval knn|linear|semi|transfer|detection`` and ``mmcr export``.

``add_eval_parser(subparsers)`` and ``add_export_parser(subparsers)`` register the subcommands; each
leaf parser sets ``func`` to a handler taking the parsed arguments and returning the exit status (0);
results go to the JSON file each evaluation writes (its path is printed).
"""

from __future__ import annotations

import argparse
import json

from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS
from mmcr.evaluate.semi import HEAD_INITS, MIN_STEPS
from mmcr.evaluate.sources import SOURCE_HELP
from mmcr.evaluate.transfer import TRANSFER_DATASETS


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1e-3,1e-4, got {text!r}") from e
    if not vals:
        raise argparse.ArgumentTypeError("give at least one value")
    return vals


def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("source", help=SOURCE_HELP)
    if data:
        from mmcr.data import DATASET_NAMES

        p.add_argument("--dataset", choices=DATASET_NAMES, help="data set (default: the run's data.name)")
        p.add_argument("--root", help="dataset root or archive path (default: the run's data.root)")
        p.add_argument("--train-split", default="train")
        p.add_argument("--test-split", default="test")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="centre-crop size (default: the images' size; transfer: 224, or native/64 px for CIFAR-stem models)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", default=None, help="output directory or .json file (default: the run directory)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _print(kind: str, res: dict) -> None:
    keys = ("top1", "top5", "linear_top1", "weight_decay", "k", "temperature", "json")
    shown = {k: v for k, v in res.items() if k in keys}
    print(f"{kind}: " + json.dumps(shown))


def _knn(args) -> int:
    from mmcr.evaluate.api import run_knn

    res = run_knn(
        args.source,
        args.dataset,
        args.root,
        args.train_split,
        args.test_split,
        k=args.k,
        temperature=args.temperature,
        size=args.size,
        resize=args.resize,
        batch_size=args.batch_size,
        device=args.device,
        out=args.out,
        progress=not args.no_progress,
    )
    _print("knn", res)
    return 0


def _linear(args) -> int:
    from mmcr.evaluate.api import run_linear

    res = run_linear(
        args.source,
        args.dataset,
        args.root,
        args.train_split,
        args.test_split,
        weight_decays=args.weight_decays,
        val_fraction=args.val_fraction,
        aug_passes=args.aug_passes,
        seed=args.seed,
        size=args.size,
        resize=args.resize,
        batch_size=args.batch_size,
        device=args.device,
        out=args.out,
        progress=not args.no_progress,
    )
    _print("linear", res)
    return 0


def _semi(args) -> int:
    from mmcr.evaluate.api import run_semi

    res = run_semi(
        args.source,
        fraction=args.fraction,
        subset_file=args.subset_file,
        dataset=args.dataset,
        root=args.root,
        train_split=args.train_split,
        test_split=args.test_split,
        epochs=args.epochs,
        min_steps=args.min_steps,
        lr=args.lr,
        head_lr=args.head_lr,
        weight_decay=args.weight_decay,
        head_init=args.head_init,
        batch_size=args.batch_size,
        seed=args.seed,
        size=args.size,
        device=args.device,
        out=args.out,
        progress=not args.no_progress,
    )
    _print("semi", res)
    return 0


def _transfer(args) -> int:
    from mmcr.evaluate.api import run_transfer

    res = run_transfer(
        args.source,
        args.dataset,
        args.root,
        size=args.size,
        weight_decays=args.weight_decays,
        val_fraction=args.val_fraction,
        seed=args.seed,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        out=args.out,
        progress=not args.no_progress,
    )
    _print("transfer", res)
    return 0


def _detection(args) -> int:
    from mmcr.evaluate.detection import run_detection

    res = run_detection(
        args.source,
        args.root,
        protocol=args.protocol,
        config=args.config,
        overrides=args.overrides,
        iterations=args.iterations,
        norm=args.norm,
        seed=args.seed,
        workers=args.workers,
        restart=args.restart,
        device=args.device,
        out=args.out,
        progress=not args.no_progress,
    )
    if "json" in res:  # rank 0 under torchrun
        print("detection: " + json.dumps({k: round(res[k], 2) for k in ("AP", "AP50", "AP75")} | {"json": res["json"]}))
    return 0


def _export(args) -> int:
    if args.source == "brainscore":  # mmcr export brainscore SOURCE OUT_DIR ...
        return _export_brainscore(brainscore_parser().parse_args([args.out, *args.rest]))
    if args.rest:
        raise ValueError(f"unexpected arguments {' '.join(args.rest)}; use mmcr export SOURCE FILE, or mmcr export "
                         "brainscore SOURCE OUT_DIR --identifier NAME")
    from mmcr.evaluate.api import run_export

    meta = run_export(args.source, args.out)
    print(f"exported {meta['arch']} backbone to {meta['path']}")
    return 0


def _layer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give comma-separated layer names, e.g. layer1,layer2,layer3,layer4")
    return names


def brainscore_parser() -> argparse.ArgumentParser:
    """The arguments of ``mmcr export brainscore``."""
    p = argparse.ArgumentParser(
        prog="mmcr export brainscore",
        description="Write a Brain-Score vision model plugin (brainscore_vision/models/<dir> layout) of any model "
                    "source: weights (safetensors + sha256), the architecture code, the model's own preprocessing, "
                    "the region-layer map, spectra of the committed layers.",
    )
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("out_dir", help="plugin folder to write (its name becomes the plugin's folder name)")
    p.add_argument("--identifier", required=True, help="the Brain-Score model identifier (no hyphens)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--region-layer-map", metavar="FILE", help='JSON {"V1": layer, "V2": ..., "V4": ..., "IT": ...}')
    how.add_argument("--choose-layers", metavar="NEURAL.npz",
                     help="choose each region's layer by held-out neural predictivity on these recordings "
                          "(images (S,H,W,3) uint8; V1/V2/V4/IT (S,n) or (reps,S,n); optional labels (S,))")
    p.add_argument("--layers", type=_layer_list, default=None,
                   help="candidate layers for --choose-layers (default: the ResNet stages)")
    p.add_argument("--image-size", type=int, default=None,
                   help="input size the model sees (default: the run's crop size; 224 for named models)")
    p.add_argument("--stimuli", type=int, default=None,
                   help="generated stimuli for the spectra when no recordings are given (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seeds random-init sources and the generated stimuli")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu", help="where the spectra and layer choice are computed (cpu, cuda)")
    p.add_argument("--weights-url", default=None,
                   help="where the plugin downloads weights.safetensors if its folder lacks it (sha256-checked); "
                        "for submissions whose weights exceed Brain-Score's 50 MB zip limit")
    p.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists and is not empty")
    return p


def _export_brainscore(args) -> int:
    from mmcr.evaluate.brainscore import export_brainscore_plugin

    meta = export_brainscore_plugin(
        args.source, args.out_dir, args.identifier, region_layer_map=args.region_layer_map,
        choose_layers_from=args.choose_layers, candidate_layers=args.layers, image_size=args.image_size,
        n_stimuli=args.stimuli, seed=args.seed, force=args.force, batch_size=args.batch_size, device=args.device,
        weights_url=args.weights_url,
    )
    print(f"wrote Brain-Score plugin {meta['identifier']!r} to {meta['path']} ({meta['commitment']}: "
          + ", ".join(f"{r} {layer}" for r, layer in meta["region_layer_map"].items())
          + f"; {meta['preprocessing']['size']} px input; weights: {meta['weights']})")
    return 0


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` with the subcommands ``knn``, ``linear``, ``semi`` and ``transfer``."""
    ev = subparsers.add_parser("eval", help="evaluate a pretrained backbone (kNN, linear, semi, transfer, detection)")
    sub = ev.add_subparsers(dest="eval_command", required=True)

    p = sub.add_parser("knn", help="weighted kNN on L2-normalised features (top-1/top-5)")
    _common(p)
    p.add_argument("--resize", type=int, default=None, help="resize the shorter side before cropping")
    p.add_argument("--k", type=int, default=None, help="neighbours (default: the run's eval.knn_k, else 200)")
    p.add_argument("--temperature", type=float, default=None,
                   help="vote temperature (default: the run's eval.knn_temperature, else 0.1; the authors used 0.5)")
    p.set_defaults(func=_knn)

    p = sub.add_parser("linear", help="linear probe: L-BFGS logistic regression, regularisation chosen on val")
    _common(p)
    p.add_argument("--resize", type=int, default=None, help="resize the shorter side before cropping")
    p.add_argument(
        "--weight-decays",
        type=_floats,
        default=list(DEFAULT_WEIGHT_DECAYS),
        help="comma-separated L2 strengths to choose from on the validation split",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--aug-passes", type=int, default=0, help="extra augmented passes over the training set")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_linear)

    p = sub.add_parser("semi", help="fine-tune the whole network on 1%%/10%% of the labels")
    _common(p)
    p.add_argument("--fraction", type=float, default=0.01, help="class-balanced label fraction")
    p.add_argument("--subset-file", default=None, help="file of indices or file names (ImageNet subset lists)")
    p.add_argument("--epochs", type=int, default=30, help="epochs, raised when they give fewer than --min-steps steps")
    p.add_argument("--min-steps", type=int, default=MIN_STEPS,
                   help=f"least number of optimiser steps, whatever the subset's size (default {MIN_STEPS})")
    p.add_argument("--lr", type=float, default=0.01, help="backbone learning rate")
    p.add_argument("--head-lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--head-init", choices=HEAD_INITS, default="linear",
                   help="linear: start from the linear probe on the same subset (reported beside); random")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_semi)

    p = sub.add_parser("transfer", help="linear probe on Flowers-102, Food-101, DTD, CIFAR-100 or STL-10")
    _common(p, data=False)
    p.add_argument("--dataset", required=True, choices=sorted(TRANSFER_DATASETS))
    p.add_argument("--root", required=True, help="folder holding the dataset in torchvision's layout")
    p.add_argument("--weight-decays", type=_floats, default=list(DEFAULT_WEIGHT_DECAYS))
    p.add_argument("--val-fraction", type=float, default=0.1, help="used when the dataset has no val split")
    p.add_argument("--num-workers", type=int, default=0, help="image-decoding workers")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_transfer)

    p = sub.add_parser(
        "detection", help="fine-tune a Faster R-CNN R50-C4 on PASCAL VOC (AP, AP50, AP75); torchrun for GPUs"
    )
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--root", required=True, help="folder holding VOCdevkit/VOC2007 (and VOC2012), or VOCdevkit")
    p.add_argument("--protocol", default="voc07+12", help="voc07+12 (default: 07+12 trainval -> 07 test) or voc07")
    p.add_argument("--config", default=None, help="YAML with preset fields to change (default: the voc-c4 preset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="change a preset field, e.g. --set solver.lr=0.01 (repeatable)")
    p.add_argument("--iterations", type=int, default=None, help="schedule length; lr steps keep their fractions")
    p.add_argument("--norm", choices=("sync", "frozen"), default=None, help="BatchNorm: sync (default) or frozen")
    p.add_argument("--workers", type=int, default=None, help="image-decoding workers per rank (default 4)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="discard this run's detection checkpoints and start over")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (torchrun picks cuda:LOCAL_RANK)")
    p.add_argument("--out", default=None, help="output directory or .json file (default: the run directory)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_detection)
    return ev


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``export``: a backbone state_dict as .pt (plain dict + .json sidecar) or .safetensors, and
    ``export brainscore SOURCE OUT_DIR ...`` (its own arguments: :func:`brainscore_parser`)."""
    p = subparsers.add_parser(
        "export", help="export a backbone (state_dict, safetensors) or a Brain-Score plugin (export brainscore)",
        usage="mmcr export SOURCE FILE\n       mmcr export brainscore SOURCE OUT_DIR --identifier NAME [options]",
        epilog="mmcr export brainscore:\n" + brainscore_parser().format_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help=f"{SOURCE_HELP}; or 'brainscore' for a Brain-Score plugin")
    p.add_argument("out", help="output file: .pt/.pth or .safetensors")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_export)
    return p
