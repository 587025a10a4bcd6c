"""Views per second of MultiViewAugment against the authors' per-image PIL pipeline, same process.

    .venv/bin/python benchmarks/bench_augment.py [--reps 5] [--no-data] [--affine-only]

Both sides run on one CPU thread. The baseline is the authors' CIFAR recipe built from torchvision's
PIL transforms (RandomResizedCrop(32), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2,
ToTensor, Normalize), called 40 times per image as their data-loader workers do. The byol rows make
2 views at 224 px from 256 px images (the ImageNet recipe), against the same recipe in PIL. On a
CUDA machine the cifar preset is also timed on the GPU. With the shared CIFAR-10 archive present,
the decode-once and cached load times of mmcr.data are printed too. The affine rows time random affine
views (one batched grid_sample) against torchvision's RandomAffine called per view, and what they add to
the cifar preset.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def pil_round(pil: list, transforms: list, views: int) -> float:
    """Views/s of one pass of per-image PIL transforms over the images (view v uses transforms[v % len])."""
    t0 = time.perf_counter()
    for im in pil:
        torch.stack([transforms[v % len(transforms)](im) for v in range(views)])
    return len(pil) * views / (time.perf_counter() - t0)


def batched_round(aug: MultiViewAugment, images: torch.Tensor, calls: int, sync=lambda: None) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        aug(images)
    sync()
    return calls * images.shape[0] * aug.views / (time.perf_counter() - t0)


def compare(aug: MultiViewAugment, images: torch.Tensor, transforms: list, reps: int) -> tuple[float, float, float]:
    """Median views/s of both pipelines and the median of per-round ratios.

    Rounds alternate between the two pipelines so that load from other jobs on a shared machine
    hits both alike; the ratio of each round is taken before the median.
    """
    pil = [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).numpy()]
    aug(images)  # warm-up: weight tables, allocator
    ours, base, ratios = [], [], []
    for _ in range(reps):
        b = pil_round(pil, transforms, aug.views)
        a = batched_round(aug, images, 3)
        ours.append(a)
        base.append(b)
        ratios.append(a / b)
    return statistics.median(ours), statistics.median(base), statistics.median(ratios)


AFFINE = dict(degrees=15, translate=(0.1, 0.1), affine_scale=(0.9, 1.1), shear=10, affine_interpolation="bilinear")


def affine_rows(reps: int) -> list[tuple]:
    """Affine views: MultiViewAugment (affine only: identity crop, no colour) against torchvision's
    RandomAffine called once per view on each image tensor (v2, bilinear), rounds alternating; and the
    cifar preset with and without the same affine views (what affine adds to the whole pipeline)."""
    import torchvision.transforms.v2 as T2

    imgs = smooth_images(32, 32)
    only = MultiViewAugment("cifar", views=40, seed=0, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0,
                            grayscale_p=0.0, **AFFINE)
    tv = T2.Compose([T2.RandomAffine(degrees=15, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=10,
                                     interpolation=T2.InterpolationMode.BILINEAR),
                     T2.Normalize(CIFAR_MEAN, CIFAR_STD)])
    floats = [im.float() / 255 for im in imgs]

    def tv_round() -> float:
        t0 = time.perf_counter()
        for im in floats:
            torch.stack([tv(im) for _ in range(40)])
        return len(floats) * 40 / (time.perf_counter() - t0)

    only(imgs)
    ours, base, ratios = [], [], []
    for _ in range(reps):
        b = tv_round()
        a = batched_round(only, imgs, 3)
        ours.append(a)
        base.append(b)
        ratios.append(a / b)
    rows = [("affine only, 32 px, B=32, k=40", "CPU, 1 thread", statistics.median(ours), statistics.median(base),
             statistics.median(ratios), "torchvision RandomAffine per view")]
    plain, with_aff = MultiViewAugment("cifar", views=40, seed=0), MultiViewAugment("cifar", views=40, seed=0, **AFFINE)
    plain(imgs), with_aff(imgs)
    p_s, a_s = [], []
    for _ in range(reps):
        p_s.append(batched_round(plain, imgs, 3))
        a_s.append(batched_round(with_aff, imgs, 3))
    rows.append(("cifar + affine, 32 px, B=32, k=40", "CPU, 1 thread", statistics.median(a_s), statistics.median(p_s),
                 statistics.median(a_s) / statistics.median(p_s), "cifar preset without affine"))
    return rows


def time_device(aug: MultiViewAugment, images: torch.Tensor, reps: int) -> float:
    aug(images)
    torch.cuda.synchronize()
    return statistics.median(batched_round(aug, images, 10, torch.cuda.synchronize) for _ in range(reps))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-data", action="store_true", help="skip the data-loading timings")
    ap.add_argument("--affine-only", action="store_true", help="only the affine-view rows")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 CPU thread, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    aff = affine_rows(args.reps)
    print("\n| case | device | MultiViewAugment views/s | baseline views/s | ratio | baseline |")
    print("|---|---|---:|---:|---:|---|")
    for name, dev, a, b, r, what in aff:
        print(f"| {name} | {dev} | {a:,.0f} | {b:,.0f} | {r:.2f}x | {what} |")
    if args.affine_only:
        return
    rows = []

    imgs = smooth_images(32, 32)
    a, b, r = compare(MultiViewAugment("cifar", views=40, seed=0), imgs, [pil_cifar()], args.reps)
    rows.append(("cifar 32 px, B=32, k=40", "CPU, 1 thread", a, b, r))
    big = smooth_images(8, 256)
    byol_pil = [pil_byol(1.0, 0.0), pil_byol(0.1, 0.2)]
    a, b, r = compare(MultiViewAugment("byol", views=2, seed=0), big, byol_pil, max(2, args.reps // 2))
    rows.append(("byol 224 px from 256, B=8, k=2", "CPU, 1 thread", a, b, r))

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        g = time_device(MultiViewAugment("cifar", views=40, seed=0), smooth_images(1024, 32).cuda(), args.reps)
        rows.append(("cifar 32 px, B=1024, k=40", name, g, rows[0][3], g / rows[0][3]))
        g = time_device(MultiViewAugment("byol", views=2, seed=0), smooth_images(256, 256).cuda(), args.reps)
        rows.append(("byol 224 px from 256, B=256, k=2", name, g, rows[1][3], g / rows[1][3]))

    print("\n| case | device | MultiViewAugment views/s | PIL per-image views/s (1 thread) | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, dev, a, b, r in rows:
        print(f"| {name} | {dev} | {a:,.0f} | {b:,.0f} | {r:.1f}x |")

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
    main()
