"""Pretraining, one loop for every method and data set, readable top to bottom:

    train(cfg)            set up processes, build the run, restore a checkpoint, loop over epochs,
                          evaluate, write the summary and report
    train_one_epoch(...)  batches -> train_step (mmcr.train.step) -> hooks (log, checkpoint, stop)

The pieces live beside it: the step in ``step.py``, the state that checkpoints save and restore in
``state.py``, stopping and logging in ``hooks.py``, resuming in ``resume.py``. The trainer composes
the library (data, augment, models, objectives, evaluate) and holds no method-specific logic.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mmcr import distributed as D
from mmcr.augment import MultiViewAugment
from mmcr.augment.temporal import TemporalViews, WindowSampler
from mmcr.data import CropSpec, is_clip_set, load_dataset, make_clip_loader, make_loader, split_train_val
from mmcr.evaluate.geometry_monitor import GeometryProbe, GeometrySettings
from mmcr.evaluate.monitor import KnnSettings, final_evaluation, knn_top1
from mmcr.models import MomentumEncoder, build_encoder
from mmcr.objectives import build_objective
from mmcr.run.config import ConfigError, RunConfig, TemporalConfig, dump_config
from mmcr.rundir import checkpoint as ckpt
from mmcr.rundir import layout
from mmcr.rundir.files import write_text_atomic
from mmcr.rundir.metrics import MetricsLog
from mmcr.rundir.report import write_report
from mmcr.train import resume as R
from mmcr.train.chunked import resolve_view_chunk
from mmcr.train.context import StepContext
from mmcr.train.hooks import Interrupted, NonFiniteLossError, StepLogger, StopRule, StopSignals
from mmcr.train.optim import base_lr, build_optimizer, build_scheduler
from mmcr.train.progress import ProgressDisplay
from mmcr.train.state import NonFiniteCounter, TrainState, rng_state
from mmcr.train.step import train_step

__all__ = ["NonFiniteLossError", "Interrupted", "train", "train_one_epoch", "resolve_run_dir"]


def resolve_run_dir(cfg: RunConfig) -> Path:
    if cfg.out:
        out = Path(cfg.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a directory for the run (it is created if missing)")
        return out
    if cfg.train.resume == "auto":
        raise ConfigError("--resume auto needs the run directory: pass --out DIR of the run to continue")
    return Path("runs") / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass
class Run:
    """The fixed parts of a run, built once from its config."""

    cfg: RunConfig
    run_dir: Path
    dist_info: D.DistInfo
    train_ds: Any
    val_ds: Any
    loader: Any
    steps_per_epoch: int
    total_steps: int
    ctx: StepContext
    geometry: Any = None  # the GeometryProbe of eval.geometry_every_epochs, built at its first use

    @property
    def is_main(self) -> bool:
        return self.dist_info.is_main


def build_run(cfg: RunConfig, run_dir: Path, dist_info: D.DistInfo) -> tuple[Run, TrainState]:
    """Data, loader, augmentation, model, objective, optimiser and schedule from a config."""

    device, tc = dist_info.device, cfg.train
    global_batch = tc.batch_size
    if global_batch % dist_info.world_size:
        raise ConfigError(f"train.batch_size={global_batch} must be divisible by the world size {dist_info.world_size}")
    d = cfg.data
    full = load_dataset(d.name, root=d.root, split=d.train_split, cache_dir=d.cache_dir, **d.options)
    train_ds, val_ds = split_train_val(full, d.val_fraction, cfg.seed) if d.val_fraction > 0 else (full, None)
    clips = _check_temporal(cfg, full)
    if clips:  # a manifold is a window of a clip; its frames are the views
        augment = TemporalViews.from_config(cfg.augment, cfg.temporal, seed=cfg.seed)
    else:
        augment = MultiViewAugment.from_config(cfg.augment, seed=cfg.seed)
    small_augment = MultiViewAugment.small_crops_from_config(cfg.augment, seed=cfg.seed)
    per_rank = dict(batch_size=global_batch // dist_info.world_size, shuffle=True, drop_last=True, seed=cfg.seed,
                    rank=dist_info.rank, world_size=dist_info.world_size, num_workers=d.num_workers,
                    device=_data_device(train_ds, device))
    if clips:
        if d.full_image_views:
            raise ConfigError("data.full_image_views cuts views from still images; clips take temporal views: "
                              "set data.full_image_views=false")
        loader = make_clip_loader(train_ds, windows=WindowSampler.from_config(cfg.temporal, cfg.augment.views,
                                                                              cfg.seed), **per_rank)
    else:
        source, decode_device = _training_source(cfg, train_ds, augment, device)
        loader = make_loader(source, decode_device=decode_device, **per_rank)
    steps_per_epoch = len(loader)
    total_steps = tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.epochs * steps_per_epoch,
                                                                                 tc.max_steps)
    torch.manual_seed(cfg.seed)
    model = build_encoder(cfg.model)
    try:
        objective = build_objective(cfg.objective.name, **cfg.objective.kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"objective.kwargs rejected by {cfg.objective.name}: {e}") from e
    objective.check_finite = False  # the step replaces and counts non-finite embeddings without a host read
    if cfg.model.sync_bn and dist_info.enabled:
        model = D.convert_sync_batchnorm(model, device)
    param_dtype = torch.float64 if tc.precision == "fp64" else torch.float32  # fp64: numerical checks
    model.to(device=device, dtype=param_dtype)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    mc = cfg.model.momentum
    momentum = MomentumEncoder(model, tau=mc.tau, schedule=mc.schedule).to(device) if mc.enabled else None
    optimizer = build_optimizer(model, cfg.optim, global_batch)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps, steps_per_epoch)
    amp = _amp_dtype(tc.precision, device)
    state = TrainState(
        model=model, momentum=momentum, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=amp == torch.float16),
        # augmentation parameters are drawn on the host from one stream shared by all ranks (augment_shard)
        aug_generator=torch.Generator().manual_seed(cfg.seed + 12345),
        nonfinite=NonFiniteCounter(device),
    )
    local_views = global_batch // dist_info.world_size * cfg.augment.views
    probe = torch.zeros(2, 3, *augment.size, device=device, dtype=param_dtype)
    view_chunk = resolve_view_chunk(tc.view_chunk, model, probe, amp, tc.max_activation_gb, local_views)
    net: nn.Module = model
    ddp = None
    if dist_info.enabled:
        net = ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    ctx = StepContext(
        forward=torch.compile(net) if tc.compile else net, augment=augment, small_augment=small_augment,
        objective=objective, dist_info=dist_info, global_batch=global_batch, total_steps=total_steps,
        param_dtype=param_dtype, amp_dtype=amp, grad_clip=cfg.optim.grad_clip,
        channels_last=cfg.model.channels_last, view_chunk=view_chunk, ddp=ddp,
    )
    run = Run(cfg, run_dir, dist_info, train_ds, val_ds, loader, steps_per_epoch, total_steps, ctx)
    return run, state


def _training_source(cfg: RunConfig, ds, augment, device: torch.device):
    """What the loader decodes, and where its JPEGs are decoded: the training split itself, or with
    ``data.full_image_views`` its files as the augmentation's crops, cut from each full image by the
    workers (mmcr.data.views); the device then only flips, colours, blurs and solarises them."""

    d = cfg.data
    if not d.full_image_views:
        if d.decode_device != "cpu":
            raise ConfigError("data.decode_device=cuda decodes the full-image views; set data.full_image_views=true")
        return ds, None
    if not hasattr(ds, "with_crops"):
        raise ConfigError(f"data.full_image_views=true needs files decoded by workers: data.name=imagefolder with "
                          f"data.options.lazy=true, or data.name=webdataset (got data.name={d.name})")
    if cfg.augment.small_views or augment.color_first:
        what = "augment.small_views > 0" if cfg.augment.small_views else f"preset {augment.preset} (color_first)"
        raise ConfigError(f"{what} crops the decoded square on the device; with data.full_image_views=true use "
                          "augment.small_views=0 and a preset that crops before colouring")
    encoded = d.decode_device == "cuda"
    if encoded and device.type != "cuda":
        raise ConfigError(f"data.decode_device=cuda needs a CUDA training device (got {device}); use decode_device=cpu")
    spec = CropSpec(views=augment.views, size=augment.size, scale=augment.scale, ratio=augment.ratio,
                    interpolation=augment.interpolation, seed=cfg.seed)
    return ds.with_crops(spec, encoded=encoded), (device if encoded else None)


def _data_device(ds, device: torch.device) -> torch.device | None:
    """Keep an in-memory training set (images, or the frames of clips) on the accelerator when it takes
    under a quarter of its free memory: batches are then gathered there, with no host-to-device copy."""
    stored = getattr(ds, "images", getattr(ds, "frames", None))
    if device.type != "cuda" or stored is None:
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return device if stored.numel() < free // 4 else None


def _check_temporal(cfg: RunConfig, ds) -> bool:
    """Whether the run trains on clips (temporal views); the temporal section is refused for images,
    and multi-crop for clips, by name."""

    if not is_clip_set(ds):
        if cfg.temporal != TemporalConfig():
            raise ConfigError(f"temporal.* configure the windows of clip data sets (videofolder, framefolder, "
                              f"moving-digits, npz with videos_*); {cfg.data.name} holds still images: remove them")
        return False
    if cfg.augment.small_views:
        raise ConfigError("augment.small_views (multi-crop) is not available with temporal views; set it to 0")
    return True


def _check_finite_weights(run: Run, state: TrainState) -> None:
    """Before a checkpoint: weights that became NaN/Inf (updates that diverged, e.g. a huge optim.lr) stop
    the run with one line instead of being saved, so the previous checkpoint stays the newest."""
    bad = sum(int((~torch.isfinite(p)).sum()) for p in state.model.parameters())
    if bad:
        raise NonFiniteLossError(
            f"{bad} weight(s) became NaN/Inf by step {state.step} (the updates diverged: optim.lr="
            f"{run.cfg.optim.lr:g}, optim.weight_decay={run.cfg.optim.weight_decay:g}); not saved (earlier "
            "checkpoints are kept): lower optim.lr, set optim.grad_clip, or use train.precision=fp32")


def checkpoint_run(run: Run, state: TrainState) -> Path | None:
    _check_finite_weights(run, state)
    rngs = D.gather_objects(rng_state(state.aug_generator, run.dist_info.device), run.dist_info)
    payload = state.state_dict(rngs)  # every rank takes part (gathers); the main process writes
    if not run.is_main:
        return None
    payload.update(config=run.cfg.to_dict(), world_size=run.dist_info.world_size,
                   data_signature=R.data_signature(run.train_ds, run.val_ds, run.loader))
    return ckpt.save_checkpoint(payload, run.run_dir, state.step, run.cfg.train.keep_checkpoints)


def restore(run: Run, state: TrainState, found: tuple[dict, Path]) -> list:
    """Load a checkpoint into the freshly built state, applying the allowed config changes."""
    saved, path = found
    changes = R.check_changes(saved, run.cfg)
    R.check_world(saved, run.dist_info.world_size)
    R.check_data(saved, R.data_signature(run.train_ds, run.val_ds, run.loader))
    old_cfg = RunConfig.from_dict(saved["config"])
    wanted = [{k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups]
    skip = []
    if old_cfg.optim.name != run.cfg.optim.name:
        skip.append("optimizer")  # another optimiser's state cannot be loaded: it restarts (recorded)
    if _amp_dtype(old_cfg.train.precision, run.dist_info.device) != run.ctx.amp_dtype:
        skip.append("scaler")
    state.load_state_dict(saved, run.dist_info.rank, run.dist_info.device, skip=tuple(skip), where=str(path))
    R.apply_optimizer_settings(state.optimizer, wanted, state.scheduler,
                               [base_lr(run.cfg.optim, run.ctx.global_batch)] * len(wanted))
    if run.cfg.train.resume not in (None, "auto"):
        moved = ckpt.supersede_newer(run.run_dir, state.step) if run.is_main else []
        if moved:
            print(f"mmcr: moved {len(moved)} newer checkpoint(s) of the abandoned timeline to "
                  f"{layout.checkpoint_dir(run.run_dir) / layout.SUPERSEDED_DIR}", flush=True)
    return [str(c) for c in changes] + [f"{name} state restarted" for name in skip]


def train_one_epoch(run: Run, state: TrainState, logger: StepLogger, stop: StopRule) -> bool:
    """Train until the epoch ends or a stop rule fires (returns True then)."""
    loader, tc = run.loader, run.cfg.train
    loader.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
    state.model.train()
    for images, _ in loader:
        result = train_step(run.ctx, state, images.to(run.dist_info.device, non_blocking=True))
        last = state.step >= run.total_steps
        logger.after_step(state, result, last)
        every = tc.checkpoint_every_steps
        if every and state.step % every == 0 and state.batch_in_epoch < run.steps_per_epoch:
            checkpoint_run(run, state)
        if stop.check(state.step):
            return True
    return False


def train(cfg: RunConfig) -> dict:
    """Run (or resume) pretraining; returns the run summary (accuracies in percent).

    Launch with ``torchrun --nproc-per-node N`` for data-parallel training: each rank trains on its
    share of every global batch (``train.batch_size`` is the global batch in images).
    """
    dist_info = D.setup(cfg.train.device)
    lock = None
    try:
        if cfg.train.threads:
            torch.set_num_threads(_usable_threads(cfg.train.threads))
        run_dir = resolve_run_dir(cfg)
        lock = R.claim_run_dir(run_dir, dist_info)  # held until the run ends: a second process is refused
        return _train(cfg, dist_info, run_dir)
    finally:
        if lock is not None:
            lock.release()
        D.cleanup()


def _usable_threads(wanted: int) -> int:
    """``train.threads``, clamped (with a warning) to the cores this process may run on."""

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if wanted > cores:
        warnings.warn(f"train.threads={wanted} exceeds the {cores} CPU core(s) available; using {cores}",
                      stacklevel=3)
    return min(wanted, cores)


def _train(cfg: RunConfig, dist_info: D.DistInfo, run_dir: Path) -> dict:
    found = R.find_resume_checkpoint(cfg, run_dir, dist_info.device)
    R.check_records(cfg, run_dir, found, dist_info.is_main)
    run, state = build_run(cfg, run_dir, dist_info)
    changes = restore(run, state, found) if found is not None else []
    if run.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg.replace(out=str(run_dir)), run_dir / layout.CONFIG_FILE)
    tc = cfg.train
    log = MetricsLog(run_dir, enabled=run.is_main, tensorboard=tc.tensorboard, truncate_after=state.step)
    if run.is_main:
        log.event("start", step=state.step, world_size=dist_info.world_size, device=str(dist_info.device),
                  steps_per_epoch=run.steps_per_epoch, total_steps=run.total_steps,
                  base_lr=base_lr(cfg.optim, cfg.train.batch_size), resumed=found is not None,
                  view_chunk=run.ctx.view_chunk,
                  resumed_from=str(found[1]) if found else None, config_changes=changes)
    progress = ProgressDisplay(run.total_steps, enabled=tc.progress, initial=state.step, main=run.is_main)
    logger = StepLogger(log, progress, run.ctx.objective, tc.log_every_steps, tc.max_nonfinite_steps,
                        tc.batch_size, tc.batch_size * (cfg.augment.views + cfg.augment.small_views),
                        run.steps_per_epoch)
    with StopSignals() as signals:
        stop = StopRule(run.total_steps, tc.time_budget_s, tc.log_every_steps, signals, dist_info)
        if state.step == 0:
            _maybe_geometry(run, state, log, progress, finished=False, start=True)  # the random-init point
        try:
            while state.step < run.total_steps and state.epoch < tc.epochs:
                stopped = train_one_epoch(run, state, logger, stop)
                if state.batch_in_epoch >= run.steps_per_epoch:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                path = checkpoint_run(run, state)
                if stop.reason == "interrupt":
                    raise Interrupted(state.step, path)
                _maybe_monitor(run, state, log, progress, finished=stopped or state.step >= run.total_steps)
                if stopped:
                    break
        finally:
            progress.close()
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "steps": state.step,
        "epochs_completed": state.epoch,
        "train_seconds": stop.elapsed(),
        "nonfinite_steps": int(state.nonfinite.total.item()),
        "stopped_by": stop.reason or ("max_steps" if run.total_steps < tc.epochs * run.steps_per_epoch else "epochs"),
    }
    if cfg.eval.final:
        summary.update(_final_evaluation(run, state))
    if run.is_main:
        log.event("end", **summary)
        log.close()

        write_text_atomic(run_dir / layout.SUMMARY_FILE, json.dumps(summary, indent=2) + "\n", what="summary")
        write_report(run_dir)
    return summary


def _eval_transform(run: Run):
    return run.ctx.augment.eval_transform()


def _due(run: Run, state: TrainState, every: int, finished: bool) -> bool:
    """Whether an every-N-epochs evaluation on the validation split runs now (and always at the end)."""
    if run.val_ds is None or not every:
        return False
    done_epoch = state.batch_in_epoch == 0
    return finished or (done_epoch and state.epoch % every == 0) or state.epoch == run.cfg.train.epochs


def _maybe_monitor(run: Run, state: TrainState, log, progress, finished: bool) -> None:
    """The online kNN and the geometry on the validation split at their scheduled epochs and at the end."""
    _maybe_geometry(run, state, log, progress, finished)
    if not _due(run, state, run.cfg.eval.knn_every_epochs, finished):
        return

    acc = knn_top1(state.model.backbone, run.train_ds, run.val_ds, _eval_transform(run),
                   KnnSettings.from_config(run.cfg.eval), run.dist_info)
    if run.is_main:
        ep = state.epoch + state.batch_in_epoch / run.steps_per_epoch
        log.metrics(step=state.step, epoch=ep, knn_val_top1=acc["top1"], knn_val_top5=acc["top5"])
        progress.note(f"epoch {ep:g} (step {state.step}): kNN val top-1 {acc['top1']:.2f}%")


def _maybe_geometry(run: Run, state: TrainState, log, progress, finished: bool, start: bool = False) -> None:
    """Manifold geometry of a fixed validation subset (mmcr.evaluate.geometry_monitor), logged with its
    own cost in seconds (``geometry_s``); ``start``: the measurement of the initial weights."""
    every = run.cfg.eval.geometry_every_epochs
    if run.geometry is False or not (_due(run, state, every, finished) or (start and every and run.val_ds is not None)):
        return

    t0 = time.perf_counter()
    if run.geometry is None:
        try:
            run.geometry = GeometryProbe(run.val_ds, run.cfg.augment, _eval_transform(run),
                                         GeometrySettings.from_config(run.cfg.eval, run.cfg.seed), run.dist_info.device)
        except ValueError as e:  # a validation split it cannot measure: said once, training goes on
            run.geometry = False
            if run.is_main:
                warnings.warn(f"geometry during training skipped: {e}", stacklevel=2)
            return
    figures = run.geometry.measure(state.model.backbone)
    if run.is_main:
        ep = state.epoch + state.batch_in_epoch / run.steps_per_epoch
        log.metrics(step=state.step, epoch=ep, geometry_s=round(time.perf_counter() - t0, 4), **figures)
        shown = ", ".join(f"{k[4:]} {v:.3g}" for k, v in figures.items())
        progress.note(f"epoch {ep:g} (step {state.step}): geometry {shown}")


def _final_evaluation(run: Run, state: TrainState) -> dict:

    fork = torch.random.get_rng_state()
    torch.manual_seed(run.cfg.seed)  # the random-init twin is the run's own initialisation
    random_model = build_encoder(run.cfg.model).to(run.dist_info.device)
    torch.random.set_rng_state(fork)
    return final_evaluation(state.model.backbone, random_model.backbone, run.cfg, _eval_transform(run),
                            run.dist_info)
