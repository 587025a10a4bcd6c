"""Decoding image files to RGB uint8 arrays, with conversions and a policy for broken files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

try:  # torchvision's JPEG decoder is deprecated from 0.29 (moving to TorchCodec); Pillow remains the fallback
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - depends on the installed torchvision
    decode_jpeg = None

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class DatasetError(ValueError):
    """A data set that cannot be read as asked; the message says what was wrong and what to do."""


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit and 32-bit grey are rescaled, palettes expanded, alpha dropped.

    Dropping alpha (rather than compositing) is what torchvision's ImageFolder loader does.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode.startswith("I;16"):
            arr8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        else:
            # 32-bit int / float grey: stretch the image's own range to 0-255 (PNG 16-bit opens as "I").
            a = arr.astype(np.float64)
            hi = a.max() if a.size else 0.0
            scale = 65535.0 if hi > 255 else 255.0 if hi > 1.0 else 1.0
            arr8 = np.clip(np.round(a / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img.convert("RGB")


def _fast_jpeg(data: bytes) -> np.ndarray | None:
    """Complete baseline JPEGs through torchvision's libjpeg-turbo decoder (about 5x Pillow's speed
    on small images, same pixels); None when the file should take the Pillow path instead."""
    if decode_jpeg is None or not (data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"):
        return None  # not JPEG, or truncated (no end marker): Pillow decodes it or reports the damage
    try:
        buf = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_jpeg(buf, mode=ImageReadMode.RGB)
    except RuntimeError:
        return None
    return img.permute(1, 2, 0).numpy()


def decode_image(source: bytes | str | Path, size: int | None = None) -> np.ndarray:
    """Decode one image to (H, W, 3) uint8; with ``size``, resize the short side to it and centre-crop square.

    Raises OSError / ValueError subclasses from Pillow for corrupt or truncated files.
    """
    if size is None:
        data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        fast = _fast_jpeg(bytes(data))
        if fast is not None:
            return fast
        source = data
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    with Image.open(fp) as img:
        if size is not None and img.format == "JPEG":
            img.draft("RGB", (size, size))  # let libjpeg decode at reduced scale when much larger
        img.load()
        img = _to_rgb(img)
        if size is not None:
            img = _short_side_square(img, size)
        return np.asarray(img, dtype=np.uint8).copy()


def _short_side_square(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    if (w, h) == (size, size):
        return img
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


class BadFiles:
    """Collects undecodable files under an ``on_error`` policy: "skip" (warn once, counted) or "raise"."""

    def __init__(self, on_error: str = "skip"):
        if on_error not in ("skip", "raise"):
            raise DatasetError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self.names: list[str] = []

    def decode(self, source, name: str, size: int | None = None) -> np.ndarray | None:
        try:
            return decode_image(source, size)
        except _DECODE_ERRORS as exc:
            if self.on_error == "raise":
                raise DatasetError(
                    f"cannot decode image {name}: {exc}; fix or delete the file, or pass on_error='skip'"
                ) from exc
            self.names.append(name)
            return None

    def report(self, where: str) -> None:
        if self.names:
            shown = ", ".join(self.names[:5]) + (" ..." if len(self.names) > 5 else "")
            warnings.warn(
                f"skipped {len(self.names)} corrupt or truncated image(s) in {where}: {shown} "
                "(pass on_error='raise' to stop at the first one)",
                stacklevel=3,
            )
