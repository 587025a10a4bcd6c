"""Projector heads and the encoder (backbone + projector) that objectives train."""

from __future__ import annotations

import torch
from torch import nn

from mmcr.models.backbones import build_backbone


class Projector(nn.Module):
    """MLP head: for each hidden width a bias-free Linear, BatchNorm1d and ReLU, then a bias-free Linear.

    The authors' CIFAR head is ``Projector(2048, [512], 128)``; their ImageNet head
    ``Projector(2048, [8192, 8192], 512)``. An empty ``hidden`` gives a single linear map.
    """

    def __init__(self, in_dim: int, hidden: list[int] | tuple[int, ...], out_dim: int, bias: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [nn.Linear(d, h, bias=bias), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            d = h
        layers.append(nn.Linear(d, out_dim, bias=bias))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Encoder(nn.Module):
    """f = g o h: backbone h (images -> features) followed by projector g (features -> embeddings)."""

    def __init__(self, backbone: nn.Module, projector: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(x))


def build_encoder(model_cfg) -> Encoder:
    """Encoder (backbone + projector) from a run's ``model`` section (a :class:`mmcr.run.config.ModelConfig`:
    ``RunConfig.from_dict({"model": {...}}).model`` builds one from a mapping)."""
    backbone = build_backbone(
        model_cfg.backbone, cifar_stem=model_cfg.cifar_stem, zero_init_residual=model_cfg.zero_init_residual,
        options=model_cfg.backbone_options,
    )
    proj = model_cfg.projector
    return Encoder(backbone, Projector(backbone.feature_dim, list(proj.hidden), int(proj.out_dim)))
