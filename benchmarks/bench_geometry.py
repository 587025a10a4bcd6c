"""Time the capacity analyses (one thread), against the public reference's recorded times and in-process
baselines, and (with ``--scaling``) how the mean-field capacity's time grows with the problem size.

Headline cases:

- P=50 manifolds x M=50 points x N=512 features, n_t=200, structured like the shared ``ellipsoid``
  test vectors (centres with a shared rank-3 part, rank-5 ellipsoid surfaces, small noise): mean-field
  capacity, its correlated variant, simulated capacity;
- the reference README's example: 100 Gaussian manifolds of 50 points in 5,000 dimensions, n_t=200
  (``[np.random.randn(5000, 50) for _ in range(100)]``): wide manifolds whose NNLS supports hold half
  of the points, the regime of layer-wise analyses of real networks;
- the three shared test-vector inputs with their own t-vectors (the reference's times were recorded
  with them).

In-process baselines: one ``scipy.optimize.nnls`` call per (manifold, t) sample, interleaved with ours
in alternating rounds; one HiGHS linear programme per separability check.

``--scaling`` times the mean-field capacity around the README case: P in 10..1000, M in 10..500,
N in 50..10,000 and n_t in 50..800 (one varied at a time), prints the table with the per-problem time
(time / (P n_t)) and writes a log-log plot (``--plot``). The GPU column is measured with
``--device cuda``; otherwise it reads "unmeasured".

``--previous DIR`` also times the headline cases with an earlier mmcr's ``src`` folder (e.g. from
``git archive <commit> src``) in a separate process. Warm-started margin sweeps (``capacity_vs_margin``)
are timed against separate analyses.

    python benchmarks/bench_geometry.py [--repeats 5] [--threads 1] [--skip-baseline] [--previous DIR]
    python benchmarks/bench_geometry.py --scaling [--plot benchmarks/geometry_scaling.png] [--device cuda]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

#: The reference implementation's recorded times (s, one thread, 2-core x86-64 VM): the issue's README
#: case, benchmarks/RESULTS.md (issue 6) and the runtimes stored with the shared test vectors.
REFERENCE_S = {
    "readme": 14.6,
    "p50": 3.75,
    "p50_correlated": 17.0,
    "p50_simcap": 16.0,
}
TESTVECTORS = Path(__file__).resolve().parents[2] / "shared" / "testvectors" / "mftma"


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


def gaussian_manifolds(P=100, M=50, N=5000, seed=0):
    """The reference README's example: every manifold M i.i.d. standard Gaussian points, (P, M, N)."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal((P, M, N))


def _timed(fn):
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def _median_time(fn, repeats):
    """Median wall time and median process CPU time (the latter is robust to a shared, loaded machine
    when running one thread)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c, out = _timed(fn)
        walls.append(w)
        cpus.append(c)
    walls.sort()
    cpus.sort()
    return walls[len(walls) // 2], cpus[len(cpus) // 2], out


def _interleaved(fns, repeats):
    """Run ``fns`` in alternating rounds; per function the median wall and CPU time and the last output."""
    res = [([], [], None) for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            w, c, out = _timed(fn)
            res[i][0].append(w)
            res[i][1].append(c)
            res[i] = (res[i][0], res[i][1], out)
    return [(sorted(w)[len(w) // 2], sorted(c)[len(c) // 2], o) for w, c, o in res]


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


def headline(args) -> None:
    import numpy as np
    import torch
    from scipy.optimize import linprog

    from mmcr.geometry import capacity_vs_margin, manifold_capacity, simulated_capacity

    dev = args.device

    def sync():
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    def cap(X, **kw):
        def f():
            r = manifold_capacity(X, **kw)
            sync()
            return r

        return f

    X = make_data()
    Xd = torch.from_numpy(X).to(dev)
    G = torch.from_numpy(gaussian_manifolds()).to(dev)
    manifold_capacity(Xd, n_t=200, seed=0)  # warm-up (allocations, lazy imports)
    rows = []
    if args.skip_baseline:
        t_cap, c_cap, r_cap = _median_time(cap(Xd, n_t=200, seed=0), args.repeats)
        t_rd, c_rd, r_rd = _median_time(cap(G, n_t=200, seed=0), args.repeats)
        base = {}
    else:
        (t_cap, c_cap, r_cap), (tb, cb, vb) = _interleaved(
            [cap(Xd, n_t=200, seed=0), lambda: baseline_capacity(X)], args.repeats
        )
        (t_rd, c_rd, r_rd), (tb2, cb2, vb2) = _interleaved(
            [cap(G, n_t=200, seed=0), lambda: baseline_capacity(G.cpu().numpy())], max(1, args.repeats // 2)
        )
        base = {"p50": (cb, vb), "readme": (cb2, vb2)}
    t_corr, c_corr, r_corr = _median_time(cap(Xd, n_t=200, seed=0, correlated=True), max(1, args.repeats // 2 + 1))
    t_sim, c_sim, r_sim = _median_time(lambda: simulated_capacity(X, n_rep=20, seed=0), max(1, args.repeats // 2))
    sweeps = {}
    for key, data in (("p50", Xd), ("readme", G)):
        # Six margins: one warm-started sweep against six separate analyses (same t-vectors, interleaved).
        (_, c_sw, _), (_, c_sep, _) = _interleaved(
            [
                lambda data=data: capacity_vs_margin(data, KAPPAS, n_t=200, seed=0),
                lambda data=data: [manifold_capacity(data, kappa=k, n_t=200, seed=0) for k in KAPPAS],
            ],
            max(1, args.repeats // 2),
        )
        sweeps[key] = (c_sw, c_sep)
    rows += [
        ("P=50 M=50 N=512: mean-field capacity", t_cap, c_cap, REFERENCE_S["p50"], 0.075,
         f"capacity {r_cap.capacity:.4f}, R {r_cap.radius:.4f}, D {r_cap.dimension:.3f}"),
        ("P=50 M=50 N=512: correlated", t_corr, c_corr, REFERENCE_S["p50_correlated"], 0.85,
         f"capacity {r_corr.capacity:.4f}, K removed {r_corr.center_subspace.shape[1]}"),
        ("P=50 M=50 N=512: simulated (20 dichotomies)", t_sim, c_sim, REFERENCE_S["p50_simcap"], 1.6,
         f"alpha_sim {r_sim.capacity:.4f}, dims tried {len(r_sim.n_values)}"),
        ("README case P=100 M=50 N=5000: mean-field", t_rd, c_rd, REFERENCE_S["readme"], 0.73,
         f"capacity {r_rd.capacity:.4f}, R {r_rd.radius:.4f}, D {r_rd.dimension:.3f}"),
    ]  # fmt: skip
    for case in ("gauss_small", "gauss_small_kappa0.1", "ellipsoid"):
        path = TESTVECTORS / f"{case}.npz"
        if not path.exists():
            continue
        d = np.load(path)
        Xt = torch.from_numpy(d["X"].transpose(0, 2, 1)).to(dev)
        kw = dict(kappa=float(d["kappa"]), t_vectors=torch.from_numpy(d["t_vecs"]).to(dev))
        t, c, r = _median_time(cap(Xt, **kw), args.repeats)
        P, M, N = Xt.shape
        err = abs(r.capacity - float(d["nolowrank_capacity"])) / float(d["nolowrank_capacity"])
        rows.append((f"test vectors {case} (P={P} M={M} N={N})", t, c, float(d["nolowrank_runtime_s"]), None,
                     f"capacity {r.capacity:.6f} (reference rel. error {err:.1e})"))  # fmt: skip
    print(f"threads={args.threads}, device={dev}, torch {torch.__version__}, load average {_load()}")
    print(f"{'case':52s} {'wall (s)':>8s} {'cpu (s)':>8s} {'reference (s)':>13s} {'speed-up':>9s} "
          f"{'target (s)':>10s}  result")  # fmt: skip
    for name, t, c, ref, target, note in rows:
        flag = "" if target is None else ("ok" if c <= target else "MISSED")
        tgt = "" if target is None else f"{target:.3f}"
        print(f"{name:52s} {t:8.3f} {c:8.3f} {ref:13.2f} {ref / c:8.1f}x {tgt:>10s} {flag:6s} {note}")
    for key, label in (("p50", "P=50 M=50 N=512"), ("readme", "README case")):
        if key in base:
            cb_, vb_ = base[key]
            ours = c_cap if key == "p50" else c_rd
            print(f"in-process baseline ({label}), scipy nnls per sample, interleaved: {cb_:.3f} s cpu "
                  f"(ours {cb_ / ours:.1f}x faster; capacity {vb_:.4f} with its own t-vectors)")  # fmt: skip
    for key, label in (("p50", "P=50 M=50 N=512"), ("readme", "README case")):
        c_sw, c_sep = sweeps[key]
        print(
            f"margin sweep ({label}, kappa {KAPPAS[0]}..{KAPPAS[-1]}, {len(KAPPAS)} values): warm-started "
            f"capacity_vs_margin {c_sw:.3f} s cpu, separate calls {c_sep:.3f} s ({c_sep / c_sw:.2f}x)"
        )
    if args.previous:
        for key, label, ours in (
            ("p50", "P=50 M=50 N=512", c_cap),
            ("readme", "README case", c_rd),
            ("simcap", "P=50 simulated", c_sim),
        ):
            prev = _previous_time(args.previous, key, max(1, args.repeats // 2))
            print(f"previous version ({args.previous}), {label}: {prev:.3f} s cpu (ours {prev / ours:.1f}x faster)")
    if not args.skip_baseline:
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
        checks = len(r_sim.n_values) * 20
        print(f"in-process baseline, one HiGHS LP per separability check at n={n}: {np.median(t_lp):.3f} s cpu/check "
              f"(x{checks} checks ~ {np.median(t_lp) * checks:.1f} s for the same bisection)")  # fmt: skip


KAPPAS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]

_PREVIOUS_SNIPPET = """
import sys, time, torch
from threadpoolctl import threadpool_limits
sys.path.insert(0, {bench!r})
torch.set_num_threads(1)
threadpool_limits(1)
import bench_geometry as bg
from mmcr.geometry import manifold_capacity, simulated_capacity
key, reps = {key!r}, {reps}
if key == "p50":
    X = torch.from_numpy(bg.make_data())
    fn = lambda: manifold_capacity(X, n_t=200, seed=0)
elif key == "readme":
    X = torch.from_numpy(bg.gaussian_manifolds())
    fn = lambda: manifold_capacity(X, n_t=200, seed=0)
else:
    X = bg.make_data()
    fn = lambda: simulated_capacity(X, n_rep=20, seed=0)
if key != "simcap":
    fn()
print(bg._median_time(fn, reps)[1])
"""


def _previous_time(src: str, key: str, reps: int) -> float:
    """Median CPU time of a headline case with an earlier mmcr (its ``src`` folder, e.g. from
    ``git archive <commit> src``), in a fresh one-thread process."""
    import subprocess

    code = _PREVIOUS_SNIPPET.format(bench=str(Path(__file__).resolve().parent), key=key, reps=reps)
    env = dict(os.environ, PYTHONPATH=str(Path(src).resolve()))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


SWEEPS = {
    "P": [10, 30, 100, 300, 1000],
    "M": [10, 20, 50, 100, 200, 500],
    "N": [50, 100, 500, 1000, 5000, 10000],
    "n_t": [50, 100, 200, 400, 800],
}
README_CASE = {"P": 100, "M": 50, "N": 5000, "n_t": 200}


def scaling(args) -> None:
    import torch

    gpu = args.device.startswith("cuda")
    rows = []
    print(f"threads={args.threads}, device={args.device}, torch {torch.__version__}, load average {_load()}")
    print(f"{'varied':6s} {'P':>5s} {'M':>4s} {'N':>6s} {'n_t':>4s} {'wall (s)':>9s} {'cpu (s)':>8s} "
          f"{'us/problem':>10s} {'gpu (s)':>8s} {'reference (s)':>13s}  capacity")  # fmt: skip
    for key, values in SWEEPS.items():
        for v in values:
            case = dict(README_CASE, **{key: v})
            t, c, g, cap = _time_case(case, args.device if gpu else None)
            ref = REFERENCE_S["readme"] if case == README_CASE else None
            per = 1e6 * c / (case["P"] * case["n_t"])
            rows.append(dict(case, varied=key, wall=t, cpu=c, gpu=g, reference=ref, capacity=cap))
            gpu_s = "unmeasured" if g is None else f"{g:8.3f}"
            ref_s = "" if ref is None else f"{ref:.1f}"
            print(
                f"{key:6s} {case['P']:5d} {case['M']:4d} {case['N']:6d} {case['n_t']:4d} {t:9.3f} {c:8.3f} "
                f"{per:10.1f} {gpu_s:>8s} {ref_s:>13s}  {cap:.4f}",
                flush=True,
            )
    for key in ("P", "n_t"):
        pts = [r for r in rows if r["varied"] == key]
        slopes = [
            (math.log(b["cpu"] / a["cpu"]) / math.log(b[key] / a[key]), a[key], b[key]) for a, b in zip(pts, pts[1:])
        ]
        worst = max(slopes)[0]
        verdict = " (<= 1: at most linear)" if worst <= 1.05 else " (> 1)"
        listed = ", ".join(f"{s:.2f} ({a}->{b})" for s, a, b in slopes)
        print(f"log-log slope of cpu time in {key}: {listed}; largest {worst:.2f}{verdict}")
    if args.plot:
        _plot(rows, Path(args.plot))
        print(f"plot: {args.plot}")


def _time_case(case: dict, gpu: str | None) -> tuple[float, float, float | None, float]:
    """(wall s, CPU s, GPU wall s or None, capacity) of the mean-field capacity of Gaussian manifolds;
    median of 3 runs for small cases, 1 for large ones, after a warm-up at the same shape."""
    import torch

    from mmcr.geometry import manifold_capacity

    X = torch.from_numpy(gaussian_manifolds(case["P"], case["M"], case["N"]))
    reps = 3 if X.numel() * case["n_t"] / 200 <= 3e7 else 1
    manifold_capacity(X[: min(5, case["P"])], n_t=10, seed=0)
    t, c, r = _median_time(lambda: manifold_capacity(X, n_t=case["n_t"], seed=0), reps)
    g = None
    if gpu is not None:
        Xg = X.to(gpu)

        def run():
            out = manifold_capacity(Xg, n_t=case["n_t"], seed=0)
            torch.cuda.synchronize()
            return out

        run()
        g = _median_time(run, reps)[0]
    return t, c, g, r.capacity


def _plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for ax, key in zip(axes, SWEEPS):
        pts = [r for r in rows if r["varied"] == key]
        x = np.array([r[key] for r in pts], float)
        y = np.array([r["cpu"] for r in pts])
        ax.loglog(x, y, "o-", label="mmcr, 1 thread (CPU time)")
        if any(r["gpu"] is not None for r in pts):
            ax.loglog(x, [np.nan if r["gpu"] is None else r["gpu"] for r in pts], "s-", label="mmcr, GPU")
        i0 = int(np.argmin(np.abs(x - README_CASE[key])))
        ax.loglog(x, y[i0] * x / x[i0], "k:", lw=1, label="linear (slope 1)")
        ax.loglog([README_CASE[key]], [REFERENCE_S["readme"]], "r*", ms=11, label="reference, README case")
        others = ", ".join(f"{k}={v}" for k, v in README_CASE.items() if k != key)
        ax.set_title(f"time vs {key} ({others})", fontsize=9)
        ax.set_xlabel(key)
        ax.set_xticks(x, [str(int(v)) for v in x])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-baseline", action="store_true", help="no scipy / HiGHS in-process baselines")
    ap.add_argument("--scaling", action="store_true", help="the scaling sweeps instead of the headline cases")
    ap.add_argument("--plot", default="benchmarks/geometry_scaling.png", help="log-log plot of the sweeps")
    ap.add_argument("--previous", default=None, help="src folder of an earlier mmcr to time the headline cases with")
    args = ap.parse_args(argv)
    _set_threads(args.threads)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    if args.scaling:
        scaling(args)
    else:
        headline(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
