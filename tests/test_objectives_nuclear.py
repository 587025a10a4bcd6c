"""nuclear_norm against float64 SVD autograd: values, (sub)gradients, precision handling, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcr.objectives import nuclear_norm, nuclear_norm_with_singular_values
from mmcr.objectives.nuclear import FLOAT32_MIN_EIG_RATIO, RANK_RTOL

KINDS = ["gaussian", "low_rank", "duplicated", "near_collapsed", "zero", "tiny_scale", "large_scale", "ill_cond"]


def make_matrix(kind: str, batch: tuple[int, ...], m: int, n: int, seed: int) -> torch.Tensor:
    """float32 test matrices; every nonzero singular value sits far above RANK_RTOL * sigma_max."""
    g = torch.Generator().manual_seed(seed)
    shape = (*batch, m, n)

    def randn(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    if kind == "gaussian":
        x = randn(*shape)
    elif kind == "low_rank":
        r = max(1, min(m, n) // 2)
        x = randn(*batch, m, r) @ randn(*batch, r, n)
    elif kind == "duplicated":
        base = randn(*batch, max(1, m // 2), n)
        idx = torch.arange(m) % base.shape[-2]
        x = base[..., idx, :]
    elif kind == "near_collapsed":
        x = randn(*batch, 1, n) + 1e-3 * randn(*shape)
    elif kind == "zero":
        x = torch.zeros(shape, dtype=torch.float64)
    elif kind == "tiny_scale":
        x = 1e-20 * randn(*shape)
    elif kind == "large_scale":
        x = 1e20 * randn(*shape)  # the float32 Gram overflows; must fall back to float64
    elif kind == "ill_cond":
        s = min(m, n)
        u = torch.linalg.qr(randn(*batch, m, s))[0]
        v = torch.linalg.qr(randn(*batch, n, s))[0]
        sig = torch.logspace(0, -3, s, dtype=torch.float64)
        x = (u * sig.unsqueeze(-2)) @ v.mT
    else:
        raise AssertionError(kind)
    return x.float()


def reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 SVD value and minimum-norm subgradient U_r V_r^T (r = numerical rank at RANK_RTOL)."""
    x64 = x.detach().double()
    u, s, vh = torch.linalg.svd(x64, full_matrices=False)
    keep = s > RANK_RTOL * s[..., :1]
    return s.sum(-1), (u * keep.unsqueeze(-2)) @ vh


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().item()
    diff = (a.double() - b).abs().max().item()
    return diff / scale if scale > 0 else diff


@settings(max_examples=60, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    batch=st.sampled_from([(), (1,), (3,), (2, 2)]),
    m=st.integers(1, 20),
    n=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_gram_matches_float64_svd(kind, batch, m, n, seed):
    x = make_matrix(kind, batch, m, n, seed).requires_grad_(True)
    value = nuclear_norm(x, method="gram")
    value.sum().backward()
    ref_value, ref_grad = reference(x)
    assert value.dtype == torch.float32 and value.shape == batch
    assert torch.isfinite(x.grad).all()
    assert rel_err(value, ref_value) <= 1e-5
    assert rel_err(x.grad, ref_grad) <= 1e-4
    if kind == "zero":
        assert torch.equal(x.grad, torch.zeros_like(x.grad))


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(KINDS), m=st.integers(1, 12), n=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_gradient_is_a_subgradient(kind, m, n, seed):
    """<G, X> = ||X||_* and ||G||_2 <= 1, the defining properties of a nuclear-norm subgradient; singular values
    below RANK_RTOL * sigma_max get no gradient, so <G, X> may fall short by at most their sum."""
    x = make_matrix(kind, (), m, n, seed).double().requires_grad_(True)
    value = nuclear_norm(x)
    value.backward()
    scale = max(value.item(), 1e-300)
    assert abs((x.grad * x).sum().item() - value.item()) <= (min(m, n) * RANK_RTOL + 1e-12) * scale
    # The float64 Gram loses eps64 * kappa^2 <= 1e-16 * RANK_RTOL^-2 = 1e-6 at the kept singular values.
    assert torch.linalg.matrix_norm(x.grad, ord=2).item() <= 1 + 1e-6


def test_float32_path_and_float64_fallback_agree_around_threshold():
    """Matrices just above and below the float32 acceptance ratio give the same accuracy."""
    torch.manual_seed(0)
    for ratio in (FLOAT32_MIN_EIG_RATIO * 2, FLOAT32_MIN_EIG_RATIO / 2):
        u = torch.linalg.qr(torch.randn(24, 24, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(64, 24, dtype=torch.float64))[0]
        sig = torch.linspace(1, ratio**0.5, 24, dtype=torch.float64)
        x = ((u * sig) @ v.T).float().requires_grad_(True)
        nuclear_norm(x).backward()
        ref_value, ref_grad = reference(x)
        assert rel_err(nuclear_norm(x.detach()), ref_value) <= 1e-6
        assert rel_err(x.grad, ref_grad) <= 2e-5


def test_batch_mixing_paths_and_transposed_shapes():
    x = torch.stack([make_matrix(k, (), 9, 5, i) for i, k in enumerate(KINDS)]).requires_grad_(True)
    nuclear_norm(x).sum().backward()
    ref_value, ref_grad = reference(x)
    assert rel_err(nuclear_norm(x.detach()), ref_value) <= 1e-5
    for i in range(len(KINDS)):  # each matrix against its own scale
        assert rel_err(x.grad[i], ref_grad[i]) <= 1e-4


def test_svd_method_is_the_reference():
    x = make_matrix("gaussian", (2,), 6, 9, 1).requires_grad_(True)
    value = nuclear_norm(x, method="svd")
    value.sum().backward()
    ref_value, ref_grad = reference(x)
    assert rel_err(value, ref_value) <= 1e-5
    assert rel_err(x.grad, ref_grad) <= 1e-4


def test_singular_values_are_returned_ascending_and_detached():
    x = make_matrix("gaussian", (), 7, 4, 2).requires_grad_(True)
    value, sigma = nuclear_norm_with_singular_values(x)
    ref = torch.linalg.svdvals(x.detach().double()).flip(-1)
    assert not sigma.requires_grad
    torch.testing.assert_close(sigma.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(value.double(), ref.sum(), rtol=1e-6, atol=0)


def test_float64_on_request():
    x = make_matrix("ill_cond", (), 10, 30, 3).requires_grad_(True)
    value = nuclear_norm(x, dtype=torch.float64)
    value.backward()
    assert value.dtype == torch.float64 and x.grad.dtype == torch.float32
    ref_value, ref_grad = reference(x)
    assert rel_err(value, ref_value) <= 1e-12


@pytest.mark.parametrize("dtype,grad_tol", [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_inputs_give_float32_accurate_results(dtype, grad_tol):
    x = make_matrix("gaussian", (3,), 12, 20, 4).to(dtype).requires_grad_(True)
    value = nuclear_norm(x)
    value.sum().backward()
    ref_value, ref_grad = reference(x)  # of the rounded half-precision values
    assert value.dtype == torch.float32
    assert rel_err(value, ref_value) <= 1e-5
    assert x.grad.dtype == dtype
    assert rel_err(x.grad, ref_grad) <= grad_tol  # limited by storing the gradient in half precision


def test_autocast_computes_in_float32():
    x = make_matrix("gaussian", (), 16, 24, 5).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = nuclear_norm(x * 1.0)
    value.backward()
    ref_value, ref_grad = reference(x)
    assert value.dtype == torch.float32
    assert rel_err(value, ref_value) <= 1e-5
    assert rel_err(x.grad, ref_grad) <= 1e-4


def test_no_grad_path_and_empty_batch():
    x = make_matrix("gaussian", (4,), 3, 5, 6)
    with torch.no_grad():
        torch.testing.assert_close(nuclear_norm(x).double(), reference(x)[0], rtol=1e-6, atol=0)
    assert nuclear_norm(torch.zeros(0, 3, 4)).shape == (0,)


@pytest.mark.parametrize(
    "x,kwargs,match",
    [
        (torch.ones(5), {}, r"\(\.\.\., m, n\)"),
        (torch.ones(2, 0, 3), {}, "m >= 1 and n >= 1"),
        (torch.ones(3, 3, dtype=torch.int64), {}, "floating-point"),
        (torch.ones(3, 3), {"method": "qr"}, "unknown nuclear_norm method"),
        (torch.ones(3, 3), {"dtype": torch.float16}, "float32 or torch.float64"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), {}, "1 NaN and 0 Inf"),
        (torch.tensor([[1.0, float("inf")], [0.0, 1.0]]), {"method": "svd"}, "0 NaN and 1 Inf"),
    ],
)
def test_bad_input_raises(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        nuclear_norm(x, **kwargs)
