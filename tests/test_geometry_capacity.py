"""Capacity at the edges: small problems (few manifolds, single points, fewer features than points,
duplicated points), the cheaper span basis used without given t-vectors, margin sweeps with warm
starts, and the finite-sample check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmcr.geometry import (
    capacity_vs_margin,
    capacity_vs_points,
    elliptical_geometry,
    manifold_capacity,
    simulated_capacity,
)
from mmcr.geometry.capacity import _anchor_statistics, _anchored


def _blobs(P, M, N, seed=0, spread=1.0):
    rng = np.random.default_rng(seed)
    return spread * rng.standard_normal((P, M, N)) + 3 * rng.standard_normal((P, 1, N))


def _centred_eye():
    e = np.eye(3, 6)
    return e - e.mean(0)


# ------------------------------------------------------------------------- small problems
@pytest.mark.parametrize(
    "P, M, N",
    [(2, 5, 10), (2, 1, 10), (5, 1, 1), (5, 4, 1), (5, 10, 3), (5, 10, 9), (5, 10, 10), (2, 3, 2)],
)
def test_small_problems_give_finite_results(P, M, N):
    X = _blobs(P, M, N)
    for kappa in (0.0, 0.5):
        r = manifold_capacity(X, kappa=kappa, n_t=60, seed=0)
        assert np.isfinite(r.alpha).all() and (r.alpha > 0).all()
        assert np.isfinite(r.radii).all() and np.isfinite(r.dimensions).all()
        if M == 1:
            assert np.allclose(r.radii, 0) and np.allclose(r.dimensions, 0)
    g = elliptical_geometry(X)
    assert g.capacity > 0 and (M > 1 or g.capacity == np.inf)


def test_fewer_features_than_points_matches_its_padded_twin():
    """N < M: zero-padding the features to N' > M leaves the geometry (and, with matching t-vectors,
    every value) unchanged; the padded case goes through the usual reduction, the small one does not."""
    X = _blobs(4, 8, 3, seed=1)
    small = manifold_capacity(X, n_t=2000, seed=0)
    padded = manifold_capacity(np.concatenate([X, np.zeros((4, 8, 9))], 2), n_t=2000, seed=0)
    # D differs (3 vs 8 coordinates) but the extra ones are orthogonal to every point: alpha is the same
    # in distribution; with 2000 samples per manifold the two agree to sampling error.
    np.testing.assert_allclose(small.alpha, padded.alpha, rtol=0.1)
    np.testing.assert_allclose(small.radii, padded.radii, rtol=0.05)


def test_duplicated_points_change_nothing():
    """Each point twice: the Householder basis of the first copies is the basis of all, the second
    copies add zero rows, so with the same t-vectors (zeros on the unused rows) alpha and R are equal."""
    X = _blobs(6, 4, 20, seed=2)
    tv = np.random.default_rng(0).standard_normal((6, 5, 300))
    once = manifold_capacity(X, t_vectors=tv, kappa=0.2)
    tv2 = np.concatenate([tv[:, :4], np.zeros((6, 4, 300)), tv[:, 4:]], 1)
    twice = manifold_capacity(np.concatenate([X, X], 1), t_vectors=tv2, kappa=0.2)
    np.testing.assert_allclose(twice.alpha, once.alpha, rtol=1e-9)
    np.testing.assert_allclose(twice.radii, once.radii, rtol=1e-7)
    fresh = manifold_capacity(np.concatenate([X, X], 1), n_t=50, seed=0)  # the drawn-basis route too
    assert np.isfinite(fresh.alpha).all()


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: np.zeros((1, 3, 4)), "at least 2 manifolds"),
        (lambda: np.repeat(_blobs(1, 5, 10), 3, axis=0), "centre coincides"),
        (lambda: np.stack([_centred_eye(), -_centred_eye()]) + 1.0, "centre coincides"),
        (lambda: np.zeros((3, 0, 4)), "at least 2 manifolds with points"),
    ],
)
def test_undefined_problems_raise_one_line_errors(build, match):
    with pytest.raises(ValueError, match=match) as e:
        manifold_capacity(build(), n_t=10)
    assert "\n" not in str(e.value)


def test_small_problem_errors_of_the_variants_say_what_is_needed():
    with pytest.raises(ValueError, match="at least 3 manifolds"):
        manifold_capacity(_blobs(2, 5, 10), correlated=True)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        manifold_capacity(_blobs(5, 4, 1), correlated=True)
    with pytest.raises(ValueError, match="needs more manifolds"):
        simulated_capacity(_blobs(2, 1, 10), n_rep=10, seed=0)
    with pytest.raises(ValueError, match="too entangled"):
        simulated_capacity(_blobs(5, 10, 3, spread=5.0), n_rep=10, seed=0)
    with pytest.raises(ValueError, match="too entangled"):  # one feature is a valid (if hopeless) input
        simulated_capacity(_blobs(6, 3, 1, spread=0.01), n_rep=10, seed=0)
    r = simulated_capacity(_blobs(4, 1, 2, spread=0.01), n_rep=20, seed=0)
    assert 1 <= r.n_critical <= 2


# ------------------------------------------------------------------------- span basis
def test_cholesky_span_basis_is_the_householder_one_up_to_signs():
    """Without given t-vectors the points' coordinates come from a Cholesky factor of their Gram matrix:
    the Householder R up to the signs of its rows, so results agree exactly with sign-flipped t."""
    X = torch.from_numpy(_blobs(5, 7, 40, seed=3))
    origin = X.mean((0, 1))
    Aq = _anchored(X, origin, None, householder=True)
    Ac = _anchored(X, origin, None, householder=False)
    np.testing.assert_allclose((Ac.mT @ Ac).numpy(), (Aq.mT @ Aq).numpy(), atol=1e-12)
    sign = torch.sign(Ac[:, :6, :6].diagonal(dim1=1, dim2=2) / Aq[:, :6, :6].diagonal(dim1=1, dim2=2))
    np.testing.assert_allclose(Ac[:, :6].numpy(), (sign[..., None] * Aq[:, :6]).numpy(), atol=1e-12)
    t = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 8, 50)))
    tc = t.clone()
    tc[:, :6] *= sign[..., None]
    tc[:, 6] = 0.0  # the unused 7th coordinate (zero row in both, up to rounding in the Householder R)
    t[:, 6] = 0.0
    for kappa in (0.0, 0.3):
        a_q = _anchor_statistics(Aq, t, kappa)[:3]
        a_c = _anchor_statistics(Ac, tc, kappa)[:3]
        for u, v in zip(a_q, a_c):
            np.testing.assert_allclose(v, u, rtol=1e-9)


# ------------------------------------------------------------------------- margin sweeps
def test_margin_sweep_equals_separate_runs_with_the_same_t_vectors(mftma_dir):
    d = np.load(mftma_dir / "gauss_small.npz")
    X = d["X"].transpose(0, 2, 1)
    kappas = [0.3, 0.0, 0.1, 1.0]
    sweep = capacity_vs_margin(X, kappas, t_vectors=d["t_vecs"])
    assert [r.kappa for r in sweep] == kappas
    for r in sweep:
        one = manifold_capacity(X, kappa=r.kappa, t_vectors=d["t_vecs"])
        np.testing.assert_allclose(r.alpha, one.alpha, rtol=1e-10)
        np.testing.assert_allclose(r.radii, one.radii, rtol=1e-9)
        np.testing.assert_allclose(r.dimensions, one.dimensions, rtol=1e-9)
    # The kappa = 0 and 0.1 entries reproduce the reference's stored values.
    ref = np.load(mftma_dir / "gauss_small_kappa0.1.npz")
    assert abs(sweep[1].capacity - float(d["nolowrank_capacity"])) < 1e-6 * float(d["nolowrank_capacity"])
    np.testing.assert_allclose(
        capacity_vs_margin(X, [0.0, 0.1], t_vectors=ref["t_vecs"])[1].alpha, ref["nolowrank_alpha"], rtol=1e-6
    )
    assert sweep[1].capacity > sweep[2].capacity > sweep[0].capacity > sweep[3].capacity  # falls with kappa
    with pytest.raises(ValueError, match="kappas"):
        capacity_vs_margin(X, [0.1, -1.0])


# ------------------------------------------------------------------------- finite-sample check
def test_finite_sample_check_shows_values_settling_with_more_points():
    rng = np.random.default_rng(0)
    # Circles in random planes: with few points the anchor set is a polygon, so R and D grow with m.
    theta = rng.uniform(0, 2 * np.pi, (8, 40))
    planes = np.linalg.qr(rng.standard_normal((8, 30, 2)))[0]
    pts = np.stack([np.cos(theta), np.sin(theta)], -1)
    X = np.einsum("pmk,pnk->pmn", pts, planes) * 0.5 + 2 * rng.standard_normal((8, 1, 30))
    fs = capacity_vs_points(X, repeats=3, n_t=100, seed=0)
    assert fs.points == [5, 10, 20, 30, 40]
    assert fs.capacity.shape == (5, 3)
    cap, rad = fs.mean("capacity"), fs.mean("radius")
    assert cap[0] > cap[-1] and rad[0] < rad[-1]
    assert abs(fs.relative_change()) < 0.1  # 20 -> 40 points changes little for a circle
    d = fs.to_dict()
    assert d["rows"][-1]["points"] == 40 and d["capacity_change_from_half"] == fs.relative_change()
    assert (fs.std("capacity") >= 0).all()
    with pytest.raises(ValueError, match="between 1 and"):
        capacity_vs_points(X, points=[0, 5])
    with pytest.raises(ValueError, match="at least 2 points"):
        capacity_vs_points(X[:, :1])
    corr = capacity_vs_points(X, points=[10, 40], repeats=1, n_t=50, seed=0, correlated=True)
    assert corr.correlated and corr.center_subspace_rank >= 1
