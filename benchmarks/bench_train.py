"""Steady-state pretraining throughput (images/s, views/s) with the step time split into data,
augmentation, encoder forward+backward (with the optimiser step) and objective (forward+backward).

    python benchmarks/bench_train.py                      # cifar10-mini and cifar10 recipes, CPU
    python benchmarks/bench_train.py --device cuda --backbones resnet18 resnet50

Uses the shared CIFAR-10 archive when present (../shared/data/cifar10_jpeg.tar.gz), else random uint8
images of the same shape (the data figure then measures batch gathering only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mmcr.augment import MultiViewAugment  # noqa: E402
from mmcr.data import load_dataset, make_loader  # noqa: E402
from mmcr.models import build_encoder  # noqa: E402
from mmcr.objectives import build_objective  # noqa: E402
from mmcr.run.config import load_config  # noqa: E402
from mmcr.train.optim import build_optimizer  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(preset: str, backbone: str | None, device: torch.device, steps: int, warmup: int, views: int | None,
          batch: int | None, amp: bool, archive: Path = ARCHIVE) -> dict:
    overrides = []
    if backbone:
        overrides.append(f"model.backbone={backbone}")
    if views:
        overrides.append(f"augment.views={views}")
    if batch:
        overrides.append(f"train.batch_size={batch}")
    cfg = load_config(preset, overrides)
    if archive.exists():
        ds = load_dataset("archive", root=str(archive), split="train")
        source = "shared CIFAR-10 archive (cached)"
    else:
        g = torch.Generator().manual_seed(0)
        from mmcr.data import ImageDataset

        ds = ImageDataset(torch.randint(0, 256, (5000, 3, 32, 32), dtype=torch.uint8, generator=g),
                          torch.randint(0, 10, (5000,), generator=g), [str(i) for i in range(10)])
        source = "random uint8 images"
    B, k = cfg.train.batch_size, cfg.augment.views
    loader = make_loader(ds, batch_size=B, shuffle=True, drop_last=True, seed=0)
    loader.set_epoch(0)
    aug = MultiViewAugment.from_config(cfg.augment)
    torch.manual_seed(0)
    model = build_encoder(cfg.model).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    objective = build_objective(cfg.objective.name, **cfg.objective.kwargs)
    opt = build_optimizer(model, cfg.optim, B)
    gen = torch.Generator(device=device).manual_seed(0)
    it = iter(loader)
    times = {"data": [], "augment": [], "forward_backward": [], "objective": []}
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        try:
            images, _ = next(it)
        except StopIteration:
            it = iter(loader)
            images, _ = next(it)
        images = images.to(device, non_blocking=True)
        sync(device)
        t1 = time.perf_counter()
        x = aug(images, generator=gen).flatten(0, 1)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        sync(device)
        t2 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            z = model(x).view(B, k, -1)
        sync(device)
        t3 = time.perf_counter()
        zd = z.detach().float().requires_grad_(True)
        loss = objective(zd)
        loss.backward()
        sync(device)
        t4 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        z.float().backward(zd.grad)
        opt.step()
        sync(device)
        t5 = time.perf_counter()
        if i >= warmup:
            times["data"].append(t1 - t0)
            times["augment"].append(t2 - t1)
            times["forward_backward"].append((t3 - t2) + (t5 - t4))
            times["objective"].append(t4 - t3)
    med = {key: statistics.median(v) for key, v in times.items()}
    step = sum(med.values())
    return {
        "preset": preset,
        "backbone": cfg.model.backbone,
        "views": k,
        "batch": B,
        "source": source,
        "step_s": step,
        "images_per_s": B / step,
        "views_per_s": B * k / step,
        **{f"{key}_frac": v / step for key, v in med.items()},
        **{f"{key}_s": v for key, v in med.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", nargs="+", default=["cifar10-mini", "cifar10"])
    ap.add_argument("--backbones", nargs="+", default=[None], help="override the presets' backbone")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 on GPU; 10 mini / 2 full on CPU)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--archive", type=Path, default=ARCHIVE, help="CIFAR-10 image-folder archive")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    amp = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} bf16-autocast={amp}")
    header = (f"{'preset':14s} {'backbone':14s} {'k':>3s} {'B':>4s} {'img/s':>9s} {'views/s':>10s} "
              f"{'data':>6s} {'aug':>6s} {'fwd+bwd':>8s} {'obj':>6s} {'data+aug':>9s}")
    print(header)
    for preset in args.presets:
        for bb in args.backbones:
            full = "mini" not in preset
            steps = args.steps or (20 if device.type == "cuda" else (2 if full else 10))
            warmup = args.warmup if args.warmup is not None else (5 if device.type == "cuda" else 1)
            r = bench(preset, bb, device, steps, warmup, None, None, amp, args.archive)
            print(f"{r['preset']:14s} {r['backbone']:14s} {r['views']:3d} {r['batch']:4d} {r['images_per_s']:9.1f} "
                  f"{r['views_per_s']:10.0f} {100 * r['data_frac']:5.1f}% {100 * r['augment_frac']:5.1f}% "
                  f"{100 * r['forward_backward_frac']:7.1f}% {100 * r['objective_frac']:5.1f}% "
                  f"{100 * (r['data_frac'] + r['augment_frac']):8.1f}%", flush=True)
    print(f"data source: {r['source']}")


if __name__ == "__main__":
    main()
