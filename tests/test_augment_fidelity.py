"""Each batched op equals torchvision.transforms.v2 applied to single images with the same parameters."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from mmcr.augment import MultiViewAugment
from mmcr.augment import functional as AF

MODES = {"bilinear": TF.InterpolationMode.BILINEAR, "bicubic": TF.InterpolationMode.BICUBIC}


def _images(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    # Smooth structure plus noise, so interpolation, hue and blur all have something to act on.
    base = torch.rand(b, 3, max(2, h // 4), max(2, w // 4), generator=g)
    x = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    x = (x * 0.8 + 0.2 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8)


@pytest.mark.parametrize(
    "interp,h_in,size,scale",
    [
        ("bilinear", 32, 32, (0.08, 1.0)),  # CIFAR: pure upscaling
        ("bicubic", 40, 24, (0.3, 1.0)),  # mostly downscaling: antialiased kernels widen
        ("bilinear", 48, 20, (0.5, 1.0)),
        ("bicubic", 24, 40, (0.08, 1.0)),
    ],
)
def test_crop_resize_flip_matches_torchvision(interp, h_in, size, scale):
    b, k = 3, 8
    imgs = _images(b, h_in, h_in + 4, seed=1)
    g = torch.Generator().manual_seed(2)
    top, left, hh, ww = AF.sample_crop_boxes(b * k, h_in, h_in + 4, scale, (0.75, 4 / 3), g)
    flip = torch.rand(b * k, generator=g) < 0.5
    wy = AF.resize_weights(top, hh, size, h_in, interp).float()
    wx = AF.resize_weights(left, ww, size, h_in + 4, interp, flip=flip).float()
    mine = AF.from_planar(AF.crop_resize(imgs, wy, wx, scale=1 / 255))
    for n in range(b * k):
        box = (int(top[n]), int(left[n]), int(hh[n]), int(ww[n]))
        src = imgs[n // k]
        ref_f = TF.resized_crop(src.float() / 255, *box, [size, size], interpolation=MODES[interp], antialias=True)
        ref_u = TF.resized_crop(src, *box, [size, size], interpolation=MODES[interp], antialias=True)
        if flip[n]:
            ref_f, ref_u = TF.horizontal_flip(ref_f), TF.horizontal_flip(ref_u)
        assert (mine[n] - ref_f).abs().max() < 1e-4
        assert ((mine[n] * 255).round() - ref_u.float()).abs().max() <= 1  # uint8 kernels round


@pytest.mark.parametrize(
    "op,tv,lo,hi",
    [
        (AF.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (AF.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (AF.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (AF.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_match_torchvision(op, tv, lo, hi):
    x = _images(24, 12, 10, seed=3).float() / 255
    x[0] = 0.5  # grey image: hue undefined, saturation zero
    x[1, 1] = x[1, 0]  # ties between channel maxima
    x[2, 2] = x[2, 0]
    f = lo + (hi - lo) * torch.rand(24, generator=torch.Generator().manual_seed(4))
    mine = AF.from_planar(op(AF.to_planar(x), f))
    ref = torch.stack([tv(x[i], float(f[i])) for i in range(24)])
    assert (mine - ref).abs().max() < 1e-5


def test_grayscale_blur_solarize_match_torchvision():
    x = _images(6, 30, 28, seed=5).float() / 255
    p = AF.to_planar(x)
    gray = AF.grayscale(p)
    ref = TF.rgb_to_grayscale(x, num_output_channels=1)[:, 0]
    assert (gray - ref).abs().max() < 1e-6
    sigma = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 3.0])
    k = AF.blur_kernel_size(224)
    assert k == 23
    blurred = AF.from_planar(AF.gaussian_blur(p, sigma, 7))
    for i in range(6):
        r = TF.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2)
        assert (blurred[i] - r).abs().max() < 1e-5
    sol = AF.from_planar(AF.solarize(p, 0.5))
    assert torch.equal(sol, TF.solarize(x, 0.5))


def _reference_view(aug: MultiViewAugment, img_u8: torch.Tensor, p, n: int) -> torch.Tensor:
    """One view made with torchvision's single-image ops from the parameters of view n."""
    x = img_u8.float() / 255

    def colour(x):
        if p.jitter[n]:
            ops = [
                (aug.brightness, TF.adjust_brightness, p.brightness),
                (aug.contrast, TF.adjust_contrast, p.contrast),
                (aug.saturation, TF.adjust_saturation, p.saturation),
                (aug.hue, TF.adjust_hue, p.hue),
            ]
            for op_id in p.order[n].tolist():
                rng, fn, factor = ops[op_id]
                if rng is not None:
                    x = fn(x, float(factor[n]))
        if p.gray[n]:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        return x

    if aug.color_first:
        x = colour(x)
    box = (int(p.top[n]), int(p.left[n]), int(p.height[n]), int(p.width[n]))
    x = TF.resized_crop(x, *box, list(aug.size), interpolation=MODES[aug.interpolation], antialias=True)
    x = x.clamp(0, 1)  # bicubic overshoot: torchvision clips it for uint8 images, as PIL does
    if p.flip[n]:
        x = TF.horizontal_flip(x)
    if not aug.color_first:
        x = colour(x)
    if p.blur[n]:
        k = aug.blur_kernel_size
        x = TF.gaussian_blur(x, [k, k], [float(p.sigma[n])] * 2)
    if p.solarize[n]:
        x = TF.solarize(x, 0.5)
    return x


@pytest.mark.parametrize(
    "preset,h_in,kw",
    [
        ("cifar", 32, {}),
        ("stl10", 40, {"size": 24}),
        ("byol", 72, {"size": 56, "blur_kernel_size": 5}),
        ("cifar", 32, {"interpolation": "bicubic", "blur_p": 0.5, "solarize_p": 0.5}),
    ],
)
def test_full_pipeline_matches_torchvision(preset, h_in, kw):
    """Whole views (crop, flip, jitter in each view's order, grayscale, blur, solarize) within 2/255."""
    k = 6
    aug = MultiViewAugment(preset, views=k, seed=7, **kw)
    imgs = _images(4, h_in, h_in, seed=8)
    p = aug.sample_params(4, h_in, h_in)
    out = aug.apply(imgs, p)
    mean = torch.tensor(aug.mean).view(3, 1, 1)
    std = torch.tensor(aug.std).view(3, 1, 1)
    views = out.reshape(-1, 3, *aug.size) * std + mean  # back to [0, 1]
    worst = 0.0
    for n in range(4 * k):
        ref = _reference_view(aug, imgs[n // k], p, n)
        worst = max(worst, ((views[n] * 255).round() - (ref * 255).round()).abs().max().item())
    assert worst <= 2, worst


def test_eval_transform_matches_torchvision():
    imgs = _images(3, 40, 50, seed=9)
    tf = MultiViewAugment("cifar", views=2).eval_transform(resize=36)
    out = tf(imgs)
    assert out.shape == (3, 3, 32, 32)
    ref = TF.center_crop(TF.resize(imgs.float() / 255, [36], antialias=True), [32, 32]).clamp(0, 1)
    ref = TF.normalize(ref, list(tf.mean), list(tf.std))
    assert (out - ref).abs().max() < 1e-5


@settings(max_examples=40, deadline=None)
@given(
    in_size=st.integers(1, 40),
    out_size=st.integers(1, 40),
    data=st.data(),
    interp=st.sampled_from(["bilinear", "bicubic"]),
)
def test_resize_weights_equal_torch_interpolate(in_size, out_size, data, interp):
    """Any crop [start, start+length) resized to any size: the matrix equals F.interpolate(antialias=True)."""
    length = data.draw(st.integers(1, in_size))
    start = data.draw(st.integers(0, in_size - length))
    w = AF.resize_weights(torch.tensor([start]), torch.tensor([length]), out_size, in_size, interp)[0]
    assert torch.allclose(w.sum(dim=1), torch.ones(out_size, dtype=torch.float64))
    assert (w[:, :start] == 0).all() and (w[:, start + length :] == 0).all()
    x = torch.rand(in_size, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(in_size))
    crop = x[start : start + length].T[None, :, :, None].expand(1, 3, length, 2).contiguous()
    ref = torch.nn.functional.interpolate(crop, size=(out_size, 2), mode=interp, antialias=True, align_corners=False)
    assert torch.allclose(w @ x, ref[0, :, :, 0].T, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(shift=st.floats(-0.5, 0.5), seed=st.integers(0, 1000))
def test_hue_shift_round_trip(shift, seed):
    """Shifting hue by f then by -f restores the image; the shift keeps value (max) and chroma (max - min)."""
    x = torch.rand(3, 4, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    f = torch.full((4,), shift, dtype=torch.float64)
    y = AF.adjust_hue(x, f)
    assert torch.allclose(y.amax(0), x.amax(0), atol=1e-12)
    assert torch.allclose(y.amax(0) - y.amin(0), x.amax(0) - x.amin(0), atol=1e-12)
    assert torch.allclose(AF.adjust_hue(y, -f), x, atol=1e-9)
