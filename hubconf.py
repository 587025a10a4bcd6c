"""torch.hub entry points: an exported mmcr backbone as the plain model it was trained as.

    mmcr export runs/in1k resnet50_mmcr.safetensors
    model = torch.hub.load("path/to/mmcr", "mmcr_resnet50", source="local", weights="resnet50_mmcr.safetensors")
    features = model(images)                       # (B, 2048); no classifier

``weights`` is a file written by ``mmcr export`` (``.safetensors``, or ``.pt`` with its ``.json`` sidecar);
it is read as data only (safetensors, or ``torch.load(weights_only=True)``) and loaded strictly into the
architecture its metadata names. Each named entry checks that the file holds its architecture;
``mmcr_backbone`` takes any export (torchvision, the small CPU ResNets, ``timm:<name>``).
"""

from __future__ import annotations

import sys
from pathlib import Path

dependencies = ["torch", "torchvision", "safetensors"]

# A clone used without installing: import the mmcr next to this file (the code these entries belong to).
_SRC = Path(__file__).resolve().parent / "src"
if (_SRC / "mmcr" / "__init__.py").is_file() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))


def _load(weights, arch: str | None):
    from mmcr.evaluate import load_exported, read_exported

    if weights is None:
        raise ValueError("pass weights=<file written by `mmcr export`> (.safetensors or .pt); "
                         "mmcr publishes no default weights")
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"weights {str(weights)!r} is not a file; give the path of a file written by `mmcr export`")
    if arch is not None:
        found = read_exported(path)[1].get("arch")
        if found != arch:
            raise ValueError(f"{path} holds a {found or 'backbone of unknown architecture'} export, not {arch}; "
                             "load it with the 'mmcr_backbone' entry")
    return load_exported(path)


def mmcr_backbone(weights=None):
    """Any backbone exported by ``mmcr export``, rebuilt from the file's metadata, in eval mode."""
    return _load(weights, None)


def mmcr_resnet50(weights=None):
    """torchvision ResNet-50 (``fc = Identity``; the CIFAR stem when the run used it): 2048-d features."""
    return _load(weights, "resnet50")


def mmcr_resnet18(weights=None):
    """torchvision ResNet-18 (``fc = Identity``; the CIFAR stem when the run used it): 512-d features."""
    return _load(weights, "resnet18")


def mmcr_resnet_small(weights=None):
    """The small CIFAR-style ResNet of the ``-mini`` presets: 128-d features."""
    return _load(weights, "resnet_small")


def mmcr_resnet_tiny(weights=None):
    """The tiny CIFAR-style ResNet of the offline default run (``mmcr pretrain``): 64-d features."""
    return _load(weights, "resnet_tiny")
