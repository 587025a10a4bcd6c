"""MMCRLoss and the baselines against independent float64 references; components; bad input."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcr.objectives import BarlowTwinsLoss, MMCRLoss, SimCLRLoss, VICRegLoss, build_objective


def polar_ref(x64: torch.Tensor) -> torch.Tensor:
    """Nuclear-norm subgradient U_r V_r^T from a float64 SVD (batched), over every singular value above the
    SVD's own rounding noise (exactly rank-deficient inputs get the minimum-norm subgradient)."""
    u, s, vh = torch.linalg.svd(x64, full_matrices=False)
    keep = s > max(x64.shape[-2:]) * torch.finfo(torch.float64).eps * s[..., :1]
    return (u * keep.unsqueeze(-2)) @ vh


def mmcr_reference(z: torch.Tensor, lmbda: float, z_m: torch.Tensor | None = None):
    """Value and gradient w.r.t. z in float64: SVD for the norms, the SVD polar factor chained through
    autograd's F.normalize for the gradient (well defined also for rank-deficient matrices)."""
    x = z.detach().double().requires_grad_(True)
    views = F.normalize(x, dim=-1)
    c = views.mean(1)
    if z_m is not None:
        c = 0.5 * (c + F.normalize(z_m.detach().double(), dim=-1).mean(1))
    value = -torch.linalg.svdvals(c.detach()).sum()
    surrogate = -(c * polar_ref(c.detach())).sum()
    if lmbda > 0:
        value = value + lmbda * torch.linalg.svdvals(views.detach()).sum(-1).mean()
        surrogate = surrogate + lmbda * (views * polar_ref(views.detach())).sum() / z.shape[0]
    surrogate.backward()
    return value, x.grad


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 0.0) -> float:
    """Max-norm error relative to the reference's largest entry (or to ``floor`` when that is ~0)."""
    scale = max(b.abs().max().item(), floor)
    diff = (a.double() - b.double()).abs().max().item()
    return diff / scale if scale > 0 else diff


def make_z(kind: str, b: int, k: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, k, d, generator=g)
    if kind == "collapsed_views":  # all views of an image agree: rank-1 local matrices
        z = z[:, :1].expand(b, k, d).clone()
    elif kind == "duplicated_images":  # repeated images: rank-deficient centroids
        z = z[torch.arange(b) % max(1, b // 2)]
    elif kind == "near_collapsed":  # every embedding close to one direction
        z = torch.randn(1, 1, d, generator=g) + 1e-2 * z
    return z


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(["gaussian", "collapsed_views", "duplicated_images", "near_collapsed"]),
    b=st.integers(1, 10),
    k=st.integers(1, 5),
    d=st.integers(1, 12),
    lmbda=st.sampled_from([0.0, 0.005, 0.5]),
    momentum=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_mmcr_matches_float64_reference(kind, b, k, d, lmbda, momentum, seed):
    z = make_z(kind, b, k, d, seed).requires_grad_(True)
    z_m = make_z("gaussian", b, k, d, seed + 1) if momentum else None
    loss_fn = MMCRLoss(lmbda)
    loss = loss_fn(z, z_m)
    loss.backward()
    ref_value, ref_grad = mmcr_reference(z, lmbda, z_m)
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert abs(loss.item() - ref_value.item()) <= 1e-5 * abs(ref_value.item()) + 1e-6
    # Gradients scale like 1 / |z_row|; the floor covers inputs whose exact gradient is 0 (k = 1 or d = 1).
    natural = 1.0 / z.detach().norm(dim=-1).min().item()
    assert rel_err(z.grad, ref_grad, floor=1e-2 * natural) <= 1e-4


def test_mmcr_components():
    z = make_z("gaussian", 12, 4, 8, 0)
    loss_fn = MMCRLoss(0.1)
    loss = loss_fn(z)
    comps = loss_fn.last_components
    views = F.normalize(z.double(), dim=-1)
    c = views.mean(1)
    sigma = torch.linalg.svdvals(c)
    p = sigma / sigma.sum()
    assert set(comps) >= {"loss", "global_nuclear_norm", "local_nuclear_norm", "mean_centroid_norm", "effective_rank_C"}
    assert all(not v.requires_grad and v.shape == () for v in comps.values())
    assert comps["loss"].item() == loss.item()
    assert math.isclose(comps["global_nuclear_norm"].item(), sigma.sum().item(), rel_tol=1e-5)
    local = torch.linalg.svdvals(views).sum(-1).mean().item()
    assert math.isclose(comps["local_nuclear_norm"].item(), local, rel_tol=1e-5)
    assert math.isclose(comps["mean_centroid_norm"].item(), c.norm(dim=1).mean().item(), rel_tol=1e-5)
    assert math.isclose(comps["effective_rank_C"].item(), math.exp(-(p * p.log()).sum().item()), rel_tol=1e-4)


def test_mmcr_lambda_zero_skips_local_term_unless_tracked():
    z = make_z("gaussian", 6, 3, 5, 1)
    plain, tracked = MMCRLoss(), MMCRLoss(track_local=True)
    assert torch.allclose(plain(z), tracked(z))
    assert "local_nuclear_norm" not in plain.last_components
    assert "local_nuclear_norm" in tracked.last_components


def test_mmcr_all_zero_embeddings_give_zero_loss_and_gradient():
    z = torch.zeros(4, 3, 5, requires_grad=True)
    loss = MMCRLoss(0.5)(z)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(z.grad, torch.zeros_like(z))


def test_mmcr_maximal_for_orthogonal_agreeing_views():
    """Views that agree (unit centroids) and images that are orthonormal reach ||C||_* = B, the maximum."""
    b, k, d = 4, 3, 8
    z = torch.eye(d)[:b].unsqueeze(1).expand(b, k, d) * 3.0
    assert math.isclose(MMCRLoss()(z).item(), -b, rel_tol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mmcr_half_inputs_and_autocast(dtype):
    z = make_z("gaussian", 16, 4, 12, 2).to(dtype).requires_grad_(True)
    loss = MMCRLoss(0.01)(z)
    loss.backward()
    ref_value, ref_grad = mmcr_reference(z, 0.01)
    assert loss.dtype == torch.float32 and z.grad.dtype == dtype
    assert abs(loss.item() - ref_value.item()) <= 1e-5 * abs(ref_value.item())
    assert rel_err(z.grad, ref_grad) <= 1e-2
    z32 = z.detach().float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_ac = MMCRLoss(0.01)(z32 * 1.0)
    assert loss_ac.dtype == torch.float32
    assert abs(loss_ac.item() - ref_value.item()) <= 1e-5 * abs(ref_value.item())


def test_mmcr_float64_on_request():
    z = make_z("gaussian", 8, 3, 6, 3).requires_grad_(True)
    loss = MMCRLoss(0.1, dtype=torch.float64)(z)
    loss.backward()
    ref_value, ref_grad = mmcr_reference(z, 0.1)
    assert loss.dtype == torch.float64
    assert abs(loss.item() - ref_value.item()) <= 1e-12 * abs(ref_value.item())
    assert rel_err(z.grad, ref_grad) <= 1e-6


def test_mmcr_svd_method_agrees_with_gram():
    z = make_z("gaussian", 10, 3, 7, 4)
    assert math.isclose(MMCRLoss(0.1, method="svd")(z).item(), MMCRLoss(0.1, method="gram")(z).item(), rel_tol=1e-5)


def _ill_conditioned_z(kind: str, b: int, k: int, d: int, seed: int) -> torch.Tensor:
    """Training-like embeddings whose centroid matrix has sigma_min / sigma_max of 1e-3 to 1e-5."""
    g = torch.Generator().manual_seed(seed)
    if kind == "near_collapsed":  # every image close to one direction
        mu = torch.randn(1, 1, d, generator=g, dtype=torch.float64)
        z = mu + 1e-3 * torch.randn(b, 1, d, generator=g, dtype=torch.float64) + 1e-4 * torch.randn(
            b, k, d, generator=g, dtype=torch.float64
        )
    else:  # power-law centroid spectrum sigma_i ~ i^-2 with view noise
        s = min(b, d)
        u = torch.linalg.qr(torch.randn(b, s, generator=g, dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(d, s, generator=g, dtype=torch.float64))[0]
        base = (u * torch.arange(1, s + 1, dtype=torch.float64) ** -2.0) @ v.T
        base = base / base.norm(dim=1, keepdim=True)
        z = base[:, None, :] + 0.01 * torch.randn(b, k, d, generator=g, dtype=torch.float64) / d**0.5
    return z.float()


@pytest.mark.parametrize("method", ["auto", "newton_schulz"])
@pytest.mark.parametrize("kind", ["near_collapsed", "power_law_2"])
@pytest.mark.parametrize("lmbda", [0.0, 0.005])
def test_mmcr_exact_on_ill_conditioned_centroids(method, kind, lmbda):
    """Relative Frobenius gradient error against float64 autograd well below 1e-4 where float32 svdvals is off
    by 1e-4..1e-3: the centroids are formed in float64 and the nuclear norm resolves every singular value."""
    z = _ill_conditioned_z(kind, 48, 4, 64, 0).requires_grad_(True)
    loss = MMCRLoss(lmbda, method=method)(z)
    loss.backward()
    ref_value, ref_grad = mmcr_reference(z, lmbda)
    assert abs(loss.item() - ref_value.item()) <= 1e-6 * abs(ref_value.item())
    assert ((z.grad.double() - ref_grad).norm() / ref_grad.norm()).item() <= 2e-6


def test_mmcr_newton_schulz_components_match_gram():
    """The matmul-only method computes the singular values for effective_rank_C only when they are read."""
    z = _ill_conditioned_z("power_law_2", 32, 3, 40, 1)
    ns, gram = MMCRLoss(0.1, method="newton_schulz"), MMCRLoss(0.1, method="gram")
    ns(z), gram(z)
    assert ns._pending is not None
    a, b = ns.last_components, gram.last_components
    assert ns._pending is None and set(a) == set(b)
    for key in b:
        assert math.isclose(a[key].item(), b[key].item(), rel_tol=1e-5), key


# ---------------------------------------------------------------- baselines vs textbook two-view forms


def nt_xent_two_view(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's NT-Xent written as a 2N-way classification (Chen et al. 2020)."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.T / t
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, target)


def supcon_loops(z: torch.Tensor, t: float) -> torch.Tensor:
    """Multi-positive InfoNCE by explicit loops over anchors and positives."""
    b, k, _ = z.shape
    flat = F.normalize(z.reshape(b * k, -1), dim=1)
    total = 0.0
    for i in range(b * k):
        others = [j for j in range(b * k) if j != i]
        log_denom = torch.logsumexp(torch.stack([flat[i] @ flat[j] / t for j in others]), 0)
        positives = [j for j in others if j // k == i // k]
        total = total + sum(log_denom - flat[i] @ flat[j] / t for j in positives) / len(positives)
    return total / (b * k)


def barlow_two_view(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> torch.Tensor:
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).double().train()
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    on = (torch.diagonal(c) - 1).pow(2).sum()
    off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
    return on + lam * off


def vicreg_two_view(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = x.shape[1]
    repr_loss = F.mse_loss(x, y)
    std_x, std_y = torch.sqrt(x.var(dim=0) + 1e-4), torch.sqrt(y.var(dim=0) + 1e-4)
    std_loss = F.relu(1 - std_x).mean() / 2 + F.relu(1 - std_y).mean() / 2
    cov_x, cov_y = torch.cov(x.T), torch.cov(y.T)
    off = ~torch.eye(d, dtype=torch.bool)
    cov_loss = cov_x[off].pow(2).sum() / d + cov_y[off].pow(2).sum() / d
    return 25 * repr_loss + 25 * std_loss + cov_loss


def pair_average(fn, z: torch.Tensor) -> torch.Tensor:
    pairs = list(itertools.combinations(range(z.shape[1]), 2))
    return sum(fn(z[:, i], z[:, j]) for i, j in pairs) / len(pairs)


BASELINE_REFS = {
    "simclr": lambda z: supcon_loops(z, 0.1) if z.shape[1] > 2 else nt_xent_two_view(z[:, 0], z[:, 1], 0.1),
    "barlow_twins": lambda z: pair_average(lambda a, b: barlow_two_view(a, b, 0.0051), z),
    "vicreg": lambda z: pair_average(vicreg_two_view, z),
}


@pytest.mark.parametrize("name", sorted(BASELINE_REFS))
@pytest.mark.parametrize("shape", [(6, 2, 5), (5, 3, 4), (3, 2, 9), (9, 2, 3), (4, 5, 6)])  # N < d and N >= d
def test_baselines_match_references(name, shape):
    z = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape))) * 0.7
    x = z.clone().requires_grad_(True)
    loss_fn = build_objective(name)
    loss = loss_fn(x)
    loss.backward()
    x64 = z.double().requires_grad_(True)
    ref = BASELINE_REFS[name](x64)
    ref.backward()
    assert loss.dtype == torch.float32 and loss.shape == ()
    assert abs(loss.item() - ref.item()) <= 1e-5 * abs(ref.item()) + 1e-6
    assert rel_err(x.grad, x64.grad) <= 1e-4
    assert loss_fn.last_components["loss"].item() == loss.item()


def test_baseline_components():
    z = torch.randn(8, 2, 6)
    bt, vic, sim = BarlowTwinsLoss(), VICRegLoss(), SimCLRLoss()
    b_loss, v_loss = bt(z), vic(z)
    sim(z)
    on, off = bt.last_components["on_diagonal"], bt.last_components["off_diagonal"]
    assert math.isclose(b_loss.item(), (on + 0.0051 * off).item(), rel_tol=1e-6)
    c = vic.last_components
    assert math.isclose(
        v_loss.item(), (25 * c["invariance"] + 25 * c["variance"] + c["covariance"]).item(), rel_tol=1e-6
    )
    zn = F.normalize(z, dim=-1)
    assert math.isclose(
        sim.last_components["positive_similarity"].item(), (zn[:, 0] * zn[:, 1]).sum(1).mean().item(), rel_tol=1e-5
    )


def test_build_objective():
    assert isinstance(build_objective("mmcr", lmbda=0.005), MMCRLoss)
    assert isinstance(build_objective("Barlow-Twins"), BarlowTwinsLoss)
    assert isinstance(build_objective("infonce", temperature=0.5), SimCLRLoss)
    with pytest.raises(ValueError, match="unknown objective 'byol'"):
        build_objective("byol")
    with pytest.raises(ValueError, match=r"unknown option 'lambda' for objective 'mmcr'; it takes lmbda"):
        build_objective("mmcr", **{"lambda": 0.1})


# ---------------------------------------------------------------- bad input

ALL = ["mmcr", "simclr", "barlow_twins", "vicreg"]
NAN_Z = torch.ones(4, 2, 3).index_put_((torch.tensor(0), torch.tensor(1), torch.tensor(2)), torch.tensor(float("nan")))
INF_Z = torch.ones(4, 2, 3).index_put_((torch.tensor(1), torch.tensor(0), torch.tensor(0)), torch.tensor(float("inf")))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(
    "z,match",
    [
        (torch.ones(4, 8), r"3 dimensions \(B, k, d\).*got 2"),
        (torch.ones(2, 4, 2, 3), r"3 dimensions \(B, k, d\).*got 4"),
        (torch.ones(4, 0, 3), r"k >= \d views"),
        (torch.ones(4, 2, 0), r"embedding dim d >= 1.*\(4, 2, 0\)"),
        (torch.ones(0, 2, 3), r"at least 1 image"),
        (torch.ones(4, 2, 3, dtype=torch.int64), "floating-point"),
        (NAN_Z, r"z of shape \(4, 2, 3\).*1 NaN and 0 Inf"),
        (INF_Z, r"z of shape \(4, 2, 3\).*0 NaN and 1 Inf"),
    ],
)
def test_bad_embeddings_raise(name, z, match):
    with pytest.raises(ValueError, match=match):
        build_objective(name)(z)


def test_pairwise_baselines_need_two_views_and_two_images():
    for name in ["simclr", "barlow_twins", "vicreg"]:
        with pytest.raises(ValueError, match=r"k >= 2 views"):
            build_objective(name)(torch.randn(4, 1, 3))
    for name in ["barlow_twins", "vicreg"]:
        with pytest.raises(ValueError, match="at least 2 images"):
            build_objective(name)(torch.randn(1, 2, 3))


def test_mmcr_momentum_and_constructor_errors():
    z = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"z_momentum must have the same shape.*expected \(4, 2, 3\), got \(4, 3, 3\)"):
        MMCRLoss()(z, torch.randn(4, 3, 3))
    with pytest.raises(ValueError, match="z_momentum of shape .* 1 NaN"):
        MMCRLoss()(z, NAN_Z[:, :, :3].clone())
    with pytest.raises(ValueError, match="lmbda >= 0"):
        MMCRLoss(-0.1)
    with pytest.raises(ValueError, match="temperature > 0"):
        SimCLRLoss(temperature=0.0)
    with pytest.raises(ValueError, match="std_coeff >= 0"):
        VICRegLoss(std_coeff=-1)
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        MMCRLoss(dtype=torch.float16)(z)


def test_fused_normalisation_matches_autograd():
    """The hand-written normalise(+mean) backwards equal autograd's F.normalize, also at zero/tiny rows."""
    from mmcr.objectives.mmcr import _NormalizeAndMean, _NormalizedMean

    z = torch.randn(5, 3, 7, dtype=torch.float64)
    assert torch.autograd.gradcheck(_NormalizedMean.apply, (z.clone().requires_grad_(True),))
    assert torch.autograd.gradcheck(lambda x: tuple(_NormalizeAndMean.apply(x)), (z.clone().requires_grad_(True),))
    z[0, 1], z[1, 2] = 0.0, 1e-13
    g_mean, g_views = torch.randn(5, 7, dtype=torch.float64), torch.randn(5, 3, 7, dtype=torch.float64)
    x = z.clone().requires_grad_(True)
    views = F.normalize(x, dim=-1)
    ((views.mean(1) * g_mean).sum() + (views * g_views).sum()).backward()
    y = z.clone().requires_grad_(True)
    fused_views, fused_mean = _NormalizeAndMean.apply(y)
    ((fused_mean * g_mean).sum() + (fused_views * g_views).sum()).backward()
    assert rel_err(y.grad, x.grad) <= 1e-12
    x.grad, y.grad = None, None
    (F.normalize(x, dim=-1).mean(1) * g_mean).sum().backward()
    (_NormalizedMean.apply(y) * g_mean).sum().backward()
    assert rel_err(y.grad, x.grad) <= 1e-12


def test_single_process_helpers_and_no_grad_forward():
    from mmcr.objectives import all_gather_with_grad, is_distributed, rank, world_size

    assert (world_size(), rank(), is_distributed()) == (1, 0, False)
    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x
    loss_fn = MMCRLoss(0.1)
    with torch.no_grad():
        loss = loss_fn(torch.randn(5, 3, 4))
    assert not loss.requires_grad and set(loss_fn.last_components) >= {"global_nuclear_norm", "local_nuclear_norm"}


@pytest.mark.parametrize("make", [lambda: MMCRLoss(), lambda: MMCRLoss(lmbda=0.005), lambda: SimCLRLoss()])
@pytest.mark.parametrize("scale", [1e19, 1e30])
def test_huge_embeddings_do_not_overflow_the_normalisation(make, scale):
    """|z|^2 overflows float32 from ~1e19: such rows are scaled by a power of two first, so the loss is the
    unit-scale loss (normalisation is scale-invariant) and the gradient is the unit-scale one divided by
    the scale. Before, MMCRLoss returned -0.0 with a zero gradient."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 4, 24, generator=g)
    ref = z.clone().requires_grad_(True)
    ref_loss = make()(ref)
    ref_loss.backward()
    big = (z * scale).requires_grad_(True)
    loss = make()(big)
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - ref_loss.item()) <= 1e-5 * abs(ref_loss.item())
    rel = ((big.grad * scale) - ref.grad).norm() / ref.grad.norm()
    assert rel <= 1e-5

