"""Load a backbone for evaluation or analysis from any source a user has: a checkpoint of ours, a run
directory, an exported state_dict, or a plain torchvision/timm model by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmcr.models.backbones import build_backbone
from mmcr.models.heads import Encoder, Projector

CHECKPOINT_FORMAT = "mmcr-checkpoint-v1"


def build_encoder(model_cfg: dict[str, Any]) -> Encoder:
    """Encoder from the ``model`` section of a run config:
    ``{backbone, cifar_stem, zero_init_residual, projector: {hidden: [...], out_dim}}``."""
    backbone = build_backbone(
        model_cfg["backbone"],
        cifar_stem=bool(model_cfg.get("cifar_stem", False)),
        zero_init_residual=bool(model_cfg.get("zero_init_residual", False)),
    )
    proj = model_cfg.get("projector", {})
    projector = Projector(backbone.feature_dim, list(proj.get("hidden", [])), int(proj.get("out_dim", 128)))
    return Encoder(backbone, projector)


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest checkpoint file of a run directory (``checkpoints/*.pt``), or None."""
    ckpts = sorted(Path(run_dir).glob("checkpoints/ckpt_*.pt"))
    return ckpts[-1] if ckpts else None


def load_pretrained(source: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Return ``(backbone, info)`` for ``source``:

    - a run directory of ours (its newest checkpoint) or a checkpoint file (``*.pt``);
    - ``torchvision:<arch>`` (ImageNet weights when available locally, else random init with a
      warning in ``info``) or ``torchvision:<arch>:random``;
    - ``timm:<name>`` (needs timm);
    - ``random:<arch>`` for a randomly initialised torchvision/small backbone (a baseline).

    ``info`` holds ``arch``, ``cifar_stem``, ``source`` and, for our checkpoints, ``config``.
    The backbone is returned in eval mode.
    """
    s = str(source)
    if s.startswith("torchvision:") or s.startswith("random:"):
        parts = s.split(":")
        arch = parts[1]
        random = s.startswith("random:") or (len(parts) > 2 and parts[2] == "random")
        cifar = len(parts) > 2 and parts[-1] == "cifar"
        weights = None if random else "DEFAULT"
        try:
            bb = build_backbone(arch, cifar_stem=cifar, weights=weights)
        except Exception as e:  # offline: torchvision cannot fetch weights
            if weights is None:
                raise
            raise ValueError(
                f"could not load ImageNet weights for {arch!r} ({type(e).__name__}); they are fetched from "
                f"the internet on first use. Use 'random:{arch}' for a random-init baseline."
            ) from e
        return bb.eval(), {"arch": arch, "cifar_stem": cifar, "source": s}
    if s.startswith("timm:"):
        bb = build_backbone(s, weights="DEFAULT")
        return bb.eval(), {"arch": s, "cifar_stem": False, "source": s}
    path = Path(s)
    if path.is_dir():
        ckpt = newest_checkpoint(path)
        if ckpt is None:
            raise ValueError(f"no checkpoints in {path}/checkpoints; pass a checkpoint file or a finished run")
        path = ckpt
    if not path.exists():
        raise ValueError(
            f"model source {s!r} not found; give a run directory, a checkpoint .pt file, "
            "'torchvision:<arch>', 'timm:<name>' or 'random:<arch>'"
        )
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an mmcr checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    cfg = state["config"]
    enc = build_encoder(cfg["model"])
    enc.load_state_dict(state["model"])
    info = {
        "arch": cfg["model"]["backbone"],
        "cifar_stem": bool(cfg["model"].get("cifar_stem", False)),
        "source": str(path),
        "config": cfg,
        "step": state.get("step"),
    }
    return enc.backbone.eval(), info
