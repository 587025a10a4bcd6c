"""argparse wiring for ``mmcr eval knn|linear|semi|transfer|detection`` and ``mmcr export``.

``add_eval_parser(subparsers)`` and ``add_export_parser(subparsers)`` register the subcommands; each
leaf parser sets ``func`` to a handler taking the parsed arguments and returning the exit status (0);
results go to the JSON file each evaluation writes (its path is printed).
"""

from __future__ import annotations

import argparse
import json

from mmcr.evaluate.settings import BrainscoreExportSettings, KnnSettings, LinearSettings, SemiSettings, TransferSettings
from mmcr.evaluate.sources import SOURCE_HELP
from mmcr.evaluate.transfer import TRANSFER_DATASETS
from mmcr.schema import HelpConfig, add_config_arguments, config_flag, config_from_args, dump_yaml, print_config

#: The section of each ``mmcr eval`` subcommand (its handler is ``mmcr.evaluate.api.run_<name>``).
EVALUATIONS = {"knn": KnnSettings, "linear": LinearSettings, "semi": SemiSettings, "transfer": TransferSettings}


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1e-3,1e-4, got {text!r}") from e
    if not vals:
        raise argparse.ArgumentTypeError("give at least one value")
    return vals


def _flag(p, flag: str, key: str, cls, **kwargs) -> None:
    config_flag(p, flag, key, cls, **kwargs)


def _where(p: argparse.ArgumentParser, cls) -> None:
    """The source, where the work runs and where the result goes (not settings), and the config options."""
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--out", default=None, help="output directory or .json file (default: the run directory)")
    add_config_arguments(p, cls)
    _flag(p, "--no-progress", "progress", cls, action="store_const", const=False, help="hide progress bars")


def _common(p: argparse.ArgumentParser, cls, resize: bool = True) -> None:
    _where(p, cls)
    for flag, key in (("--dataset", "dataset"), ("--root", "root"), ("--train-split", "train_split"),
                      ("--test-split", "test_split")):
        _flag(p, flag, key, cls)
    _flag(p, "--size", "size", cls, type=int)
    if resize:
        _flag(p, "--resize", "resize", cls, type=int)
    _flag(p, "--batch-size", "batch_size", cls, type=int)


def _print(kind: str, res: dict) -> None:
    keys = ("top1", "top5", "linear_top1", "weight_decay", "k", "temperature", "json")
    shown = {k: v for k, v in res.items() if k in keys}
    print(f"{kind}: " + json.dumps(shown))


def _evaluate(args) -> int:
    """``mmcr eval knn|linear|semi|transfer``: the settings from the flags, --config and --set, then the run."""
    from mmcr.evaluate import api

    cls = EVALUATIONS[args.eval_command]
    settings = config_from_args(args, cls)
    if print_config(args, settings):
        return 0
    res = getattr(api, f"run_{args.eval_command}")(args.source, settings, device=args.device, out=args.out)
    _print(args.eval_command, res)
    return 0


def _detection_config():
    from mmcr.evaluate.detection.config import DetectionConfig  # the detection package loads when used

    return DetectionConfig


def _detection(args) -> int:
    from mmcr.evaluate.detection import run_detection
    from mmcr.evaluate.detection.config import detection_config, flag_overrides

    if args.print_config:  # the resolved preset, as the run would read it (flags included)
        flags = {"model.norm": ("--norm", args.norm), "solver.num_workers": ("--workers", args.workers)}
        print(dump_yaml(detection_config(args.config, flag_overrides(args.overrides, flags))), end="")
        return 0
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
    add_config_arguments(p, BrainscoreExportSettings, what="export settings")
    B = BrainscoreExportSettings
    config_flag(p, "--identifier", "identifier", B)
    config_flag(p, "--region-layer-map", "region_layer_map", B, metavar="FILE")
    config_flag(p, "--choose-layers", "choose_layers", B, metavar="NEURAL.npz",
                help="choose each region's layer by held-out neural predictivity on these recordings "
                     "(images (S,H,W,3) uint8; V1/V2/V4/IT (S,n) or (reps,S,n); optional labels (S,))")
    config_flag(p, "--layers", "layers", B, type=_layer_list)
    for flag, key in (("--image-size", "image_size"), ("--stimuli", "stimuli"), ("--seed", "seed"),
                      ("--batch-size", "batch_size")):
        config_flag(p, flag, key, B, type=int)
    config_flag(p, "--device", "device", B)
    config_flag(p, "--weights-url", "weights_url", B)
    config_flag(p, "--force", "force", B, action="store_const", const=True)
    return p


def _export_brainscore(args) -> int:
    from mmcr.evaluate.brainscore import export_brainscore_plugin

    s = config_from_args(args, BrainscoreExportSettings)
    if print_config(args, s):
        return 0
    if s.identifier is None:
        raise ValueError("mmcr export brainscore needs --identifier NAME (the Brain-Score model identifier)")
    meta = export_brainscore_plugin(
        args.source, args.out_dir, s.identifier, region_layer_map=s.region_layer_map,
        choose_layers_from=s.choose_layers, candidate_layers=s.layers, image_size=s.image_size,
        n_stimuli=s.stimuli, seed=s.seed, force=s.force, batch_size=s.batch_size, device=s.device,
        weights_url=s.weights_url,
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
    _common(p, KnnSettings)
    _flag(p, "--k", "k", KnnSettings, type=int)
    _flag(p, "--temperature", "temperature", KnnSettings, type=float)

    p = sub.add_parser("linear", help="linear probe: L-BFGS logistic regression, regularisation chosen on val")
    _common(p, LinearSettings)
    _flag(p, "--weight-decays", "weight_decays", LinearSettings, type=_floats,
          help="comma-separated L2 strengths to choose from on the validation split")
    _flag(p, "--val-fraction", "val_fraction", LinearSettings, type=float)
    _flag(p, "--aug-passes", "aug_passes", LinearSettings, type=int)
    _flag(p, "--seed", "seed", LinearSettings, type=int)

    p = sub.add_parser("semi", help="fine-tune the whole network on 1%%/10%% of the labels")
    _common(p, SemiSettings, resize=False)
    for flag, key, typ in (("--fraction", "fraction", float), ("--subset-file", "subset_file", str),
                           ("--epochs", "epochs", int), ("--min-steps", "min_steps", int), ("--lr", "lr", float),
                           ("--head-lr", "head_lr", float), ("--weight-decay", "weight_decay", float),
                           ("--head-init", "head_init", str), ("--seed", "seed", int)):
        _flag(p, flag, key, SemiSettings, type=typ)

    p = sub.add_parser("transfer", help="linear probe on Flowers-102, Food-101, DTD, CIFAR-100 or STL-10")
    _where(p, TransferSettings)
    _flag(p, "--dataset", "dataset", TransferSettings, help=f"one of {', '.join(sorted(TRANSFER_DATASETS))}")
    _flag(p, "--root", "root", TransferSettings)
    for flag, key, typ in (("--size", "size", int), ("--batch-size", "batch_size", int),
                           ("--weight-decays", "weight_decays", _floats), ("--val-fraction", "val_fraction", float),
                           ("--num-workers", "num_workers", int), ("--seed", "seed", int)):
        _flag(p, flag, key, TransferSettings, type=typ)
    for p in sub.choices.values():
        p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "detection", help="fine-tune a Faster R-CNN R50-C4 on PASCAL VOC (AP, AP50, AP75); torchrun for GPUs"
    )
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("--root", required=True, help="folder holding VOCdevkit/VOC2007 (and VOC2012), or VOCdevkit")
    p.add_argument("--protocol", default="voc07+12", help="voc07+12 (default: 07+12 trainval -> 07 test) or voc07")
    p.add_argument("--config", default=None, help="YAML with preset fields to change (default: the voc-c4 preset)")
    p.add_argument("--help-config", action=HelpConfig, section_cls=_detection_config,
                   help="list every key of the detection config with its default, valid values and meaning, then exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved detection config as YAML and exit")
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
    p.add_argument("--help-config", action=HelpConfig, section_cls=BrainscoreExportSettings,
                   help="list every setting of mmcr export brainscore (plain export has none), then exit")
    p.set_defaults(func=_export)
    return p
