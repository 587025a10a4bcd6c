"""Backbones created by name, as timm does: torchvision ResNets (with an optional CIFAR stem), timm
models when timm is installed, and a small CIFAR-style ResNet for CPU-sized runs.

Every builder returns a module that maps images (B, 3, H, W) to features (B, feature_dim) and
exposes ``feature_dim``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

_TORCHVISION = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
    "resnet152": tvm.resnet152,
    "wide_resnet50_2": tvm.wide_resnet50_2,
    "wide_resnet101_2": tvm.wide_resnet101_2,
    "resnext50_32x4d": tvm.resnext50_32x4d,
}


class SmallResNet(nn.Module):
    """A narrow CIFAR-style ResNet (3x3 stem, BasicBlocks, global pooling).

    torchvision's ResNet fixes its widths at 64..512, too heavy for the minutes-long CPU presets;
    this keeps the same block but lets the widths shrink.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), blocks: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"widths {widths} and blocks {blocks} must have the same length")
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            for j in range(n):
                s = stride if j == 0 else 1
                down = None
                if s != 1 or inplanes != w:
                    down = nn.Sequential(nn.Conv2d(inplanes, w, 1, s, bias=False), nn.BatchNorm2d(w))
                layers.append(BasicBlock(inplanes, w, s, down))
                inplanes = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = inplanes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return torch.flatten(self.pool(self.layers(x)), 1)


def _small(name: str) -> Callable[..., nn.Module]:
    spec = {
        "resnet_tiny": ((16, 32, 64), (1, 1, 1)),
        "resnet_small": ((32, 64, 128), (1, 1, 1)),
        "resnet_mini": ((32, 64, 128, 256), (1, 1, 1, 1)),
    }[name]
    return lambda: SmallResNet(*spec)


SMALL_BACKBONES = ("resnet_tiny", "resnet_small", "resnet_mini")


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (timm models as ``timm:<name>``)."""
    return sorted(_TORCHVISION) + list(SMALL_BACKBONES) + ["timm:<name>"]


def _cifar_stem(model: nn.Module) -> None:
    """3x3 stride-1 conv1 and no max-pool: the CIFAR/STL variant of the authors' ResNets."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


class _TorchvisionTrunk(nn.Module):
    """A torchvision classifier with ``fc`` replaced by identity, keeping its parameter names so that
    the exported state_dict loads strictly into ``torchvision.models.<arch>()`` (minus ``fc``)."""

    def __init__(self, model: nn.Module, arch: str, cifar_stem: bool):
        super().__init__()
        self.model = model
        self.arch = arch
        self.cifar_stem = cifar_stem
        self.feature_dim = model.fc.in_features
        model.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _TimmTrunk(nn.Module):
    def __init__(self, name: str, **kwargs):
        super().__init__()
        try:
            import timm
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ValueError(f"backbone 'timm:{name}' needs timm: pip install 'mmcr[timm]'") from e
        self.model = timm.create_model(name, num_classes=0, **kwargs)
        self.arch = f"timm:{name}"
        self.cifar_stem = False
        self.feature_dim = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def build_backbone(
    name: str,
    cifar_stem: bool = False,
    zero_init_residual: bool = False,
    weights: str | None = None,
) -> nn.Module:
    """Create a backbone by name. ``weights`` is passed to torchvision (e.g. ``"DEFAULT"``; needs
    the weights on disk or a network). Returns a module with ``feature_dim``."""
    if name in SMALL_BACKBONES:
        m = _small(name)()
        m.arch = name
        m.cifar_stem = True
        return m
    if name.startswith("timm:"):
        return _TimmTrunk(name[5:], pretrained=weights is not None)
    if name not in _TORCHVISION:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(available_backbones())}")
    model = _TORCHVISION[name](weights=weights, zero_init_residual=zero_init_residual)
    if cifar_stem:
        _cifar_stem(model)
    return _TorchvisionTrunk(model, name, cifar_stem)
