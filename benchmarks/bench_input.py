"""Images per second per worker core of the full-image views against torchvision's ImageFolder path.

    .venv/bin/python benchmarks/bench_input.py [--quick] [--workers 0,2] [--images 400] [--rounds 3]

The benchmark writes JPEGs (quality 90) at ImageNet's size distribution: most are 500 px on the long
side at 4:3 or 3:2 in either orientation, a fifth smaller (long side 250-500 px), a tenth larger (long
side 600-1600 px); their content is crops of the two photographs that ship with scikit-learn, so the
files have a photograph's entropy (their mean size is printed). It then times, with the same number
of DataLoader workers and batch size, interleaved round by round in this process:

- baseline: ``torchvision.datasets.ImageFolder`` + ``RandomResizedCrop(224)`` + ``RandomHorizontalFlip``
  + ``ToTensor`` (the PIL path; with k views, the k transforms of one decoded image);
- files: ``imagefolder`` with ``lazy=True`` ``with_crops`` (mmcr.data.views: boxes on the original
  geometry, DCT-scaled decoding where the boxes allow, uint8 crops; the flip is on the device);
- shards: the same images written by ``mmcr data shard`` and read as ``webdataset``.

The cost per core is images per CPU second of the epoch (the workers' CPU time plus the main
process's), which other load on the machine changes far less than wall time; the wall-clock rate per
worker (first batch to last) is printed beside it. Rows give medians over the rounds and the ratio to the baseline
of the same round. Views are statistically equivalent (tests/test_data_views.py: KS tests of the boxes
against RandomResizedCrop.get_params; crops against torchvision's resized_crop).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from mmcr.data import CropSpec, load_dataset, make_loader
from mmcr.data.shardwrite import write_shards

MODES = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}


def imagenet_like_sizes(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(height, width) pairs around ImageNet's: 70 % 500 px long side (4:3 or 3:2), 20 % smaller, 10 % larger."""
    out = []
    for _ in range(n):
        u = rng.random()
        if u < 0.7:
            long, aspect = 500, (4 / 3, 3 / 2)[int(rng.random() < 0.3)]
        elif u < 0.9:
            long, aspect = int(rng.integers(250, 500)), float(rng.uniform(1.0, 1.6))
        else:
            long, aspect = int(rng.integers(600, 1601)), float(rng.uniform(1.2, 1.6))
        short = int(round(long / aspect))
        out.append((short, long) if rng.random() < 0.75 else (long, short))  # most photographs are landscape
    return out


def write_images(root: Path, n: int, classes: int = 10, seed: int = 0) -> float:
    """n JPEGs in root/train/<class>/; returns their mean size in KB."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    total = 0
    for i, (h, w) in enumerate(imagenet_like_sizes(n, rng)):
        src = photos[i % len(photos)]
        zoom = max(h / src.height, w / src.width) * float(rng.uniform(1.0, 1.5))
        big = src.resize((int(np.ceil(src.width * zoom)), int(np.ceil(src.height * zoom))), Image.BICUBIC)
        top, left = int(rng.integers(0, big.height - h + 1)), int(rng.integers(0, big.width - w + 1))
        img = big.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = root / "train" / f"c{i % classes}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=90)
        total += path.stat().st_size
    return total / n / 1024


class KViews:
    """The baseline's k views: the per-image transform applied k times to one decoded image."""

    def __init__(self, transform, k: int):
        self.transform, self.k = transform, k

    def __call__(self, img):
        return self.transform(img) if self.k == 1 else torch.stack([self.transform(img) for _ in range(self.k)])


def baseline_loader(root: Path, k: int, interpolation: str, batch: int, workers: int):
    from torchvision.datasets import ImageFolder

    tf = T.Compose([T.RandomResizedCrop(224, interpolation=MODES[interpolation]), T.RandomHorizontalFlip(),
                    T.ToTensor()])
    ds = ImageFolder(str(root / "train"), transform=KViews(tf, k))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)


def mmcr_loader(source, k: int, interpolation: str, batch: int, workers: int):
    spec = CropSpec(k, (224, 224), interpolation=interpolation, seed=0)
    loader = make_loader(source.with_crops(spec), batch_size=batch, seed=0, num_workers=workers)
    loader.set_epoch(0)
    return loader


def epoch_rates(loader) -> tuple[float, float]:
    """(images per CPU second, images per wall second) of one epoch.

    CPU seconds are all the epoch's: the worker processes' (from their start to their exit) plus this
    process's own (collation, transfer). That is the cost per core, which the machine's other load
    changes far less than wall time; the workers' start-up, the same for every pipeline, is in it, so
    ratios are if anything understated. Wall time runs from the first batch to the last."""
    cpu0 = _reaped_cpu() + time.process_time()
    it = iter(loader)
    n = next(it)[0].shape[0]
    t0, m = time.perf_counter(), 0
    for x, _ in it:
        m += x.shape[0]
    wall = time.perf_counter() - t0
    del it  # the workers exit and are reaped
    cpu = _reaped_cpu() + time.process_time() - cpu0
    return (n + m) / cpu, m / wall


def _reaped_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine() -> str:
    model = platform.processor() or "?"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")), model)
        flags = next((ln for ln in text.splitlines() if ln.startswith("Flags")), "")
        simd = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
    except OSError:
        simd = "?"
    return f"{model} ({simd}), {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="160 images, 2 rounds, 1 view, bilinear, 2 workers")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--workers", default="0,2", help="DataLoader workers, comma-separated (0: in this process)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--views", default="1,2", help="views per image to time, comma-separated")
    ap.add_argument("--interpolation", default="bilinear,bicubic", help="comma-separated: bilinear, bicubic")
    args = ap.parse_args()
    if args.quick:
        args.images, args.rounds, args.views, args.interpolation, args.workers = 160, 2, "1", "bilinear", "2"
    torch.set_num_threads(1)
    print(f"machine: {machine()}; load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        kb = write_images(root, args.images)
        most = max(1, *(int(w) for w in args.workers.split(",")))
        write_shards(root, Path(tmp) / "shards", shard_size=max(1, args.images // (4 * most)))
        files = load_dataset("imagefolder", root, split="train", lazy=True, size=256)
        shards = load_dataset("webdataset", Path(tmp) / "shards", split="train", size=256, shuffle_buffer=64)
        print(f"{args.images} JPEGs (quality 90, mean {kb:.0f} KB), batch {args.batch}, {args.rounds} round(s)")
        for workers in (int(w) for w in args.workers.split(",")):
            print(f"{workers} DataLoader worker(s)" + (" (decoding in this process)" if workers == 0 else ""))
            for interp in args.interpolation.split(","):
                for k in (int(v) for v in args.views.split(",")):
                    run_case(root, files, shards, k, interp, workers, args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def run_case(root, files, shards, k: int, interp: str, workers: int, args) -> None:
    rates = {"baseline": [], "files": [], "shards": []}
    for _ in range(args.rounds):  # interleaved: each round times every pipeline once
        rates["baseline"].append(epoch_rates(baseline_loader(root, k, interp, args.batch, workers)))
        rates["files"].append(epoch_rates(mmcr_loader(files, k, interp, args.batch, workers)))
        rates["shards"].append(epoch_rates(mmcr_loader(shards, k, interp, args.batch, workers)))
    base = rates["baseline"]
    for name, r in rates.items():
        cpu, wall = [c for c, _ in r], [w for _, w in r]
        line = (f"  k={k} {interp:8s} {name:8s} {statistics.median(cpu):6.1f} images per CPU second"
                f" ({statistics.median(wall) / max(1, workers):6.1f} per worker per wall second)")
        if name != "baseline":
            ratios = [a[0] / b[0] for a, b in zip(r, base)]
            walls = [a[1] / b[1] for a, b in zip(r, base)]
            line += (f"   x{statistics.median(ratios):.2f} per core (rounds {', '.join(f'{x:.2f}' for x in ratios)}),"
                     f" x{statistics.median(walls):.2f} wall")
        print(line)


if __name__ == "__main__":
    main()
