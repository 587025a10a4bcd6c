"""Random affine views (rotation, translation, scale, shear), batched: one ``grid_sample`` for all views.

The parameters and their meaning are torchvision's ``RandomAffine``: ``degrees`` (d -> U(-d, d), or a
(min, max) pair), ``translate`` (fractions (a, b) of the view's width and height; the shift is a whole
number of pixels drawn as ``round(U(-a*W, a*W))``), ``scale`` (a (min, max) pair), ``shear`` (s -> x
shear U(-s, s); a pair -> x shear range; four numbers -> x then y ranges), ``fill`` (0-255, one value or
three) and ``nearest`` or ``bilinear`` sampling. Each view draws its own parameters; the transform keeps
the image centre fixed and uses torchvision's inverse matrix, grid convention (``align_corners=False``)
and fill rule (a sampled validity mask: nearest replaces, bilinear blends), so given the same parameters
the output equals ``torchvision.transforms.v2.functional.affine`` (tests/test_augment_fidelity.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AFFINE_INTERPOLATIONS = ("nearest", "bilinear")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _range(value, name: str, lo: float, hi: float) -> tuple[float, float]:
    pair = tuple(_number(v, name) for v in value)
    if len(pair) != 2 or pair[0] > pair[1] or pair[0] < lo or pair[1] > hi:
        raise ValueError(f"{name} must be an increasing (min, max) pair within [{lo:g}, {hi:g}], got {list(value)}")
    return pair


def _symmetric(value, name: str, bound: float, sizes: tuple[int, ...] = (2,)) -> tuple[float, ...]:
    """d -> (-d, d); otherwise an explicit range (or, for shear, two ranges)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        d = _number(value, name)
        if not 0 <= d <= bound:
            raise ValueError(f"{name} must lie in [0, {bound:g}] (or be a (min, max) pair), got {value!r}")
        return (-d, d)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) in sizes:
        out: tuple[float, ...] = ()
        for i in range(0, len(value), 2):
            out += _range(value[i:i + 2], name, -bound, bound)
        return out
    what = " or ".join(str(s) for s in sizes)
    raise ValueError(f"{name} must be a number or a sequence of {what} numbers, got {value!r}")


@dataclass(frozen=True)
class AffineSpec:
    """Checked settings of the random affine views; ``enabled`` is False when every range is the identity."""

    degrees: tuple[float, float] = (0.0, 0.0)
    translate: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    shear: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0)
    interpolation: str = "nearest"

    @classmethod
    def from_options(cls, degrees=0, translate=None, scale=None, shear=0, fill=0,
                     interpolation="nearest") -> AffineSpec:
        """From the ``augment.overrides`` values (``degrees``, ``translate``, ``affine_scale``, ``shear``,
        ``fill``, ``affine_interpolation``); a one-line ValueError names the first bad one."""
        deg = _symmetric(degrees, "degrees", 360.0)
        if translate is None:
            tr = (0.0, 0.0)
        elif isinstance(translate, (int, float)) and not isinstance(translate, bool):
            tr = (_number(translate, "translate"),) * 2
        elif isinstance(translate, Sequence) and len(translate) == 2:
            tr = tuple(_number(t, "translate") for t in translate)
        else:
            raise ValueError(f"translate must be a fraction or a (width, height) pair of fractions, got {translate!r}")
        if not all(0.0 <= t <= 1.0 for t in tr):
            raise ValueError(f"translate fractions must lie in [0, 1], got {translate!r}")
        sc = (1.0, 1.0) if scale is None else _range(scale, "affine_scale", 0.0, math.inf)
        if sc[0] <= 0:
            raise ValueError(f"affine_scale must be positive, got {list(scale)}")
        sh = _symmetric(0 if shear is None else shear, "shear", 89.0, sizes=(2, 4))
        sh = sh + (0.0, 0.0) if len(sh) == 2 else sh
        fl = (fill,) * 3 if isinstance(fill, (int, float)) and not isinstance(fill, bool) else tuple(fill or ())
        if len(fl) != 3 or not all(0 <= _number(f, "fill") <= 255 for f in fl):
            raise ValueError(f"fill must be a value in [0, 255] or three of them (R, G, B), got {fill!r}")
        if interpolation not in AFFINE_INTERPOLATIONS:
            raise ValueError(f"affine_interpolation must be one of {list(AFFINE_INTERPOLATIONS)}, "
                             f"got {interpolation!r}")
        return cls(deg, tr, sc, sh, tuple(float(f) for f in fl), interpolation)

    @property
    def enabled(self) -> bool:
        return (self.degrees != (0.0, 0.0) or self.translate != (0.0, 0.0) or self.scale != (1.0, 1.0)
                or any(self.shear))

    def config(self) -> dict:
        return dict(degrees=list(self.degrees), translate=list(self.translate), affine_scale=list(self.scale),
                    shear=list(self.shear), fill=list(self.fill), affine_interpolation=self.interpolation)


@dataclass
class AffineParams:
    """Per-view affine parameters (CPU float64, shape (N,)): angle and shears in degrees, shifts in pixels."""

    angle: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    scale: torch.Tensor
    shear_x: torch.Tensor
    shear_y: torch.Tensor


def sample_affine(spec: AffineSpec, n: int, height: int, width: int, generator: torch.Generator) -> AffineParams:
    """Draw n views' parameters by RandomAffine's rule, in a fixed order (6 uniform draws per view)."""

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64)

    angle = uniform(*spec.degrees)
    max_dx, max_dy = spec.translate[0] * width, spec.translate[1] * height
    tx = torch.round(uniform(-max_dx, max_dx))
    ty = torch.round(uniform(-max_dy, max_dy))
    scale = uniform(*spec.scale)
    shear_x = uniform(spec.shear[0], spec.shear[1])
    shear_y = uniform(spec.shear[2], spec.shear[3])
    return AffineParams(angle, tx, ty, scale, shear_x, shear_y)


def inverse_matrices(p: AffineParams) -> torch.Tensor:
    """(N, 2, 3) float64 maps from output to input pixel coordinates, centred on the image centre.

    The forward map is T * R(angle) * S(scale) * SHy(shear_y) * SHx(shear_x) about the centre (torchvision's
    convention); its inverse is written out in closed form (the rotation-shear part has determinant 1).
    """
    rot, sx, sy = torch.deg2rad(p.angle), torch.deg2rad(p.shear_x), torch.deg2rad(p.shear_y)
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / p.scale.view(-1, 1, 1)
    shift = -(m @ torch.stack([p.tx, p.ty], -1).unsqueeze(-1))  # undo the translation first
    return torch.cat([m, shift], -1)


def apply_affine(x: torch.Tensor, theta: torch.Tensor, spec: AffineSpec) -> torch.Tensor:
    """Warp views x (N, C, H, W) float in [0, 1] by their inverse matrices ``theta`` (N, 2, 3), in one pass.

    Output pixel (i, j) reads the input at theta @ (j - (W-1)/2, i - (H-1)/2, 1) (+ the centre); points
    outside the image take ``fill`` (in 0-255 units) through a sampled validity mask, as torchvision does.
    """
    n, ch, h, w = x.shape
    dev, dt = x.device, x.dtype
    th = theta.to(device=dev, dtype=dt)
    base = torch.empty(h, w, 3, dtype=dt, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, dtype=dt, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, dtype=dt, device=dev).unsqueeze(-1))
    base[..., 2].fill_(1.0)
    norm = torch.tensor([0.5 * w, 0.5 * h], dtype=dt, device=dev)
    grid = torch.matmul(base.view(1, h * w, 3), th.transpose(1, 2) / norm).view(n, h, w, 2)
    inp = torch.cat([x, torch.ones(n, 1, h, w, dtype=dt, device=dev)], dim=1)
    out = F.grid_sample(inp, grid, mode=spec.interpolation, padding_mode="zeros", align_corners=False)
    img, mask = out[:, :ch], out[:, ch:]
    fill = torch.tensor(spec.fill[:ch] if ch <= 3 else spec.fill[:1] * ch, dtype=dt, device=dev).view(1, -1, 1, 1)
    fill = fill / 255.0
    if spec.interpolation == "nearest":
        return torch.where(mask < 0.5, fill.expand_as(img), img)
    return img.sub_(fill).mul_(mask).add_(fill)
