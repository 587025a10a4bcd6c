"""The training loop, one for every method and dataset, readable top to bottom:

    uint8 batch -> device augmentation (k views) -> encoder -> objective -> step

The trainer composes the library pieces (data, augment, models, objectives) and holds no
method-specific logic. Everything a resumed run needs to continue bit-for-bit is in the checkpoint:
model, momentum encoder, optimiser, scheduler, grad scaler, the augmentation generator, the global RNGs,
and the position in the data order (which is a pure function of seed, epoch and rank).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from mmcr.models import Encoder, MomentumEncoder, build_encoder
from mmcr.train import checkpoint as ckpt
from mmcr.train import distributed as dist_utils
from mmcr.train.config import ConfigError, dump_config
from mmcr.train.monitor import MetricsLog, ProgressDisplay
from mmcr.train.optim import base_lr, build_optimizer, build_scheduler


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive steps with a NaN/Inf loss or gradient."""


def resolve_run_dir(cfg: dict) -> Path:
    if cfg["out"]:
        return Path(cfg["out"])
    if cfg["train"]["resume"] == "auto":
        raise ConfigError("--resume auto needs the run directory: pass --out DIR of the run to continue")
    return Path("runs") / f"{cfg['name']}-{time.strftime('%Y%m%d-%H%M%S')}"


def _precision(cfg: dict, device: torch.device) -> torch.dtype | None:
    p = cfg["train"]["precision"]
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"fp32": None, "fp64": None, "bf16": torch.bfloat16, "fp16": torch.float16}[p]


def _rng_state(gen: torch.Generator, device: torch.device) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "augment": gen.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, gen: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    gen.set_state(state["augment"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def build_components(cfg: dict, device: torch.device) -> dict[str, Any]:
    """Data, augmentation, model and objective from a resolved config (no training state)."""
    from mmcr.augment import MultiViewAugment
    from mmcr.data import load_dataset, split_train_val
    from mmcr.objectives import build_objective

    dcfg = cfg["data"]
    full = load_dataset(
        dcfg["name"], root=dcfg["root"], split=dcfg["train_split"], cache_dir=dcfg["cache_dir"], **dcfg["options"]
    )
    if dcfg["val_fraction"] > 0:
        train_ds, val_ds = split_train_val(full, val_fraction=dcfg["val_fraction"], seed=cfg["seed"])
    else:
        train_ds, val_ds = full, None
    acfg = cfg["augment"]
    aug = MultiViewAugment(preset=acfg["preset"], views=acfg["views"], **acfg["overrides"])
    torch.manual_seed(cfg["seed"])
    model = build_encoder(cfg["model"])
    try:
        objective = build_objective(cfg["objective"]["name"], **cfg["objective"]["kwargs"])
    except TypeError as e:
        raise ConfigError(f"objective.kwargs rejected by {cfg['objective']['name']}: {e}") from e
    return {"train": train_ds, "val": val_ds, "augment": aug, "model": model, "objective": objective}


def _select_views(params, view_idx: torch.Tensor):
    """The rows ``view_idx`` of every per-view parameter tensor."""
    return type(params)(**{f.name: getattr(params, f.name)[view_idx] for f in dataclasses.fields(params)})


def augment_shard(aug, images: torch.Tensor, global_batch: int, info: dist_utils.DistInfo,
                  gen: torch.Generator) -> torch.Tensor:
    """Views of this rank's images, identical to the views those images get in a one-process run.

    Every rank draws the parameters of all ``global_batch * k`` views from the same generator state
    and keeps its own rows. The loader gives rank r the global-batch positions r, r + W, r + 2W, ...
    (interleaved shares, see mmcr.data.loader), so the views do not depend on the number of ranks.
    """
    b, _, h, w = images.shape
    params = aug.sample_params(global_batch, h, w, gen)
    if info.world_size > 1:
        pos = torch.arange(b) * info.world_size + info.rank
        view_idx = (pos[:, None] * aug.views + torch.arange(aug.views)).flatten()
        params = _select_views(params, view_idx)
    return aug.apply(images, params)


def train(cfg: dict) -> dict:
    """Run (or resume) pretraining for a resolved config; returns the run summary.

    Launch with ``torchrun --nproc-per-node N`` for data-parallel training: each rank trains on its
    shard of every global batch (``train.batch_size`` is the global batch in images).
    """
    info = dist_utils.setup(cfg["train"]["device"])
    try:
        return _train(cfg, info)
    finally:
        dist_utils.cleanup()


def _train(cfg: dict, info: dist_utils.DistInfo) -> dict:
    device = info.device
    tcfg, ocfg = cfg["train"], cfg["optim"]
    if tcfg["threads"]:
        torch.set_num_threads(int(tcfg["threads"]))
    global_batch = tcfg["batch_size"]
    if global_batch % info.world_size:
        raise ConfigError(f"train.batch_size={global_batch} must be divisible by the world size {info.world_size}")
    run_dir = resolve_run_dir(cfg)
    resume_state = _find_resume(cfg, run_dir, device)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        dump_config({**cfg, "out": str(run_dir)}, run_dir / "config.yaml")

    from mmcr.data import make_loader

    comp = build_components(cfg, device)
    train_ds, val_ds, aug, model, objective = (comp[k] for k in ("train", "val", "augment", "model", "objective"))
    loader = make_loader(
        train_ds,
        batch_size=global_batch // info.world_size,
        shuffle=True,
        drop_last=True,
        seed=cfg["seed"],
        rank=info.rank,
        world_size=info.world_size,
        num_workers=cfg["data"]["num_workers"],
    )
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"the training split has fewer images ({len(train_ds)}) than one global batch ({global_batch}); "
            "lower train.batch_size"
        )
    total_steps = tcfg["epochs"] * steps_per_epoch
    if tcfg["max_steps"] is not None:
        total_steps = min(total_steps, int(tcfg["max_steps"]))

    if cfg["model"]["sync_bn"] and info.enabled:
        model = dist_utils.convert_sync_batchnorm(model, device)
    # fp64 runs the whole model in double precision: slow, for numerical checks (e.g. 2-process == 1-process).
    param_dtype = torch.float64 if tcfg["precision"] == "fp64" else torch.float32
    model.to(device=device, dtype=param_dtype)
    if cfg["model"]["channels_last"]:
        model.to(memory_format=torch.channels_last)
    momentum = None
    mcfg = cfg["model"]["momentum"]
    if mcfg["enabled"]:
        momentum = MomentumEncoder(model, tau=mcfg["tau"], schedule=mcfg["schedule"]).to(device)
    optimizer = build_optimizer(model, ocfg, global_batch)
    scheduler = build_scheduler(optimizer, ocfg, total_steps, steps_per_epoch)
    amp_dtype = _precision(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    # Augmentation parameters are drawn on the CPU from one stream shared by all ranks (augment_shard).
    gen = torch.Generator().manual_seed(cfg["seed"] + 12345)

    step, epoch, start_batch, nonfinite_total = 0, 0, 0, 0
    if resume_state is not None:
        saved_world = resume_state.get("world_size", 1)
        if saved_world != info.world_size:
            raise ConfigError(
                f"the checkpoint was written by {saved_world} process(es) but this run has {info.world_size}; "
                "resume with the same number of processes (the data order depends on it)"
            )
        model.load_state_dict(resume_state["model"])
        if momentum is not None:
            momentum.module.load_state_dict(resume_state["momentum"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        step, epoch, start_batch = resume_state["step"], resume_state["epoch"], resume_state["batch_in_epoch"]
        nonfinite_total = resume_state.get("nonfinite_total", 0)
        rng = resume_state["rng"][info.rank] if isinstance(resume_state["rng"], list) else resume_state["rng"]
        _set_rng_state(rng, gen, device)

    net: nn.Module = model
    if info.enabled:
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
    fwd = torch.compile(net) if tcfg["compile"] else net

    log = MetricsLog(run_dir, enabled=info.is_main, tensorboard=tcfg["tensorboard"], truncate_after=step)
    views = cfg["augment"]["views"]
    if info.is_main:
        log.event(
            "start",
            step=step,
            world_size=info.world_size,
            device=str(device),
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            base_lr=base_lr(ocfg, global_batch),
            resumed=resume_state is not None,
        )

    def save(step_: int, epoch_: int, batch_in_epoch: int) -> None:
        rng = _rng_state(gen, device)
        rngs = _gather_objects(rng, info)
        if info.is_main:
            state = {
                "config": {**cfg, "out": str(run_dir)},
                "model": model.state_dict(),
                "momentum": momentum.module.state_dict() if momentum is not None else None,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "step": step_,
                "epoch": epoch_,
                "batch_in_epoch": batch_in_epoch,
                "nonfinite_total": nonfinite_total,
                "rng": rngs,
                "world_size": info.world_size,
            }
            ckpt.save_checkpoint(state, run_dir, step_, tcfg["keep_checkpoints"])

    progress = ProgressDisplay(total_steps, enabled=tcfg["progress"], initial=step, main=info.is_main)
    t_start = time.perf_counter()
    consecutive_bad = 0
    stopped_early = False
    timer = _Timer(device, sync=bool(os.environ.get("MMCR_SYNC_TIMING")))
    window = {"data": 0.0, "augment": 0.0, "forward_backward": 0.0, "objective": 0.0, "n": 0}
    try:
        while step < total_steps and epoch < tcfg["epochs"]:
            loader.set_epoch(epoch, start_batch=start_batch)
            batch_in_epoch = start_batch
            model.train()
            it = iter(loader)
            while step < total_steps:
                timer.start()
                try:
                    images, _ = next(it)
                except StopIteration:
                    break
                images = images.to(device, non_blocking=True)
                window["data"] += timer.lap()
                x = augment_shard(aug, images, global_batch, info, gen)  # (B, k, 3, h, w)
                B = x.shape[0]
                x = x.flatten(0, 1).to(param_dtype)
                if cfg["model"]["channels_last"]:
                    x = x.contiguous(memory_format=torch.channels_last)
                window["augment"] += timer.lap()
                autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
                with autocast:
                    z = fwd(x).view(B, views, -1)
                    z_m = momentum(x).view(B, views, -1) if momentum is not None else None
                t_fwd = timer.lap()
                optimizer.zero_grad(set_to_none=True)
                gnorm = None
                # A NaN/Inf embedding on any rank skips the step on every rank (the objective would reject it).
                finite = _all_true(torch.isfinite(z).all() & (z_m is None or torch.isfinite(z_m).all()), info)
                if finite:
                    # Objectives gather across ranks; DDP's gradient averaging then gives the gradient of the
                    # global-batch loss, so no rescaling here (see mmcr.objectives.distributed).
                    zf = z if z.dtype == torch.float64 else z.float()
                    loss = objective(zf, z_m.to(zf.dtype)) if z_m is not None else objective(zf)
                    window["objective"] += timer.lap()
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    if ocfg["grad_clip"]:
                        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), ocfg["grad_clip"])
                    finite = _all_finite(loss, model, info)
                else:
                    loss = torch.full((), float("nan"))
                if finite:
                    scaler.step(optimizer)
                    scaler.update()
                    consecutive_bad = 0
                else:
                    nonfinite_total += 1
                    consecutive_bad += 1
                    if consecutive_bad >= tcfg["max_nonfinite_steps"]:
                        raise NonFiniteLossError(
                            f"{consecutive_bad} consecutive steps had a NaN/Inf loss or gradient (step {step}); "
                            "lower optim.lr, set optim.grad_clip, or use train.precision=fp32"
                        )
                scheduler.step()
                if momentum is not None:
                    momentum.update(model, step, total_steps)
                window["forward_backward"] += t_fwd + timer.lap()
                window["n"] += 1
                step += 1
                batch_in_epoch += 1
                lr = optimizer.param_groups[0]["lr"]
                elapsed = time.perf_counter() - t_start
                progress.update(step, loss=loss.item(), lr=lr, images=global_batch, views=global_batch * views)
                if step % tcfg["log_every_steps"] == 0 or step == total_steps:
                    n = max(window.pop("n"), 1)
                    step_time = sum(window.values()) / n
                    comps = {k: float(v) for k, v in getattr(objective, "last_components", {}).items() if k != "loss"}
                    log.metrics(
                        step=step,
                        epoch=epoch + batch_in_epoch / steps_per_epoch,
                        loss=loss.item(),
                        lr=lr,
                        images_per_s=global_batch / max(step_time, 1e-12),
                        views_per_s=global_batch * views / max(step_time, 1e-12),
                        nonfinite_total=nonfinite_total,
                        grad_norm=float(gnorm) if gnorm is not None else None,
                        time={k: v / n for k, v in window.items()},
                        **comps,
                    )
                    window = {"data": 0.0, "augment": 0.0, "forward_backward": 0.0, "objective": 0.0, "n": 0}
                every = tcfg["checkpoint_every_steps"]
                if every and step % every == 0 and batch_in_epoch < steps_per_epoch:
                    save(step, epoch, batch_in_epoch)
                if tcfg["time_budget_s"] is not None and elapsed >= tcfg["time_budget_s"]:
                    stopped_early = True
                    break
            done_epoch = batch_in_epoch >= steps_per_epoch
            if done_epoch:
                epoch, start_batch = epoch + 1, 0
            else:
                start_batch = batch_in_epoch
            save(step, epoch, start_batch)
            every_epochs = cfg["eval"]["knn_every_epochs"]
            finished = step >= total_steps or stopped_early  # also mid-epoch (max_steps, time budget)
            if val_ds is not None and every_epochs and (
                (done_epoch and epoch % every_epochs == 0) or epoch == tcfg["epochs"] or finished
            ):
                acc = knn_monitor(model.backbone, train_ds, val_ds, aug, cfg, device, info)
                if info.is_main:
                    ep = epoch + start_batch / steps_per_epoch
                    log.metrics(step=step, epoch=ep, knn_val_top1=acc["top1"], knn_val_top5=acc["top5"])
                    progress.note(f"epoch {ep:g} (step {step}): kNN val top-1 {acc['top1']:.2f}%")
            if stopped_early:
                break
    finally:
        progress.close()
    train_time = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "steps": step,
        "epochs_completed": epoch,
        "train_seconds": train_time,
        "nonfinite_steps": nonfinite_total,
        "stopped_by_time_budget": stopped_early,
    }
    if cfg["eval"]["final"]:
        summary.update(final_evaluation(model, cfg, aug, device, info))
    if info.is_main:
        log.event("end", **summary)
        log.close()
        with open(run_dir / "summary.json", "w") as f:
            json.dump(summary, f, indent=2)
        from mmcr.train.report import write_report

        write_report(run_dir)
    return summary


def _find_resume(cfg: dict, run_dir: Path, device: torch.device) -> dict | None:
    resume = cfg["train"]["resume"]
    has_ckpts = any((run_dir / "checkpoints").glob("ckpt_*.pt"))
    if resume is None:
        if has_ckpts:
            raise ConfigError(
                f"{run_dir} already holds checkpoints; pass --resume auto to continue that run or choose another --out"
            )
        return None
    if resume == "auto":
        found = ckpt.load_latest(run_dir, map_location=device)
        return found[0] if found else None
    return ckpt.load_checkpoint_file(resume, map_location=device)


def _all_finite(loss: torch.Tensor, model: nn.Module, info: dist_utils.DistInfo) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    ok = torch.isfinite(loss.detach()).all()
    if grads:
        ok = ok & torch.stack([torch.isfinite(g).all() for g in grads]).all()
    return _all_true(ok, info)


def _all_true(ok: torch.Tensor | bool, info: dist_utils.DistInfo) -> bool:
    """True when ``ok`` holds on every rank."""
    flag = torch.as_tensor(ok, dtype=torch.float32).reshape(1)
    if info.enabled:
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() > 0)


def _gather_objects(obj: Any, info: dist_utils.DistInfo) -> Any:
    if not info.enabled:
        return obj
    out: list[Any] = [None] * info.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


class _Timer:
    """Wall-clock laps; with ``sync`` it waits for the accelerator so laps split GPU time honestly."""

    def __init__(self, device: torch.device, sync: bool):
        self.sync = sync and device.type == "cuda"
        self.t = 0.0

    def start(self) -> None:
        if self.sync:
            torch.cuda.synchronize()
        self.t = time.perf_counter()

    def lap(self) -> float:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


@torch.no_grad()
def _features(backbone: nn.Module, ds, transform, device, info: dist_utils.DistInfo, max_n: int | None = None):
    """Backbone features of a dataset, extracted in shards across ranks and gathered (every rank
    sees all of them: kNN over the whole split, never one rank's shard)."""
    from mmcr.data import make_loader

    labelled = torch.nonzero(ds.labels >= 0).flatten()
    if max_n is not None and len(labelled) > max_n:  # a seeded random subset, not the first (class-sorted) rows
        labelled = labelled[torch.randperm(len(labelled), generator=torch.Generator().manual_seed(0))[:max_n]]
        labelled = labelled.sort().values
    if len(labelled) < len(ds):
        ds = ds.subset(labelled)
    loader = make_loader(ds, batch_size=256, shuffle=False, drop_last=False, seed=0, rank=info.rank,
                         world_size=info.world_size)
    loader.set_epoch(0)
    was = backbone.training
    backbone.eval()
    dtype = next((p.dtype for p in backbone.parameters()), torch.float32)
    feats, labels = [], []
    for images, y in loader:
        feats.append(backbone(transform(images.to(device))[:, 0].to(dtype)).float())
        labels.append(y.to(device))
    backbone.train(was)
    f, y = torch.cat(feats), torch.cat(labels)
    if info.enabled:
        f, y = _gather_padded(f, y, info)
    return f.cpu(), y.cpu()


def _gather_padded(f: torch.Tensor, y: torch.Tensor, info: dist_utils.DistInfo):
    n = torch.tensor([f.shape[0]], device=f.device)
    sizes = [torch.zeros_like(n) for _ in range(info.world_size)]
    torch.distributed.all_gather(sizes, n)
    m = int(max(s.item() for s in sizes))
    fp = torch.zeros(m, f.shape[1], device=f.device, dtype=f.dtype)
    fp[: f.shape[0]] = f
    yp = torch.zeros(m, device=y.device, dtype=y.dtype)
    yp[: y.shape[0]] = y
    fs = [torch.zeros_like(fp) for _ in range(info.world_size)]
    ys = [torch.zeros_like(yp) for _ in range(info.world_size)]
    torch.distributed.all_gather(fs, fp)
    torch.distributed.all_gather(ys, yp)
    return (torch.cat([a[: int(s.item())] for a, s in zip(fs, sizes)]),
            torch.cat([a[: int(s.item())] for a, s in zip(ys, sizes)]))


def knn_monitor(backbone, train_ds, val_ds, aug, cfg, device, info) -> dict[str, float]:
    """Online kNN accuracy on the validation split carved from the training set (never the test split)."""
    from mmcr.evaluate.knn import knn_accuracy

    transform = aug.eval_transform()
    ftr, ytr = _features(backbone, train_ds, transform, device, info, cfg["eval"]["knn_max_train"])
    fva, yva = _features(backbone, val_ds, transform, device, info)
    ncls = len(train_ds.classes)
    return knn_accuracy(ftr, ytr, fva, yva, k=cfg["eval"]["knn_k"], temperature=cfg["eval"]["knn_temperature"],
                        num_classes=ncls)


def final_evaluation(model: Encoder, cfg: dict, aug, device, info) -> dict[str, float]:
    """kNN accuracy on the held-out test split of the learned backbone, of a random-init backbone of
    the same architecture, and of raw pixels (fractions). Final numbers only: nothing is selected on them."""
    from mmcr.data import load_dataset
    from mmcr.evaluate.knn import knn_accuracy

    dcfg = cfg["data"]
    try:
        # the labelled training split is the kNN memory bank (STL-10 pretrains on train+unlabeled)
        train_ds = load_dataset(dcfg["name"], root=dcfg["root"], split="train", cache_dir=dcfg["cache_dir"],
                                **dcfg["options"])
        test_ds = load_dataset(dcfg["name"], root=dcfg["root"], split=dcfg["test_split"],
                               cache_dir=dcfg["cache_dir"], **dcfg["options"])
    except (ValueError, FileNotFoundError) as e:
        return {"final_eval_skipped": str(e)}
    transform = aug.eval_transform()
    k, T = cfg["eval"]["knn_k"], cfg["eval"]["knn_temperature"]
    ncls = len(train_ds.classes)
    cap = cfg["eval"]["knn_max_train"]

    def score(backbone) -> float:
        ftr, ytr = _features(backbone, train_ds, transform, device, info, cap)
        fte, yte = _features(backbone, test_ds, transform, device, info)
        return knn_accuracy(ftr, ytr, fte, yte, k=k, temperature=T, num_classes=ncls)["top1"] / 100.0

    out = {"knn_learned": score(model.backbone)}
    g = torch.random.get_rng_state()
    torch.manual_seed(cfg["seed"])
    random_model = build_encoder(cfg["model"]).to(device)
    torch.random.set_rng_state(g)
    out["knn_random_init"] = score(random_model.backbone)
    out["knn_raw_pixels"] = score(_Pixels())
    out.update({"knn_k": k, "knn_temperature": T, "eval_split": dcfg["test_split"]})
    return out


class _Pixels(nn.Module):
    """Identity 'backbone' on the normalised pixels, the floor any representation should beat."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)
