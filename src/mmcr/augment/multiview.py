"""Many views per image, made for a whole uint8 batch at once on the batch's own device.

The authors build each view with a PIL pipeline, one image at a time in data-loader workers; with 40
views per image that caps training at a few thousand views per second per core. Here every view's
random parameters are drawn up front (on the CPU, from one ``torch.Generator``, so the same seed
gives the same views on any device) and the operations run as batched tensor ops:

- random resized crop + flip + resize: one pair of per-view interpolation matrices (torch's
  antialiased bilinear/bicubic weights, i.e. torchvision's ``antialias=True`` default), applied
  with two batched matmuls, so crops of any box and any scale cost the same;
- colour jitter in a random order per view, like torchvision's ColorJitter: four "slots", and in
  each slot every op is applied to the views that drew it there;
- grayscale, Gaussian blur (one sigma per view), solarisation, normalisation.

Each op reproduces ``torchvision.transforms.v2.functional`` on float images given the same
parameters (tests/test_augment_fidelity.py checks it). Views of one image are rows ``b`` of the
output (B, k, 3, h, w); every view has independent parameters.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mmcr.augment import functional as AF
from mmcr.augment.affine import AffineParams, AffineSpec, apply_affine, inverse_matrices, sample_affine
from mmcr.augment.eval import EvalTransform
from mmcr.augment.functional import check_images
from mmcr.augment.presets import PRESETS
from mmcr.schema import check_seed

_TRAIN_KEYS = set(PRESETS["cifar"]) | {"blur_kernel_size"}
_PROB_KEYS = ("flip_p", "jitter_p", "grayscale_p", "blur_p", "solarize_p")
# Tables of resize matrices for every (start, length) box are cached when no larger than this many
# floats (32 px CIFAR: 1M); bigger images compute the matrices of the boxes they draw.
_TABLE_LIMIT = 1 << 22


def _finite(value: float, name: str) -> float:
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def _pair(value, name: str, lower: float | None = None) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (_finite(value, name), _finite(value, name))
    if isinstance(value, Sequence) and len(value) == 2:
        lo, hi = _finite(value[0], name), _finite(value[1], name)
        if lo > hi or (lower is not None and lo < lower):
            raise ValueError(f"{name} must be an increasing pair >= {lower}, got {value}")
        return (lo, hi)
    raise ValueError(f"{name} must be a number or a (min, max) pair, got {value!r}")


def _jitter_range(value, name: str, center: float, bound: float | None = None) -> tuple[float, float] | None:
    """torchvision's ColorJitter convention: x -> [center - x, center + x] (clipped), or an explicit pair."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if _finite(value, name) < 0:
            raise ValueError(f"{name} must be non-negative, got {value}")
        if value == 0:
            return None
        lo, hi = center - float(value), center + float(value)
        if bound is None:
            lo = max(lo, 0.0)
    else:
        lo, hi = _pair(value, name)
    if bound is not None and not (-bound <= lo <= hi <= bound):
        raise ValueError(f"{name} must lie in [-{bound}, {bound}], got {value}")
    if bound is None and lo < 0:
        raise ValueError(f"{name} factors must be non-negative, got {value}")
    if lo == hi == center:
        return None
    return (lo, hi)


def _probs(value, name: str) -> tuple[float, ...]:
    """A probability, or a sequence of them cycled over view slots (asymmetric views)."""
    seq = tuple(float(v) for v in value) if isinstance(value, Sequence) else (float(value),)
    if not seq or any(not 0.0 <= p <= 1.0 for p in seq):
        raise ValueError(f"{name} must be a probability in [0, 1] or a sequence of them, got {value!r}")
    return seq


@dataclass
class ViewParams:
    """Sampled parameters of N = B * k views (view n belongs to image n // k), all CPU tensors.

    top/left/height/width: crop box (int64); flip, jitter, gray, blur, solarize: bool masks; order:
    (N, 4) jitter order, a permutation of 0..3 = brightness, contrast, saturation, hue; brightness,
    contrast, saturation: multiplicative factors; hue: shift in turns; sigma: blur sigma; affine: the
    random affine parameters (None when the augmentation has no affine views).

    Drawing them apart from applying them (:meth:`MultiViewAugment.sample_params`, then
    :meth:`MultiViewAugment.apply`) lets data workers cut the crops and the device finish the views.

    Attributes:
        top: (N,) int64 first row of each crop box.
        left: (N,) int64 first column.
        height: (N,) int64 box height.
        width: (N,) int64 box width.
        flip: (N,) bool horizontal flips.
        jitter: (N,) bool, colour jitter applied.
        order: (N, 4) int64 jitter op order.
        brightness: (N,) float32 factors.
        contrast: (N,) float32 factors.
        saturation: (N,) float32 factors.
        hue: (N,) float32 shifts in turns.
        gray: (N,) bool grayscale conversions.
        blur: (N,) bool Gaussian blurs.
        sigma: (N,) float32 blur sigmas.
        solarize: (N,) bool solarisations.
        affine: the random affine parameters (None when the augmentation has no affine views).

    Examples:
        >>> from mmcr import MultiViewAugment
        >>> p = MultiViewAugment("byol", views=2, seed=0).sample_params(batch=3, height=64, width=64)
        >>> p.top.shape, p.order.shape, p.blur.dtype
        (torch.Size([6]), torch.Size([6, 4]), torch.bool)
        >>> bool(p.blur[0::2].all())  # BYOL's blur_p = (1.0, 0.1): view slot 0 is always blurred
        True
    """

    top: torch.Tensor
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor
    affine: AffineParams | None = None


def map_params(params, fn):
    """A copy of per-view parameters (``ViewParams``, its ``AffineParams``, any dataclass of (N, ...)
    tensors) with ``fn`` applied to every tensor, e.g. to select or repeat views; None stays None."""
    if params is None:
        return None
    if dataclasses.is_dataclass(params):
        return type(params)(**{f.name: map_params(getattr(params, f.name), fn) for f in dataclasses.fields(params)})
    return fn(params)


class MultiViewAugment:
    """k random views of each image in a uint8 batch: (B, 3, H, W) -> float32 (B, k, 3, h, w), normalised.

    ``preset``: a name of :data:`mmcr.augment.PRESETS` ("cifar" | "stl10" | "byol"); ``views``: k;
    ``seed``: seeds the augmentation's own ``torch.Generator`` (``self.generator``; with seed=None it is
    seeded from torch's global RNG, so ``torch.manual_seed`` makes runs repeatable). Overrides: size,
    scale, ratio, interpolation ("bilinear"|"bicubic"), flip_p, brightness, contrast, saturation, hue,
    jitter_p, grayscale_p, blur_p, blur_sigma, blur_kernel_size, solarize_p, mean, std, color_first, and
    the random affine views of torchvision's RandomAffine applied to each view after its crop: degrees,
    translate, affine_scale (RandomAffine's ``scale``), shear, fill (0-255), affine_interpolation
    ("nearest"|"bilinear"); see :mod:`mmcr.augment.affine`.
    Probabilities may be sequences, cycled over view slots (view v uses p[v % len(p)]): byol's
    blur_p=(1.0, 0.1) makes views alternate A, B. The matching deterministic evaluation view is
    :meth:`eval_transform` (an :class:`~mmcr.augment.EvalTransform`).

    Reproducibility: ``aug(x, generator=g)`` draws from ``g`` instead; parameters are always drawn on
    the CPU, so identical inputs and generator state give identical views. ``state_dict()`` /
    ``load_state_dict()`` save and restore the generator for checkpoints.

    An instance keeps resize tables and scratch buffers between calls (``clear_cache()`` frees them),
    so use one instance per thread.

    Args:
        preset: a key of :data:`mmcr.augment.PRESETS`.
        views: k, views per image (>= 1).
        seed: seed of ``self.generator`` (an integer in [0, 2**32 - 1]; None draws one from torch's RNG).
        **overrides: preset keys to change, e.g. ``size=64`` or ``blur_p=0.5``.

    Raises:
        ValueError: an unknown preset or override, views < 1, or an override out of range; on call,
            images that are not a uint8 (B, 3, H, W) batch.

    Examples:
        >>> import torch
        >>> from mmcr import MultiViewAugment
        >>> _ = torch.manual_seed(0)
        >>> images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
        >>> views = MultiViewAugment("cifar", views=4, seed=0)(images)  # (B, k, 3, h, w)
        >>> views.shape, views.dtype
        (torch.Size([2, 4, 3, 32, 32]), torch.float32)
        >>> torch.equal(views, MultiViewAugment("cifar", views=4, seed=0)(images))  # same seed, same views
        True
        >>> MultiViewAugment("cifar", views=4, size=24).eval_transform()(images).shape
        torch.Size([2, 3, 24, 24])
    """

    def __init__(self, preset: str = "cifar", views: int = 2, seed: int | None = None, **overrides):
        if preset not in PRESETS:
            raise ValueError(f"unknown augmentation preset {preset!r}; choose one of {sorted(PRESETS)}")
        if not isinstance(views, int) or views < 1:
            raise ValueError(f"views must be a positive integer, got {views!r}")
        unknown = sorted(set(overrides) - _TRAIN_KEYS)
        if unknown:
            raise ValueError(f"unknown override(s) {unknown} for preset {preset!r}; valid: {sorted(_TRAIN_KEYS)}")
        self.preset = preset
        self.views = views
        cfg = dict(PRESETS[preset])
        cfg.update(overrides)
        self._setup(cfg)
        if seed is None:
            seed = int(torch.randint(0, 2**32, (1,)).item())
        self.seed = check_seed(seed)  # the run config's rule: an integer in [0, 2**32 - 1]
        self.generator = torch.Generator().manual_seed(self.seed)
        self._tables: dict = {}
        self._ws = AF.Workspace()  # scratch reused across calls (see Workspace); not thread-safe

    def clear_cache(self) -> None:
        """Free the cached resize tables and scratch buffers (they are rebuilt on the next call)."""
        self._tables.clear()
        self._ws.clear()

    # ----------------------------------------------------------------------------------- set-up
    def _setup(self, cfg: dict) -> None:
        interp = cfg["interpolation"]
        if interp not in ("bilinear", "bicubic"):
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interp!r}")
        self.interpolation = interp
        mean = tuple(_finite(m, "mean") for m in cfg["mean"])
        std = tuple(_finite(s, "std") for s in cfg["std"])
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each with std > 0, got mean={mean} std={std}")
        self.mean, self.std = mean, std
        self.size = self._size(cfg["size"], "size")
        self.scale = _pair(cfg["scale"], "scale", lower=0.0)
        if self.scale[0] <= 0 or self.scale[1] > 1:
            raise ValueError(f"scale must lie in (0, 1], got {cfg['scale']}")
        self.ratio = _pair(cfg["ratio"], "ratio", lower=0.0)
        if self.ratio[0] <= 0:
            raise ValueError(f"ratio must be positive, got {cfg['ratio']}")
        self.brightness = _jitter_range(cfg["brightness"], "brightness", 1.0)
        self.contrast = _jitter_range(cfg["contrast"], "contrast", 1.0)
        self.saturation = _jitter_range(cfg["saturation"], "saturation", 1.0)
        self.hue = _jitter_range(cfg["hue"], "hue", 0.0, bound=0.5)
        self.blur_sigma = _pair(cfg["blur_sigma"], "blur_sigma", lower=0.0)
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"blur_sigma must be positive, got {cfg['blur_sigma']}")
        ks = cfg.get("blur_kernel_size") or AF.blur_kernel_size(max(self.size))
        if int(ks) % 2 == 0 or int(ks) < 1:
            raise ValueError(f"blur_kernel_size must be a positive odd integer, got {ks}")
        self.blur_kernel_size = int(ks)
        self.probs = {k: _probs(cfg[k], k) for k in _PROB_KEYS}
        self.color_first = bool(cfg["color_first"])
        self.affine = AffineSpec.from_options(cfg["degrees"], cfg["translate"], cfg["affine_scale"], cfg["shear"],
                                              cfg["fill"], cfg["affine_interpolation"])

    @staticmethod
    def _size(value, name: str) -> tuple[int, int]:
        if isinstance(value, int) and value > 0:
            return (value, value)
        if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
            return (int(value[0]), int(value[1]))
        raise ValueError(f"{name} must be a positive int or (height, width), got {value!r}")

    @property
    def config(self) -> dict:
        """The resolved settings, for run records."""
        out = {"preset": self.preset, "views": self.views, "seed": self.seed, "interpolation": self.interpolation}
        out.update(mean=list(self.mean), std=list(self.std))
        out.update(
            size=list(self.size),
            scale=list(self.scale),
            ratio=list(self.ratio),
            brightness=self.brightness and list(self.brightness),
            contrast=self.contrast and list(self.contrast),
            saturation=self.saturation and list(self.saturation),
            hue=self.hue and list(self.hue),
            blur_sigma=list(self.blur_sigma),
            blur_kernel_size=self.blur_kernel_size,
            color_first=self.color_first,
            **{k: list(v) for k, v in self.probs.items()},
            **self.affine.config(),
        )
        return out

    @classmethod
    def from_config(cls, augment_cfg, views: int | None = None, seed: int | None = None) -> MultiViewAugment:
        """The training augmentation of a run's ``augment`` section (an ``AugmentConfig``);
        ``views`` overrides the number of views (e.g. for analysis manifolds)."""
        return cls(augment_cfg.preset, views=augment_cfg.views if views is None else views, seed=seed,
                   **augment_cfg.overrides)

    @classmethod
    def small_crops_from_config(cls, augment_cfg, seed: int | None = None) -> MultiViewAugment | None:
        """The low-resolution crops of a run (``augment.small_views`` > 0; multi-crop): the same preset
        and overrides, at ``augment.small_size`` (default half the views' side) and crop areas
        ``augment.small_scale``. None when the run has none."""
        if not augment_cfg.small_views:
            return None
        full = cls.from_config(augment_cfg, views=1, seed=0)
        size = augment_cfg.small_size or max(1, min(full.size) // 2)
        over = {**augment_cfg.overrides, "size": size, "scale": tuple(augment_cfg.small_scale)}
        over.pop("blur_kernel_size", None)  # sized for the full views; the small ones get their own
        return cls(augment_cfg.preset, views=augment_cfg.small_views, seed=seed, **over)

    def eval_transform(self, size=None, resize: int | None = None) -> EvalTransform:
        """The matching deterministic view (same output size, interpolation and normalisation)."""
        return EvalTransform(size=self.size if size is None else size, resize=resize, mean=self.mean, std=self.std,
                             interpolation=self.interpolation)

    # ----------------------------------------------------------------------------------- RNG state
    def manual_seed(self, seed: int) -> None:
        """Reseed the augmentation's generator (an integer in [0, 2**32 - 1])."""
        self.seed = check_seed(seed)
        self.generator.manual_seed(self.seed)

    def state_dict(self) -> dict:
        """The seed and generator state, for checkpoints (resuming continues the same views)."""
        return {"seed": self.seed, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.seed = int(state["seed"])
        self.generator.set_state(state["generator"])

    def __repr__(self) -> str:
        return f"MultiViewAugment(preset={self.preset!r}, views={self.views}, size={self.size})"

    # ----------------------------------------------------------------------------------- sampling
    def _slot_probs(self, key: str, n_images: int) -> torch.Tensor:
        p = torch.tensor(self.probs[key], dtype=torch.float64)
        slots = torch.arange(self.views) % len(p)
        return p[slots].repeat(n_images)

    def sample_params(
        self, batch: int, height: int, width: int, generator: torch.Generator | None = None
    ) -> ViewParams:
        """Draw the parameters of batch * views views of (height, width) images, on the CPU.

        The draw order is fixed and independent of the probabilities' outcomes, so a generator state
        always maps to the same views. Affine parameters are drawn last and only when affine views are
        on, so runs without them draw exactly what they drew before affine views existed. ``generator`` overrides
        ``self.generator``. Returns a :class:`ViewParams` of N = batch * views views.
        """
        g = self.generator if generator is None else generator
        n = batch * self.views
        top, left, h, w = AF.sample_crop_boxes(n, height, width, self.scale, self.ratio, g)

        def coin(key: str) -> torch.Tensor:
            return torch.rand(n, generator=g, dtype=torch.float64) < self._slot_probs(key, batch)

        def uniform(rng: tuple[float, float] | None, neutral: float) -> torch.Tensor:
            u = torch.rand(n, generator=g, dtype=torch.float64)
            if rng is None:
                return torch.full((n,), neutral, dtype=torch.float32)
            return (rng[0] + (rng[1] - rng[0]) * u).to(torch.float32)

        flip = coin("flip_p")
        jitter = coin("jitter_p")
        order = torch.argsort(torch.rand(n, 4, generator=g), dim=1)  # uniform random permutations
        brightness = uniform(self.brightness, 1.0)
        contrast = uniform(self.contrast, 1.0)
        saturation = uniform(self.saturation, 1.0)
        hue = uniform(self.hue, 0.0)
        gray = coin("grayscale_p")
        blur = coin("blur_p")
        sigma = uniform(self.blur_sigma, 1.0)
        solarize = coin("solarize_p")
        affine = sample_affine(self.affine, n, *self.size, g) if self.affine.enabled else None
        return ViewParams(
            top, left, h, w, flip, jitter, order, brightness, contrast, saturation, hue, gray, blur, sigma, solarize,
            affine,
        )

    # ----------------------------------------------------------------------------------- applying
    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """uint8 images (B, 3, H, W) -> normalised float32 views (B, k, 3, h, w), on the images' device."""
        images = check_images(images)
        b, _, h, w = images.shape
        return self.apply(images, self.sample_params(b, h, w, generator))

    def _weights(self, start, length, out_size: int, in_size: int, device, flip=None) -> torch.Tensor:
        """Per-view resize matrices, from a cached table of every box (both orientations) for small images."""
        if 2 * in_size * in_size * out_size * in_size <= _TABLE_LIMIT:
            key = (in_size, out_size, self.interpolation, str(device))
            table = self._tables.get(key)
            if table is None:
                lengths = torch.arange(1, in_size + 1).repeat_interleave(in_size).repeat(2)
                starts = torch.arange(in_size).repeat(2 * in_size)
                starts = torch.minimum(starts, in_size - lengths)  # boxes that fit; others never looked up
                flips = torch.arange(2).repeat_interleave(in_size * in_size).bool()
                table = AF.resize_weights(starts, lengths, out_size, in_size, self.interpolation, flip=flips)
                table = table.to(device=device, dtype=torch.float32).view(-1, out_size * in_size)
                self._tables[key] = table
            idx = (length - 1) * in_size + start
            if flip is not None:
                idx = idx + flip.to(torch.int64) * (in_size * in_size)
            return table.index_select(0, idx.to(device)).view(-1, out_size, in_size)
        f = None if flip is None else flip.to(device)
        w = AF.resize_weights(start.to(device), length.to(device), out_size, in_size, self.interpolation, flip=f)
        return w.to(torch.float32)

    def apply(self, images: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Make the views described by ``p`` (from ``sample_params``) of a uint8 batch: (B, 3, H, W) ->
        float32 (B, k, 3, h, w); a ValueError when ``p`` describes another number of views."""
        images = check_images(images)
        b, _, h_in, w_in = images.shape
        n = b * self.views
        if p.top.shape[0] != n:
            raise ValueError(f"params describe {p.top.shape[0]} views, but {b} images x {self.views} views = {n}")
        dev = images.device
        wy = self._weights(p.top, p.height, self.size[0], h_in, dev)
        wx = self._weights(p.left, p.width, self.size[1], w_in, dev, flip=p.flip)
        if self.color_first:
            # Colour ops see the full image (the authors' STL-10 order), then the crop.
            x = images.to(torch.float32).mul_(1.0 / 255.0)
            x = AF.to_planar(x).repeat_interleave(self.views, dim=1)
            x = self._colour(x, p, dev)
            x = AF.crop_resize(AF.from_planar(x), wy, wx, ws=self._ws)
            if self.interpolation == "bicubic":
                x.clamp_(0.0, 1.0)  # cubic overshoot, clipped as torchvision does for uint8 images (and PIL)
            x = self._affine(x, p)
        else:
            x = AF.crop_resize(images, wy, wx, scale=1.0 / 255.0, ws=self._ws)
            if self.interpolation == "bicubic":
                x.clamp_(0.0, 1.0)
            x = self._colour(self._affine(x, p), p, dev)
        x = self._subset(x, p.blur, lambda v, idx: AF.gaussian_blur(v, p.sigma[idx], self.blur_kernel_size))
        x = self._subset(x, p.solarize, lambda v, idx: AF.solarize(v))
        out = torch.empty(n, 3, *self.size, dtype=torch.float32, device=dev)
        AF.normalize_to(x, self.mean, self.std, out)
        return out.view(b, self.views, 3, *self.size)

    def apply_views(self, views: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Finish views that arrive already cropped to ``size``: uint8 (B, k, 3, h, w), e.g. the
        full-image crops the data workers cut (:mod:`mmcr.data.views`). Applies the flips, colour,
        blur, solarisation and normalisation of ``p`` (from ``sample_params``); its boxes are unused.
        Equal to :meth:`apply` with every box the whole view."""
        if views.dtype != torch.uint8 or views.ndim != 5 or tuple(views.shape[1:]) != (self.views, 3, *self.size):
            raise ValueError(f"expected uint8 views (B, {self.views}, 3, {self.size[0]}, {self.size[1]}), got "
                             f"{views.dtype} {tuple(views.shape)}")
        if self.color_first:
            raise ValueError(f"preset {self.preset!r} colours the full image before cropping (color_first); "
                             "pre-cropped views cannot follow it: crop on the device instead")
        b, n = views.shape[0], views.shape[0] * self.views
        if p.flip.shape[0] != n:
            raise ValueError(f"params describe {p.flip.shape[0]} views, but {b} images x {self.views} views = {n}")
        dev = views.device
        x = self._ws("views.in", (3, n, *self.size), torch.float32, dev)
        x.copy_(views.reshape(n, 3, *self.size).transpose(0, 1)).mul_(1.0 / 255.0)
        x = self._subset(x, p.flip, lambda v, idx: v.flip(-1))
        x = self._colour(self._affine(x, p), p, dev)
        x = self._subset(x, p.blur, lambda v, idx: AF.gaussian_blur(v, p.sigma[idx], self.blur_kernel_size))
        x = self._subset(x, p.solarize, lambda v, idx: AF.solarize(v))
        out = torch.empty(n, 3, *self.size, dtype=torch.float32, device=dev)
        AF.normalize_to(x, self.mean, self.std, out)
        return out.view(b, self.views, 3, *self.size)

    def _affine(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """The views' random affine warps (planar x in [0, 1]), all in one grid_sample; x itself when off."""
        if p.affine is None:
            if self.affine.enabled:
                raise ValueError("these view parameters have no affine part, but the augmentation has affine views: "
                                 "draw them with this augmentation's sample_params")
            return x
        return AF.to_planar(apply_affine(x.transpose(0, 1), inverse_matrices(p.affine), self.affine))

    def _subset(self, x: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
        """Apply fn to the views selected by mask (planar x), in place of those views."""
        idx = torch.nonzero(mask).squeeze(1)
        if idx.numel() == 0:
            return x
        if idx.numel() == x.shape[1]:
            return fn(x, idx)
        didx = idx.to(x.device)
        shape = (x.shape[0], idx.numel(), *x.shape[2:])
        sub = AF.gather_views(x, didx, out=self._ws("subset", shape, x.dtype, x.device))
        AF.scatter_views(x, didx, fn(sub, idx))
        return x

    def _gray(self, v: torch.Tensor, idx) -> torch.Tensor:
        g = AF.grayscale(v, out=self._ws("luma", v.shape[1:], v.dtype, v.device))
        for c in range(v.shape[0]):
            v[c].copy_(g)
        return v

    def _colour(self, x: torch.Tensor, p: ViewParams, dev) -> torch.Tensor:
        """Colour jitter in each view's own op order, then random grayscale.

        The jittered views are gathered once, sorted by the op they apply in slot 0; each op then
        runs in place on one contiguous run of views. Between slots the buffer is re-gathered into
        the next slot's op order, and after slot 3 scattered back: 5 index passes in all instead of
        one gather and one scatter per (slot, op).
        """
        ops = (
            (self.brightness, AF.adjust_brightness, p.brightness),
            (self.contrast, AF.adjust_contrast, p.contrast),
            (self.saturation, AF.adjust_saturation, p.saturation),
            (self.hue, AF.adjust_hue, p.hue),
        )
        jit = torch.nonzero(p.jitter).squeeze(1)
        if jit.numel() and any(rng is not None for rng, _, _ in ops):
            order = p.order.index_select(0, jit)  # (M, 4)
            where = None  # where[i]: position in the buffer of jittered view i
            buf = None
            shape = (x.shape[0], jit.numel(), *x.shape[2:])
            for slot in range(4):
                key = order[:, slot]
                arrangement = torch.sort(key, stable=True).indices  # buffer position -> jittered view
                dst = self._ws(f"jitter{slot % 2}", shape, x.dtype, x.device)  # ping-pong buffers
                if buf is None:
                    buf = AF.gather_views(x, jit.index_select(0, arrangement).to(x.device), out=dst)
                else:
                    buf = AF.gather_views(buf, where.index_select(0, arrangement).to(x.device), out=dst)
                where = torch.empty_like(arrangement)
                where[arrangement] = torch.arange(arrangement.numel())
                counts = torch.bincount(key, minlength=4).tolist()
                views = buf
                lo = 0
                for op_id, (rng, fn, factor) in enumerate(ops):
                    hi = lo + counts[op_id]
                    if rng is not None and hi > lo:
                        part = views[:, lo:hi]
                        sel = factor.index_select(0, jit.index_select(0, arrangement[lo:hi]))
                        fn(part, sel, out=part, ws=self._ws)
                    lo = hi
            AF.scatter_views(x, jit.index_select(0, arrangement).to(x.device), buf)
        return self._subset(x, p.gray, self._gray)


def eval_transform_of(augment_cfg, size=None, resize: int | None = None) -> EvalTransform:
    """The eval view of a run's training augmentation (an ``AugmentConfig``): its crop size and
    statistics; ``size``/``resize`` override the crop and the short-side resize.

    Args:
        augment_cfg: a run config's ``augment`` section.
        size: centre-crop size instead of the run's view size.
        resize: short-side resize before the crop.

    Returns:
        The :class:`~mmcr.augment.EvalTransform`: uint8 (B, 3, H, W) -> float32 (B, 3, h, w).

    Examples:
        >>> from mmcr.augment import eval_transform_of
        >>> from mmcr.run.config import AugmentConfig
        >>> eval_transform_of(AugmentConfig(preset="stl10")).config["size"]
        [64, 64]
        >>> eval_transform_of(AugmentConfig(preset="cifar"), size=24).config["size"]
        [24, 24]
    """
    return MultiViewAugment.from_config(augment_cfg, views=1, seed=0).eval_transform(size=size, resize=resize)
