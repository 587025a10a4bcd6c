"""A Brain-Score vision model plugin written by ``mmcr export brainscore``.

Everything the model needs travels in this folder: ``plugin.json`` (architecture, preprocessing, layers),
``weights.safetensors`` (checked against its sha256 before loading), the architecture code below and
``region_layer_map/<identifier>.json``. It needs torch, torchvision, safetensors, numpy and pillow (timm for
timm models); not mmcr, and no network access. Only :func:`get_model` imports ``brainscore_vision``, so
the network and its preprocessing can be built and checked in a plain Python.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn
from torchvision.models.resnet import BasicBlock

HERE = Path(__file__).resolve().parent
PLUGIN = json.loads((HERE / "plugin.json").read_text(encoding="utf-8"))
IDENTIFIER = PLUGIN["identifier"]
REGIONS = ("V1", "V2", "V4", "IT")
_MODES = {"bilinear": TF.InterpolationMode.BILINEAR, "bicubic": TF.InterpolationMode.BICUBIC}


class SmallResNet(nn.Module):
    """mmcr's narrow CIFAR-style ResNet (3x3 stride-1 stem, one BasicBlock stack, global pooling), with the
    module names of the exported weights (``conv1``, ``bn1``, ``layers.<i>``, ``pool``)."""

    def __init__(self, widths, blocks):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                down = None
                if stride != 1 or inplanes != w:
                    down = nn.Sequential(nn.Conv2d(inplanes, w, 1, stride, bias=False), nn.BatchNorm2d(w))
                layers.append(BasicBlock(inplanes, w, stride, down))
                inplanes = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return torch.flatten(self.pool(self.layers(x)), 1)


def _architecture(net: dict) -> nn.Module:
    """The untrained network of ``plugin.json``'s ``network`` entry, without a classifier."""
    if net["kind"] == "small":
        return SmallResNet(net["widths"], net["blocks"])
    if net["kind"] == "timm":
        import timm

        return timm.create_model(net["arch"], pretrained=False, num_classes=0)
    model = getattr(torchvision.models, net["arch"])(weights=None)
    if net["cifar_stem"]:  # the CIFAR/STL stem: 3x3 stride-1 conv1, no max-pool
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    return model


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(url: str, path: Path) -> None:
    """Fetch the weights once into the plugin folder (a temporary name first, renamed when complete)."""
    import os
    import tempfile
    from urllib.request import urlopen

    fd, tmp = tempfile.mkstemp(prefix=".weights-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out, urlopen(url) as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_weights() -> dict:
    """The state dict of ``weights.safetensors``, on the CPU, after checking the file's sha256 (downloaded
    first from ``weights.url`` when the file is not in the folder and the export named a URL)."""
    from safetensors.torch import load_file

    entry = PLUGIN["weights"]
    path = HERE / entry["file"]
    if not path.is_file() and entry.get("url"):
        _download(entry["url"], path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: this plugin's weights must sit beside model.py")
    found = sha256_of(path)
    if found != entry["sha256"]:
        raise ValueError(f"{path} has sha256 {found}, expected {entry['sha256']}: the file is damaged or was "
                         "replaced; export the plugin again")
    return load_file(str(path), device="cpu")


def build_network() -> nn.Module:
    """The network with its weights, in eval mode on the CPU."""
    model = _architecture(PLUGIN["network"])
    model.load_state_dict(load_weights(), strict=True)
    return model.eval()


def _load_rgb(path) -> torch.Tensor:
    with Image.open(path) as image:
        pixels = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1)


def preprocess_tensor(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> the model's input: the short side resized to ``size`` (antialiased, the model's
    interpolation), a centre crop of ``size`` x ``size``, scaling to [0, 1] and the model's normalisation."""
    pre = PLUGIN["preprocessing"]
    size = int(pre["size"])
    x = images.to(torch.float32).mul_(1.0 / 255.0)
    x = TF.resize(x, [size], interpolation=_MODES[pre["interpolation"]], antialias=True)
    x = TF.center_crop(x, [size, size]).clamp_(0.0, 1.0)
    mean = torch.tensor(pre["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean) / std


def preprocess(image_paths) -> np.ndarray:
    """Brain-Score's preprocessing callable: image files (any size, RGB, grey or palette) -> float32
    (N, 3, size, size). Each image is processed on its own, so stimuli of different sizes mix."""
    return torch.cat([preprocess_tensor(_load_rgb(p)[None]) for p in image_paths]).numpy()


def region_layer_map(name: str = IDENTIFIER) -> dict:
    """The committed layer of each of V1, V2, V4 and IT, from ``region_layer_map/<identifier>.json``."""
    path = HERE / "region_layer_map" / f"{name}.json"
    mapping = json.loads(path.read_text(encoding="utf-8"))
    missing = [r for r in REGIONS if r not in mapping]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; it must map each of {', '.join(REGIONS)} to a layer")
    return {r: mapping[r] for r in REGIONS}


def get_model_list():
    return [IDENTIFIER]


def get_model(name):
    assert name == IDENTIFIER, f"this plugin holds {IDENTIFIER!r}, not {name!r}"
    from brainscore_vision.model_helpers.activations.pytorch import PytorchWrapper

    wrapper = PytorchWrapper(identifier=IDENTIFIER, model=build_network(), preprocessing=preprocess)
    wrapper.image_size = int(PLUGIN["preprocessing"]["size"])
    return wrapper


def get_layers(name):
    assert name == IDENTIFIER, f"this plugin holds {IDENTIFIER!r}, not {name!r}"
    return list(PLUGIN["layers"])


def get_behavioral_readout_layer(name):
    assert name == IDENTIFIER, f"this plugin holds {IDENTIFIER!r}, not {name!r}"
    return PLUGIN["behavioral_readout_layer"]


def get_bibtex(model_identifier):
    return PLUGIN["bibtex"]
