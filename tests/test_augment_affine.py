"""Random affine views: equal to torchvision's RandomAffine given the same parameters, drawn per view by
RandomAffine's rule, replayed on resume, and their settings checked with one-line errors."""

from __future__ import annotations

import shutil

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from mmcr.augment import MultiViewAugment
from mmcr.augment.affine import AffineSpec, apply_affine, inverse_matrices, sample_affine
from mmcr.cli import main
from mmcr.run.config import load_config
from mmcr.rundir import layout
from mmcr.train import train

AFFINE = dict(degrees=30, translate=(0.2, 0.1), affine_scale=(0.8, 1.2), shear=(-10, 10, -5, 5))


def _images(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, max(2, h // 4), max(2, w // 4), generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return ((x * 0.8 + 0.2 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)


def _tv_params(a, i) -> dict:
    return dict(angle=float(a.angle[i]), translate=(int(a.tx[i]), int(a.ty[i])), scale=float(a.scale[i]),
                shear=(float(a.shear_x[i]), float(a.shear_y[i])))


@pytest.mark.parametrize("interp", ["nearest", "bilinear"])
def test_views_match_torchvision_random_affine_on_the_same_parameters(interp):
    """The whole pipeline with an identity crop: every view is RandomAffine's output on the same draw
    (bilinear to float rounding; nearest may flip a tap at an exact tie on another CPU, so 1 % of pixels)."""
    b, k, size = 3, 6, 20
    imgs = _images(b, size, size + 4, seed=1)
    aug = MultiViewAugment("cifar", views=k, seed=3, size=(size, size + 4), scale=(1.0, 1.0), ratio=(1.2, 1.2),
                           flip_p=0.0, jitter_p=0.0, grayscale_p=0.0, mean=(0, 0, 0), std=(1, 1, 1),
                           fill=(10, 200, 30), affine_interpolation=interp, **AFFINE)
    p = aug.sample_params(b, size, size + 4)
    views = aug.apply(imgs, p).flatten(0, 1)
    mode = TF.InterpolationMode.NEAREST if interp == "nearest" else TF.InterpolationMode.BILINEAR
    ref_t = T.RandomAffine(degrees=30, translate=(0.2, 0.1), scale=(0.8, 1.2), shear=(-10, 10, -5, 5),
                           interpolation=mode, fill=(10 / 255, 200 / 255, 30 / 255))
    apply_ref = getattr(ref_t, "transform", None) or ref_t._transform
    off = 0
    for n in range(b * k):
        ref = apply_ref(imgs[n // k].float() / 255, _tv_params(p.affine, n))
        diff = (views[n] - ref).abs()
        if interp == "bilinear":
            assert diff.max() < 1e-4
        else:
            off += int((diff > 1e-4).sum())
    assert off <= 0.01 * views.numel()


def test_parameters_follow_random_affine_ranges_and_differ_per_view():
    spec = AffineSpec.from_options(degrees=15, translate=(0.1, 0.2), scale=(0.9, 1.1), shear=10)
    p = sample_affine(spec, 4000, 16, 20, torch.Generator().manual_seed(0))
    assert p.angle.abs().max() <= 15 and p.angle.std() > 7  # U(-15, 15): std 8.7
    assert torch.equal(p.tx, p.tx.round()) and p.tx.abs().max() <= 2 and p.ty.abs().max() <= 3
    assert 0.9 <= p.scale.min() and p.scale.max() <= 1.1 and p.shear_x.abs().max() <= 10
    assert torch.all(p.shear_y == 0)  # a single shear value shears along x only, as in torchvision
    # views of one image draw their own parameters
    aug = MultiViewAugment("cifar", views=4, seed=0, size=16, degrees=15)
    q = aug.sample_params(2, 16, 16)
    assert q.affine.angle.unique().numel() == 8
    v = aug(_images(2, 16, 16))
    assert not torch.equal(v[0, 0], v[0, 1])


def test_no_affine_keeps_the_old_draws_and_inverse_matrix_is_the_identity_at_rest():
    plain = MultiViewAugment("cifar", views=2, seed=5)
    zero = MultiViewAugment("cifar", views=2, seed=5, degrees=0, shear=0, translate=(0, 0), affine_scale=(1, 1))
    x = _images(2, 32, 32)
    assert torch.equal(plain(x), zero(x))
    assert zero.sample_params(2, 32, 32).affine is None
    spec = AffineSpec.from_options(degrees=(0, 0))
    p = sample_affine(spec, 3, 8, 8, torch.Generator())
    theta = inverse_matrices(p)
    assert torch.allclose(theta, torch.eye(2, 3, dtype=theta.dtype).expand(3, 2, 3))
    y = torch.rand(3, 3, 8, 8)
    assert torch.allclose(apply_affine(y, theta, spec), y, atol=1e-6)


def test_generator_state_replays_the_same_affine_views():
    aug = MultiViewAugment("cifar", views=3, seed=7, size=16, **AFFINE)
    x = _images(2, 16, 16)
    aug(x)
    saved = aug.state_dict()
    first = aug(x)
    aug.load_state_dict(saved)
    assert torch.equal(aug(x), first)


@pytest.mark.parametrize("key,value,needle", [
    ("degrees", "-5", "degrees must lie in [0, 360]"),
    ("degrees", "[10, 5]", "degrees must be an increasing (min, max) pair"),
    ("translate", "[0.1, 1.5]", "translate fractions must lie in [0, 1]"),
    ("affine_scale", "[0, 1.1]", "affine_scale must be positive"),
    ("shear", "[1, 2, 3]", "shear must be a number or a sequence of 2 or 4 numbers"),
    ("fill", "300", "fill must be a value in [0, 255]"),
    ("affine_interpolation", "bicubic", "affine_interpolation must be one of ['nearest', 'bilinear']"),
])
def test_bad_affine_settings_are_one_line_errors(tmp_path, capsys, key, value, needle):
    rc = main(["pretrain", "digits", "--out", str(tmp_path / "r"), "--set", f"augment.overrides.{key}={value}",
               "--print-config"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and needle in err and "augment.overrides" in err, err


def test_resume_replays_the_affine_views(tmp_path):
    """Train 4 steps with a checkpoint every 2; drop the last checkpoint and resume: steps 3-4 see the same
    affine views (the parameters come from the checkpointed generator), so the weights are bitwise equal."""
    out = tmp_path / "run"
    args = ["train.batch_size=32", "augment.views=2", "model.projector.hidden=[32]", "model.projector.out_dim=16",
            "train.progress=false", "train.tensorboard=false", "train.threads=1", "eval.knn_every_epochs=0",
            "eval.final=false", "train.max_steps=4", "train.checkpoint_every_steps=2", "train.keep_checkpoints=3",
            "augment.overrides.degrees=20", "augment.overrides.translate=[0.1, 0.1]",
            "augment.overrides.shear=10", "augment.overrides.affine_interpolation=bilinear", f"out={out}"]
    train(load_config("digits", args))
    last = layout.checkpoint_path(out, 4)
    ref = torch.load(last, weights_only=True)["model"]
    shutil.move(last, tmp_path / "ref.pt")
    train(load_config("digits", args + ["train.resume=auto"]))
    res = torch.load(layout.checkpoint_path(out, 4), weights_only=True)["model"]
    assert all(torch.equal(ref[k], res[k]) for k in ref)
