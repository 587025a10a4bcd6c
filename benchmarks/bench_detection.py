"""Detection transfer (``mmcr eval detection``): cost of the R50-C4 protocol and learning on generated data.

    python benchmarks/bench_detection.py flops                  # FLOPs + CPU time of one R50-C4 iteration
    python benchmarks/bench_detection.py learn                  # synthetic shapes, trained vs untrained AP
    python benchmarks/bench_detection.py timing --device cuda   # s/iteration of the full preset (GPU check)

``flops`` counts the floating-point operations of one training forward+backward of the protocol's
model (random-init ResNet-50, 512 RoIs per image) on one image of VOC's typical size (500 x 375)
resized as the protocol does (shorter side 640, the mean of its 480..800 draws), with
``torch.utils.flop_counter`` (convolutions and matrix products; RoIAlign and NMS are not counted).
``timing`` writes VOC-format data of that size and runs the shipped preset unchanged except for the
iteration count, the batch (``--batch``) and a short test set: the figure to record when a GPU is lent.
No data or weights are downloaded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from mmcr.evaluate.detection import build_c4_detector, load_detection_config, run_detection  # noqa: E402
from mmcr.evaluate.sources import load_pretrained  # noqa: E402


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "uptime unavailable"


def flops(args) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    cfg = load_detection_config(None, ["input.min_size_train=[640]"])
    model = build_c4_detector(load_pretrained("random:resnet50")[0], cfg["model"], cfg["input"]).train()
    img = torch.rand(3, 375, 500)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(4, 2, generator=g) * torch.tensor([350.0, 250.0])
    boxes = torch.cat([xy, xy + 60 + torch.rand(4, 2, generator=g) * 90], 1)
    target = {"boxes": boxes, "labels": torch.tensor([1, 5, 9, 15])}
    for i in range(args.repeats + 1):
        counter = FlopCounterMode(display=False)
        t0, c0 = time.perf_counter(), time.process_time()
        with counter:
            losses = model([img], [target])
            sum(losses.values()).backward()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        model.zero_grad(set_to_none=True)
        total = counter.get_total_flops()
        by_module = counter.get_flop_counts()
        if i == 0 and args.repeats > 0:
            continue  # warm-up
        parts = {}
        for name in ("FasterRCNN.backbone", "FasterRCNN.rpn", "FasterRCNN.roi_heads"):
            parts[name.split(".")[-1]] = sum(by_module.get(name, {}).values()) / 1e12
        print(
            json.dumps(
                {
                    "image": "500x375 -> 853x640",
                    "rois_per_image": cfg["model"]["roi_batch_size_per_image"],
                    "tflop_fwd_bwd_per_image": round(total / 1e12, 3),
                    "tflop_by_part": {k: round(v, 3) for k, v in parts.items()},
                    "tflop_per_iteration_16_images": round(16 * total / 1e12, 1),
                    "cpu_wall_s_per_image": round(wall, 2),
                    "cpu_process_s": round(cpu, 2),
                    "threads": torch.get_num_threads(),
                    "uptime": _uptime(),
                }
            )
        )


def _voc_sized(root: Path, n_trainval: int, n_test: int, seed: int = 0) -> Path:
    """VOC-format data at VOC's typical image size (500 x 375), with a few boxes per image."""
    from test_evaluate_detection import _xml

    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / d).mkdir(parents=True, exist_ok=True)
    names = ["dog", "person", "car", "chair", "bird"]
    for split, n in (("trainval", n_trainval), ("test", n_test)):
        ids = []
        for k in range(n):
            iid = f"{split}_{k:05d}"
            img = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
            objs = []
            for _ in range(int(rng.integers(1, 5))):
                w, h = int(rng.integers(30, 300)), int(rng.integers(30, 250))
                x0, y0 = int(rng.integers(1, 500 - w)), int(rng.integers(1, 375 - h))
                img[y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
                objs.append((names[int(rng.integers(0, 5))], (x0, y0, x0 + w - 1, y0 + h - 1), False))
            Image.fromarray(img).save(base / "JPEGImages" / f"{iid}.jpg", quality=90)
            (base / "Annotations" / f"{iid}.xml").write_text(_xml(500, 375, objs))
            ids.append(iid)
        (base / "ImageSets/Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def timing(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = _voc_sized(Path(tmp) / "voc", max(args.batch * 4, 32), args.test_images)
        ov = [
            f"solver.batch_size={args.batch}",
            f"solver.lr={0.02 * args.batch / 16}",
            "solver.precise_bn_iters=0",
            "solver.checkpoint_every=0",
            f"solver.num_workers={args.workers}",
        ]
        if args.amp:
            ov.append("solver.amp=true")
        res = {}
        for iters in (args.warmup, args.warmup + args.iterations):
            res[iters] = run_detection(
                "random:resnet50", root, protocol="voc07", overrides=ov, iterations=iters, device=args.device,
                out=Path(tmp) / f"run{iters}", progress=False,
            )
        dt = res[args.warmup + args.iterations]["train_seconds"] - res[args.warmup]["train_seconds"]
        per_it = dt / args.iterations
        mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
        print(
            json.dumps(
                {
                    "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
                    "batch": args.batch,
                    "amp": args.amp,
                    "iterations_timed": args.iterations,
                    "s_per_iteration": round(per_it, 4),
                    "minutes_per_1000_iterations": round(per_it * 1000 / 60, 2),
                    "minutes_for_24000_iterations_at_batch_16": round(per_it * 16 / args.batch * 24000 / 60, 1),
                    "eval_s_per_test_image": round(res[args.warmup]["eval_seconds"] / args.test_images, 4),
                    "peak_gpu_memory_gib": None if mem is None else round(mem, 1),
                    "uptime": _uptime(),
                }
            )
        )


def learn(args) -> None:
    from test_evaluate_detection import SMALL, make_voc

    with tempfile.TemporaryDirectory() as tmp:
        root = make_voc(Path(tmp) / "voc", n_trainval=args.train_images, n_test=args.test_images, seed=args.data_seed)
        ov = [*SMALL, f"model.roi_resolution={args.roi_resolution}", f"model.roi_batch_size_per_image={args.rois}"]
        rows = []
        for seed in args.seeds:
            for iters in (0, args.iterations):
                r = run_detection(
                    f"random:{args.backbone}", root, protocol="voc07", overrides=ov, iterations=iters, seed=seed,
                    out=Path(tmp) / f"run{seed}_{iters}", progress=False,
                )
                rows.append({"seed": seed, "iterations": iters, "AP": round(r["AP"], 1), "AP50": round(r["AP50"], 1),
                             "AP75": round(r["AP75"], 1), "train_s": round(r["train_seconds"], 1)})
                print(json.dumps(rows[-1]), flush=True)
        print(json.dumps({"backbone": args.backbone, "train_images": args.train_images,
                          "test_images": args.test_images, "uptime": _uptime()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("flops")
    f.add_argument("--repeats", type=int, default=1)
    t = sub.add_parser("timing")
    t.add_argument("--device", default="cuda")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--warmup", type=int, default=5)
    t.add_argument("--iterations", type=int, default=50)
    t.add_argument("--test-images", type=int, default=16)
    t.add_argument("--workers", type=int, default=8)
    t.add_argument("--amp", action="store_true")
    ln = sub.add_parser("learn")
    ln.add_argument("--backbone", default="resnet_tiny")
    ln.add_argument("--train-images", type=int, default=200)
    ln.add_argument("--test-images", type=int, default=100)
    ln.add_argument("--iterations", type=int, default=1000)
    ln.add_argument("--roi-resolution", type=int, default=14)
    ln.add_argument("--rois", type=int, default=64)
    ln.add_argument("--seeds", type=int, nargs="+", default=[0])
    ln.add_argument("--data-seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    {"flops": flops, "timing": timing, "learn": learn}[args.mode](args)


if __name__ == "__main__":
    main()
