"""Time the capacity analyses at P=50 manifolds x M=50 points x N=512 features, n_t=200, one thread.

Data: structured manifolds like the shared ``ellipsoid`` test vectors (centres with a shared rank-3
part, each manifold a random rank-5 ellipsoid surface plus small isotropic noise).

Prints the median time of: mean-field capacity without / with the correlated variant (centre
low-rank removal), and simulated capacity (20 dichotomies per evaluated dimension); each next to the
public reference's time on this machine class (3.75 s, 17 s, 16 s) and the targets. As an in-process
baseline, the same mean-field analysis with one ``scipy.optimize.nnls`` call per (manifold, t) sample
and one HiGHS linear programme per separability check are timed too.

    python benchmarks/bench_geometry.py [--repeats 5] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _set_threads(n: int) -> None:
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = str(n)


def make_data(P=50, M=50, N=512, seed=0):
    """Structured low-rank ellipsoidal manifolds with correlated centres, (P, M, N) float64."""
    import numpy as np

    rng = np.random.default_rng(seed)
    B = rng.standard_normal((N, 3))
    centres = 1.5 * rng.standard_normal((P, 3)) @ B.T + rng.standard_normal((P, N))
    axes = 0.6 * np.sqrt(N) * 0.7 ** np.arange(5)
    X = np.empty((P, M, N))
    for p in range(P):
        U = np.linalg.qr(rng.standard_normal((N, 5)))[0]
        u = rng.standard_normal((5, M))
        u /= np.linalg.norm(u, axis=0)
        X[p] = (centres[p][:, None] + U @ (axes[:, None] * u) + 0.05 * rng.standard_normal((N, M))).T
    return X


def _median_time(fn, repeats):
    """Median wall time and median process CPU time (the latter is robust to a shared, loaded machine
    when running one thread)."""
    walls, cpus = [], []
    out = None
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    walls.sort()
    cpus.sort()
    return walls[len(walls) // 2], cpus[len(cpus) // 2], out


def baseline_capacity(X, n_t=200, seed=0):
    """The mean-field capacity with one scipy NNLS per sample (how an independent check would do it)."""
    import numpy as np
    from scipy.optimize import nnls

    from mmcr.geometry.capacity import anchor_matrices

    rng = np.random.default_rng(seed)
    inv = []
    for A in anchor_matrices(X):
        A = A.numpy()
        t = rng.standard_normal((A.shape[0], n_t))
        tot = 0.0
        for k in range(n_t):
            lam, _ = nnls(A, t[:, k])
            tot += float(np.sum((A @ lam) ** 2))
        inv.append(tot / n_t)
    return 1.0 / np.mean(inv)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)
    _set_threads(args.threads)
    import numpy as np
    import torch
    from scipy.optimize import linprog
    from threadpoolctl import threadpool_limits

    from mmcr.geometry import manifold_capacity, simulated_capacity

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    X = make_data()
    Xd = torch.from_numpy(X).to(args.device)
    manifold_capacity(Xd, n_t=200, seed=0)  # warm-up (allocations, lazy imports)

    def sync():
        if Xd.is_cuda:
            torch.cuda.synchronize()

    def cap():
        r = manifold_capacity(Xd, n_t=200, seed=0)
        sync()
        return r

    def cap_corr():
        r = manifold_capacity(Xd, n_t=200, seed=0, correlated=True)
        sync()
        return r

    t_cap, c_cap, r_cap = _median_time(cap, args.repeats)
    t_corr, c_corr, r_corr = _median_time(cap_corr, max(1, args.repeats // 2 + 1))
    t_sim, c_sim, r_sim = _median_time(lambda: simulated_capacity(X, n_rep=20, seed=0), max(1, args.repeats // 2))
    k_removed = r_corr.center_subspace.shape[1]
    rows = [
        ("mean-field capacity", t_cap, c_cap, 3.75, 0.075,
         f"capacity {r_cap.capacity:.4f}, R {r_cap.radius:.4f}, D {r_cap.dimension:.3f}"),
        ("mean-field capacity, correlated", t_corr, c_corr, 17.0, 0.85,
         f"capacity {r_corr.capacity:.4f}, K removed {k_removed}, centre corr {r_corr.center_correlation:.3f}"),
        ("simulated capacity (20 dichotomies/step)", t_sim, c_sim, 16.0, 1.6,
         f"alpha_sim {r_sim.capacity:.4f}, dims tried {len(r_sim.n_values)}"),
    ]  # fmt: skip
    print(f"P=50 M=50 N=512 n_t=200, threads={args.threads}, device={args.device}, torch {torch.__version__}")
    print(f"{'analysis':42s} {'wall (s)':>8s} {'cpu (s)':>8s} {'reference (s)':>13s} {'speed-up (cpu)':>14s} "
          f"{'target (s)':>10s}  result")  # fmt: skip
    for name, t, c, ref, target, note in rows:
        flag = "ok" if c <= target else "MISSED"
        print(f"{name:42s} {t:8.3f} {c:8.3f} {ref:13.2f} {ref / c:13.1f}x {target:10.3f} {flag:6s} {note}")
    if not args.skip_baseline:
        c0 = time.process_time()
        cap_base = baseline_capacity(X)
        c_base = time.process_time() - c0
        print(f"in-process baseline, scipy nnls per sample: {c_base:.3f} s cpu (ours {c_base / c_cap:.1f}x faster; "
              f"capacity {cap_base:.4f} with its own t-vectors)")  # fmt: skip
        n = int(round(r_sim.n_critical))
        rng = np.random.default_rng(0)
        P, M, N = X.shape
        t_lp = []
        for _ in range(3):
            y = np.repeat(np.where(rng.permutation(P) < P // 2, -1.0, 1.0), M)
            W = rng.standard_normal((N, n))
            W /= np.linalg.norm(W, axis=0)
            A = np.hstack([X.reshape(P * M, N) @ W, np.ones((P * M, 1))]) * y[:, None]
            c0 = time.process_time()
            linprog(np.zeros(n + 1), A_ub=-A, b_ub=-np.ones(P * M), bounds=(None, None), method="highs")
            t_lp.append(time.process_time() - c0)
        checks = sum(1 for _ in r_sim.n_values) * 20
        print(f"in-process baseline, one HiGHS LP per separability check at n={n}: {np.median(t_lp):.3f} s cpu/check "
              f"(x{checks} checks ~ {np.median(t_lp) * checks:.1f} s for the same bisection)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
