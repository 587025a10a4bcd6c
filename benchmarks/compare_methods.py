"""Equal-budget comparison of self-supervised objectives: MMCR (several view counts), SimCLR, Barlow Twins
and VICReg, each trained with the same backbone, projector, optimiser, image batch and wall-clock budget
on the CIFAR-10 training split of the shared archive, then evaluated on the test split by weighted kNN
and by the linear probe (regularisation chosen on a split of the training set, never on test).

The budget is wall-clock per method (``train.time_budget_s``), so a method that spends more compute per
image (more views) sees fewer images: that is the trade-off being compared. A random-init backbone is
reported as the floor. One table is printed and written to ``<out>/compare_table.md`` (and JSON).

CPU (2 cores), the default:
    .venv/bin/python benchmarks/compare_methods.py --budget-min 10
GPU, larger backbone and budget:
    python benchmarks/compare_methods.py --device cuda --backbone resnet18 --budget-min 60 --batch-size 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"
DEFAULT_METHODS = "mmcr:2,mmcr:4,mmcr:8,simclr:2,barlow_twins:2,vicreg:2"


def parse_methods(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        name, _, views = item.strip().partition(":")
        if name not in ("mmcr", "simclr", "barlow_twins", "vicreg"):
            raise ValueError(f"unknown method {name!r} in --methods; use mmcr, simclr, barlow_twins or vicreg")
        out.append((name, int(views or 2)))
    return out


def train_config(args, method: str, views: int, run_dir: Path) -> dict:
    """The shared recipe with only the objective and the view count changed."""
    from mmcr.run.config import load_config

    overrides = [
        f"name=compare-{method}-{views}",
        f"out={run_dir}",
        f"seed={args.seed}",
        "data.name=archive",
        f"data.root={args.archive}",
        f"data.cache_dir={args.out / 'cache'}",
        "data.val_fraction=0.0",  # no online monitor: every second of the budget goes to training
        "augment.preset=cifar",
        f"augment.views={views}",
        f"model.backbone={args.backbone}",
        "model.cifar_stem=true",
        f"model.projector.hidden=[{args.proj_hidden}]",
        f"model.projector.out_dim={args.proj_out}",
        f"objective.name={method}",
        "optim.name=adam",
        f"optim.lr={args.lr}",
        "optim.weight_decay=1e-6",
        "optim.schedule=constant",
        "train.epochs=100000",  # the time budget ends training
        f"train.batch_size={args.batch_size}",
        f"train.time_budget_s={args.budget_min * 60}",
        f"train.device={args.device}",
        "train.checkpoint_every_steps=0",
        "train.keep_checkpoints=1",
        "train.log_every_steps=20",
        f"train.progress={str(not args.no_progress).lower()}",
        "train.tensorboard=false",
        "eval.knn_every_epochs=0",
        "eval.final=false",
    ]
    if args.threads:
        overrides.append(f"train.threads={args.threads}")
    return load_config(None, overrides)


def evaluate(backbone, tf, train, test, args, device) -> dict:
    """kNN and linear probe of a frozen backbone on the test split (``tf``: the eval view)."""
    from mmcr.evaluate import extract_features, knn_accuracy, linear_probe

    n = len(train.labels) if args.eval_train is None else min(args.eval_train, len(train.labels))
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.sort(torch.randperm(len(train.labels), generator=g)[:n]).values
    t = time.perf_counter()
    ftr, _ = extract_features(backbone, train.images[idx], transform=tf, device=device, progress=not args.no_progress)
    fte, _ = extract_features(backbone, test.images, transform=tf, device=device, progress=not args.no_progress)
    ytr, yte = train.labels[idx], test.labels
    knn = knn_accuracy(ftr, ytr, fte, yte, k=200, temperature=0.1, num_classes=len(train.classes), device=device)
    lin = linear_probe(ftr, ytr, fte, yte, num_classes=len(train.classes), seed=args.seed, device=device)
    return {
        "knn_top1": knn["top1"],
        "knn_top5": knn["top5"],
        "linear_top1": lin["top1"],
        "linear_top5": lin["top5"],
        "linear_weight_decay": lin["weight_decay"],
        "eval_train_images": n,
        "eval_seconds": time.perf_counter() - t,
    }


def table(rows: list[dict]) -> str:
    head = "| method | views | steps | images seen | train s | kNN top-1 | linear top-1 | probe wd |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['views']} | {r.get('steps', '-')} | {r.get('images_seen', '-')} | "
            f"{r.get('train_seconds', 0):.0f} | {r['knn_top1']:.2f} | {r['linear_top1']:.2f} | "
            f"{r['linear_weight_decay']:g} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-min", type=float, default=10.0, help="wall-clock training minutes per method")
    ap.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method:views")
    ap.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="CIFAR-10 image-folder archive")
    ap.add_argument("--backbone", default="resnet_small")
    ap.add_argument("--proj-hidden", type=int, default=512)
    ap.add_argument("--proj-out", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64, help="images per step (all methods)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-train", type=int, default=None, help="training images used by kNN/probe (default all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "compare_methods")
    ap.add_argument("--no-random-baseline", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"CIFAR-10 archive not found: {args.archive} (pass --archive)")
    methods = parse_methods(args.methods)
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmcr.augment import MultiViewAugment
    from mmcr.data import load_dataset
    from mmcr.distributed import resolve_device
    from mmcr.evaluate import eval_transform_for
    from mmcr.models import load_pretrained
    from mmcr.train import train

    device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "cache"
    train_ds = load_dataset("archive", root=str(args.archive), split="train", cache_dir=str(cache))
    test_ds = load_dataset("archive", root=str(args.archive), split="test", cache_dir=str(cache))
    print(
        f"CIFAR-10: {len(train_ds.labels)} train / {len(test_ds.labels)} test images; device {device}; "
        f"budget {args.budget_min:g} min per method; backbone {args.backbone}"
    )
    rows = []
    for method, views in methods:
        run_dir = args.out / f"{method}-{views}"
        print(f"== {method} ({views} views): training for {args.budget_min:g} min -> {run_dir}")
        summary = train(train_config(args, method, views, run_dir))
        backbone, src = load_pretrained(run_dir)
        res = evaluate(backbone, eval_transform_for(src), train_ds, test_ds, args, device)
        row = {
            "method": method,
            "views": views,
            "steps": summary["steps"],
            "images_seen": summary["steps"] * args.batch_size,
            "train_seconds": summary["train_seconds"],
            **res,
        }
        rows.append(row)
        print(json.dumps(row))
    if not args.no_random_baseline:
        backbone, _ = load_pretrained(f"random:{args.backbone}")
        res = evaluate(backbone, MultiViewAugment("cifar").eval_transform(), train_ds, test_ds, args, device)
        rows.append({"method": "random init", "views": "-", "steps": 0, "images_seen": 0, "train_seconds": 0, **res})
    md = table(rows)
    meta = {
        "budget_min": args.budget_min,
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (args.out / "compare_results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.out / "compare_table.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
