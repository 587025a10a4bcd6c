"""MultiViewAugment: shapes, presets, reproducibility, bad input, and the distributions of its parameters."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from scipy import stats

from mmcr.augment import PRESETS, MultiViewAugment


def _imgs(b=4, h=32, w=32, seed=0):
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset,h,size", [("cifar", 32, 32), ("stl10", 96, 64), ("byol", 80, 64)])
def test_shapes_dtype_and_normalisation(preset, h, size):
    kw = {"size": size} if preset == "byol" else {}
    aug = MultiViewAugment(preset, views=3, seed=0, **kw)
    out = aug(_imgs(2, h, h))
    assert out.shape == (2, 3, 3, size, size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    mean, std = torch.tensor(aug.mean).view(3, 1, 1), torch.tensor(aug.std).view(3, 1, 1)
    raw = out * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_views_differ_and_presets_are_the_papers():
    aug = MultiViewAugment("cifar", views=5, seed=1)
    out = aug(_imgs(2))
    assert not torch.allclose(out[:, 0], out[:, 1])
    c = PRESETS["cifar"]
    assert (c["size"], c["scale"], c["brightness"], c["hue"], c["jitter_p"], c["grayscale_p"]) == (
        32,
        (0.08, 1.0),
        0.4,
        0.1,
        0.8,
        0.2,
    )
    s = PRESETS["stl10"]
    assert (s["size"], s["scale"], s["interpolation"], s["grayscale_p"], s["color_first"]) == (
        64,
        (0.2, 1.0),
        "bicubic",
        0.1,
        True,
    )
    b = MultiViewAugment("byol", views=2)
    assert b.size == (224, 224) and b.blur_kernel_size == 23
    assert b.probs["blur_p"] == (1.0, 0.1) and b.probs["solarize_p"] == (0.0, 0.2)


def test_seed_and_generator_reproducibility():
    x = _imgs(3)
    a = MultiViewAugment("cifar", views=4, seed=123)
    b = MultiViewAugment("cifar", views=4, seed=123)
    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), MultiViewAugment("cifar", views=4, seed=124)(x))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(a(x, generator=g1), b(x, generator=g2))
    # Checkpointing the augmentation RNG resumes the same stream.
    state = a.state_dict()
    first = a(x)
    a.load_state_dict(state)
    assert torch.equal(a(x), first)
    # seed=None follows torch's global seed.
    torch.manual_seed(0)
    c = MultiViewAugment("cifar", views=2)
    torch.manual_seed(0)
    d = MultiViewAugment("cifar", views=2)
    assert c.seed == d.seed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    x = _imgs(3)
    a = MultiViewAugment("cifar", views=4, seed=3)
    b = MultiViewAugment("cifar", views=4, seed=3)
    cpu = a(x)
    gpu = b(x.cuda())
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max() < 1e-3


def test_grayscale_input_and_config_record():
    x = _imgs(2)[:, :1]
    out = MultiViewAugment("cifar", views=2, seed=0)(x)
    assert out.shape == (2, 2, 3, 32, 32)
    cfg = MultiViewAugment("byol", views=2, seed=0, size=64).config
    assert cfg["size"] == [64, 64] and cfg["blur_p"] == [1.0, 0.1] and cfg["seed"] == 0
    ev = MultiViewAugment("stl10", views=2).eval_transform()
    assert ev.size == (64, 64) and ev.interpolation == "bicubic" and ev.mean == PRESETS["stl10"]["mean"]


@pytest.mark.parametrize(
    "args,kw,match",
    [
        (("imagenet",), {}, "unknown augmentation preset"),
        (("cifar",), {"views": 0}, "views"),
        (("cifar",), {"blur": 0.5}, "unknown override"),
        (("cifar",), {"hue": 0.7}, "hue"),
        (("cifar",), {"jitter_p": 1.5}, "probability"),
        (("cifar",), {"scale": (0.5, 0.1)}, "scale"),
        (("cifar",), {"interpolation": "nearest"}, "interpolation"),
        (("cifar",), {"std": (0.0, 1.0, 1.0)}, "std"),
        (("cifar",), {"size": -3}, "size"),
        (("eval",), {}, "unknown augmentation preset"),
    ],
)
def test_bad_settings(args, kw, match):
    with pytest.raises(ValueError, match=match):
        MultiViewAugment(*args, **kw)


def test_bad_images():
    aug = MultiViewAugment("cifar", views=2, seed=0)
    with pytest.raises(ValueError, match="uint8"):
        aug(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        aug(torch.zeros(2, 4, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        aug(torch.zeros(3, 32, 32, dtype=torch.uint8))


# ----------------------------------------------------------------------------- parameter statistics
N_IMG, K = 250, 40  # 10,000 views
ALPHA = 1e-3  # fixed seeds make these deterministic; the threshold guards against a wrong distribution


@pytest.fixture(scope="module")
def cifar_params():
    aug = MultiViewAugment("cifar", views=K, seed=2024)
    return aug, aug.sample_params(N_IMG, 32, 32)


def test_crop_boxes_follow_torchvision(cifar_params):
    """Box sizes and positions match torchvision's RandomResizedCrop.get_params (two-sample KS)."""
    _, p = cifar_params
    torch.manual_seed(0)
    img = torch.zeros(3, 32, 32)
    ref = np.array([T.RandomResizedCrop.get_params(img, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(3000)])
    mine = np.stack([p.top.numpy(), p.left.numpy(), p.height.numpy(), p.width.numpy()], axis=1)
    area = lambda a: a[:, 2] * a[:, 3]  # noqa: E731
    aspect = lambda a: np.log(a[:, 3] / a[:, 2])  # noqa: E731
    centre = lambda a: a[:, 0] + a[:, 2] / 2  # noqa: E731
    for f in (area, aspect, centre):
        assert stats.ks_2samp(f(mine), f(ref)).pvalue > ALPHA
    assert (p.top >= 0).all() and (p.top + p.height <= 32).all() and (p.left + p.width <= 32).all()


def test_coin_flips_and_factor_ranges(cifar_params):
    aug, p = cifar_params
    n = N_IMG * K
    for mask, prob in ((p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2)):
        assert stats.binomtest(int(mask.sum()), n, prob).pvalue > ALPHA
    assert not p.blur.any() and not p.solarize.any()
    for factor, (lo, hi) in ((p.brightness, (0.6, 1.4)), (p.contrast, (0.6, 1.4)), (p.saturation, (0.6, 1.4))):
        assert stats.kstest(factor.double().numpy(), "uniform", args=(lo, hi - lo)).pvalue > ALPHA
    assert stats.kstest(p.hue.double().numpy(), "uniform", args=(-0.1, 0.2)).pvalue > ALPHA


def test_jitter_orders_are_uniform_permutations(cifar_params):
    _, p = cifar_params
    assert (p.order.sort(dim=1).values == torch.arange(4)).all()
    perms = {q: i for i, q in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([perms[tuple(r)] for r in p.order.tolist()], minlength=24)
    assert stats.chisquare(counts).pvalue > ALPHA


def test_views_are_independent(cifar_params):
    """Parameters of different views of one image are uncorrelated (and not copies)."""
    _, p = cifar_params
    b = p.brightness.view(N_IMG, K)
    r = np.corrcoef(b[:, 0].numpy(), b[:, 1].numpy())[0, 1]
    assert abs(r) < 4 / math.sqrt(N_IMG)
    assert (p.top.view(N_IMG, K).double().std(dim=1) > 0).all()


def test_byol_views_alternate():
    aug = MultiViewAugment("byol", views=2, seed=11, size=64)
    p = aug.sample_params(3000, 80, 80)
    blur = p.blur.view(-1, 2)
    sol = p.solarize.view(-1, 2)
    assert blur[:, 0].all() and not sol[:, 0].any()
    assert stats.binomtest(int(blur[:, 1].sum()), 3000, 0.1).pvalue > ALPHA
    assert stats.binomtest(int(sol[:, 1].sum()), 3000, 0.2).pvalue > ALPHA
    assert stats.kstest(p.sigma.double().numpy(), "uniform", args=(0.1, 1.9)).pvalue > ALPHA
    assert stats.kstest(p.saturation.double().numpy(), "uniform", args=(0.8, 0.4)).pvalue > ALPHA


def test_loader_to_views_end_to_end():
    """digits -> in-memory loader -> many views, the path the trainer takes."""
    from mmcr.data import load_dataset, make_loader

    ds = load_dataset("digits", split="test", size=16)
    loader = make_loader(ds, batch_size=8, seed=0)
    loader.set_epoch(0)
    images, labels = next(iter(loader))
    aug = MultiViewAugment("cifar", views=6, seed=0, size=16, color_first=True)
    views = aug(images)
    assert views.shape == (8, 6, 3, 16, 16) and labels.shape == (8,)
    aug.clear_cache()
    first = aug(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, aug(images, torch.Generator().manual_seed(1)))
