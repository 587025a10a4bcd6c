"""mmcr.geometry: exactness against the shared MFTMA reference vectors and known-answer checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, linalg, stats
from scipy.optimize import nnls

from mmcr.geometry import (
    center_correlation,
    centroid_similarity,
    effective_rank,
    elliptical_geometry,
    gradient_coherence,
    is_separable,
    manifold_capacity,
    neural_predictivity,
    nnls_gram,
    participation_ratio,
    power_law_exponent,
    principal_angles,
    simulated_capacity,
    subspace_alignment,
)
from mmcr.geometry.capacity import anchor_matrices
from mmcr.geometry.lowrank import residual_correlation_cost

CASES = ["gauss_small", "gauss_small_kappa0.1", "ellipsoid"]


def _load(mftma_dir, case):
    d = np.load(mftma_dir / f"{case}.npz")
    return d, d["X"].transpose(0, 2, 1), float(d["kappa"])  # reference layout is (P, N, m)


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - b) / np.abs(b)))


# ------------------------------------------------------------------------- reference vectors
@pytest.mark.parametrize("case", CASES)
def test_reduced_matrices_match_reference(mftma_dir, case):
    d, X, _ = _load(mftma_dir, case)
    A = torch.stack(anchor_matrices(X)).numpy()
    np.testing.assert_allclose(A, d["nolowrank_sD1"], atol=1e-10, rtol=0)
    A = torch.stack(anchor_matrices(X, center_subspace=d["lowrank_seed0_V11"])).numpy()
    np.testing.assert_allclose(A, d["lowrank_seed0_sD1"], atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", CASES)
def test_capacity_matches_reference_given_t_vectors(mftma_dir, case):
    d, X, kappa = _load(mftma_dir, case)
    r = manifold_capacity(X, kappa=kappa, t_vectors=d["t_vecs"])
    assert _rel(r.alpha, d["nolowrank_alpha"]) < 1e-6
    assert _rel(r.radii, d["nolowrank_R"]) < 1e-5
    assert _rel(r.dimensions, d["nolowrank_D"]) < 1e-5
    assert _rel(r.capacity, d["nolowrank_capacity"]) < 1e-6
    assert _rel(r.radius, d["nolowrank_R_mean"]) < 1e-6
    assert _rel(r.dimension, d["nolowrank_D_mean"]) < 1e-6
    assert _rel(r.center_correlation, d["center_correlation"]) < 1e-9
    assert not r.correlated and r.center_subspace is None


@pytest.mark.parametrize("case", CASES)
def test_correlated_capacity_matches_reference_given_subspace(mftma_dir, case):
    d, X, kappa = _load(mftma_dir, case)
    r = manifold_capacity(X, kappa=kappa, t_vectors=d["t_vecs"], center_subspace=d["lowrank_seed0_V11"])
    assert r.correlated
    assert _rel(r.alpha, d["lowrank_alpha"][0]) < 1e-6
    assert _rel(r.radii, d["lowrank_R"][0]) < 1e-5
    assert _rel(r.dimensions, d["lowrank_D"][0]) < 1e-5
    assert _rel(r.capacity, d["lowrank_capacity"][0]) < 1e-6
    assert _rel(r.radius, d["lowrank_R_mean"][0]) < 1e-6
    assert _rel(r.dimension, d["lowrank_D_mean"][0]) < 1e-6
    assert _rel(r.center_correlation, d["lowrank_res_coeff0"][0]) < 1e-9


@pytest.mark.parametrize("case", ["gauss_small", "gauss_small_kappa0.1"])
def test_correlated_capacity_own_optimiser_within_seed_spread(mftma_dir, case):
    d, X, kappa = _load(mftma_dir, case)
    r = manifold_capacity(X, kappa=kappa, t_vectors=d["t_vecs"], correlated=True, seed=0)
    assert r.center_subspace.shape[1] == int(d["KK"])
    ref = d["lowrank_capacity"]
    # README: about 6% on capacity and 3% on R and D around the observed seeds.
    assert ref.min() * 0.94 <= r.capacity <= ref.max() * 1.06
    assert d["lowrank_R_mean"].min() * 0.97 <= r.radius <= d["lowrank_R_mean"].max() * 1.03
    assert d["lowrank_D_mean"].min() * 0.97 <= r.dimension <= d["lowrank_D_mean"].max() * 1.03


def test_correlated_capacity_own_optimiser_ellipsoid(mftma_dir):
    """Strong rank-3 centre structure: the same rank is found and the summaries agree to 1%.

    The reference's stored subspace is a saddle point of the residual-correlation objective (its
    Riemannian gradient is 4e-6 and a 1e-3 perturbation descends to a lower cost); this optimiser
    reaches lower-cost minima, which moves capacity by ~0.5%, more than the README's 1e-4.
    """
    d, X, kappa = _load(mftma_dir, "ellipsoid")
    r = manifold_capacity(X, kappa=kappa, t_vectors=d["t_vecs"], correlated=True, seed=0)
    assert r.center_subspace.shape[1] == int(d["KK"]) == 3
    assert _rel(r.capacity, d["capacity"]) < 1e-2
    assert _rel(r.radius, d["R_mean"]) < 1e-2
    assert _rel(r.dimension, d["D_mean"]) < 1e-2
    # Our removed subspace scores at least as well on the reference's own objective.
    centers = X.mean(1)
    xb = centers - centers.mean(0)
    q = np.linalg.qr(xb.T)[0]
    xq = xb @ q
    ours = residual_correlation_cost((q.T @ r.center_subspace)[None], xq)[0][0]
    theirs = residual_correlation_cost((q.T @ d["lowrank_seed0_V11"])[None], xq)[0][0]
    assert ours <= theirs + 1e-9


def test_center_correlation_matches_reference(mftma_dir):
    d, X, _ = _load(mftma_dir, "ellipsoid")
    assert abs(center_correlation(X.mean(1)) - d["center_correlation"]) < 1e-9 * d["center_correlation"]


@pytest.mark.parametrize("case", ["gauss_small", "ellipsoid"])
def test_simulated_capacity_within_reference_spread(mftma_dir, case):
    d, X, _ = _load(mftma_dir, case)
    r = simulated_capacity(X, n_rep=20, seed=0)
    spread = d["simcap_spread_alpha_sim"]
    assert spread.min() * 0.9 <= r.capacity <= spread.max() * 1.1
    assert r.n_values == sorted(r.n_values) and np.all(np.diff(r.p_values) >= 0)


# ------------------------------------------------------------------------- batched NNLS
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 12), extra=st.integers(-6, 4), seed=st.integers(0, 10_000))
def test_nnls_gram_matches_scipy(m, extra, seed):
    """Over- and under-determined (rank-deficient Gram) problems against scipy's Lawson-Hanson."""
    rng = np.random.default_rng(seed)
    rows = max(1, m + extra)
    A = rng.standard_normal((2, rows, m))
    t = rng.standard_normal((2, rows, 7))
    G = torch.from_numpy(A.transpose(0, 2, 1) @ A)
    b = torch.from_numpy(t.transpose(0, 2, 1) @ A)
    x = nnls_gram(G, b).numpy()
    for p in range(2):
        for k in range(7):
            ref, _ = nnls(A[p], t[p, :, k])
            np.testing.assert_allclose(A[p] @ x[p, k], A[p] @ ref, atol=1e-8)
            assert (x[p, k] >= 0).all()


@settings(max_examples=10, deadline=None)
@given(scale=st.floats(0.01, 100.0), shift=st.floats(-50.0, 50.0), seed=st.integers(0, 1000))
def test_capacity_invariant_to_scale_and_translation(scale, shift, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((5, 6, 15)) + 2 * rng.standard_normal((5, 1, 15))
    a = manifold_capacity(X, n_t=40, seed=seed, kappa=0.2)
    b = manifold_capacity(scale * X + shift, n_t=40, seed=seed, kappa=0.2)
    np.testing.assert_allclose(b.alpha, a.alpha, rtol=1e-7)
    np.testing.assert_allclose(b.radii, a.radii, rtol=1e-7)
    np.testing.assert_allclose(b.dimensions, a.dimensions, rtol=1e-7)


def test_nnls_gram_rejects_bad_shapes():
    with pytest.raises(ValueError):
        nnls_gram(torch.zeros(2, 3, 4), torch.zeros(2, 5, 3))


# ------------------------------------------------------------------------- known answers
def test_points_have_capacity_two_and_gardner_margin_curve():
    """Single-point manifolds (R = 0): alpha(kappa)^-1 = int_{-kappa}^inf (t + kappa)^2 Dt (Gardner)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 1, 30))
    for kappa in (0.0, 0.5):
        r = manifold_capacity(X, kappa=kappa, n_t=20000, seed=1)
        inv, _ = integrate.quad(lambda t, k=kappa: (t + k) ** 2 * stats.norm.pdf(t), -kappa, np.inf)
        assert abs(r.capacity - 1 / inv) / (1 / inv) < 0.03
        assert np.allclose(r.radii, 0)


def test_random_point_manifolds_simulated_capacity_near_two_over_m():
    rng = np.random.default_rng(0)
    P, M, N = 24, 3, 60
    X = rng.standard_normal((P, M, N))  # each manifold: M unrelated random points
    r = simulated_capacity(X, n_rep=20, seed=0)
    assert abs(r.capacity - 2 / M) / (2 / M) < 0.25


def test_capacity_is_deterministic_with_seed_and_accepts_lists_and_torch():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((6, 5, 12)) + 3 * rng.standard_normal((6, 1, 12))
    a = manifold_capacity(X, n_t=50, seed=4)
    b = manifold_capacity(torch.from_numpy(X).float(), n_t=50, seed=4)
    assert a.capacity == pytest.approx(b.capacity, rel=1e-5)
    assert a.to_dict()["capacity"] == a.capacity
    ragged = [X[i, : 3 + i % 3] for i in range(6)]
    r = manifold_capacity(ragged, n_t=30, seed=0)
    assert r.alpha.shape == (6,) and np.isfinite(r.alpha).all()


def test_separability_agrees_with_linear_programme():
    from scipy.optimize import linprog

    rng = np.random.default_rng(5)
    for n in (2, 4, 8, 16):
        pts = rng.standard_normal((40, n))
        y = np.where(rng.random(40) < 0.5, -1.0, 1.0)
        A = np.hstack([pts, np.ones((40, 1))]) * y[:, None]
        lp = linprog(np.zeros(n + 1), A_ub=-A, b_ub=-np.ones(40), bounds=(None, None), method="highs")
        assert is_separable(pts, y) == (lp.status == 0)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError):
        manifold_capacity(np.zeros((3, 4)))
    with pytest.raises(ValueError):
        manifold_capacity(np.ones((3, 4, 5)), kappa=-1)
    with pytest.raises(ValueError):
        manifold_capacity([np.ones((3, 4)), np.ones((3, 5))])
    with pytest.raises(ValueError):
        manifold_capacity(np.random.default_rng(0).standard_normal((3, 4, 5)), t_vectors=np.zeros((3, 2, 7)))


# ------------------------------------------------------------------------- elliptical, spectra
def test_elliptical_radius_and_dimension_of_a_circle():
    theta = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    X = np.zeros((2, 64, 6))
    for p in range(2):
        X[p, :, 2 * p] = 0.3 * np.cos(theta)
        X[p, :, 2 * p + 1] = 0.3 * np.sin(theta)
        X[p, :, 4 + p] = 1.0  # centre of norm 1, orthogonal to both circles
    g = elliptical_geometry(X, center=False)
    np.testing.assert_allclose(g.radii, 0.3, rtol=1e-12)
    np.testing.assert_allclose(g.dimensions, 2.0, rtol=1e-12)
    np.testing.assert_allclose(g.nuclear_norms, 2 * 0.3 * np.sqrt(64 / 2), rtol=1e-12)


def test_power_law_recovers_planted_exponent():
    ranks = np.arange(1, 801)
    fit = power_law_exponent(3.0 * ranks**-1.3, fit_range=(11, 500))
    assert fit.alpha == pytest.approx(1.3, abs=1e-10) and fit.r2 == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    d = 200
    X = rng.standard_normal((20000, d)) * np.arange(1, d + 1) ** (-1.0 / 2)
    fit = power_law_exponent(X, fit_range=(5, 100))
    assert fit.alpha == pytest.approx(1.0, abs=0.08)
    assert fit.r2 > 0.95
    with pytest.raises(ValueError):
        power_law_exponent(X[:, :3], fit_range=(11, 500))


def test_participation_ratio_and_effective_rank():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5000, 10))
    assert participation_ratio(X) == pytest.approx(10, rel=0.05)
    assert effective_rank(X) == pytest.approx(10, rel=0.05)
    Y = np.outer(rng.standard_normal(100), rng.standard_normal(8))
    assert participation_ratio(Y) == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------- alignment
def test_centroid_similarity_and_subspace_alignment():
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 20))
    X = np.stack([base[i // 2] + 0.01 * rng.standard_normal((5, 20)) for i in range(4)])
    sim = centroid_similarity(X, labels=[0, 0, 1, 1])
    assert sim.same.size == 2 and sim.different.size == 4
    assert sim.same_mean > 0.99
    B = np.linalg.qr(rng.standard_normal((20, 6)))[0]
    coords = rng.standard_normal((4, 30, 3))
    Y = np.stack([coords[0] @ B[:, :3].T, coords[1] @ B[:, :3].T, coords[2] @ B[:, 3:].T, coords[3] @ B[:, 3:].T])
    al = subspace_alignment(Y, labels=[0, 0, 1, 1], n_components=3)
    assert al.same_mean == pytest.approx(1.0, abs=1e-10)
    assert al.different_mean == pytest.approx(0.0, abs=1e-10)
    a, b = rng.standard_normal((30, 8)), rng.standard_normal((30, 8))
    ours = principal_angles(a, b, n_components=3)
    ua = np.linalg.svd(a - a.mean(0), full_matrices=False)[2][:3].T
    ub = np.linalg.svd(b - b.mean(0), full_matrices=False)[2][:3].T
    np.testing.assert_allclose(ours, np.sort(linalg.subspace_angles(ua, ub)), atol=1e-8)


def test_gradient_coherence_matches_per_example_autograd():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
    views = torch.randn(4, 3, 3, 2, 2)

    def objective(z):
        c = torch.nn.functional.normalize(z, dim=-1).mean(1)
        return -torch.linalg.matrix_norm(c, ord="nuc")

    res = gradient_coherence(model, objective, views, labels=[0, 0, 1, 1])
    # Independent check: per-example gradients as differences of batch gradients with one example's
    # embedding frozen at its value (the gradient is linear in the per-example contributions).
    full = torch.autograd.grad(objective(model(views.flatten(0, 1)).reshape(4, 3, -1)), list(model.parameters()))
    grads = []
    for b in range(4):

        def partial(b=b):
            z = model(views.flatten(0, 1)).reshape(4, 3, -1)
            mask = torch.zeros(4, 1, 1)
            mask[b] = 1
            return objective(z * mask + z.detach() * (1 - mask))

        g = torch.autograd.grad(partial(), list(model.parameters()))
        grads.append(torch.cat([x.reshape(-1) for x in g]))
    G = torch.stack(grads).double()
    np.testing.assert_allclose(G.sum(0), torch.cat([x.reshape(-1) for x in full]).double(), atol=1e-5)
    G = G / G.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(res.matrix, (G @ G.T).numpy(), atol=1e-5)


# ------------------------------------------------------------------------- predictivity
def test_planted_linear_responses_reach_the_ceiling():
    rng = np.random.default_rng(0)
    n_stim, n_feat, n_neur, reps = 200, 40, 30, 4
    feats = rng.standard_normal((n_stim, n_feat))
    signal = feats @ rng.standard_normal((n_feat, n_neur)) / np.sqrt(n_feat)
    repeats = signal[None] + 0.5 * rng.standard_normal((reps, n_stim, n_neur))
    labels = np.repeat(np.arange(4), n_stim // 4)
    for method in ("pls", "ridge"):
        r = neural_predictivity(feats, repeats, labels=labels, method=method, n_splits=5, seed=0)
        assert r.ceiling is not None and 0.8 < r.ceiling <= 1.0
        assert r.ceiled_score > 0.9
    noise = neural_predictivity(rng.standard_normal((n_stim, n_feat)), repeats, method="ridge", n_splits=5)
    assert abs(noise.score) < 0.2
    with pytest.raises(ValueError):
        neural_predictivity(feats, repeats, method="svm")
