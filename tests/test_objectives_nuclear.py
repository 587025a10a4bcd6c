"""nuclear_norm against float64 SVD: values, exact gradients down to the rounding floor, gradcheck, bad input.

The reference keeps every singular value the float64 SVD itself resolves (above max(m, n) * eps64 * sigma_max,
its own rounding noise); it applies no cut-off of the implementation's. float32 test matrices are built so
that each singular value is either exactly zero (duplicated or zero rows, exact in float32) or far above the
float32 floor eps32 * sigma_max, where the two semantics agree.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mmcr.objectives import nuclear_norm, nuclear_norm_with_singular_values
from mmcr.objectives.nuclear import _MID_MIN, _MID_RATIO, _widest_window, rounding_floor

FAST = ["gram", "newton_schulz"]
KINDS = [
    "gaussian",
    "power_law_0.5",
    "power_law_1",
    "power_law_2",
    "near_collapsed",
    "duplicated",
    "zero_rows",
    "zero",
    "tiny_scale",
    "large_scale",
    "ill_cond",
    "near_floor",
]


def _orthonormal(g: torch.Generator, rows: int, cols: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(rows, cols, generator=g, dtype=torch.float64))[0]


def spectrum_matrix(sigma: torch.Tensor, m: int, n: int, g: torch.Generator) -> torch.Tensor:
    """float64 U diag(sigma) V^T of shape (m, n) with Haar-random U, V (len(sigma) = min(m, n))."""
    k = min(m, n)
    return (_orthonormal(g, m, k) * sigma) @ _orthonormal(g, n, k).mT


def make_matrix(kind: str, batch: tuple[int, ...], m: int, n: int, seed: int) -> torch.Tensor:
    """float32 test matrices; see the module docstring for how they relate to the float32 floor."""
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)

    def one() -> torch.Tensor:
        if kind == "gaussian":
            return torch.randn(m, n, generator=g, dtype=torch.float64)
        if kind.startswith("power_law"):  # like training centroids: sigma_i ~ i^-alpha plus noise
            alpha = float(kind.rsplit("_", 1)[1])
            noise = {0.5: 0.3, 1.0: 0.1, 2.0: 0.01}[alpha]
            base = spectrum_matrix(torch.arange(1, k + 1, dtype=torch.float64) ** -alpha, m, n, g)
            return base + noise * torch.randn(m, n, generator=g, dtype=torch.float64) / n**0.5
        if kind == "near_collapsed":
            return torch.randn(1, n, generator=g, dtype=torch.float64) + 1e-3 * torch.randn(
                m, n, generator=g, dtype=torch.float64
            )
        if kind == "duplicated":  # exact in float32: rank <= ceil(m / 2)
            base = torch.randn(max(1, (m + 1) // 2), n, generator=g).double()
            return base[torch.arange(m) % base.shape[0]]
        if kind == "zero_rows":
            x = torch.randn(m, n, generator=g, dtype=torch.float64)
            x[torch.randperm(m, generator=g)[: m // 2]] = 0
            return x
        if kind == "zero":
            return torch.zeros(m, n, dtype=torch.float64)
        if kind == "tiny_scale":
            return 1e-20 * torch.randn(m, n, generator=g, dtype=torch.float64)
        if kind == "large_scale":  # a float32 Gram would overflow
            return 1e20 * torch.randn(m, n, generator=g, dtype=torch.float64)
        if kind == "ill_cond":
            return spectrum_matrix(torch.logspace(0, -4, k, dtype=torch.float64), m, n, g)
        if kind == "near_floor":  # smallest singular value 1e-6 sigma_max: resolved by float32, lost to a 1e-5 cut
            return spectrum_matrix(torch.logspace(0, -6, k, dtype=torch.float64), m, n, g)
        raise AssertionError(kind)

    count = 1
    for b in batch:
        count *= b
    return torch.stack([one() for _ in range(count)]).reshape(*batch, m, n).float()


def reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 SVD value and U_r V_r^T over every singular value above the SVD's own rounding noise."""
    x64 = x.detach().double()
    u, s, vh = torch.linalg.svd(x64, full_matrices=False)
    keep = s > max(x.shape[-2:]) * torch.finfo(torch.float64).eps * s[..., :1]
    return s.sum(-1), (u * keep.unsqueeze(-2)) @ vh


def clear_of_the_float32_floor(x: torch.Tensor) -> bool:
    """True when every singular value is either numerically zero in float64 or well above eps32 * sigma_max,
    where the implementation's floor and the reference agree. (A random square matrix, say, can have a
    singular value anywhere near zero; float32 cannot tell such a value from rounding noise.)"""
    s = torch.linalg.svdvals(x.detach().double())
    top = s[..., :1]
    ambiguous = (s > 1e3 * max(x.shape[-2:]) * torch.finfo(torch.float64).eps * top) & (
        s < 100 * torch.finfo(torch.float32).eps * top
    )
    return not bool(ambiguous.any())


def frob_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-matrix relative Frobenius error ||a - b|| / ||b|| (absolute where b = 0)."""
    a, b = a.double().reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    diff = torch.linalg.matrix_norm(a - b)
    scale = torch.linalg.matrix_norm(b)
    return torch.where(scale > 0, diff / scale.clamp_min(1e-300), diff).max().item() if a.numel() else 0.0


def value_err(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a.double() - b).abs()
    return torch.where(b > 0, diff / b.clamp_min(1e-300), diff).max().item() if a.numel() else 0.0


@settings(max_examples=80, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    method=st.sampled_from(FAST),
    batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
    m=st.integers(1, 24),
    n=st.integers(1, 24),
    seed=st.integers(0, 2**16),
)
def test_matches_float64_svd_without_cutoff(kind, method, batch, m, n, seed):
    x = make_matrix(kind, batch, m, n, seed).requires_grad_(True)
    assume(clear_of_the_float32_floor(x))
    value = nuclear_norm(x, method=method)
    value.sum().backward()
    ref_value, ref_grad = reference(x)
    assert value.dtype == torch.float32 and value.shape == batch
    assert torch.isfinite(x.grad).all()
    assert value_err(value, ref_value) <= 1e-5
    assert frob_err(x.grad, ref_grad) <= 1e-5
    if kind == "zero":
        assert torch.equal(x.grad, torch.zeros_like(x.grad))


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("kind", ["power_law_1", "power_law_2", "near_collapsed", "duplicated", "near_floor"])
@pytest.mark.parametrize("shape", [(64, 600), (700, 96)])
def test_band_split_on_large_matrices(method, kind, shape):
    """Sizes where "gram" splits the gradient product into float64 and float32 bands (and a transposed layout)."""
    x = make_matrix(kind, (), *shape, seed=7).requires_grad_(True)
    value = nuclear_norm(x, method=method)
    value.backward()
    ref_value, ref_grad = reference(x)
    assert value_err(value, ref_value) <= 1e-6
    assert frob_err(x.grad, ref_grad) <= 2e-6
    assert x.grad.stride() == x.stride()


@pytest.mark.parametrize("kind", ["power_law_2", "near_collapsed", "near_floor"])
@pytest.mark.parametrize("shape", [(64, 600), (700, 96)])
def test_band_split_through_scipy_lapack_on_one_thread(monkeypatch, kind, shape):
    """On one CPU thread the Gram and its eigendecomposition go through scipy (dsyrk/dsyevd): same exactness
    as torch's routines, which serve the multi-threaded case."""
    import mmcr.objectives.nuclear as nuclear

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        grads = {}
        for host in (True, False):
            monkeypatch.setattr(nuclear, "_HOST_LAPACK", host)
            x = make_matrix(kind, (), *shape, seed=11).requires_grad_(True)
            assert nuclear._use_host_lapack(x) == host
            value = nuclear_norm(x, method="gram")
            value.backward()
            ref_value, ref_grad = reference(x)
            assert value_err(value, ref_value) <= 1e-6
            assert frob_err(x.grad, ref_grad) <= 2e-6
            grads[host] = x.grad
        assert frob_err(grads[True], grads[False]) <= 2e-6
    finally:
        torch.set_num_threads(threads)


def test_band_split_uses_all_three_bands():
    """Three large, a middle cluster and small singular values (down to 1e-6) plus exact zeros."""
    g = torch.Generator().manual_seed(3)
    sigma = torch.cat(
        [torch.ones(3), torch.logspace(-1.5, -2.5, 50), torch.logspace(-4, -6, 10)]
    ).double()
    y = spectrum_matrix(sigma, 63, 700, g).float()
    x = torch.cat([y, y[:3]]).requires_grad_(True)  # 3 exact zeros
    sig = torch.linalg.svdvals(x.detach().double()).flip(0).tolist()
    lo, hi = _widest_window(sig, sum(v < _MID_MIN * sig[-1] for v in sig), _MID_RATIO)
    assert 0 < lo < hi < len(sig)
    nuclear_norm(x, method="gram").backward()
    assert frob_err(x.grad, reference(x)[1]) <= 2e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", FAST)
def test_small_singular_value_gets_its_gradient(dtype, method):
    """diag(1, 1e-6): the gradient is the identity (a 1e-5 rank cut-off used to return diag(1, 0))."""
    x = torch.diag(torch.tensor([1.0, 1e-6], dtype=dtype)).requires_grad_(True)
    nuclear_norm(x, method=method).backward()
    torch.testing.assert_close(x.grad, torch.eye(2, dtype=dtype), rtol=0, atol=1e-6)


def _gradcheck_setup(kappa: float) -> tuple[float, float]:
    """Step and tolerance for central differences at sigma_min = 1 / kappa, sigma_max = 1 in float64: the
    truncation error (h / sigma_min)^2 / 6 against the rounding error ~eps64 * sum(sigma) / h, at their optimum."""
    t = (3 * 2.3e-16 * kappa) ** (1 / 3)
    return t / kappa, 20 * (t * t / 6 + 3 * 2.3e-16 * kappa / t)


@pytest.mark.parametrize("kappa", [1e3, 1e6, 1e9, 1e12])
def test_gradcheck_float64_ill_conditioned(kappa):
    g = torch.Generator().manual_seed(int(kappa) % 1000)
    x = spectrum_matrix(torch.logspace(0, -torch.log10(torch.tensor(kappa)).item(), 4, dtype=torch.float64), 4, 6, g)
    eps, atol = _gradcheck_setup(kappa)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: nuclear_norm(a, method="gram"), (x,), eps=eps, atol=atol, rtol=0)
    if kappa <= 1e6:  # the matmul-only method resolves down to eps32 * sigma_max in any dtype
        assert torch.autograd.gradcheck(
            lambda a: nuclear_norm(a, method="newton_schulz"), (x,), eps=eps, atol=atol, rtol=0
        )


@pytest.mark.parametrize("method", FAST)
@pytest.mark.parametrize("case", ["zero_singular_values", "duplicate_singular_values", "zero_and_duplicate"])
def test_gradcheck_float64_degenerate(method, case):
    """Exactly rank-deficient (central differences then give the minimum-norm subgradient, which is what we
    return) and repeated singular values (differentiable)."""
    g = torch.Generator().manual_seed(1)
    if case == "zero_singular_values":
        base = torch.randn(2, 5, generator=g, dtype=torch.float64)
        x = torch.cat([base, 2 * base[:1], base[1:] - base[:1]])
    elif case == "duplicate_singular_values":
        x = spectrum_matrix(torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64), 3, 5, g)
    else:
        x = spectrum_matrix(torch.tensor([2.0, 2.0, 0.5, 0.0], dtype=torch.float64), 4, 4, g)
        x = torch.cat([x, x[:1]])  # the zero singular value made exact by a duplicated row
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: nuclear_norm(a, method=method), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", FAST)
def test_gradient_is_a_subgradient(method):
    """<G, X> = ||X||_* and ||G||_2 <= 1, the defining properties, also for rank-deficient input."""
    for kind in ["gaussian", "duplicated", "zero_rows", "near_floor"]:
        x = make_matrix(kind, (), 9, 13, 5).double().requires_grad_(True)
        value = nuclear_norm(x, method=method)
        value.backward()
        assert abs((x.grad * x).sum().item() - value.item()) <= 1e-9 * value.item()
        assert torch.linalg.matrix_norm(x.grad, ord=2).item() <= 1 + 1e-9


def test_rounding_floor():
    assert rounding_floor(torch.float32, 5, 7) == torch.finfo(torch.float32).eps
    assert rounding_floor(torch.float64, 5, 7) == 7 * torch.finfo(torch.float64).eps


@pytest.mark.parametrize("method", ["gram", "newton_schulz", "svd"])
def test_methods_agree_and_svd_is_the_reference(method):
    x = make_matrix("gaussian", (2,), 6, 9, 1).requires_grad_(True)
    value = nuclear_norm(x, method=method)
    value.sum().backward()
    ref_value, ref_grad = reference(x)
    assert value_err(value, ref_value) <= 1e-6
    assert frob_err(x.grad, ref_grad) <= 1e-5


@pytest.mark.parametrize("method", ["auto", "gram", "newton_schulz", "svd"])
def test_singular_values_are_returned_ascending_and_detached(method):
    x = make_matrix("power_law_1", (3,), 7, 4, 2).requires_grad_(True)
    value, sigma = nuclear_norm_with_singular_values(x, method)
    ref = torch.linalg.svdvals(x.detach().double()).flip(-1)
    assert not sigma.requires_grad and sigma.dtype == torch.float32
    torch.testing.assert_close(sigma.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(value.double(), ref.sum(-1), rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", FAST)
def test_float64_on_request(method):
    x = make_matrix("ill_cond", (), 10, 30, 3).requires_grad_(True)
    value = nuclear_norm(x, method=method, dtype=torch.float64)
    value.backward()
    assert value.dtype == torch.float64 and x.grad.dtype == torch.float32
    ref_value, ref_grad = reference(x)
    assert value_err(value, ref_value) <= 1e-12
    assert frob_err(x.grad, ref_grad) <= 1e-6  # limited by storing the gradient in float32


@pytest.mark.parametrize("dtype,grad_tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_inputs_give_float32_accurate_results(dtype, grad_tol):
    x = make_matrix("gaussian", (3,), 12, 20, 4).to(dtype).requires_grad_(True)
    value = nuclear_norm(x)
    value.sum().backward()
    ref_value, ref_grad = reference(x)  # of the rounded half-precision values
    assert value.dtype == torch.float32
    assert value_err(value, ref_value) <= 1e-5
    assert x.grad.dtype == dtype
    assert frob_err(x.grad, ref_grad) <= grad_tol  # limited by storing the gradient in half precision


def test_autocast_computes_in_float32():
    x = make_matrix("gaussian", (), 16, 24, 5).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = nuclear_norm(x * 1.0)
    value.backward()
    ref_value, ref_grad = reference(x)
    assert value.dtype == torch.float32
    assert value_err(value, ref_value) <= 1e-5
    assert frob_err(x.grad, ref_grad) <= 1e-5


@pytest.mark.parametrize("method", ["gram", "newton_schulz"])
def test_no_grad_path_and_empty_batch(method):
    x = make_matrix("power_law_2", (4,), 3, 5, 6)
    with torch.no_grad():
        assert value_err(nuclear_norm(x, method), reference(x)[0]) <= 1e-6
    assert nuclear_norm(torch.zeros(0, 3, 4), method).shape == (0,)
    value, sigma = nuclear_norm_with_singular_values(torch.zeros(0, 3, 4, requires_grad=True), method)
    assert value.shape == (0,) and sigma.shape == (0, 3)


@pytest.mark.parametrize(
    "x,kwargs,match",
    [
        (torch.ones(5), {}, r"\(\.\.\., m, n\)"),
        (torch.ones(2, 0, 3), {}, "m >= 1 and n >= 1"),
        (torch.ones(3, 3, dtype=torch.int64), {}, "floating-point"),
        (torch.ones(3, 3), {"method": "qr"}, "unknown nuclear_norm method"),
        (torch.ones(3, 3), {"dtype": torch.float16}, "float32 or torch.float64"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), {}, "1 NaN and 0 Inf"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), {"method": "newton_schulz"}, "1 NaN and 0 Inf"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), {"method": "svd"}, "0 NaN and 1 Inf"),
    ],
)
def test_bad_input_raises(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nuclear_norm(x, **kwargs)
