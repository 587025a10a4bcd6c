"""Nuclear norm (sum of singular values) of batched matrices with its exact gradient, at float32-class cost.

Semantics. For x (..., m, n) the value is sum_i sigma_i and the gradient is the polar factor U_r V_r^T over
every singular value the computation precision resolves: sigma_i > tau * sigma_max with tau = float32 eps
(1.2e-7) for float32 computation and max(m, n) * float64 eps for float64 (see :func:`rounding_floor`).
Only singular values at that rounding floor count as zero (their directions get no gradient, the
minimum-norm subgradient; an all-zero matrix gets a zero gradient).

Methods.

"gram" (CPU default). Let A be x or x^T, whichever is wide (s x l, s <= l). The float64 Gram G = A A^T
(exact products of the float32 entries) is eigendecomposed in float64, G = U diag(sigma^2) U^T; the
gradient is U diag(1/sigma) U^T A. Forming G squares the condition number, which a float32 Gram cannot
afford (its eigenvector errors grow like eps32 * kappa^2: 4.6e-3 relative gradient error at
sigma_min / sigma_max = 1/276, 0.15 for the power-law alpha = 2 spectra of benchmarks/bench_objectives.py),
while the float64 eigenvalues are exact to ~eps64 * sigma_max^2. The product with A, the other big cost, is
split by singular value so that most of it runs in float32 (``_polar_bands``):

- a middle band of singular values within a factor ``_MID_RATIO`` of each other (chosen to hold as many as
  possible, all above ``_MID_MIN`` * sigma_max) is applied as one float32 product X_M A_r, whose rounding
  error is ~eps32 * _MID_RATIO;
- the band above it (few directions in training-like spectra) is formed in float64, W_T = U_T^T A, and
  removed from A first (A_r = A - U_T W_T), so that the float32 product sees no large components to cancel;
- the band below it is formed in float64, W_L = U_L^T A, and solved again on its own scale (Gram of W_L,
  float64 eigh, then singular values taken as the row norms of the rotated W_L). A float64 eigenvalue
  sigma^2 carries an error of ~1e-16 sigma_max^2, i.e. 1.5 % at sigma = 2.6e-7 sigma_max, a value the
  trained encoder of the benchmark produces; the row norms are exact to float64 rounding instead.

On one CPU thread the single-matrix float64 Gram and eigendecomposition run through scipy's dsyrk/dsyevd (see
``_host_gram``): 11.6 + 30.8 ms instead of 19.3 + 39.0 ms through torch at 512 x 2048. With more threads
torch's own routines run them (two thread pools on the same cores slow each other down).

Measured on one core of the 2-core development VM (AMD EPYC, MKL), s x l = 512 x 2048: float32 Gram
10.5 ms, float64 Gram 22 ms (16.5 ms computing 3 of its 4 blocks), float32 eigh 19 ms, float64 eigh 39 ms,
float32 svdvals of A 143 ms; a float64 product of the full U^T A costs 23 ms where the band split spends
11-15 ms. Candidates measured and dropped (relative Frobenius gradient error against float64 SVD autograd
at 2048 x 512, power-law alpha 2 / random-init encoder / near-collapsed centroids): float32 Gram + float32
eigh 0.15 / 0.09 / 8.6e11 (numerical garbage); float64 Gram + float32 eigh + float64 product 0.15 / 0.09 /
0.86, not rescued by Newton-Schulz polar polishing (0.10 / 0.055 / 0.58 after 3 steps: the polish converges
to the polar factor of its own, wrong, start); float64 Gram + float64 eigh with a plain float32 product
X A 3.0e-5 / 3.2e-5 / 2.5e-4 (the cancellation eps32 * kappa the band split avoids). With the band split:
2.4e-7 on every family. A mixed-precision refinement of a float32 eigendecomposition (Ogita-Aishima
steps in float64) costs 4 float64 s^3 products per step (22 ms at s = 512) on top of the float32 eigh
(19 ms) and still needs a float64 eigensolve of the unresolved cluster below eps32 * sigma_max^2, which
holds 460 of 512 eigenvalues for alpha = 2: no cheaper than the float64 eigh.

float64 computation (float64 input or ``dtype=torch.float64``) resolves singular values down to
max(m, n) * eps64 * sigma_max: the float64 Gram route serves matrices with sigma_min >= 1e-4 sigma_max (error
~eps64 * kappa^2 <= 1e-8), the others use the float64 SVD.

"newton_schulz" (CUDA default): matmul-only, without ``eigh`` (batched ``eigh`` on CUDA has severe
slowdowns in recent torch releases). The iterate X_0 = A / ||A||_F is driven to the polar factor by the
cubic Newton-Schulz map with Chen & Chow's optimal scaling, X <- alpha (3/2 I - alpha^2/2 X X^T) X with
alpha = sqrt(3 / (1 + l + l^2)) for the current lower bound l on the singular values; 18-24 steps take
every singular value above the float32 floor to 1 in float64 arithmetic. The step count depends only
on the shape, so nothing synchronises with the host. The iteration runs on A itself rather than on its
Gram: rounding noise in a Gram (negative eigenvalues ~ -eps64 sigma_max^2) would be amplified by the
squared growth factor (~1e16) and diverge. Singular values below ~eps32 * sigma_max / sqrt(s) fade out
smoothly instead of being cut at the floor. Its CUDA speed is unmeasured in this repository so far
(no GPU was available when it was written); its exactness is tested on the CPU.

"svd": the reference, ``torch.linalg.svdvals`` with its autograd (U V^T over all singular values, no floor).
"""

from __future__ import annotations

import bisect
import math

import torch

__all__ = ["nuclear_norm", "nuclear_norm_with_singular_values", "NUCLEAR_NORM_METHODS", "rounding_floor"]

NUCLEAR_NORM_METHODS = ("auto", "gram", "svd", "newton_schulz")

_EPS32 = torch.finfo(torch.float32).eps
_EPS64 = torch.finfo(torch.float64).eps
# Middle band of the float32 product: singular values within this factor of each other (rounding error
# ~eps32 * ratio), all above _MID_MIN * sigma_max, where float64 eigenvalues (absolute error ~eps64 *
# sigma_max^2) still give sigma to ~1e-6 relative or better. Measured at 2048 x 512 (relative gradient error,
# ms): 1e-3 put the 460 small singular values of the power-law-2 family and the 511 of the near-collapsed one
# in the float64 bottom band (185 / 207 ms, 2.5e-7 / 2.4e-7); 1e-5 keeps them in the middle band (91 / 83 ms,
# 4.8e-7 / 2.8e-7); other families unchanged. The ratio trades float64 band work for float32 rounding; MMCRLoss
# fwd+bwd at 2048 x 2 x 512 on the trained-encoder centroids (ms, gradient error): 32 98 / 9.9e-7, 64 88 /
# 2.4e-6, 128 85 / 3.9e-6; at 256 x 2 x 512 64 keeps every family below the authors' float32 svdvals error
# (trained: 2.5e-6 against 5.2e-6, where 128 gives 3.6e-6).
_MID_RATIO = 64.0
_MID_MIN = 1e-5
# float64 computation: the Gram route (error ~eps64 * kappa^2) where lambda_min / lambda_max >= this.
_F64_GRAM_MIN_EIG_RATIO = 1e-8
# Gram from 3 of its 4 blocks from this many rows on (it is symmetric; 16.5 ms instead of 22 at 512 x 2048).
_SYM_BLOCK_MIN = 256
# Band split per matrix when matrices are at least this large (s * l) and at most this many; otherwise the
# vectorised float64 variant, whose cost is trivial there and whose per-matrix Python work is nil.
_BAND_MIN_SIZE = 32768
_BAND_MAX_BATCH = 8


def rounding_floor(dtype: torch.dtype, m: int, n: int) -> float:
    """Relative floor below which singular values count as zero for the gradient, for computation in ``dtype``.

    float32: eps32 (1.2e-7). The float64 arithmetic of the "gram" method resolves far below it, so only what the
    float32 input itself cannot carry is dropped. float64: max(m, n) * eps64, the usual numerical-rank
    tolerance, above the rounding noise of a float64 decomposition.
    """
    if dtype == torch.float64:
        return max(m, n) * _EPS64
    return _EPS32


def _check_matrix(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"nuclear_norm expects a torch.Tensor of shape (..., m, n), got {type(x).__name__}")
    if x.ndim < 2:
        raise ValueError(f"nuclear_norm expects shape (..., m, n) with at least 2 dimensions, got {tuple(x.shape)}")
    if x.shape[-1] < 1 or x.shape[-2] < 1:
        raise ValueError(f"nuclear_norm needs m >= 1 and n >= 1 in shape (..., m, n), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"nuclear_norm expects a real floating-point tensor, got dtype {x.dtype}; cast it with .float()"
        )


def _raise_non_finite(x: torch.Tensor, name: str = "x") -> None:
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    raise ValueError(
        f"{name} of shape {tuple(x.shape)} contains {n_nan} NaN and {n_inf} Inf values; "
        "the nuclear norm needs finite entries (check the encoder output or lower the learning rate)"
    )


# Matrices are kept in the caller's layout throughout: A (s x l, s <= l) is x when x is wide and x^T when it is
# tall, and every (k x l) matrix derived from A is stored like x (as its transpose when tall), so products
# never copy a transposed operand and the gradient comes back in x's own layout.
def _lmul(m: torch.Tensor, b: torch.Tensor, tall: bool) -> torch.Tensor:
    """m @ B for B (k x l) stored in x's layout; the result (s x l) in the same layout."""
    return b @ m.mT if tall else m @ b


def _row_norms(b: torch.Tensor, tall: bool) -> torch.Tensor:
    return torch.linalg.vector_norm(b, dim=-2 if tall else -1)


def _scale_rows(b: torch.Tensor, d: torch.Tensor, tall: bool) -> torch.Tensor:
    return b * d.unsqueeze(-2) if tall else b * d.unsqueeze(-1)


def _gram(b: torch.Tensor, tall: bool) -> torch.Tensor:
    """B B^T for B stored in x's layout; large ones from 3 of 4 blocks (the product is symmetric)."""
    a = b.mT if tall else b
    s = a.shape[-2]
    if s < _SYM_BLOCK_MIN:
        return a @ a.mT
    h = s // 2
    a1, a2 = a[..., :h, :], a[..., h:, :]
    g = a.new_empty(*a.shape[:-2], s, s)
    g[..., :h, :h] = a1 @ a1.mT
    g21 = a2 @ a1.mT
    g[..., h:, :h] = g21
    g[..., :h, h:] = g21.mT
    g[..., h:, h:] = a2 @ a2.mT
    return g


def _widest_window(sig: list[float], start: int, ratio: float, top_weight: float = 1.0) -> tuple[int, int]:
    """Indices [lo, hi) of a run of singular values (ascending list, from ``start`` on) within ``ratio`` of each
    other that minimises the work outside it: top_weight * (number above) + (number below)."""
    n = len(sig)
    best, lo, hi = None, start, start
    j = start
    for i in range(start, n):
        j = max(j, i)
        top = ratio * sig[i]
        while j < n and sig[j] <= top:
            j += 1
        cost = top_weight * (n - j) + i
        if best is None or cost < best:
            best, lo, hi = cost, i, j
    return lo, hi


# The one-matrix float64 Gram and its eigendecomposition on the CPU go through scipy's BLAS/LAPACK (dsyrk,
# dsyevd), which torch does not expose: dsyrk forms one triangle of the symmetric product (half the
# multiply-adds of the general product torch would run), and dsyevd reads only that triangle. Measured on one
# core of the development VM (AMD EPYC, torch's MKL against scipy's OpenBLAS) at s x l = 512 x 2048: Gram
# 11.6 ms (dsyrk) against 19.3 ms (torch, transposed copy + 3 of 4 blocks), eigendecomposition 30.8 ms (dsyevd)
# against 39.0 ms (torch.linalg.eigh). scipy's BLAS has its own thread pool, held to torch's thread count (one, see
# _use_host_lapack) for the call.
_BLAS_POOL = None


def _blas_pool():
    global _BLAS_POOL
    if _BLAS_POOL is None:
        import scipy.linalg  # noqa: F401  (loads scipy's BLAS so that the controller finds it)
        from threadpoolctl import ThreadpoolController

        _BLAS_POOL = ThreadpoolController().select(user_api="blas")
    return _BLAS_POOL


def _use_host_lapack(x: torch.Tensor) -> bool:
    # One thread only: with more, torch's OpenMP workers keep spinning while scipy's OpenBLAS threads run, and
    # the two pools fight over the cores (2 threads on the 2-core VM, 256 x 2 x 512: 16 ms through scipy
    # against 7.5 ms through torch; 2048 x 2 x 512: 71-82 against 50-54 ms).
    return _HOST_LAPACK and x.device.type == "cpu" and torch.get_num_threads() == 1


_HOST_LAPACK = True  # switch for measurements


def _host_gram(x64: torch.Tensor, tall: bool) -> torch.Tensor:
    """Float64 Gram A A^T of one CPU matrix (A = x, or x^T when x is tall); only its lower triangle is filled."""
    from scipy.linalg import blas

    xn = x64.numpy()
    if not xn.flags.c_contiguous:
        xn = xn.copy()
    # xn.T is x^T in Fortran order without a copy; dsyrk forms a a^T (trans=0) or a^T a (trans=1) of its operand.
    with _blas_pool().limit(limits=torch.get_num_threads()):
        g = blas.dsyrk(1.0, xn.T, trans=0 if tall else 1, lower=1)
    return torch.from_numpy(g)


def _host_eigh(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues and eigenvectors of a symmetric float64 CPU matrix from its lower triangle."""
    from scipy.linalg import lapack

    with _blas_pool().limit(limits=torch.get_num_threads()):
        w, v, info = lapack.dsyevd(g.numpy(), compute_v=1, lower=1)
    if info != 0:  # no convergence (not seen on finite input): torch's solver on the symmetrised matrix
        full = torch.tril(g) + torch.tril(g, -1).mT
        return torch.linalg.eigh(full)
    return torch.from_numpy(w), torch.from_numpy(v)


def _stack(ts: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack without a copy for the common single matrix."""
    return ts[0].unsqueeze(0) if len(ts) == 1 else torch.stack(ts)


def _polar_bands(
    x: torch.Tensor | None, x64: torch.Tensor, tall: bool, lam: torch.Tensor, u: torch.Tensor, floor: float, cd
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One matrix: value, singular values (ascending) and polar factor (x's layout, dtype ``cd``) from the float64
    eigendecomposition (lam, u) of its Gram. ``x`` is x64 in ``cd`` if the caller has it (else rounded here when
    needed). See the module docstring for the three bands."""
    sig = lam.clamp_min(0).sqrt()
    sl = sig.tolist()
    smax = sl[-1]
    if not smax > 0:
        return sig.sum(), sig, torch.zeros_like(x64, dtype=cd)
    s = len(sl)
    lo, hi = _widest_window(sl, bisect.bisect_left(sl, _MID_MIN * smax), _MID_RATIO)
    parts = [sig[lo:]]
    polar = None
    residual = x
    u_cd = u.to(cd)
    if hi < s:  # top band, exact in float64, then removed from A
        ut = u[:, hi:]
        wt = _lmul(ut.mT, x64, tall)
        polar = _lmul(u_cd[:, hi:], _scale_rows(wt, sig[hi:].reciprocal(), tall).to(cd), tall)
        if hi > lo:
            residual = (x64 - _lmul(ut, wt, tall)).to(cd)
    if hi > lo:  # middle band: one product in the computation dtype (X_M itself has no cancellation)
        if residual is None:
            residual = x64.to(cd)
        um = u_cd[:, lo:hi]
        xm = (um * sig[lo:hi].reciprocal().to(cd)) @ um.mT
        pm = _lmul(xm, residual, tall)
        polar = pm if polar is None else polar.add_(pm)
    if lo > 0:  # bottom band, on its own scale: W_L = U_L^T A rotated to orthogonal rows, whose norms are sigma
        ub = u[:, :lo]
        wb = _lmul(ub.mT, x64, tall)
        _, v = torch.linalg.eigh(_gram(wb, tall))
        wb = _lmul(v.mT, wb, tall)
        sb = _row_norms(wb, tall)
        inv = torch.where(sb > floor * smax, sb.reciprocal(), torch.zeros_like(sb))
        pb = _lmul((ub @ v).to(cd), _scale_rows(wb, inv, tall).to(cd), tall)
        polar = pb if polar is None else polar.add_(pb)
        parts.insert(0, sb)
    sigma = torch.cat(parts).sort().values
    return sigma.sum(), sigma, polar


def _polar_rows(
    x64: torch.Tensor, tall: bool, u: torch.Tensor, floor: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched float64 variant: W = U^T A, singular values = row norms of W, polar = U diag(1/sigma) W."""
    w = _lmul(u.mT, x64, tall)
    sig = _row_norms(w, tall)
    smax = sig.amax(-1, keepdim=True)
    inv = torch.where(sig > floor * smax, sig.reciprocal(), torch.zeros_like(sig))
    polar = _lmul(u, _scale_rows(w, inv, tall), tall)
    return sig.sum(-1), sig.sort(-1).values, polar


def _svd_exact(a: torch.Tensor, floor: float, want_polar: bool):
    """float64 SVD route: value, ascending singular values, U_r V_r^T over sigma > floor * sigma_max."""
    if not want_polar:
        s = torch.linalg.svdvals(a)
        return s.sum(-1), s.flip(-1), None
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    keep = (s > floor * s[..., :1]).to(a.dtype)
    return s.sum(-1), s.flip(-1), (u * keep.unsqueeze(-2)) @ vh


def _pow2_scale(x64: torch.Tensor) -> torch.Tensor:
    """Per-matrix power of two bringing max |x| to [0.5, 1): exact, and keeps float64 Grams of float64 input
    away from overflow and underflow. Shape (N, 1, 1); 1 for all-zero matrices."""
    amax = x64.abs().amax(dim=(-2, -1), keepdim=True)
    _, e = torch.frexp(amax)
    return torch.where(amax > 0, torch.ldexp(torch.ones_like(amax), -e), torch.ones_like(amax))


def _gram_method(x: torch.Tensor, cd: torch.dtype, want_polar: bool, bounded: bool = False):
    """The "gram" method for x (N, m, n), float32 or float64 entries, computing in ``cd``: value (N,), sigma
    (N, k) ascending, polar (in ``cd``). A float64 x with cd = float32 is used exactly where float64 work is
    done (Gram, outer bands) and rounded only for the float32 middle-band product. ``bounded``: the caller
    guarantees entries of magnitude <= 1 that are not all tiny (no scaling against float64 overflow needed)."""
    n_mat, m, n = x.shape
    tall = m > n
    floor = rounding_floor(cd, m, n)
    x64 = x.double()
    scale = None
    if x.dtype == torch.float64 and not bounded:
        scale = _pow2_scale(x64)
        x64 = x64 * scale
    bands = want_polar and cd != torch.float64 and n_mat <= _BAND_MAX_BATCH and min(m, n) * max(m, n) >= _BAND_MIN_SIZE
    host = bands and _use_host_lapack(x)
    if host:
        g = _stack([_host_gram(x64[i], tall) for i in range(n_mat)])
    else:
        # A tall x is copied transposed for its Gram: the blocked product of a row-major A runs faster than the
        # transposed-operand product x^T x (19.3 ms with the copy instead of 24.8 at 2048 x 512).
        g = _gram(x64.mT.contiguous(), False) if tall else _gram(x64, False)
    if not bounded and not bool(torch.isfinite(g.diagonal(dim1=-2, dim2=-1).sum())):
        _raise_non_finite(x)
    if cd == torch.float64:
        value, sigma, polar = _float64_from_gram(x64, g, tall, floor, want_polar)
    elif not want_polar:
        sigma = torch.linalg.eigvalsh(g).clamp_min(0).sqrt()
        value, polar = sigma.sum(-1), None
    else:
        if host:
            lam, u = (_stack(list(t)) for t in zip(*(_host_eigh(g[i]) for i in range(n_mat))))
        else:
            lam, u = torch.linalg.eigh(g)
        if bands:
            xc = x if (scale is None and x.dtype == cd) else None
            outs = [
                _polar_bands(None if xc is None else xc[i], x64[i], tall, lam[i], u[i], floor, cd)
                for i in range(n_mat)
            ]
            value, sigma, polar = (
                torch.stack([o[j] for o in outs]) if n_mat > 1 else outs[0][j].unsqueeze(0) for j in range(3)
            )
        else:
            value, sigma, polar = _polar_rows(x64, tall, u, floor)
    if scale is not None:
        inv_scale = scale.reciprocal().reshape(-1)
        value, sigma = value * inv_scale, sigma * inv_scale.unsqueeze(-1)
    return value.to(cd), sigma.to(cd), (polar.to(cd) if polar is not None else None)


def _float64_from_gram(x64, g, tall, floor, want_polar):
    """float64 computation: Gram route where sigma_min >= 1e-4 sigma_max, float64 SVD for the others."""
    lam, u = torch.linalg.eigh(g) if want_polar else (torch.linalg.eigvalsh(g), None)
    ok = lam[..., 0] >= _F64_GRAM_MIN_EIG_RATIO * lam[..., -1]
    if want_polar:
        value, sigma, polar = _polar_rows(x64, tall, u, floor)
    else:
        sigma = lam.clamp_min(0).sqrt()
        value, polar = sigma.sum(-1), None
    if not bool(ok.all()):
        idx = (~ok).nonzero().squeeze(-1)
        v2, s2, p2 = _svd_exact(x64[idx], floor, want_polar)
        value = value.index_copy(0, idx, v2)
        sigma = sigma.index_copy(0, idx, s2)
        if want_polar:
            polar = polar.index_copy(0, idx, p2)
    return value, sigma, polar


def _ns_schedule(s: int, floor: float) -> list[float]:
    """Scaling factors alpha_k of the optimally scaled cubic Newton-Schulz steps (Chen & Chow 2014): each maps
    [l, 1] onto [l', 1] with l' = 3/2 alpha l - 1/2 (alpha l)^3, alpha = sqrt(3 / (1 + l + l^2)). The start
    l_0 = floor / sqrt(s) bounds sigma / ||A||_F from below for every singular value above the floor."""
    ell = floor / math.sqrt(s)
    alphas = []
    while 1.0 - ell > 1e-15 and len(alphas) < 100:
        alpha = math.sqrt(3.0 / (1.0 + ell + ell * ell))
        alphas.append(alpha)
        ell = 1.5 * alpha * ell - 0.5 * (alpha * ell) ** 3
    alphas.append(1.0)  # one plain step against the rounding of the last one
    return alphas


def _newton_schulz_method(x: torch.Tensor, cd: torch.dtype, want_polar: bool, bounded: bool = False):
    """The "newton_schulz" method for x (N, m, n) computing in ``cd``: value, sigma (None), polar. With
    ``bounded`` (see :func:`_gram_method`) nothing in it synchronises with the host."""
    _, m, n = x.shape
    tall = m > n
    s = min(m, n)
    x64 = x.double()
    scale = _pow2_scale(x64) if x.dtype == torch.float64 and not bounded else None
    if scale is not None:
        x64 = x64 * scale
    norm = torch.linalg.matrix_norm(x64).unsqueeze(-1).unsqueeze(-1)  # ||A||_F >= sigma_max
    if not bounded and not bool(torch.isfinite(norm).all()):
        _raise_non_finite(x)
    norm = torch.where(norm > 0, norm, torch.ones_like(norm))
    it = x64 / norm
    eye = torch.eye(s, dtype=torch.float64, device=x.device)
    # Rounding noise grows with the iteration like eps64 / l_0, so the start stays at the float32 floor also
    # for float64 computation (noise ~2e-8 at s = 512).
    for alpha in _ns_schedule(s, _EPS32):
        y = _gram(it, tall)
        t = eye * (1.5 * alpha) - y * (0.5 * alpha**3)
        it = _lmul(t, it, tall)
    # sum_i sigma_i = tr(P A^T) for the polar factor P.
    value = (it * x64).sum(dim=(-2, -1))
    if scale is not None:
        value = value / scale.reshape(-1)
    return value.to(cd), None, (it.to(cd) if want_polar else None)


def _singular_values_for(x: torch.Tensor) -> torch.Tensor:
    """Ascending singular values from a float64 Gram (for the matmul-only method, on request)."""
    _, m, n = x.shape
    x64 = x.double()
    scale = _pow2_scale(x64)
    sigma = torch.linalg.eigvalsh(_gram(x64 * scale, m > n)).clamp_min(0).sqrt()
    return (sigma / scale.reshape(-1, 1)).to(x.dtype)


class _PolarNuclearNorm(torch.autograd.Function):
    """Autograd wrapper: the backward is grad_output times the polar factor computed in forward."""

    @staticmethod
    def forward(ctx, x, method, cd, bounded):
        value, sigma, polar = _core(x, method, cd, want_polar=True, bounded=bounded)
        ctx.save_for_backward(polar)
        ctx.in_dtype = x.dtype
        if sigma is not None:
            ctx.mark_non_differentiable(sigma)
        return value, sigma

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_value, grad_sigma):
        (polar,) = ctx.saved_tensors
        return (polar * grad_value.unsqueeze(-1).unsqueeze(-1)).to(ctx.in_dtype), None, None, None


def _core(x: torch.Tensor, method: str, cd: torch.dtype, want_polar: bool, bounded: bool = False):
    """Dispatch for x (..., m, n): value (...), sigma (..., k) ascending or None, polar (shape of x) or None,
    all in the computation dtype ``cd``."""
    *batch, m, n = x.shape
    xs = x.reshape(-1, m, n)
    if xs.shape[0] == 0:
        zeros = x.new_zeros(x.shape, dtype=cd) if want_polar else None
        return x.new_zeros(batch, dtype=cd), x.new_zeros(*batch, min(m, n), dtype=cd), zeros
    if method == "newton_schulz":
        value, sigma, polar = _newton_schulz_method(xs, cd, want_polar, bounded)
    else:
        value, sigma, polar = _gram_method(xs, cd, want_polar, bounded)
    value = value.reshape(batch)
    sigma = sigma.reshape(*batch, min(m, n)) if sigma is not None else None
    polar = polar.reshape(x.shape) if polar is not None else None
    return value, sigma, polar


def _compute_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float64 if x.dtype == torch.float64 else torch.float32
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"nuclear_norm computes in torch.float32 or torch.float64, got dtype={dtype}")
    return dtype


def _resolve_method(method: str, x: torch.Tensor) -> str:
    if method not in NUCLEAR_NORM_METHODS:
        raise ValueError(f"unknown nuclear_norm method {method!r}; choose one of {NUCLEAR_NORM_METHODS}")
    if method != "auto":
        return method
    # CPU: the float64-eigh Gram method measured fastest at every shape class of benchmarks/bench_objectives.py
    # (see benchmarks/RESULTS.md). CUDA: matmul-only, no batched eigh. Other backends: the SVD reference.
    if x.device.type == "cpu":
        return "gram"
    if x.device.type == "cuda":
        return "newton_schulz"
    return "svd"


def _nuclear(x: torch.Tensor, method: str, dtype: torch.dtype | None, want_sigma: bool, exact_input: bool = False):
    """Shared entry: value and, when ``want_sigma``, ascending detached singular values (else None).

    ``exact_input`` (internal, for the MMCR loss): x is float64 holding values known to float64 accuracy (centroids
    of float32 embeddings computed in float64, entries in [-1, 1]) while the computation runs in ``dtype``; the
    "gram" and "newton_schulz" methods then use x unrounded wherever they work in float64."""
    _check_matrix(x)
    cdtype = _compute_dtype(x, dtype)
    method = _resolve_method(method, x)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc = x if exact_input and method != "svd" else x.to(cdtype)
        if method == "svd":
            if not bool(torch.isfinite(xc).all()):
                _raise_non_finite(x)
            sigma = torch.linalg.svdvals(xc)
            return sigma.sum(-1), sigma.detach().flip(-1)
        if xc.requires_grad and torch.is_grad_enabled():
            value, sigma = _PolarNuclearNorm.apply(xc, method, cdtype, exact_input)
        else:
            value, sigma, _ = _core(xc.detach(), method, cdtype, want_polar=False, bounded=exact_input)
        if want_sigma and sigma is None:
            *batch, m, n = xc.shape
            sigma = _singular_values_for(xc.detach().reshape(-1, m, n)).reshape(*batch, min(m, n)).to(cdtype)
        return value, sigma


def nuclear_norm_with_singular_values(
    x: torch.Tensor, method: str = "auto", *, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`nuclear_norm` but also returns the singular values, for logging (effective rank) at no extra cost.

    With "gram" and "svd" they come for free from the same decomposition; "newton_schulz" computes them with an
    extra ``eigvalsh`` of the float64 Gram.

    Args:
        x: (..., m, n) real floating-point matrices.
        method: "auto", "gram", "newton_schulz" or "svd", as in :func:`nuclear_norm`.
        dtype: computation dtype (float32 by default, float64 for float64 input or on request).

    Returns:
        ``(value, sigma)``: value (...) with the gradient of :func:`nuclear_norm`, and sigma (..., min(m, n)),
        the singular values in ascending order, detached.

    Raises:
        ValueError: x is not a real floating-point tensor of shape (..., m, n), or holds NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr.objectives import nuclear_norm_with_singular_values
        >>> value, sigma = nuclear_norm_with_singular_values(torch.diag(torch.tensor([3.0, 1.0, 2.0])))
        >>> round(value.item(), 4), [round(s, 4) for s in sigma.tolist()]
        (6.0, [1.0, 2.0, 3.0])
    """
    return _nuclear(x, method, dtype, want_sigma=True)


def nuclear_norm(x: torch.Tensor, method: str = "auto", *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Nuclear norm ||x||_* (sum of singular values) of each matrix, with an exact gradient at float32-class cost.

    Method "gram" (float64 Gram eigendecomposition with a mostly-float32 gradient product; the CPU default),
    "newton_schulz" (matmul-only polar iteration in float64; the CUDA default), "svd" (reference,
    ``torch.linalg.svdvals`` and its autograd) or "auto". The gradient is the polar factor U V^T over every
    singular value above the rounding floor of the computation dtype (:func:`rounding_floor`); below it the
    minimum-norm subgradient (zero matrix -> zero gradient). The computation runs in float32, or float64 when x
    is float64 or ``dtype=torch.float64``, also under autocast; float16/bfloat16 inputs are upcast and their
    gradient is cast back. Supports one backward (no double backward).

    Args:
        x: (..., m, n) real floating-point matrices (any leading batch dimensions).
        method: "auto" (the device's default), "gram", "newton_schulz" or "svd".
        dtype: computation dtype; None means float32, or float64 when x is float64.

    Returns:
        (...) nuclear norms, in the computation dtype.

    Raises:
        ValueError: x is not a real floating-point tensor of shape (..., m, n), or holds NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr.objectives import nuclear_norm
        >>> x = torch.diag(torch.tensor([3.0, 2.0, 1.0])).requires_grad_()
        >>> value = nuclear_norm(x)
        >>> round(value.item(), 4)
        6.0
        >>> value.backward()  # the gradient is the polar factor U V^T, here the identity
        >>> torch.allclose(x.grad, torch.eye(3), atol=1e-6)
        True
        >>> _ = torch.manual_seed(0)
        >>> batch = torch.randn(4, 5, 3)
        >>> nuclear_norm(batch).shape
        torch.Size([4])
        >>> torch.allclose(nuclear_norm(batch), torch.linalg.matrix_norm(batch, "nuc"), atol=1e-5)
        True
    """
    return _nuclear(x, method, dtype, want_sigma=False)[0]
