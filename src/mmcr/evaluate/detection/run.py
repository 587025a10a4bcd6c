"""``run_detection``: fine-tune a C4 Faster R-CNN from any source on a VOC protocol, resumably, under
torchrun or in one process, and record AP like every evaluation."""

from __future__ import annotations

import contextlib
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from torch import nn

from mmcr.data.voc import VOCDetectionData, VOCFormatError
from mmcr.distributed import cleanup, convert_sync_batchnorm, setup
from mmcr.evaluate.detection.config import flag_overrides, load_detection_config, protocol_schedule
from mmcr.evaluate.detection.data import (
    IndexedData,
    StreamSampler,
    TestBatches,
    collate_indexed,
    load_protocol_data,
    make_loader,
)
from mmcr.evaluate.detection.loop import param_groups, precise_bn, predict, train_loop
from mmcr.evaluate.detection.metrics import detection_ap, require_pycocotools
from mmcr.evaluate.detection.model import build_c4_detector
from mmcr.evaluate.features import eval_transform_for, progress_bar
from mmcr.evaluate.results import destination, output_dir, record_result
from mmcr.evaluate.sources import load_pretrained
from mmcr.rundir import layout
from mmcr.rundir.checkpoint import DETECTION, load_latest, save_checkpoint
from mmcr.rundir.files import open_append, write_text_atomic


def _settings_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _settings_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def _resolve(config, overrides, norm, workers, protocol, iterations, root) -> tuple[dict, dict, Path]:
    """The merged config, the protocol's schedule and the VOC root, checked before any work."""
    extra = flag_overrides(overrides, {"model.norm": ("--norm", norm), "solver.num_workers": ("--workers", workers)})
    cfg = load_detection_config(config, extra)
    sched = protocol_schedule(cfg, protocol, iterations)
    root = Path(root)
    if not root.exists():
        raise VOCFormatError(f"VOC root {root} does not exist; pass the folder that holds VOCdevkit/VOC2007")
    return cfg, sched, root


def _autocast_for(solver: dict, dev: torch.device):
    """A context factory: bfloat16 autocast where ``solver.amp`` asks for it (CUDA only), else nothing."""
    if solver["amp"] and dev.type != "cuda":
        raise ValueError("solver.amp (bfloat16 autocast) needs a CUDA device; set solver.amp=false")

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if solver["amp"] else contextlib.nullcontext()

    return autocast


def _work_dir(source, out, protocol: str) -> Path:
    base = Path(out).parent if out is not None and str(out).endswith(".json") else output_dir(source, out)
    return base / "detection" / protocol.replace("+", "_")


def _resume(model: nn.Module, opt, work: Path, restart: bool, di, same: dict, sched: dict) -> int:
    """The iteration to start from: 0, or the newest checkpoint's in ``work`` when its settings are
    these (``restart`` discards the checkpoints first)."""
    if restart and di.is_main:
        for _, f in layout.list_checkpoints(work):
            f.unlink()
    if di.enabled:
        dist.barrier()
    found = None if restart else load_latest(work, move_corrupt=di.is_main, require=DETECTION)
    if found is None:
        return 0
    state, path = found
    if state.get("kind") != "detection":
        raise ValueError(f"{path} is not a detection checkpoint; pass --restart or another --out")
    diff = _settings_diff(state["settings"], same)
    if diff:
        raise ValueError(
            f"{work} holds a detection run with other settings ({', '.join(diff[:4])} differ); "
            "pass --restart to discard it, or --out to work elsewhere"
        )
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{path} does not fit this detector ({' '.join(str(e).split())[:200]}); pass "
                         "--restart to discard it, or --out to work elsewhere") from e
    start = int(state["iteration"])
    if di.is_main:
        print(f"detection: resuming {work} at iteration {start} of {sched['iterations']}")
    return start


def _build(backbone, model_src, cfg: dict, di, dev: torch.device):
    """The detector on ``dev`` (BatchNorm synchronised under DDP when asked) and its SGD optimiser."""
    norm_stats = eval_transform_for(model_src)  # the normalisation the backbone was trained with
    model = build_c4_detector(backbone, cfg["model"], cfg["input"], mean=norm_stats.mean, std=norm_stats.std)
    if di.enabled and cfg["model"]["norm"] == "sync":
        model = convert_sync_batchnorm(model, dev)  # before the optimizer: the CPU variant makes new parameters
    model.to(dev)
    solver = cfg["solver"]
    opt = torch.optim.SGD(
        param_groups(model, solver["weight_decay"], solver["weight_decay_norm"]),
        lr=solver["lr"],
        momentum=solver["momentum"],
    )
    return model, opt


class _Trainer:
    """The training phase of one detection run: the resumable stream, the log and checkpoints."""

    def __init__(self, model, opt, cfg: dict, sched: dict, train_records, work: Path, same: dict, seed: int,
                 di, dev: torch.device, autocast):
        self.model, self.opt, self.cfg, self.sched, self.work, self.same = model, opt, cfg, sched, work, same
        self.seed, self.di, self.dev, self.autocast = seed, di, dev, autocast
        self.solver = cfg["solver"]
        self.train_ds = VOCDetectionData(train_records, keep_difficult=cfg["input"]["keep_difficult"])
        self.total = sched["iterations"]
        self.last: dict[str, float] = {}
        self.log = None

    def stream(self, a: int, b: int):
        s = StreamSampler(len(self.train_ds), self.solver["batch_size"], a, b, self.di.rank, self.di.world_size,
                          self.seed, self.cfg["input"]["flip"])
        return make_loader(self.train_ds, s, self.solver["num_workers"], self.dev.type == "cuda")

    def after_step(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        if self.log is not None and (step % self.solver["log_every"] == 0 or step == self.total):
            self.last = {k: float(v.detach()) for k, v in losses.items()}
            rec = {"iteration": step, "lr": self.opt.param_groups[0]["lr"], "loss": sum(self.last.values()),
                   **self.last}
            self.log.write(json.dumps(rec) + "\n")
            self.log.flush()
        every = self.solver["checkpoint_every"]
        if self.di.is_main and (step == self.total or (every > 0 and step % every == 0)):
            state = {"kind": "detection", "iteration": step, "model": self.model.state_dict(),
                     "optimizer": self.opt.state_dict(), "settings": self.same}
            save_checkpoint(state, self.work, step, keep=2)

    def run(self, start: int, progress: bool) -> int:
        """Iterations ``start .. total - 1``; the number taken."""
        net: nn.Module = self.model
        if self.di.enabled:
            ids = [self.dev.index] if self.dev.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        if self.di.is_main and start < self.total:
            self.log = open_append(self.work / "metrics.jsonl", "the detection log")
        try:
            with progress_bar(self.total - start, "detection train", enabled=progress and self.di.is_main) as advance:
                return train_loop(net, self.opt, self.stream(start, self.total), start, self.total, self.solver,
                                  self.sched["steps"], self.seed, self.di.rank, self.dev, self.autocast,
                                  lambda step, losses: (self.after_step(step, losses), advance()))
        finally:
            if self.log is not None:
                self.log.close()

    def precise_bn(self) -> int:
        n = self.solver["precise_bn_iters"]
        if n <= 0 or self.cfg["model"]["norm"] == "frozen" or self.total <= 0:
            return 0
        torch.manual_seed(self.seed * 1_000_003 + 2**20 + self.di.rank)
        return precise_bn(self.model, self.stream(self.total, self.total + n), self.dev, self.autocast)


def _test_ap(model, test_records, solver: dict, di, dev: torch.device, autocast, progress: bool) -> dict:
    """AP on the test set: each rank predicts its share, rank 0 scores them all, everyone gets the result."""
    mine = list(range(di.rank, len(test_records), di.world_size))
    test_loader = torch.utils.data.DataLoader(
        IndexedData(VOCDetectionData(test_records)),
        batch_sampler=TestBatches(mine, solver["test_batch_per_rank"]),
        collate_fn=collate_indexed,
        num_workers=solver["num_workers"],
        pin_memory=dev.type == "cuda",
    )
    preds = predict(model, test_loader, dev, autocast, progress and di.is_main, len(mine))
    if di.enabled:
        parts = [None] * di.world_size
        dist.all_gather_object(parts, preds)
        for p in parts:
            preds.update(p)
    result: dict[str, Any] = {}
    if di.is_main:
        gts = [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in test_records]
        result = detection_ap(gts, [preds[i] for i in range(len(test_records))])
    if di.enabled:
        box = [result]
        dist.broadcast_object_list(box, src=0)
        result = box[0]
    return result


def run_detection(
    source: str | Path,
    root: str | Path,
    protocol: str = "voc07+12",
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    iterations: int | None = None,
    norm: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    restart: bool = False,
    device: str = "auto",
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune a C4 Faster R-CNN from ``source`` on the protocol's VOC training sets and report AP,
    AP50 and AP75 on its test set. Run under ``torchrun`` for several GPUs.

    Work (config, metrics log, checkpoints) goes to ``<dir>/detection/<protocol>/`` where ``<dir>`` is
    the run directory (see :func:`mmcr.evaluate.results.output_dir`); running the same command again
    resumes from the newest checkpoint there (``restart=True`` discards them). The result is recorded
    like every evaluation (``eval/detection_<protocol>.json`` and a report line).

    Examples:
        The data set is checked before any training (a full run needs VOC and GPU hours):

        >>> from mmcr.evaluate.detection import run_detection
        >>> run_detection("random:resnet18", "/no/such/voc", device="cpu", progress=False)
        Traceback (most recent call last):
        mmcr.data.voc.VOCFormatError: VOC root /no/such/voc does not exist; pass the folder that holds VOCdevkit/VOC2007
        >>> result = run_detection("runs/mmcr-imagenet", "data/voc", protocol="voc07+12")  # doctest: +SKIP
        >>> {"AP", "AP50", "AP75"} <= set(result)  # doctest: +SKIP
        True
    """
    require_pycocotools()
    t_start = time.perf_counter()
    destination("detection", source, out)  # a bad --out is refused before any work
    cfg, sched, root = _resolve(config, overrides, norm, workers, protocol, iterations, root)
    was_initialised = dist.is_available() and dist.is_initialized()
    di = setup(device)
    try:
        dev = di.device
        autocast = _autocast_for(cfg["solver"], dev)
        torch.manual_seed(seed)  # random:<arch> sources and the new layers start from the seed
        backbone, model_src = load_pretrained(source)  # first: a refused source costs no data loading
        train_records, test_records = load_protocol_data(root, sched)
        work = _work_dir(source, out, protocol)
        settings = {"source": str(source), "protocol": protocol, "schedule": sched, "config": cfg, "seed": seed}
        same = copy.deepcopy(settings)  # what a resumed run must share with the checkpoint: not the knobs
        for k in ("num_workers", "log_every", "checkpoint_every", "test_batch_per_rank"):
            del same["config"]["solver"][k]
        model, opt = _build(backbone, model_src, cfg, di, dev)
        start = _resume(model, opt, work, restart, di, same, sched)
        if di.is_main:
            work.mkdir(parents=True, exist_ok=True)
            write_text_atomic(work / "config.yaml", yaml.safe_dump(settings, sort_keys=False), what="detection config")
        trainer = _Trainer(model, opt, cfg, sched, train_records, work, same, seed, di, dev, autocast)
        t_train = time.perf_counter()
        done = trainer.run(start, progress)
        train_seconds = time.perf_counter() - t_train
        n_bn = trainer.precise_bn()
        t_eval = time.perf_counter()
        result = _test_ap(model, test_records, cfg["solver"], di, dev, autocast, progress)
        result.update(_facts(protocol, sched, cfg, di, dev, train_records, test_records, start, n_bn, trainer.last))
        result.update({
            "train_seconds": train_seconds,
            "seconds_per_1000_iterations": 1000 * train_seconds / done if done else None,
            "eval_seconds": time.perf_counter() - t_eval,
            "seconds": time.perf_counter() - t_start,
            "work_dir": str(work),
            "step": model_src.step,
        })
        if di.is_main:
            result["json"] = str(
                record_result("detection", result, source, out, tag=protocol,
                              details=("AP", "AP50", "AP75", "iterations"))
            )
        return result
    finally:
        if not was_initialised:
            cleanup()


def _facts(protocol, sched, cfg, di, dev, train_records, test_records, start, n_bn, last) -> dict:
    """What the result records besides AP: the protocol, schedule, solver and where it ran."""
    solver = cfg["solver"]
    return {
        "protocol": protocol,
        "train_sets": sched["train"],
        "test_set": sched["test"],
        "iterations": sched["iterations"],
        "steps": sched["steps"],
        "batch_size": solver["batch_size"],
        "lr": solver["lr"],
        "norm": cfg["model"]["norm"],
        "world_size": di.world_size,
        "device": str(dev),
        "amp": solver["amp"],
        "n_train": len(train_records),
        "n_test": len(test_records),
        "resumed_from": start,
        "precise_bn_batches": n_bn,
        "final_losses": last,
        "metric": "pycocotools COCOeval bbox, 101-point interpolation, 100 detections per image, "
        "difficult objects ignored",
    }
