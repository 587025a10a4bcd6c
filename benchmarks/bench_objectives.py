"""Forward+backward time of MMCRLoss against the authors' formulation (normalise, centroids,
torch.linalg.svdvals), measured in the same process, plus exactness against float64 SVD autograd.

Usage: python benchmarks/bench_objectives.py [--repeats N] [--quick]
Prints one table per thread setting (one thread, all threads) with median wall-clock and CPU times and the
speed-up of MMCRLoss over the authors' formulation for each. The "power-law" rows (not in issue 2's list) use
ill-conditioned centroids, as early in training, which take the float64 fallback of the Gram method.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from mmcr.objectives import MMCRLoss

# (B, k, d, lmbda) from issue 2.
SHAPES = [
    (32, 40, 128, 0.0),
    (32, 40, 128, 0.005),
    (256, 2, 512, 0.0),
    (2048, 2, 512, 0.0),
    (256, 2, 8192, 0.0),
]


def authors_loss(z: torch.Tensor, lmbda: float) -> torch.Tensor:
    """The published formulation: full singular values of centroids (and of each view matrix if lmbda > 0)."""
    z = F.normalize(z, dim=-1)
    loss = -torch.linalg.svdvals(z.mean(dim=1)).sum()
    if lmbda > 0:
        loss = loss + lmbda * torch.linalg.svdvals(z).sum(-1).mean()
    return loss


def make_input(b: int, k: int, d: int, spectrum: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if spectrum == "gaussian":
        return torch.randn(b, k, d, generator=g)
    # Power-law centroid spectrum (sigma_i ~ i^-1), like a partly trained encoder: ill-conditioned centroids.
    s = min(b, d)
    u, _ = torch.linalg.qr(torch.randn(b, s, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, s, generator=g, dtype=torch.float64))
    base = (u * torch.arange(1, s + 1, dtype=torch.float64).reciprocal()) @ v.T
    base = base / base.norm(dim=1, keepdim=True)
    noise = 0.3 * torch.randn(b, k, d, generator=g, dtype=torch.float64) / d**0.5
    return (base[:, None, :] + noise).float()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fwd_bwd(fns, z: torch.Tensor, repeats: int) -> tuple[list[float], list[float]]:
    """Median forward+backward wall and CPU milliseconds of each function, interleaved so that all see the
    same machine load. CPU time (this process, all threads) is robust to being descheduled on a shared
    machine; with one thread it is the latency an idle core would show."""
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for i in range(repeats + 2):
        for j, fn in enumerate(fns):
            x = z.detach().clone().requires_grad_(True)
            _sync(z.device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn(x).backward()
            _sync(z.device)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if i >= 2:  # two warm-up rounds
                wall[j].append(dt)
                cpu[j].append(dc)
    return [statistics.median(t) * 1e3 for t in wall], [statistics.median(t) * 1e3 for t in cpu]


def exactness(z: torch.Tensor, lmbda: float) -> tuple[float, float]:
    """Max relative value error and max-norm relative gradient error of MMCRLoss vs float64 SVD autograd."""
    x = z.detach().clone().requires_grad_(True)
    value = MMCRLoss(lmbda)(x)
    value.backward()
    x64 = z.detach().double().requires_grad_(True)
    ref = authors_loss(x64, lmbda)
    ref.backward()
    ev = abs(value.item() - ref.item()) / abs(ref.item())
    eg = ((x.grad.double() - x64.grad).abs().max() / x64.grad.abs().max()).item()
    return ev, eg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per cell (median reported)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, one thread only (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]; on CUDA the thread settings do not apply")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    repeats = 3 if args.quick else args.repeats
    all_threads = torch.get_num_threads()
    settings = [1] if args.quick else sorted({1, all_threads})
    if device.type == "cuda":
        settings = [all_threads]
        print(f"device: {torch.cuda.get_device_name(device)} (CPU time column = host time)")
    print(f"torch {torch.__version__}, cpu threads available: {all_threads}")
    rows = [(*s, "gaussian") for s in SHAPES] + [(2048, 2, 512, 0.0, "power-law"), (256, 2, 8192, 0.0, "power-law")]
    for threads in settings:
        torch.set_num_threads(threads)
        print(f"\n## {threads} thread(s)")
        print(
            "| B | k | d | lmbda | input | svdvals wall ms | MMCRLoss wall ms | wall speed-up "
            "| svdvals CPU ms | MMCRLoss CPU ms | CPU speed-up | value rel err | grad rel err |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for b, k, d, lmbda, spectrum in rows:
            z = make_input(b, k, d, spectrum).to(device)
            loss = MMCRLoss(lmbda)
            (w_ref, w_new), (c_ref, c_new) = time_fwd_bwd(
                [lambda x, lmbda=lmbda: authors_loss(x, lmbda), loss], z, repeats
            )
            ev, eg = exactness(z, lmbda)
            print(
                f"| {b} | {k} | {d} | {lmbda:g} | {spectrum} | {w_ref:.2f} | {w_new:.2f} | {w_ref / w_new:.2f}x "
                f"| {c_ref:.2f} | {c_new:.2f} | {c_ref / c_new:.2f}x | {ev:.1e} | {eg:.1e} |",
                flush=True,
            )
    torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
