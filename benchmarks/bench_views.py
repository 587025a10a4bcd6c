"""Memory and step time against views per image, with and without view-chunked backprop.

Every configuration runs in a fresh child process, so its peak resident memory (``ru_maxrss`` of that
child, from ``os.wait4``) is its own; the child builds the run exactly as ``mmcr pretrain`` does
(``mmcr.train.trainer.build_run``) and times ``train_step`` on real batches. Ratios are taken in the
same invocation, chunked against unchunked.

    python benchmarks/bench_views.py                     # k = 2, 8, 40, 128 at a fixed image batch (+ PNG)
    python benchmarks/bench_views.py --recipe            # the authors' CIFAR recipe at view_chunk all/320/160/80/40
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpeg.tar.gz"


def child(spec: dict) -> None:
    """Build the run of ``spec`` and time its steps; print one JSON line."""
    sys.path.insert(0, str(ROOT / "src"))
    import resource

    if spec.get("max_gib"):  # fail an allocation cleanly instead of waking the kernel's OOM killer
        lim = int(spec["max_gib"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    import torch

    from mmcr.distributed import DistInfo
    from mmcr.run.config import load_config
    from mmcr.train.step import train_step
    from mmcr.train.trainer import build_run

    torch.set_num_threads(spec["threads"])
    cfg = load_config(spec["preset"], spec["overrides"])
    run, state = build_run(cfg, Path(spec["out"]), DistInfo())
    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run.loader.set_epoch(0)
    it = iter(run.loader)
    times = []
    for _ in range(spec["warmup"] + spec["steps"]):
        images, _ = next(it)
        t = time.perf_counter()
        train_step(run.ctx, state, images)
        times.append(time.perf_counter() - t)
    print(json.dumps({"base_kb": base_kb, "times": times[spec["warmup"]:], "view_chunk": run.ctx.view_chunk}))


def _spawn_measure(spec: dict) -> dict:
    """Run ``spec`` in a child: its peak RSS (GiB), its RSS before the first step, its median step time.
    A forked waiter runs the child, so the waiter's RUSAGE_CHILDREN holds that one child only."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the waiter: runs the child, reports its rusage through the pipe
        os.close(r)
        cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        import resource

        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        msg = {"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr[-2000:], "peak_kb": peak}
        os.write(w, json.dumps(msg).encode())
        os.close(w)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    msg = json.loads(data)
    if msg["rc"] != 0:
        killed = msg["rc"] in (-9, 137)
        tail = msg["err"].strip().splitlines()[-1][:200] if msg["err"].strip() else f"exit {msg['rc']}"
        if "can't allocate memory" in tail or "MemoryError" in tail:
            tail = f"does not fit in {spec.get('max_gib')} GiB (allocation failed)"
        return {"error": "killed (out of memory)" if killed else tail}
    res = json.loads(msg["out"].strip().splitlines()[-1])
    return {"peak_gib": msg["peak_kb"] / 2**20, "base_gib": res["base_kb"] / 2**20,
            "step_s": statistics.median(res["times"]), "view_chunk": res["view_chunk"]}


def _data_overrides(archive: Path) -> list[str]:
    if archive.exists():
        return ["data.name=archive", f"data.root={archive}", "data.val_fraction=0"]
    return []  # the preset's own data (digits for the sweep)


def sweep(args) -> list[dict]:
    rows = []
    data = _data_overrides(args.archive) if args.archive else []
    preset = "cifar10-mini" if data else "digits"
    for k in args.views:
        row = {"k": k}
        for label, chunk in (("all", None), ("chunked", args.chunk)):
            over = data + [f"model.backbone={args.backbone}", f"augment.views={k}", f"train.batch_size={args.batch}",
                           "eval.knn_every_epochs=0", "eval.final=false", "train.progress=false"]
            if chunk is not None:
                over.append(f"train.view_chunk={chunk}")
            spec = {"preset": preset, "overrides": over, "threads": args.threads, "steps": args.steps,
                    "warmup": 1, "out": "/tmp/bench_views_run", "max_gib": args.max_gib}
            row[label] = _spawn_measure(spec)
            print(json.dumps({"k": k, label: row[label]}), flush=True)
        rows.append(row)
    return rows


def recipe(args) -> list[dict]:
    rows = []
    for backbone in args.backbones:
        for chunk in args.chunks:
            over = _data_overrides(args.archive) + [f"model.backbone={backbone}", "eval.knn_every_epochs=0",
                                                    "eval.final=false", "train.progress=false"]
            if chunk != "all":
                over.append(f"train.view_chunk={chunk}")
            spec = {"preset": "cifar10", "overrides": over, "threads": args.threads, "steps": args.steps,
                    "warmup": 1, "out": "/tmp/bench_views_run", "max_gib": args.max_gib}
            res = _spawn_measure(spec)
            row = {"backbone": backbone, "view_chunk": chunk, **res}
            if "step_s" in res:
                row["images_per_s"] = 32 / res["step_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for label, marker in (("all", "o"), ("chunked", "s")):
        pts = [(r["k"], r[label]["peak_gib"]) for r in rows if "peak_gib" in r[label]]
        if pts:
            ax.plot(*zip(*pts), marker=marker, label="unchunked" if label == "all" else "view-chunked")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("views per image (k)")
    ax.set_ylabel("peak resident memory (GiB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--recipe", action="store_true", help="the authors' CIFAR-10 recipe at several view chunks")
    ap.add_argument("--views", type=int, nargs="+", default=[2, 8, 40, 128])
    ap.add_argument("--batch", type=int, default=8, help="images per step (fixed) for the sweep")
    ap.add_argument("--chunk", type=int, default=64, help="views per chunk for the sweep")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--backbones", nargs="+", default=["resnet50", "resnet18"])
    ap.add_argument("--chunks", nargs="+", default=["all", "320", "160", "80", "40"])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--archive", type=Path, default=ARCHIVE)
    ap.add_argument("--max-gib", type=float, default=20.0,
                    help="address-space limit of each child, so that a configuration too large fails cleanly")
    ap.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "views_memory.png")
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    print(f"threads={args.threads} load average={os.getloadavg()} {time.strftime('%Y-%m-%d %H:%M %Z')}")
    if args.recipe:
        rows = recipe(args)
        print("\n| backbone | view_chunk | peak RSS (GiB) | before first step (GiB) | s/step | images/s |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            if "error" in r:
                print(f"| {r['backbone']} | {r['view_chunk']} | {r['error']} | | | |")
            else:
                print(f"| {r['backbone']} | {r['view_chunk']} | {r['peak_gib']:.2f} | {r['base_gib']:.2f} | "
                      f"{r['step_s']:.1f} | {r['images_per_s']:.2f} |")
        return
    rows = sweep(args)
    print(f"\n{args.backbone}, {args.batch} images per step, chunk {args.chunk} views")
    print("| k | views/step | unchunked peak (GiB) | chunked peak (GiB) | unchunked s/step | chunked s/step | "
          "time ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        a, c = r["all"], r["chunked"]
        fmt = lambda d, key, f: f"{d[key]:{f}}" if key in d else d.get("error", "-")  # noqa: E731
        ratio = f"{c['step_s'] / a['step_s']:.2f}x" if "step_s" in a and "step_s" in c else "-"
        print(f"| {r['k']} | {r['k'] * args.batch} | {fmt(a, 'peak_gib', '.2f')} | {fmt(c, 'peak_gib', '.2f')} | "
              f"{fmt(a, 'step_s', '.2f')} | {fmt(c, 'step_s', '.2f')} | {ratio} |")
    plot(rows, args.plot, f"{args.backbone}, {args.batch} images/step, chunk {args.chunk} views (CPU)")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
