"""Views per second of MultiViewAugment against the authors' per-image PIL pipeline, same process.

    .venv/bin/python benchmarks/bench_augment.py [--reps 5] [--no-data]

Both sides run on one CPU thread. The baseline is the authors' CIFAR recipe built from torchvision's
PIL transforms (RandomResizedCrop(32), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2,
ToTensor, Normalize), called 40 times per image as their data-loader workers do. The byol rows make
2 views at 224 px from 256 px images (the ImageNet recipe), against the same recipe in PIL. On a
CUDA machine the cifar preset is also timed on the GPU. With the shared CIFAR-10 archive present,
the decode-once and cached load times of mmcr.data are printed too.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from mmcr.augment import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, MultiViewAugment

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


def smooth_images(b: int, size: int, seed: int = 0) -> torch.Tensor:
    """Photo-like test images: smooth colour fields plus texture (the content does not change the cost)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, max(2, size // 8), max(2, size // 8), generator=g)
    x = torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False)
    x = (0.85 * x + 0.15 * torch.rand(b, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


def pil_cifar() -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(32),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            T.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )


def pil_byol(blur_p: float, solarize_p: float) -> T.Compose:
    return T.Compose(
        [
            T.RandomResizedCrop(224, interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([T.GaussianBlur(23, (0.1, 2.0))], p=blur_p),
            T.RandomSolarize(128, p=solarize_p),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def time_pil(images: torch.Tensor, transforms: list, views: int, reps: int) -> float:
    """Median views/s of per-image PIL transforms (view v uses transforms[v % len])."""
    pil = [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).numpy()]
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for im in pil:
            torch.stack([transforms[v % len(transforms)](im) for v in range(views)])
        rates.append(len(pil) * views / (time.perf_counter() - t0))
    return statistics.median(rates)


def time_batched(aug: MultiViewAugment, images: torch.Tensor, reps: int, sync=lambda: None) -> float:
    aug(images)  # warm-up: resize tables, allocator
    sync()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        aug(images)
        sync()
        rates.append(images.shape[0] * aug.views / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-data", action="store_true", help="skip the data-loading timings")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 CPU thread, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    rows = []

    imgs = smooth_images(32, 32)
    pil = time_pil(imgs, [pil_cifar()], 40, max(2, args.reps // 2))
    ours = time_batched(MultiViewAugment("cifar", views=40, seed=0), imgs, args.reps)
    rows.append(("cifar 32 px, B=32, k=40", "CPU 1 thread", ours, pil))

    big = smooth_images(8, 256)
    pil_b = time_pil(big, [pil_byol(1.0, 0.0), pil_byol(0.1, 0.2)], 2, max(2, args.reps // 2))
    ours_b = time_batched(MultiViewAugment("byol", views=2, seed=0), big, args.reps)
    rows.append(("byol 224 px from 256, B=8, k=2", "CPU 1 thread", ours_b, pil_b))

    if torch.cuda.is_available():
        torch.set_num_threads(4)
        dev_imgs = smooth_images(512, 32).cuda()
        ours_g = time_batched(MultiViewAugment("cifar", views=40, seed=0), dev_imgs, args.reps, torch.cuda.synchronize)
        rows.append(("cifar 32 px, B=512, k=40", torch.cuda.get_device_name(), ours_g, pil))
        dev_big = smooth_images(64, 256).cuda()
        ours_gb = time_batched(MultiViewAugment("byol", views=2, seed=0), dev_big, args.reps, torch.cuda.synchronize)
        rows.append(("byol 224 px from 256, B=64, k=2", torch.cuda.get_device_name(), ours_gb, pil_b))

    print("\n| case | device | MultiViewAugment views/s | PIL per-image views/s (1 thread) | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, dev, a, b in rows:
        print(f"| {name} | {dev} | {a:,.0f} | {b:,.0f} | {a / b:.1f}x |")

    if not args.no_data and ARCHIVE.exists():
        from mmcr.data import load_dataset

        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            load_dataset("archive", ARCHIVE, split="train", cache_dir=cache)
            decode = time.perf_counter() - t0
            loads = []
            for _ in range(3):
                t0 = time.perf_counter()
                ds = load_dataset("archive", ARCHIVE, split="train", cache_dir=cache)
                loads.append(time.perf_counter() - t0)
            print(
                f"\ndata: decode {ARCHIVE.name} once (all splits) {decode:.1f} s; cached load of train "
                f"({len(ds)} images) median {statistics.median(loads):.3f} s"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
