"""The recipe's random resized crops taken from each file's full image, in the decoding workers.

A folder decoded to a ``size`` square and cropped on the device never shows the model the image's
sides, and its crop areas and aspects are fractions of the square, not of the photograph. Here the
boxes are drawn on the original geometry by torchvision's ``RandomResizedCrop.get_params`` rule
(area ~ U(scale) x H x W, log aspect ~ U(log ratio), up to 10 tries, then a centre crop with the
aspect clamped into ``ratio``), the file is decoded once at the coarsest JPEG DCT scale (1/2, 1/4,
1/8, through Pillow's ``draft``) that still leaves every box of the image at least the crop size,
and each box is resized (antialiased, the preset's interpolation) to the crop size. The views leave
as uint8 (k, 3, h, w); flips, colour, blur and solarisation stay with the batched device-side
augmentation (``MultiViewAugment.apply_views``).

The boxes of sample ``index`` in ``epoch`` come from a generator that is a pure function of
(seed, epoch, index), drawn view by view, so they replay on resume and do not depend on the number
of workers or ranks.
"""

from __future__ import annotations

import io
import math
import random
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from mmcr.data.decode import _DECODE_ERRORS, DatasetError, _fast_jpeg, _to_rgb

_SALT = 0x52524331  # separates the box streams from every other stream seeded by the run's seed
_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries
_INTERPOLATIONS = ("bilinear", "bicubic")
DECODE_ERRORS = _DECODE_ERRORS  # what a broken file raises (Pillow's OSError/ValueError subclasses)


@dataclass(frozen=True)
class CropSpec:
    """What the workers cut from each image: ``views`` boxes, each resized to ``size`` (h, w)."""

    views: int
    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    interpolation: str = "bilinear"
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.views, int) or self.views < 1:
            raise DatasetError(f"views must be a positive integer, got {self.views!r}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise DatasetError(f"crop size must be (height, width) > 0, got {self.size!r}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise DatasetError(f"crop scale must be an increasing pair in (0, 1], got {self.scale!r}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise DatasetError(f"crop ratio must be an increasing positive pair, got {self.ratio!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise DatasetError(f"interpolation must be one of {_INTERPOLATIONS}, got {self.interpolation!r}")


def box_generator(seed: int, epoch: int, index: int) -> random.Random:
    """The generator of one sample's boxes in one epoch: a Mersenne Twister seeded by the integer that
    packs (salt, seed, epoch, index), so it is a pure function of them and unique per sample and epoch."""
    return random.Random((((_SALT << 32 | int(seed)) << 32 | int(epoch)) << 64) | int(index))


def sample_boxes(height: int, width: int, views: int, scale, ratio, rng: random.Random) -> np.ndarray:
    """(views, 4) int64 boxes (top, left, h, w) on an image of (height, width), by torchvision's rule.

    View v reads uniforms [22 v, 22 v + 22) of the generator: 10 areas, 10 log-aspects, its top and
    left, whether or not a try fits, so each view's box depends only on the generator's seed and v.
    Plain Python: for a few views it is faster than array code.
    """
    area = float(height) * float(width)
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    out = np.empty((views, 4), dtype=np.int64)
    for v in range(views):
        u = [rng.random() for _ in range(2 * _ATTEMPTS + 2)]
        box = None
        for a in range(_ATTEMPTS):
            target = area * (scale[0] + (scale[1] - scale[0]) * u[a])
            aspect = math.exp(lo + (hi - lo) * u[_ATTEMPTS + a])
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                box = (int(u[-2] * (height - h + 1)), int(u[-1] * (width - w + 1)), h, w)
                break
        out[v] = box if box is not None else _fallback_box(height, width, ratio)
    return out


def _fallback_box(height: int, width: int, ratio) -> tuple[int, int, int, int]:
    """torchvision's fallback: the centre crop with the image's aspect clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def dct_reduction(boxes: np.ndarray, size: tuple[int, int]) -> int:
    """The largest JPEG DCT scale denominator (1, 2, 4 or 8) that leaves every box at least ``size``."""
    room = min(float(np.min(boxes[:, 2])) / size[0], float(np.min(boxes[:, 3])) / size[1])
    for s in (8, 4, 2):
        if room >= s:
            return s
    return 1


def _resize(region: torch.Tensor, size: tuple[int, int], interpolation: str) -> torch.Tensor:
    """uint8 (3, h, w) -> (3, *size), antialiased: torch's kernels, those of torchvision's ``resize``.

    On the CPU the uint8 kernels run on the decoder's channels-last memory directly (torchvision's
    wrapper would take a slower path); elsewhere in float32, rounded back as torchvision does."""
    if tuple(region.shape[-2:]) == tuple(size):
        return region
    if region.device.type == "cpu":
        return F.interpolate(region[None], size=tuple(size), mode=interpolation, antialias=True, align_corners=False)[0]
    out = F.interpolate(region[None].float(), size=tuple(size), mode=interpolation, antialias=True, align_corners=False)
    return out[0].clamp_(0, 255).round_().to(torch.uint8)


def crop_views(image: torch.Tensor, boxes: np.ndarray, size, interpolation: str) -> torch.Tensor:
    """uint8 (3, H, W) -> (k, 3, h, w): each box cropped and resized (torch's antialiased resize, the
    kernel of torchvision's ``resized_crop`` on tensors)."""
    out = torch.empty((len(boxes), 3, *size), dtype=torch.uint8)
    for v, (top, left, h, w) in enumerate(boxes.tolist()):
        out[v] = _resize(image[:, top : top + h, left : left + w], size, interpolation)
    return out


def crop_views_reduced(img: Image.Image, boxes: np.ndarray, size, interpolation: str, factor: float) -> torch.Tensor:
    """The same crops from an image decoded at 1/``factor`` scale: each box maps to the fractional box
    box / factor (output pixel i of the DCT-scaled decode covers original pixels [i f, (i + 1) f)),
    which Pillow's resize takes as it is, antialiased, so no box edge is rounded."""
    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    out = torch.empty((len(boxes), 3, *size), dtype=torch.uint8)
    for v, (top, left, h, w) in enumerate(boxes.tolist()):
        box = (left / factor, top / factor, (left + w) / factor, (top + h) / factor)
        view = img.resize((size[1], size[0]), resample, box=box, reducing_gap=None)
        out[v] = torch.from_numpy(np.array(view, dtype=np.uint8)).permute(2, 0, 1)
    return out


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # frame headers


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header, read by walking its marker segments (about 50 times
    faster than opening it with Pillow); None when ``data`` is not a JPEG or the header is not found."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _SOF:
            h, w = int.from_bytes(data[i + 5 : i + 7], "big"), int.from_bytes(data[i + 7 : i + 9], "big")
            return (h, w) if h > 0 and w > 0 and i + 9 <= n else None
        elif marker == 0xDA:  # a scan before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2 : i + 4], "big")
    return None


def _decode_for_boxes(data: bytes, boxes_for, spec: CropSpec) -> torch.Tensor:
    """Read the header, draw the boxes on the original (height, width), decode once at the coarsest
    scale the boxes allow and cut the views."""
    header = jpeg_size(data)
    if header is not None:
        boxes = boxes_for(*header)
        s = dct_reduction(boxes, spec.size)
        fast = _fast_jpeg(data) if s == 1 else None
        if fast is not None and fast.shape[:2] == header:
            return crop_views(torch.from_numpy(fast).permute(2, 0, 1), boxes, spec.size, spec.interpolation)
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if header is None:
            boxes = boxes_for(height, width)
            s = dct_reduction(boxes, spec.size) if img.format == "JPEG" else 1
        elif header != (height, width):
            raise OSError(f"JPEG frame header says {header[1]}x{header[0]}, the decoder {width}x{height}")
        if s > 1:
            drafted = img.draft("RGB", (width // s, height // s))
            if drafted is not None:
                img.load()
                factor = width / drafted[1][2]
                return crop_views_reduced(_to_rgb(img), boxes, spec.size, spec.interpolation, factor)
        img.load()
        image = torch.from_numpy(np.array(_to_rgb(img), dtype=np.uint8)).permute(2, 0, 1)
    return crop_views(image, boxes, spec.size, spec.interpolation)


def decode_views(data: bytes, spec: CropSpec, epoch: int, index: int) -> torch.Tensor:
    """The ``spec.views`` crops of one encoded image as uint8 (k, 3, h, w), boxes replayable from
    (spec.seed, epoch, index). Raises Pillow's OSError/ValueError subclasses for broken files."""
    rng = box_generator(spec.seed, epoch, index)

    def boxes_for(height: int, width: int) -> np.ndarray:
        return sample_boxes(height, width, spec.views, spec.scale, spec.ratio, rng)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_for_boxes(bytes(data), boxes_for, spec)


# ----------------------------------------------------------------------------------- GPU decoding
def encode_views(data: bytes, spec: CropSpec, epoch: int, index: int) -> tuple:
    """What a worker hands on for decoding on the GPU: ``("jpeg", bytes (n,) uint8, boxes (k, 4))``
    for a JPEG (its boxes drawn from the header's size, as :func:`decode_views` draws them), or
    ``("views", (k, 3, h, w) uint8)`` decoded here for any other format."""
    data = bytes(data)
    header = jpeg_size(data)
    if header is None or not data.endswith(b"\xff\xd9"):  # other formats, and truncated files (Pillow reports them)
        return ("views", decode_views(data, spec, epoch, index))
    boxes = sample_boxes(*header, spec.views, spec.scale, spec.ratio, box_generator(spec.seed, epoch, index))
    return ("jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8), torch.from_numpy(boxes))


def _decode_jpegs(datas: list[torch.Tensor], device) -> list[torch.Tensor | None]:
    """All JPEGs in one decoder call; when the batch call fails, one by one (None for a broken file)."""

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
        except RuntimeError:
            out = []
            for d in datas:
                try:
                    out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    out.append(None)
            return out


def _pillow_image(data: torch.Tensor) -> torch.Tensor | None:
    try:
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            return torch.from_numpy(np.array(_to_rgb(img), dtype=np.uint8)).permute(2, 0, 1)
    except DECODE_ERRORS:
        return None


def decode_encoded(items: list[tuple], spec: CropSpec, device, on_error: str = "skip") -> tuple[torch.Tensor, int]:
    """(B, k, 3, h, w) uint8 views on ``device`` from :func:`encode_views` items, and how many were
    undecodable. Every JPEG of the batch is decoded in one ``torchvision.io.decode_jpeg`` call (nvJPEG
    on CUDA), then each box is cropped and resized there. A broken file raises (``on_error="raise"``)
    or is replaced by the views of another sample of the batch, so batches keep their size. Pixels
    differ from the CPU path by the decoders' rounding and by the DCT scaling the CPU path applies
    to large images."""
    device = torch.device(device)
    out = torch.empty((len(items), spec.views, 3, *spec.size), dtype=torch.uint8, device=device)
    jpegs = [i for i, it in enumerate(items) if it[0] == "jpeg"]
    good = [i for i, it in enumerate(items) if it[0] == "views"]
    for i in good:
        out[i] = items[i][1].to(device, non_blocking=True)
    bad = []
    for i, image in zip(jpegs, _decode_jpegs([items[i][1] for i in jpegs], device) if jpegs else []):
        if image is None:  # the device's decoder refused it (CMYK, arithmetic coding, damage): Pillow tries
            image = _pillow_image(items[i][1])
        if image is None:
            if on_error == "raise":
                raise DatasetError(f"cannot decode JPEG {i} of the batch on {device}; fix the file or pass "
                                   "on_error='skip'")
            bad.append(i)
            continue
        for v, (top, left, h, w) in enumerate(items[i][2].tolist()):
            out[i, v] = _resize(image[:, top : top + h, left : left + w], spec.size, spec.interpolation)
        good.append(i)
    if bad and not good:
        raise DatasetError(f"none of the {len(items)} images of a batch could be decoded; check the files")
    for n, i in enumerate(bad):
        out[i] = out[good[n % len(good)]]
    return out, len(bad)
