"""Backbones created by name, as timm does: torchvision ResNets (with an optional CIFAR stem), timm
models when timm is installed, and a small CIFAR-style ResNet for CPU-sized runs.

Every builder returns a module that maps images (B, 3, H, W) to features (B, feature_dim) and
exposes ``feature_dim``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from mmcr.registry import Registry

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
TORCHVISION_BACKBONES = _TORCHVISION  # the torchvision architectures by name (read by model sources)


class SmallResNet(nn.Module):
    """A narrow CIFAR-style ResNet (3x3 stem, BasicBlocks, global pooling).

    torchvision's ResNet fixes its widths at 64..512, too heavy for the minutes-long CPU presets;
    this keeps the same block but lets the widths shrink.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = (32, 64, 128),
        blocks: tuple[int, ...] = (1, 1, 1),
        zero_init_residual: bool = False,
    ):
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
        self.widths, self.blocks = tuple(widths), tuple(blocks)  # the architecture, for exports that rebuild it
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:  # each block starts as the identity, as torchvision's option does
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return torch.flatten(self.pool(self.layers(x)), 1)


_SMALL = {
    "resnet_tiny": ((16, 32, 64), (1, 1, 1)),
    "resnet_small": ((32, 64, 128), (1, 1, 1)),
    "resnet_mini": ((32, 64, 128, 256), (1, 1, 1, 1)),
}
SMALL_BACKBONES = tuple(_SMALL)


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone` (timm models as ``timm:<name>``): :data:`BACKBONES`' names."""
    return BACKBONES.names()


def is_backbone_name(name: str) -> bool:
    """Whether ``name`` is a backbone :func:`build_backbone` knows (any ``timm:<name>`` is checked by timm)."""
    return name in BACKBONES


def apply_cifar_stem(model: nn.Module) -> nn.Module:
    """Give a torchvision ResNet the CIFAR/STL stem of the authors' code: a 3x3 stride-1 ``conv1`` and no
    max-pool. The one place this stem is built (models and exports both use it)."""
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


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


# create_model arguments mmcr sets itself: a trunk has no classifier, weights come from ``weights``.
_TIMM_RESERVED = ("num_classes", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "features_only")


class _TimmTrunk(nn.Module):
    """A timm model without classifier; ``options`` are further ``timm.create_model`` keyword arguments
    (``img_size=32`` builds a ViT for 32 px inputs), each one honoured by the model or refused by timm."""

    def __init__(self, name: str, weights: str | None = None, options: dict | None = None):
        super().__init__()
        try:
            import timm
        except ImportError as e:
            raise ValueError(f"backbone 'timm:{name}' needs timm: pip install 'mmcr-toolkit[timm]'") from e
        options = dict(options or {})
        reserved = sorted(set(options) & set(_TIMM_RESERVED))
        if reserved:
            raise ValueError(f"model.backbone_options {reserved} are set by mmcr (the trunk has no classifier; "
                             "pretrained weights come from the model source); leave them out")
        kwargs: dict = {}
        if weights is None:
            kwargs["pretrained"] = False
        elif weights == "DEFAULT":
            kwargs["pretrained"] = True  # timm's default weights of that name (a tag picks others: resnet50.a1_in1k)
        elif Path(weights).is_file():
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
        else:
            raise ValueError(
                f"timm weights {weights!r} not understood: pass None (random init), 'DEFAULT' (the name's default "
                "weights; choose others with a tag, e.g. timm:resnet50.a1_in1k) or a local weights file"
            )
        try:
            self.model = timm.create_model(name, num_classes=0, **kwargs, **options)
        except RuntimeError as e:  # timm: unknown model name
            raise ValueError(f"timm has no model {name!r} ({e}); see timm.list_models()") from e
        except TypeError as e:  # an option the model's constructor does not take
            raise ValueError(f"timm:{name} does not take model.backbone_options {sorted(options)} ({e})") from e
        self.arch = f"timm:{name}"
        self.cifar_stem = False
        self.options = options
        self.feature_dim = self.model.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ------------------------------------------------------------------------------------------ registry
# Every builder: (name, cifar_stem, zero_init_residual, weights, options) -> a module with ``feature_dim``.
BACKBONES = Registry("backbone", "backbones")


def _small(name, cifar_stem, zero_init_residual, weights, options):
    if cifar_stem is False:
        raise ValueError(f"{name} always has the CIFAR stem (3x3 conv, no max-pool); pass cifar_stem=True")
    if weights is not None:
        raise ValueError(f"{name} has no pretrained weights; pass weights=None")
    m = SmallResNet(*_SMALL[name], zero_init_residual=zero_init_residual)
    m.arch = name
    m.cifar_stem = True
    return m


def _torchvision(name, cifar_stem, zero_init_residual, weights, options):
    model = _TORCHVISION[name](weights=weights, zero_init_residual=zero_init_residual)
    if cifar_stem:
        apply_cifar_stem(model)
    return _TorchvisionTrunk(model, name, bool(cifar_stem))


def _timm(name, cifar_stem, zero_init_residual, weights, options):
    if cifar_stem or zero_init_residual:
        raise ValueError(f"{name}: cifar_stem and zero_init_residual apply to torchvision ResNets only; "
                         "pass the equivalent timm arguments through the model name or leave them off")
    return _TimmTrunk(name[len("timm:"):], weights=weights, options=options)


for _name in _TORCHVISION:
    BACKBONES.register(_name, _torchvision, doc=f"torchvision {_name} trunk (optional CIFAR stem, zero-init residual)")
for _name, (_widths, _blocks) in _SMALL.items():
    _widths_text = "-".join(map(str, _widths))
    BACKBONES.register(_name, _small, doc=f"small CIFAR-style ResNet for CPU runs: widths {_widths_text}, "
                                          f"{sum(_blocks)} BasicBlocks, CIFAR stem")
BACKBONES.register("timm:<name>", _timm, family=True, loose=True,
                   doc="any timm model without its classifier; model.backbone_options go to timm.create_model")


def build_backbone(
    name: str,
    cifar_stem: bool | None = None,
    zero_init_residual: bool = False,
    weights: str | None = None,
    options: dict | None = None,
) -> nn.Module:
    """Create a backbone by its :data:`BACKBONES` name; returns a module with ``feature_dim``.

    ``cifar_stem``: the 3x3 stride-1 stem without max-pool (None: the architecture's own, i.e. always for
    the small ResNets, never for torchvision/timm). ``weights``: torchvision weight names (``"DEFAULT"``,
    ``"IMAGENET1K_V2"``; need the file on disk or a network), for timm ``"DEFAULT"`` or a local file.
    ``options``: further ``timm.create_model`` arguments (``{"img_size": 32}``); torchvision and the small
    ResNets take none. Every argument is honoured or rejected: none is silently ignored."""
    entry = BACKBONES.get(name)
    if options and not entry.loose:
        raise ValueError(f"{name} takes no model.backbone_options (got {sorted(options)}); they are passed to "
                         "timm.create_model for timm:<name> backbones only")
    return entry.builder(name, cifar_stem, zero_init_residual, weights, BACKBONES.check_options(name, options))
