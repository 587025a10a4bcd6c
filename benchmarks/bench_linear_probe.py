"""Linear probe speed and agreement: our L-BFGS probe (torch) against scikit-learn's LogisticRegression
(lbfgs, multinomial) on the same fixed features, same CPU, same regularisation, same tolerance.

Features are synthetic but shaped like pooled ResNet features (non-negative, post-ReLU, 512-d, class
clusters that overlap). Prints the accuracy gap and the time ratio sklearn / ours, measured in this
process (absolute times depend on the machine and its load).

    .venv/bin/python benchmarks/bench_linear_probe.py [--n 20000] [--dim 512] [--classes 10] [--grid]

``--run DIR`` uses real features instead: the backbone of a run directory (or any ``load_pretrained``
source) on the first ``--n`` training images and ``--n-test`` test images of the data set in
``--archive`` (default: the shared CIFAR-10 archive).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS, fit_logistic, logistic_objective, sklearn_C

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpeg.tar.gz"


def features(n: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(99).normal(size=(classes, dim)).astype(np.float32) * 0.15
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = np.maximum(centers[y] + rng.normal(size=(n, dim)).astype(np.float32), 0.0)
    return x.astype(np.float32), y


def run_features(source: str, archive: str, n: int, n_test: int):
    """Backbone features of a pretrained model on the archive's train/test splits (eval preprocessing)."""
    from mmcr.data import load_dataset
    from mmcr.evaluate import eval_transform_for, extract_features
    from mmcr.evaluate.sources import load_pretrained

    backbone, src = load_pretrained(source)
    tf = eval_transform_for(src)
    out = []
    for split, m in (("train", n), ("test", n_test)):
        ds = load_dataset("archive", root=archive, split=split)
        g = torch.Generator().manual_seed(0)
        idx = torch.sort(torch.randperm(len(ds.labels), generator=g)[:m]).values
        f, _ = extract_features(backbone, ds.images[idx], transform=tf)
        out += [f.numpy(), ds.labels[idx].numpy()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="training points")
    ap.add_argument("--n-test", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--tol", type=float, default=1e-4, help="gradient tolerance for both (sklearn's default)")
    ap.add_argument("--grid", action="store_true", help="also time the whole weight-decay path (warm starts)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--run", default=None, help="use real features of this run dir / model source")
    ap.add_argument("--archive", default=str(DEFAULT_ARCHIVE))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from sklearn.linear_model import LogisticRegression

    if args.run:
        xtr, ytr, xte, yte = run_features(args.run, args.archive, args.n, args.n_test)
        args.classes = int(max(ytr.max(), yte.max())) + 1
    else:
        xtr, ytr = features(args.n, args.dim, args.classes, 0)
        xte, yte = features(args.n_test, args.dim, args.classes, 1)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6  # both fit on the same standardised features
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    Xtr, Ytr, Xte, Yte = (torch.from_numpy(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte))
    print(f"features: train {xtr.shape}, test {xte.shape}, {args.classes} classes, torch threads {args.threads}")
    print(
        f"{'weight_decay':>12} {'C':>10} {'ours %':>8} {'sklearn %':>9} {'gap':>6} {'ours s':>8} "
        f"{'sklearn s':>9} {'ratio':>6} {'obj diff':>9}"
    )
    ratios = []
    for wd in (1e-2, 1e-3, 1e-4):
        fit_logistic(Xtr[:256], Ytr[:256], wd, args.classes, standardize=False, tol=args.tol)  # warm-up
        t = time.perf_counter()
        ours = fit_logistic(Xtr, Ytr, wd, args.classes, standardize=False, tol=args.tol)
        t_ours = time.perf_counter() - t
        acc_ours = 100.0 * (ours.predict(Xte).numpy() == yte).mean()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skl = LogisticRegression(C=sklearn_C(wd, args.n), tol=args.tol, max_iter=1000).fit(xtr, ytr)
        t_skl = time.perf_counter() - t
        acc_skl = 100.0 * skl.score(xte, yte)
        skl_model = type(ours)(
            torch.tensor(skl.coef_, dtype=torch.float32),
            torch.tensor(skl.intercept_, dtype=torch.float32),
            ours.mean,
            ours.std,
            wd,
            0,
        )
        obj_diff = logistic_objective(ours, Xtr, Ytr) - logistic_objective(skl_model, Xtr, Ytr)
        ratios.append(t_skl / t_ours)
        print(
            f"{wd:>12g} {sklearn_C(wd, args.n):>10.3g} {acc_ours:>8.2f} {acc_skl:>9.2f} "
            f"{acc_ours - acc_skl:>+6.2f} {t_ours:>8.2f} {t_skl:>9.2f} {t_skl / t_ours:>6.2f} {obj_diff:>+9.1e}"
        )
    print(f"single-fit speed ratio sklearn/ours: median {np.median(ratios):.2f}x")
    if args.grid:
        grid = sorted(DEFAULT_WEIGHT_DECAYS, reverse=True)
        t = time.perf_counter()
        model = None
        for wd in grid:
            model = fit_logistic(Xtr, Ytr, wd, args.classes, standardize=False, tol=args.tol, init=model)
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skl = LogisticRegression(tol=args.tol, max_iter=1000, warm_start=True)
            for wd in grid:
                skl.set_params(C=sklearn_C(wd, args.n)).fit(xtr, ytr)
        t_skl = time.perf_counter() - t
        print(
            f"weight-decay path of {len(grid)} values, both warm-started: ours {t_ours:.2f}s, "
            f"sklearn {t_skl:.2f}s, ratio {t_skl / t_ours:.2f}x"
        )


if __name__ == "__main__":
    main()
