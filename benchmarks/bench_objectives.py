"""Forward+backward time and exactness of MMCRLoss against the authors' formulation (normalise, centroids,
torch.linalg.svdvals), on inputs that look like training next to Gaussian ones.

Usage: python benchmarks/bench_objectives.py [--repeats N] [--quick] [--device cpu|cuda] [--threads N ...]
                                             [--families ...] [--encoder-cache DIR] [--methods]

Input families (z of shape (B, k, d), float32):
- gaussian: z ~ N(0, 1), the convenient case (well-conditioned centroids);
- power-law-0.5 / -1 / -2: centroid directions with singular values ~ i^-alpha, unit rows, plus view noise of
  norm 0.3 / 0.1 / 0.01 (the issue's examples of partly trained encoders);
- random-init: projector outputs of a randomly initialised encoder on real images;
- trained: the same encoder after pretraining with the digits preset;
- near-collapsed: every image within 1e-3 of one direction (collapse at initialisation).
The encoders are the digits preset's (resnet_tiny with the CIFAR stem) with the projector widened
to [512] -> d (the authors' CIFAR head width; a hidden layer narrower than B would make C exactly
rank-deficient), in train mode (batch statistics), on scikit-learn's digits (1,797 images; horizontally
flipped copies are added when B is larger). The trained encoders are run directories of
``mmcr pretrain digits --set model.projector.hidden=[512] --set model.projector.out_dim=<d>`` in ``--encoder-cache``
(default runs/bench_objectives/d<d>); with ``--train-encoders`` missing ones are trained there first (a few
minutes each on a CPU), otherwise the "trained" rows of a missing d are skipped with a note.

For each thread setting (one thread, all threads) the table gives median wall-clock and process CPU times of
forward+backward, interleaved so that both formulations see the same machine load, and the relative Frobenius
error of the gradient w.r.t. z of each against the same formulation in float64 with SVD autograd (minimum-norm
subgradient where a matrix is exactly rank-deficient, see :func:`reference`). ``--methods``
adds a table of the nuclear norm alone (fwd+bwd of the centroid matrix) for each method of
``mmcr.objectives.nuclear_norm``, the measurement behind "auto".
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from mmcr.objectives import MMCRLoss, nuclear_norm

# (B, k, d, lmbda): the CIFAR recipe with and without the local term, ImageNet-like batches and the
# 8192-dimensional head.
SHAPES = [
    (32, 40, 128, 0.0),
    (32, 40, 128, 0.005),
    (256, 2, 512, 0.0),
    (2048, 2, 512, 0.0),
    (256, 2, 8192, 0.0),
]
FAMILIES = ["gaussian", "power-law-0.5", "power-law-1", "power-law-2", "random-init", "trained", "near-collapsed"]
POWER_LAW_NOISE = {"0.5": 0.3, "1": 0.1, "2": 0.01}


def authors_loss(z: torch.Tensor, lmbda: float) -> torch.Tensor:
    """The published formulation: full singular values of centroids (and of each view matrix if lmbda > 0)."""
    z = F.normalize(z, dim=-1)
    loss = -torch.linalg.svdvals(z.mean(dim=1)).sum()
    if lmbda > 0:
        loss = loss + lmbda * torch.linalg.svdvals(z).sum(-1).mean()
    return loss


def power_law(b: int, k: int, d: int, alpha: float, noise: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = min(b, d)
    u, _ = torch.linalg.qr(torch.randn(b, s, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(d, s, generator=g, dtype=torch.float64))
    base = (u * torch.arange(1, s + 1, dtype=torch.float64) ** -alpha) @ v.T
    base = base / base.norm(dim=1, keepdim=True)
    return (base[:, None, :] + noise * torch.randn(b, k, d, generator=g, dtype=torch.float64) / d**0.5).float()


def near_collapsed(b: int, k: int, d: int, seed: int, spread: float = 1e-3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    per_image = spread * torch.randn(b, 1, d, generator=g, dtype=torch.float64) / d**0.5
    per_view = 0.1 * spread * torch.randn(b, k, d, generator=g, dtype=torch.float64) / d**0.5
    return (mu / mu.norm() + per_image + per_view).float()


def _encoder_config(k: int, d: int):
    from mmcr.run.config import load_config

    return load_config("digits", ["model.projector.hidden=[512]", f"model.projector.out_dim={d}", f"augment.views={k}"])


def trained_state(d: int, cache: Path, train_missing: bool) -> dict | None:
    """Encoder weights after the digits preset's pretraining at output dimension d (None if not available)."""
    from mmcr.rundir import layout
    from mmcr.rundir.checkpoint import find_checkpoint

    run = cache / f"d{d}"
    if not (run.is_dir() and layout.list_checkpoints(run)):
        if not train_missing:
            return None
        from mmcr.train.trainer import train

        cfg = _encoder_config(16, d)  # the preset's own 16 views for training
        cfg.out = str(run)
        cfg.train.progress = False
        print(f"training the digits preset at d={d} into {run} (once) ...", flush=True)
        train(cfg)
    return find_checkpoint(run)[0]["model"]


def encoder_embeddings(b: int, k: int, d: int, state: dict | None, seed: int) -> torch.Tensor:
    """Projector outputs (B, k, d) of the digits preset's encoder (random init or ``state``) on digits."""
    from mmcr.augment import MultiViewAugment
    from mmcr.data import load_dataset
    from mmcr.evaluate.sources import build_encoder

    cfg = _encoder_config(k, d)
    torch.manual_seed(seed)
    encoder = build_encoder(cfg.model)
    if state is not None:
        encoder.load_state_dict(state)
    images = load_dataset("digits", split="all", **cfg.data.options).images
    if b > len(images):
        images = torch.cat([images, images.flip(-1)])
    if b > len(images):
        raise SystemExit(f"the encoder families have {len(images)} distinct images; B={b} is too large")
    g = torch.Generator().manual_seed(seed)
    images = images[torch.randperm(len(images), generator=g)[:b]]
    aug = MultiViewAugment.from_config(cfg.augment, views=k)
    views = aug.apply(images, aug.sample_params(b, images.shape[-2], images.shape[-1], g))
    encoder.train()
    with torch.no_grad():
        return encoder(views.flatten(0, 1)).reshape(b, k, d).float()


def make_input(
    family: str, b: int, k: int, d: int, cache: Path, seed: int = 0, train_missing: bool = False
) -> torch.Tensor | None:
    if family == "gaussian":
        return torch.randn(b, k, d, generator=torch.Generator().manual_seed(seed))
    if family.startswith("power-law-"):
        alpha = family.rsplit("-", 1)[1]
        return power_law(b, k, d, float(alpha), POWER_LAW_NOISE[alpha], seed)
    if family == "near-collapsed":
        return near_collapsed(b, k, d, seed)
    if family == "random-init":
        return encoder_embeddings(b, k, d, None, seed)
    if family == "trained":
        state = trained_state(d, cache, train_missing)
        return None if state is None else encoder_embeddings(b, k, d, state, seed)
    raise SystemExit(f"unknown family {family!r}; choose from {FAMILIES}")


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


def _grad(fn, z: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = z.detach().clone().requires_grad_(True)
    value = fn(x)
    value.backward()
    return value.item(), x.grad.double().cpu()


def _polar64(x: torch.Tensor) -> torch.Tensor:
    """U_r V_r^T of a float64 SVD over the singular values above its own rounding noise (max(m, n) eps64 sigma_1)."""
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    keep = s > max(x.shape[-2:]) * torch.finfo(torch.float64).eps * s[..., :1]
    return (u * keep.unsqueeze(-2)) @ vh


def reference(z: torch.Tensor, lmbda: float) -> tuple[float, torch.Tensor]:
    """The authors' formulation in float64 with SVD autograd: value and gradient w.r.t. z. The gradient of each
    nuclear norm is chained as its SVD polar factor, which is what svdvals' autograd returns, except that an
    exactly rank-deficient matrix (two identical augmented views, say) gets the minimum-norm subgradient instead
    of an arbitrary direction for its numerically-zero singular values."""
    x = z.detach().double().requires_grad_(True)
    views = F.normalize(x, dim=-1)
    c = views.mean(1)
    value = -torch.linalg.svdvals(c.detach()).sum()
    surrogate = -(c * _polar64(c.detach())).sum()
    if lmbda > 0:
        value = value + lmbda * torch.linalg.svdvals(views.detach()).sum(-1).mean()
        surrogate = surrogate + lmbda * (views * _polar64(views.detach())).sum() / z.shape[0]
    surrogate.backward()
    return value.item(), x.grad.cpu()


def exactness(z: torch.Tensor, lmbda: float) -> tuple[float, float, float]:
    """Relative value error of MMCRLoss and relative Frobenius gradient errors of MMCRLoss and of the authors'
    float32 formulation, all against the float64 formulation (:func:`reference`)."""
    ref_value, ref_grad = reference(z, lmbda)
    value, grad = _grad(MMCRLoss(lmbda), z)
    _, grad_authors = _grad(lambda x: authors_loss(x, lmbda), z)
    norm = ref_grad.norm()
    return (
        abs(value - ref_value) / abs(ref_value),
        ((grad - ref_grad).norm() / norm).item(),
        ((grad_authors - ref_grad).norm() / norm).item(),
    )


def method_table(families: list[str], cache: Path, repeats: int, device: torch.device) -> None:
    """fwd+bwd of nuclear_norm on each shape's centroid matrix for every method (the measurement behind auto),
    for the Gaussian and the power-law-2 family (the matmul-only method takes seconds per call on a CPU)."""
    methods = ["gram", "newton_schulz", "svd"]
    families = [f for f in families if f in ("gaussian", "power-law-2")]
    repeats = min(repeats, 3)
    print("\n## nuclear_norm alone: fwd+bwd ms (CPU time; wall on CUDA) of the centroid matrix C (B x d)")
    print("| B | d | input | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    seen = set()
    for b, k, d, _ in SHAPES:
        if (b, d) in seen:
            continue
        seen.add((b, d))
        for family in families:
            c = F.normalize(make_input(family, b, k, d, cache).double(), dim=-1).mean(1).float().to(device)
            fns = [lambda x, m=m: nuclear_norm(x, m) for m in methods]
            wall, cpu = time_fwd_bwd(fns, c, repeats)
            times = wall if device.type == "cuda" else cpu
            print(f"| {b} | {d} | {family} | " + " | ".join(f"{t:.2f}" for t in times) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per cell (median reported)")
    parser.add_argument("--quick", action="store_true", help="3 repeats, one thread only (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]; on CUDA the thread settings do not apply")
    parser.add_argument("--families", nargs="+", default=FAMILIES, help=f"input families (default: all of {FAMILIES})")
    parser.add_argument("--encoder-cache", default="runs/bench_objectives", help="run directories of trained encoders")
    parser.add_argument("--train-encoders", action="store_true", help="train missing encoders of the trained family")
    parser.add_argument("--methods", action="store_true", help="also time each nuclear_norm method alone")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="thread settings to measure (default: 1 and all threads)")
    args = parser.parse_args()
    for family in args.families:
        if family not in FAMILIES:
            raise SystemExit(f"unknown family {family!r}; choose from {FAMILIES}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    cache = Path(args.encoder_cache)
    repeats = 3 if args.quick else args.repeats
    all_threads = torch.get_num_threads()
    settings = [1] if args.quick else sorted({1, all_threads})
    if args.threads:
        if any(t < 1 for t in args.threads):
            raise SystemExit(f"--threads needs positive counts, got {args.threads}")
        settings = sorted(set(args.threads))
    if device.type == "cuda":
        settings = [all_threads]
        print(f"device: {torch.cuda.get_device_name(device)} (CPU time column = host time)")
    print(f"torch {torch.__version__}, cpu threads available: {all_threads}")
    inputs = {}
    for b, k, d, _ in SHAPES:
        for family in args.families:
            if (b, k, d, family) not in inputs:
                inputs[(b, k, d, family)] = make_input(family, b, k, d, cache, train_missing=args.train_encoders)
                if inputs[(b, k, d, family)] is None:
                    print(f"note: no trained encoder in {cache / f'd{d}'}; trained rows at d={d} skipped "
                          "(pass --train-encoders)")
    for threads in settings:
        torch.set_num_threads(threads)
        print(f"\n## {threads} thread(s)")
        print(
            "| B | k | d | lmbda | input | svdvals wall ms | MMCRLoss wall ms | wall speed-up | svdvals CPU ms "
            "| MMCRLoss CPU ms | CPU speed-up | value rel err | grad rel err (Frobenius) | svdvals grad rel err |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for b, k, d, lmbda in SHAPES:
            for family in args.families:
                if inputs[(b, k, d, family)] is None:
                    continue
                z = inputs[(b, k, d, family)].to(device)
                (w_ref, w_new), (c_ref, c_new) = time_fwd_bwd(
                    [lambda x, lmbda=lmbda: authors_loss(x, lmbda), MMCRLoss(lmbda)], z, repeats
                )
                ev, eg, eg_ref = exactness(z, lmbda)
                print(
                    f"| {b} | {k} | {d} | {lmbda:g} | {family} | {w_ref:.2f} | {w_new:.2f} | {w_ref / w_new:.2f}x "
                    f"| {c_ref:.2f} | {c_new:.2f} | {c_ref / c_new:.2f}x | {ev:.1e} | {eg:.1e} | {eg_ref:.1e} |",
                    flush=True,
                )
    torch.set_num_threads(1 if device.type == "cpu" else all_threads)
    if args.methods:
        method_table(args.families, cache, repeats, device)
    torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
