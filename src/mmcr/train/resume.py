"""Resuming a run: which checkpoint, whether the options changed, and what a change means.

A resumed run compares its config with the checkpoint's. Changes to fields marked ``free`` (limits,
logging, paths, evaluation) are applied; changes to ``apply`` fields (optimiser, objective,
augmentation, precision) are refused unless ``train.allow_config_change=true``, and then applied from
the resumed step on; ``fixed`` fields (model, data, batch size, seed) define the run's weights and data
order and are never changed on resume. Every applied change is recorded in the resume event of
``metrics.jsonl``. The training data itself is checked too (its size and classes), so a different data
set at the same path is refused rather than continued.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from mmcr.distributed import any_rank
from mmcr.run.config import ConfigChange, ConfigError, RunConfig, config_changes, read_run_config
from mmcr.rundir import checkpoint as ckpt
from mmcr.rundir import layout
from mmcr.rundir.files import RunFileError, RunLock


def claim_run_dir(run_dir: Path, dist_info) -> RunLock | None:
    """Lock ``run_dir`` for this run (the main process holds the lock; every rank learns whether it got
    it, so all refuse together), then delete the temporary files a killed run left there. A second
    process on the same directory is refused by name."""

    lock, error = None, None
    if dist_info.is_main:
        try:
            lock = RunLock(run_dir)
        except RunFileError as e:
            error = e
    (refused,) = any_rank([error is not None], dist_info)
    if refused:
        raise error or RunFileError(f"{run_dir} is in use by another mmcr run; wait for it to end, or choose "
                                    "another --out")
    if dist_info.is_main:
        remove_partial_files(run_dir)
    return lock


def remove_partial_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes (``.ckpt_*.pt.*.tmp``, ``.config.yaml.*.tmp``, ...) that
    a kill left behind in the run's own files; called with the run's lock held, so no writer is active."""
    names = [f".{n}.*.tmp" for n in layout.RUN_FILES]
    found = [p for pattern in names for p in run_dir.glob(pattern)]
    found += list(layout.checkpoint_dir(run_dir).glob(".ckpt_*.pt.*.tmp"))
    for p in found:
        p.unlink(missing_ok=True)
    return found


def _same_run(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir``'s config.yaml describes this run (nothing that defines its weights differs)."""
    try:
        old = read_run_config(run_dir)
    except (ConfigError, OSError):
        return False
    return not [c for c in config_changes(old, cfg) if c.rule == "fixed"]


def check_records(cfg: RunConfig, run_dir: Path, found: tuple[dict, Path] | None, is_main: bool) -> None:
    """A run never starts over another run's records. A new run (or ``--resume auto`` that found no
    checkpoint, or a resume from a file elsewhere) in a directory holding config.yaml, metrics.jsonl,
    summary.json, report.md, eval/ or checkpoints of another run is refused, unless
    ``train.overwrite=true``, which deletes them first. ``--resume auto`` in the run's own directory
    whose checkpoints were all unreadable starts over (its own records)."""
    records = layout.run_records(run_dir)
    if not records:
        return
    if cfg.train.overwrite:
        if is_main:
            for name in (*layout.RUN_FILES, *layout.RUN_FOLDERS):
                target = run_dir / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
            print(f"mmcr: train.overwrite=true: deleted the previous run's {', '.join(records)} in {run_dir}",
                  flush=True)
        return
    resume = cfg.train.resume
    own = found is not None and found[1].resolve().parent == layout.checkpoint_dir(run_dir).resolve()
    if resume is not None and (own or _same_run(run_dir, cfg)):
        return  # the run's own directory: resumed, or started over from unreadable checkpoints
    shown = ", ".join(records)
    if resume is None:
        raise ConfigError(f"{run_dir} already holds a run ({shown}); pass --resume auto to continue it, choose "
                          "another --out, or --set train.overwrite=true to delete it and start over")
    raise ConfigError(f"{run_dir} holds another run's records ({shown}) and no checkpoint of this run to continue "
                      f"(--resume {resume}); choose another --out, or --set train.overwrite=true to delete them")


def find_resume_checkpoint(cfg: RunConfig, run_dir: Path, device: torch.device) -> tuple[dict, Path] | None:
    """The checkpoint to resume from (``train.resume``: None, ``auto``, a checkpoint file or another run's
    directory), or None for a new run."""
    resume = cfg.train.resume
    if resume is None:
        return None  # a directory with another run's files is refused (or cleared) by check_records
    if resume == "auto":
        found = ckpt.load_latest(run_dir, map_location=device, move_corrupt=True, require=ckpt.TRAINING)
        if found is None and (layout.checkpoint_dir(run_dir) / layout.CORRUPT_DIR).is_dir():
            warnings.warn(f"no readable checkpoint left in {layout.checkpoint_dir(run_dir)} (unreadable ones are in "
                          f"{layout.CORRUPT_DIR}/); starting this run from step 0", stacklevel=2)
        return found
    if Path(resume).is_dir():  # another run's directory: its newest readable checkpoint
        return ckpt.find_checkpoint(resume, map_location=device, require=ckpt.TRAINING)
    state = ckpt.read_checkpoint(resume, map_location=device, require=ckpt.TRAINING)
    return state, Path(resume)


def check_changes(saved: dict, cfg: RunConfig) -> list[ConfigChange]:
    """The config changes of a resume, refused with the list of differences where not allowed."""
    try:
        old = RunConfig.from_dict(saved["config"])
    except ConfigError as e:
        raise ConfigError(f"the checkpoint's config cannot be read by this version ({e})") from e
    changes = [c for c in config_changes(old, cfg) if c.path not in ("train.resume", "out")]
    fixed = [c for c in changes if c.rule == "fixed"]
    if fixed:
        raise ConfigError(
            "cannot resume with a different " + "; ".join(map(str, fixed)) + ": these define the run's weights or "
            "data order; resume with the checkpoint's values or start a new run with another --out"
        )
    needs = [c for c in changes if c.rule == "apply"]
    if needs and not cfg.train.allow_config_change:
        raise ConfigError(
            "resuming with changed options (" + "; ".join(map(str, needs)) + "); pass --set "
            "train.allow_config_change=true to apply them from this step on, or resume with the run's own values"
        )
    return changes


def data_signature(train_ds, val_ds, loader=None) -> dict:
    """What must stay the same for the data order of a resumed run to be the one it started (a shard
    stream's order also depends on its number of streams per rank, one per worker)."""
    out = {
        "n_train": len(train_ds),
        "n_val": 0 if val_ds is None else len(val_ds),
        "classes": len(train_ds.classes),
        "image_size": list(train_ds.image_size),
    }
    if getattr(loader, "streams", None) is not None:
        out["streams_per_rank"] = loader.streams
    return out


def check_data(saved: dict, signature: dict) -> None:
    old = saved.get("data_signature")
    if old is not None and old != signature:
        diff = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in signature.items() if old.get(k) != v)
        raise ConfigError(f"the training data differs from the checkpoint's ({diff}); resume with the same data "
                          "(it may move to another data.root, not change) or start a new run with another --out")


def check_world(saved: dict, world_size: int) -> None:
    saved_world = saved.get("world_size", 1)
    if saved_world != world_size:
        raise ConfigError(
            f"the checkpoint was written by {saved_world} process(es) but this run has {world_size}; "
            "resume with the same number of processes (the data order depends on it)"
        )


def apply_optimizer_settings(optimizer: torch.optim.Optimizer, wanted: list[dict],
                             scheduler: torch.optim.lr_scheduler.LambdaLR, base_lrs: list[float]) -> None:
    """After loading a checkpoint's optimiser and scheduler state, put back the hyperparameters of the
    current config (identical values when nothing changed): learning rate, weight decay, betas, ..."""
    for group, want in zip(optimizer.param_groups, wanted):
        for key, value in want.items():
            if key not in ("params", "initial_lr", "lr"):
                group[key] = value
    scheduler.base_lrs = list(base_lrs)
    for group, base, lam in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas):
        group["initial_lr"] = base
        group["lr"] = base * lam(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
