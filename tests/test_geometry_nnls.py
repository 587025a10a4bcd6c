"""The batched NNLS solver against scipy's Lawson-Hanson, over the regimes that send problems down its
different paths (short Lawson-Hanson runs, block pivoting, the Lawson-Hanson fallback on singular or
ill-conditioned blocks), with and without warm starts; and its Cholesky up/downdates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import nnls

from mmcr.geometry import nnls as nn_mod
from mmcr.geometry import nnls_gram


def _problems(rng, P, rows, m, T, kind):
    A = rng.standard_normal((P, rows, m))
    if kind == "offset":  # columns share a large common part: ill-conditioned, small supports
        A = 0.05 * A + rng.standard_normal((P, rows, 1))
    elif kind == "duplicates" and m > 2:
        A[:, :, 1] = A[:, :, 0]
        A[:, :, m - 1] = A[:, :, 0]
    elif kind == "lowrank":
        A = rng.standard_normal((P, rows, 2)) @ rng.standard_normal((P, 2, m))
    t = rng.standard_normal((P, rows, T))
    G = torch.from_numpy(A.transpose(0, 2, 1) @ A)
    b = torch.from_numpy(t.transpose(0, 2, 1) @ A)
    return A, t, G, b


def _check(A, t, x, atol=1e-8):
    """Same fitted vector A x as scipy (unique even where x is not), x >= 0."""
    assert (x >= 0).all()
    for p in range(A.shape[0]):
        for k in range(t.shape[2]):
            ref, _ = nnls(A[p], t[p, :, k], maxiter=50 * A.shape[2])
            scale = max(1.0, float(np.abs(t[p, :, k]).max()))
            np.testing.assert_allclose(A[p] @ x[p, k], A[p] @ ref, atol=atol * scale, rtol=0)


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 36),
    extra=st.integers(-30, 6),
    kind=st.sampled_from(["gauss", "offset", "duplicates", "lowrank"]),
    seed=st.integers(0, 10_000),
)
def test_matches_scipy_across_regimes(m, extra, kind, seed):
    rng = np.random.default_rng(seed)
    rows = max(1, m + extra)
    A, t, G, b = _problems(rng, 2, rows, m, 6, kind)
    _check(A, t, nnls_gram(G, b).numpy())


@settings(max_examples=15, deadline=None)
@given(m=st.integers(2, 30), kind=st.sampled_from(["gauss", "offset", "duplicates"]), seed=st.integers(0, 10_000))
def test_warm_start_changes_nothing_but_time(m, kind, seed):
    rng = np.random.default_rng(seed)
    A, t, G, b = _problems(rng, 2, m + 1, m, 5, kind)
    cold = nnls_gram(G, b).numpy()
    for init in (
        torch.from_numpy(cold > 0),  # the exact support
        torch.from_numpy(rng.random(b.shape) < 0.5),  # a poor guess
        torch.ones(b.shape, dtype=torch.bool),  # everything
        torch.zeros(b.shape, dtype=torch.bool),
    ):
        warm = nnls_gram(G, b, init=init).numpy()
        _check(A, t, warm)
        np.testing.assert_allclose(np.einsum("prm,ptm->ptr", A, warm), np.einsum("prm,ptm->ptr", A, cold), atol=1e-9)


def test_wide_supports_take_block_pivoting_and_stay_exact(monkeypatch):
    """Gaussian columns with one more row than columns: supports of ~half the variables."""
    calls = {"bpp": 0}
    orig = nn_mod._passive_solve

    def counted(*a):
        calls["bpp"] += 1
        return orig(*a)

    monkeypatch.setattr(nn_mod, "_passive_solve", counted)
    rng = np.random.default_rng(0)
    A, t, G, b = _problems(rng, 3, 41, 40, 20, "gauss")
    x = nnls_gram(G, b).numpy()
    assert calls["bpp"] >= 1 and (x > 0).sum(-1).mean() > 10
    _check(A, t, x)


def test_singular_blocks_fall_back_to_lawson_hanson():
    """More variables than rows (N < M in capacity terms) and repeated columns: every passive block
    beyond the rank is singular, so block pivoting hands these problems to Lawson-Hanson."""
    rng = np.random.default_rng(1)
    A, t, G, b = _problems(rng, 2, 8, 30, 25, "gauss")
    A[:, :, 5:10] = A[:, :, :5]
    G = torch.from_numpy(A.transpose(0, 2, 1) @ A)
    b = torch.from_numpy(t.transpose(0, 2, 1) @ A)
    _check(A, t, nnls_gram(G, b).numpy())


def test_tolerance_is_honoured():
    rng = np.random.default_rng(2)
    A, t, G, b = _problems(rng, 1, 21, 20, 10, "offset")
    loose = nnls_gram(G, b, tol=1e-2).numpy()
    w = b.numpy() - np.einsum("pmn,ptn->ptm", G.numpy(), loose)
    assert (w <= 1e-2 * np.maximum(1, np.abs(b.numpy()).max(-1, keepdims=True)) + 1e-12).all()


def test_zero_sizes_and_bad_init():
    assert nnls_gram(torch.zeros(2, 0, 0), torch.zeros(2, 3, 0)).shape == (2, 3, 0)
    assert nnls_gram(torch.eye(3)[None], torch.zeros(1, 0, 3)).shape == (1, 0, 3)
    with pytest.raises(ValueError, match="init"):
        nnls_gram(torch.eye(3)[None], torch.zeros(1, 2, 3), init=torch.zeros(1, 2, 4, dtype=torch.bool))


def test_cholesky_append_and_givens_delete_keep_the_factor():
    rng = np.random.default_rng(3)
    m = 9
    B = rng.standard_normal((m + 4, m))
    gram = torch.from_numpy(B.T @ B)[None]
    diag = gram.diagonal(dim1=1, dim2=2)
    n = 5
    st_ = nn_mod._LHState.empty(n, m, "cpu", torch.float64)
    owner = torch.zeros(n, dtype=torch.long)
    perms = [rng.permutation(m) for _ in range(n)]
    for step in range(7):
        j = torch.tensor([int(p[step]) for p in perms])
        assert nn_mod._chol_append(gram, diag, owner, st_, j).all()
    for q in ([0, 3, 6, 2, 7], [5, 0, 0, 4, 1]):  # 7 and beyond k: no change for that problem
        nn_mod._chol_delete(st_, torch.tensor(q))
        for i in range(n):
            k = int(st_.k[i])
            o = st_.order[i, :k]
            L = st_.L[i, :k, :k]
            np.testing.assert_allclose((L @ L.T).numpy(), gram[0][o][:, o].numpy(), atol=1e-12)
            assert torch.equal(L, torch.tril(L)) or float((L - torch.tril(L)).abs().max()) < 1e-15
            K = st_.L.shape[1]
            assert torch.equal(st_.L[i, k:, k:], torch.eye(K - k, dtype=torch.float64))
    assert st_.k.tolist() == [5, 5, 5, 5, 6]


def test_passive_solves_mixing_common_and_rare_support_sizes():
    """Common support sizes get batches of their own, rare ones share padded batches; in size order the
    two interleave (rare 1, common 2, rare 3, common 5, rare 6...). Every solve and gradient is exact."""
    rng = np.random.default_rng(4)
    P, m = 3, 12
    A = rng.standard_normal((P, m + 3, m))
    G = torch.from_numpy(A.transpose(0, 2, 1) @ A)
    counts = {1: 3, 2: 40, 3: 5, 5: 40, 6: 2, 9: 1, 12: 33}
    F = torch.zeros(sum(counts.values()), m, dtype=torch.bool)
    i = 0
    for k, c in counts.items():
        for _ in range(c):
            F[i, torch.from_numpy(rng.permutation(m)[:k])] = True
            i += 1
    perm = torch.from_numpy(rng.permutation(len(F)))
    F = F[perm]
    b = torch.from_numpy(rng.standard_normal((len(F), m)))
    owner = torch.from_numpy(rng.integers(0, P, len(F)))
    x, w, ok = nn_mod._passive_solve(G, b, owner, F)
    assert ok.all()
    for j in range(len(F)):
        f = F[j]
        Gp = G[owner[j]]
        ref = torch.zeros(m, dtype=torch.float64)
        ref[f] = torch.linalg.solve(Gp[f][:, f], b[j][f])
        np.testing.assert_allclose(x[j].numpy(), ref.numpy(), atol=1e-9)
        np.testing.assert_allclose(w[j].numpy(), (b[j] - Gp @ ref).numpy(), atol=1e-9)
