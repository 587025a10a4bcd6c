"""Batched image operations with one parameter per image, matching torchvision's single-image kernels.

Every function takes float images (N, 3, H, W) in [0, 1] and per-image parameters of shape (N,).
torchvision's functional ops take one scalar parameter per call, so applying them to many views with
different parameters needs a Python loop per view; these do the same arithmetic for the whole batch
at once. The formulas follow ``torchvision.transforms.v2.functional`` on float images (same grayscale
weights, same clamping after every op, same HSV round trip), so a view made here equals the view
torchvision makes from the same parameters up to float rounding.

Colour ops work on planar batches (3, N, H, W) (see :func:`to_planar`), where each channel is one
contiguous block, the layout the batched kernels are fastest on.

Examples:
    >>> import torch
    >>> import torchvision.transforms.v2.functional as TF
    >>> from mmcr.augment import functional as AF
    >>> _ = torch.manual_seed(0)
    >>> images = torch.rand(4, 3, 8, 8)  # (N, 3, H, W) in [0, 1]
    >>> factors = torch.tensor([0.5, 0.8, 1.2, 1.5])  # one per image
    >>> out = AF.from_planar(AF.adjust_saturation(AF.to_planar(images), factors))
    >>> reference = torch.stack([TF.adjust_saturation(im, float(f)) for im, f in zip(images, factors)])
    >>> out.shape, torch.allclose(out, reference, atol=1e-6)
    (torch.Size([4, 3, 8, 8]), True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale uses them.
_LUMA = (0.2989, 0.587, 0.114)

_TAPS = {"bilinear": 2.0, "bicubic": 4.0}


class Workspace:
    """Reusable scratch tensors, keyed by name, grown on demand.

    On CPU, every fresh multi-megabyte tensor costs page faults when the allocator hands memory back
    to the OS between calls; with 40 views per image the ops below would spend more time there than
    computing. Passing a Workspace makes them write their temporaries into buffers kept across calls.
    Not thread-safe: one Workspace per augmentation object (and thread).

    Call it as ``ws(key, shape, dtype, device)`` for a tensor of that shape viewing the buffer of ``key``
    (its contents are undefined; it stays valid until the next call with the same key).

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import Workspace
        >>> ws = Workspace()
        >>> a = ws("tmp", (2, 3), torch.float32, "cpu")
        >>> b = ws("tmp", (2, 2), torch.float32, "cpu")  # smaller: the same memory again
        >>> a.shape, b.shape, a.data_ptr() == b.data_ptr()
        (torch.Size([2, 3]), torch.Size([2, 2]), True)
    """

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def __call__(self, key: str, shape, dtype: torch.dtype, device) -> torch.Tensor:
        n = math.prod(shape)
        buf = self._bufs.get(key)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != torch.device(device):
            buf = torch.empty(int(n * 1.25) + 1, dtype=dtype, device=device)  # headroom: batch sizes vary
            self._bufs[key] = buf
        return buf[:n].view(tuple(shape))

    def clear(self) -> None:
        """Drop every buffer (frees the memory)."""
        self._bufs.clear()


def _buf(ws: Workspace | None, key: str, shape, like: torch.Tensor) -> torch.Tensor:
    if ws is None:
        return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
    return ws(key, shape, like.dtype, like.device)


def _filter(x: torch.Tensor, interpolation: str) -> torch.Tensor:
    """Interpolation kernel evaluated at x, as in PyTorch's antialiased resize (and PIL)."""
    x = x.abs()
    if interpolation == "bilinear":
        return (1.0 - x).clamp_(min=0.0)
    # Keys cubic with a = -0.5, the kernel of PIL and of torch's antialiased bicubic.
    a = -0.5
    inner = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    outer = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return torch.where(x < 1.0, inner, torch.where(x < 2.0, outer, torch.zeros_like(x)))


def resize_weights(
    start: torch.Tensor,
    length: torch.Tensor,
    out_size: int,
    in_size: int,
    interpolation: str = "bilinear",
    dtype: torch.dtype = torch.float64,
    flip: torch.Tensor | None = None,
) -> torch.Tensor:
    """Dense (N, out_size, in_size) matrices that crop [start, start+length) and resize it to out_size.

    ``flip`` (N,) bool mirrors the output of the flagged views (a horizontal flip when used for columns).

    The weights are those of ``torch.nn.functional.interpolate(..., antialias=True,
    align_corners=False)``, the default of torchvision's Resize and RandomResizedCrop: when shrinking,
    the kernel is widened by the scale factor (area-aware antialiasing, as PIL does); taps falling
    outside the crop are dropped and each row renormalised, which is how the reference handles the
    crop border. Written by hand because torch offers no crop-and-resize with a different box per
    image; a matrix per axis turns all views' crops and resizes into two batched matmuls. Only the
    few taps inside each kernel's support are evaluated, then scattered into the dense matrix.

    Args:
        start: (N,) first input pixel of each crop along this axis.
        length: (N,) crop lengths in input pixels.
        out_size: output pixels along this axis.
        in_size: input pixels along this axis.
        interpolation: "bilinear" or "bicubic".
        dtype: dtype of the matrices.
        flip: (N,) bool, mirror these views' output.

    Returns:
        (N, out_size, in_size) matrices; row i holds the weights of output pixel i.

    Raises:
        ValueError: an unknown interpolation.

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import resize_weights
        >>> w = resize_weights(torch.zeros(1), torch.full((1,), 4.0), out_size=4, in_size=4)
        >>> w.shape, torch.allclose(w[0], torch.eye(4, dtype=torch.float64))  # whole axis, same size
        (torch.Size([1, 4, 4]), True)
    """
    if interpolation not in _TAPS:
        raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
    dev = start.device
    start = start.to(dtype)
    length = length.to(dtype)
    scale = length / out_size  # input pixels per output pixel
    stretch = scale.clamp(min=1.0)  # kernel widening when downscaling
    support = 0.5 * _TAPS[interpolation] * stretch  # (N,)
    i = torch.arange(out_size, dtype=dtype, device=dev)
    i = i.expand(start.shape[0], out_size)
    if flip is not None:
        i = torch.where(flip.to(dev)[:, None], out_size - 1 - i, i)
    center = scale[:, None] * (i + 0.5)  # (N, out), in crop coordinates
    first = torch.floor(center - support[:, None] - 0.5)  # leftmost tap that can be inside the support
    n_taps = int(math.ceil(2.0 * float(support.max()))) + 2
    rel = first[:, :, None] + torch.arange(n_taps, dtype=dtype, device=dev)  # (N, out, T) crop coordinates
    w = _filter((rel - center[:, :, None] + 0.5) / stretch[:, None, None], interpolation)
    w = w * ((rel >= 0) & (rel < length[:, None, None]))
    w = w / w.sum(dim=-1, keepdim=True)
    col = (rel + start[:, None, None]).clamp(0, in_size - 1).to(torch.int64)  # zero-weight taps land anywhere
    out = torch.zeros(start.shape[0], out_size, in_size, dtype=dtype, device=dev)
    return out.scatter_add_(2, col, w)


def crop_resize(
    images: torch.Tensor,
    wy: torch.Tensor,
    wx: torch.Tensor,
    scale: float = 1.0,
    ws: Workspace | None = None,
) -> torch.Tensor:
    """Apply per-view row and column resize matrices; view n reads image n // r, r = views per image.

    images: (M, C, H, W) any real dtype; wy: (M*r, h, H); wx: (M*r, w, W) (see ``resize_weights``).
    Returns planar float32 (C, M*r, h, w) times ``scale`` (1/255 maps uint8 to [0, 1]). The row pass
    is one matmul per source image covering all its views, the column pass one matmul per view; the
    channel axis rides inside the matrices, so no per-view copy of the source image is made.
    With ``ws`` the result lives in the workspace (valid until the next call using it).

    Raises:
        ValueError: the number of views is not a multiple of the number of images.

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from mmcr.augment.functional import crop_resize, resize_weights
        >>> _ = torch.manual_seed(0)
        >>> images = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
        >>> whole = dict(start=torch.zeros(2), length=torch.full((2,), 8.0), out_size=4, in_size=8, dtype=torch.float32)
        >>> wy = resize_weights(**whole)
        >>> wx = resize_weights(**whole, flip=torch.tensor([False, True]))  # 2 views, the second mirrored
        >>> views = crop_resize(images, wy, wx, scale=1 / 255)  # planar (3, 2, 4, 4)
        >>> reference = F.interpolate(images / 255, size=4, mode="bilinear", antialias=True)[0]
        >>> views.shape, torch.allclose(views[:, 0], reference, atol=1e-5)
        (torch.Size([3, 2, 4, 4]), True)
        >>> torch.allclose(views[:, 1], reference.flip(-1), atol=1e-5)
        True
    """
    m, c, h_in, w_in = images.shape
    n, h, _ = wy.shape
    w = wx.shape[1]
    if n % m != 0:
        raise ValueError(f"{n} views cannot be split evenly over {m} images")
    r = n // m
    x = images.to(torch.float32).permute(0, 2, 1, 3).reshape(m, h_in, c * w_in)
    like = wy
    t = torch.bmm(wy.reshape(m, r * h, h_in), x, out=_buf(ws, "crop.rows", (m, r * h, c * w_in), like))
    t = t.view(n, h * c, w_in)
    t = torch.bmm(t, wx.transpose(1, 2), out=_buf(ws, "crop.cols", (n, h * c, w), like)).view(n, h, c, w)
    out = _buf(ws, "crop.out", (c, n, h, w), like)
    # An elementwise op with out= re-lays memory far faster than permute().contiguous() on CPU.
    torch.mul(t.permute(2, 0, 1, 3), scale, out=out)
    return out


def gather_views(planar: torch.Tensor, idx: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """planar[:, idx] for a (C, N, ...) batch; per-channel 2-D gathers are torch's fastest CPU path.

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import gather_views
        >>> _ = torch.manual_seed(0)
        >>> planar = torch.rand(3, 4, 2, 2)
        >>> torch.equal(gather_views(planar, torch.tensor([2, 0])), planar[:, [2, 0]])
        True
    """
    c, n = planar.shape[:2]
    flat = planar.reshape(c, n, -1)
    if out is None:
        out = torch.empty((c, idx.numel(), *planar.shape[2:]), dtype=planar.dtype, device=planar.device)
    of = out.view(c, idx.numel(), flat.shape[2])
    for ch in range(c):
        torch.index_select(flat[ch], 0, idx, out=of[ch])
    return out


def scatter_views(planar: torch.Tensor, idx: torch.Tensor, values: torch.Tensor) -> None:
    """planar[:, idx] = values, in place.

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import scatter_views
        >>> planar = torch.ones(3, 4, 2, 2)
        >>> scatter_views(planar, torch.tensor([1, 3]), torch.zeros(3, 2, 2, 2))
        >>> planar[0, :, 0, 0].tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    c, n = planar.shape[:2]
    flat = planar.view(c, n, -1)
    vals = values.reshape(c, idx.numel(), -1)
    for ch in range(c):
        flat[ch].index_copy_(0, idx, vals[ch])


# The colour ops below work on planar batches (3, N, H, W): each channel plane is contiguous, which
# makes every elementwise pass several times faster on CPU than strided channel slices of (N, 3, H, W).


def to_planar(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> contiguous (3, N, H, W), the layout of the colour ops.

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import from_planar, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(4, 3, 8, 8)
        >>> planar = to_planar(images)
        >>> planar.shape, planar.is_contiguous(), torch.equal(from_planar(planar), images)
        (torch.Size([3, 4, 8, 8]), True, True)
    """
    out = torch.empty((images.shape[1], images.shape[0], *images.shape[2:]), dtype=images.dtype, device=images.device)
    out.copy_(images.transpose(0, 1))
    return out


def from_planar(planar: torch.Tensor) -> torch.Tensor:
    """(3, N, H, W) -> contiguous (N, 3, H, W), the inverse of :func:`to_planar`."""
    return to_planar(planar)


def _per_image(factor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Factor (N,) shaped to broadcast over a plane (N, H, W)."""
    return factor.to(device=like.device, dtype=like.dtype).view(-1, 1, 1)


def grayscale(planar: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Luma plane (N, H, W) with torchvision's ITU-R 601-2 weights.

    Examples:
        >>> import torch
        >>> import torchvision.transforms.v2.functional as TF
        >>> from mmcr.augment.functional import grayscale, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(4, 3, 8, 8)
        >>> torch.allclose(grayscale(to_planar(images)), TF.rgb_to_grayscale(images)[:, 0], atol=1e-6)
        True
    """
    r, g, b = planar.unbind(0)
    return torch.mul(r, _LUMA[0], out=out).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2])


# ``out`` may be the input itself: every op reads what it needs before writing each channel.


def adjust_brightness(planar: torch.Tensor, factor: torch.Tensor, out=None, ws=None) -> torch.Tensor:
    """Scale intensities by factor, clamp to [0, 1].

    Like the other colour ops: planar (3, N, H, W) in [0, 1] and factor (N,) in, planar out (into
    ``out`` when given, which may be the input); ``ws`` is an optional :class:`Workspace`.

    Examples:
        >>> import torch
        >>> import torchvision.transforms.v2.functional as TF
        >>> from mmcr.augment.functional import adjust_brightness, from_planar, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images, factors = torch.rand(2, 3, 8, 8), torch.tensor([0.5, 1.5])
        >>> out = from_planar(adjust_brightness(to_planar(images), factors))
        >>> torch.allclose(out[1], TF.adjust_brightness(images[1], 1.5), atol=1e-6)
        True
    """
    return torch.mul(planar, _per_image(factor, planar), out=out).clamp_(0.0, 1.0)


def adjust_contrast(planar: torch.Tensor, factor: torch.Tensor, out=None, ws=None) -> torch.Tensor:
    """Blend each image with the mean of its own grayscale version.

    Examples:
        >>> import torch
        >>> import torchvision.transforms.v2.functional as TF
        >>> from mmcr.augment.functional import adjust_contrast, from_planar, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images, factors = torch.rand(2, 3, 8, 8), torch.tensor([0.5, 1.5])
        >>> out = from_planar(adjust_contrast(to_planar(images), factors))
        >>> torch.allclose(out[0], TF.adjust_contrast(images[0], 0.5), atol=1e-5)
        True
    """
    f = _per_image(factor, planar)
    mean = grayscale(planar, out=_buf(ws, "gray", planar.shape[1:], planar)).mean(dim=(1, 2), keepdim=True)
    return torch.addcmul(mean * (1.0 - f), planar, f, out=out).clamp_(0.0, 1.0)


def adjust_saturation(planar: torch.Tensor, factor: torch.Tensor, out=None, ws=None) -> torch.Tensor:
    """Blend each image with its grayscale version (see the module example)."""
    f = _per_image(factor, planar)
    gray = grayscale(planar, out=_buf(ws, "gray", planar.shape[1:], planar)).mul_(1.0 - f)
    return torch.addcmul(gray, planar, f, out=out).clamp_(0.0, 1.0)


def adjust_hue(planar: torch.Tensor, factor: torch.Tensor, out=None, ws=None) -> torch.Tensor:
    """Rotate hue by factor (in turns, [-0.5, 0.5]) through an exact RGB -> HSV -> RGB round trip.

    A hue shift keeps each pixel's max (value) and max - min (chroma), so only the hue is computed
    (in sixths of a turn, with torchvision's branch order: red wins ties, then green) and each
    channel is rebuilt as min + chroma * clamp(|((6h + n) mod 6) - 2| - 1, 0, 1) with n = 5, 3, 1 for
    R, G, B: the same piecewise-linear map as the six-sector table torchvision uses. Branches are
    blended with 0/1 masks and the modulo is done with floor, because on CPU torch.where and
    torch.remainder cost several times more than plain arithmetic passes.

    Examples:
        >>> import torch
        >>> import torchvision.transforms.v2.functional as TF
        >>> from mmcr.augment.functional import adjust_hue, from_planar, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images, shifts = torch.rand(2, 3, 8, 8), torch.tensor([-0.4, 0.1])
        >>> out = from_planar(adjust_hue(to_planar(images), shifts))
        >>> torch.allclose(out[0], TF.adjust_hue(images[0], -0.4), atol=1e-5)
        True
    """
    r, g, b = planar.unbind(0)
    shape = r.shape

    def tmp(key):
        return _buf(ws, "hue." + key, shape, r)

    maxc = torch.maximum(r, g, out=tmp("max"))
    torch.maximum(maxc, b, out=maxc)
    minc = torch.minimum(r, g, out=tmp("min"))
    torch.minimum(minc, b, out=minc)
    chroma = torch.sub(maxc, minc, out=tmp("chroma"))
    is_r = torch.eq(r, maxc, out=tmp("is_r"))
    is_g = torch.eq(g, maxc, out=tmp("is_g"))
    is_g.addcmul_(is_g, is_r, value=-1.0)  # green wins only where red does not
    # Hue in sixths before dividing by chroma: blue branch, then swap in green and red where they win.
    h6 = torch.sub(r, g, out=tmp("h6")).add_(chroma, alpha=4.0)
    t = torch.sub(b, r, out=tmp("t")).add_(chroma, alpha=2.0).sub_(h6)
    h6.addcmul_(is_g, t)
    torch.sub(g, b, out=t).sub_(h6)
    h6.addcmul_(is_r, t)
    # Grey pixels (chroma 0) have a zero numerator, so any finite divisor gives hue 0 as torchvision does.
    h6.div_(torch.clamp(chroma, min=1e-12, out=t)).add_(_per_image(factor, h6), alpha=6.0)
    if out is None:
        out = torch.empty_like(planar)
    k, q = tmp("k"), t
    for c, n in enumerate((5.0, 3.0, 1.0)):
        torch.add(h6, n, out=k)
        torch.mul(k, 1.0 / 6.0, out=q).floor_()
        k.add_(q, alpha=-6.0)  # k mod 6
        k.sub_(2.0).abs_().sub_(1.0).clamp_(0.0, 1.0)
        torch.addcmul(minc, chroma, k, out=out[c])
    return out


def blur_kernel_size(size: int) -> int:
    """Odd kernel of about 10% of the image side (23 at 224 px), the BYOL/SimCLR rule.

    Examples:
        >>> from mmcr.augment.functional import blur_kernel_size
        >>> blur_kernel_size(224), blur_kernel_size(64), blur_kernel_size(32)
        (23, 7, 3)
    """
    k = int(0.1 * size)
    return max(3, k + 1 if k % 2 == 0 else k)


def gaussian_blur(planar: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image and reflect padding, like torchvision's.

    Args:
        planar: (3, N, H, W) images.
        sigma: (N,) standard deviations in pixels.
        kernel_size: odd kernel side, smaller than 2 * min(H, W) (see :func:`blur_kernel_size`).

    Returns:
        (3, N, H, W) blurred images.

    Raises:
        ValueError: an even or too large kernel.

    Examples:
        >>> import torch
        >>> import torchvision.transforms.v2.functional as TF
        >>> from mmcr.augment.functional import from_planar, gaussian_blur, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images, sigmas = torch.rand(2, 3, 8, 8), torch.tensor([0.5, 2.0])
        >>> out = from_planar(gaussian_blur(to_planar(images), sigmas, kernel_size=5))
        >>> torch.allclose(out[1], TF.gaussian_blur(images[1], [5, 5], [2.0, 2.0]), atol=1e-5)
        True
    """
    if kernel_size % 2 == 0 or kernel_size < 1:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
    c, n, h, w = planar.shape
    half = kernel_size // 2
    if half >= min(h, w):
        raise ValueError(f"blur kernel {kernel_size} is too large for {h}x{w} views; set blur_p=0 or a larger size")
    t = torch.arange(kernel_size, device=planar.device, dtype=planar.dtype) - half
    s = sigma.to(device=planar.device, dtype=planar.dtype)[:, None]
    k1 = torch.softmax(-0.5 * (t[None, :] / s) ** 2, dim=1).repeat(c, 1)  # (C*N, K), group c*N + n
    x = F.pad(planar.reshape(1, c * n, h, w), [half, half, half, half], mode="reflect")
    x = F.conv2d(x, k1[:, None, :, None], groups=c * n)
    x = F.conv2d(x, k1[:, None, None, :], groups=c * n)
    return x.reshape(c, n, h, w)


def solarize(planar: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the pixels at or above threshold.

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import solarize
        >>> solarize(torch.tensor([0.25, 0.5, 0.75])).tolist()
        [0.25, 0.5, 0.25]
    """
    return torch.where(planar >= threshold, 1.0 - planar, planar)


def normalize_to(planar: torch.Tensor, mean, std, out: torch.Tensor) -> torch.Tensor:
    """Per-channel (x - mean) / std of a planar batch, written into ``out`` of shape (N, 3, H, W).

    Examples:
        >>> import torch
        >>> import torchvision.transforms.v2.functional as TF
        >>> from mmcr.augment import CIFAR_MEAN, CIFAR_STD
        >>> from mmcr.augment.functional import normalize_to, to_planar
        >>> _ = torch.manual_seed(0)
        >>> images = torch.rand(2, 3, 8, 8)
        >>> out = normalize_to(to_planar(images), CIFAR_MEAN, CIFAR_STD, out=torch.empty(2, 3, 8, 8))
        >>> torch.allclose(out, TF.normalize(images, list(CIFAR_MEAN), list(CIFAR_STD)), atol=1e-5)
        True
    """
    m = torch.as_tensor(mean, device=planar.device, dtype=planar.dtype).view(-1, 1, 1, 1)
    s = torch.as_tensor(std, device=planar.device, dtype=planar.dtype).view(-1, 1, 1, 1)
    torch.addcmul(-m / s, planar, 1.0 / s, out=out.transpose(0, 1))
    return out


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random resized crop boxes (top, left, h, w), each (n,) int64, by torchvision's rule, vectorised.

    Per view: up to ``attempts`` draws of area ~ U(scale) * H * W and log aspect ~ U(log ratio); the
    first draw that fits is used and its position is uniform; if none fits, a centre crop with the
    aspect clamped to ``ratio``.

    Args:
        n: number of boxes.
        height: image height H.
        width: image width W.
        scale: (min, max) area fraction.
        ratio: (min, max) aspect ratio w / h.
        generator: the random generator (CPU).
        attempts: draws per box before the centre-crop fallback.

    Returns:
        ``(top, left, h, w)``, each (n,) int64, every box inside the image.

    Examples:
        >>> import torch
        >>> from mmcr.augment.functional import sample_crop_boxes
        >>> generator = torch.Generator().manual_seed(0)
        >>> top, left, h, w = sample_crop_boxes(6, 32, 32, (0.08, 1.0), (3 / 4, 4 / 3), generator)
        >>> top.shape, top.dtype, bool(((top + h <= 32) & (left + w <= 32) & (h > 0) & (w > 0)).all())
        (torch.Size([6]), torch.int64, True)
    """
    area = float(height * width)
    u_area = torch.rand(n, attempts, generator=generator, dtype=torch.float64)
    u_ratio = torch.rand(n, attempts, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u_area)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u_ratio)
    w = torch.round(torch.sqrt(target * aspect)).to(torch.int64)
    h = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # first fitting attempt (0 if none)
    found = ok.any(dim=1)
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    # Fallback: centre crop, aspect clamped into the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = int(round(height * ratio[1])), height
    else:
        fw, fh = width, height
    w = torch.where(found, w, torch.full_like(w, fw))
    h = torch.where(found, h, torch.full_like(h, fh))
    u_top = torch.rand(n, generator=generator, dtype=torch.float64)
    u_left = torch.rand(n, generator=generator, dtype=torch.float64)
    top = torch.floor(u_top * (height - h + 1).to(torch.float64)).to(torch.int64)
    left = torch.floor(u_left * (width - w + 1).to(torch.float64)).to(torch.int64)
    top = torch.where(found, top, (height - h) // 2)
    left = torch.where(found, left, (width - w) // 2)
    return top, left, h, w


def check_images(images: torch.Tensor) -> torch.Tensor:
    """A uint8 batch (B, 3, H, W) (1 channel is expanded to 3), else a one-line ValueError; every
    augmentation and eval view checks its input here, so a float or channels-last batch fails clearly.

    Args:
        images: the batch to check.

    Returns:
        The batch as (B, 3, H, W) uint8 (a grey batch expanded without a copy).

    Raises:
        ValueError: not a 4-d uint8 tensor with 1 or 3 channels, or an empty batch.

    Examples:
        >>> import torch
        >>> from mmcr.augment import check_images
        >>> check_images(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)).shape
        torch.Size([2, 3, 8, 8])
        >>> check_images(torch.zeros(2, 3, 8, 8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: expected uint8 images, got torch.float32; convert with (x * 255).round().byte()
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected a uint8 image batch of shape (B, 3, H, W), got {got}")
    if images.dtype != torch.uint8:
        raise ValueError(f"expected uint8 images, got {images.dtype}; convert with (x * 255).round().byte()")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {images.shape[1]}; convert images to RGB first")
    if images.shape[0] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"no images to make views of: got a batch of shape {tuple(images.shape)}")
    return images
