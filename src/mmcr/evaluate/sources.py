"""Model sources: load a backbone for evaluation, analysis or export from any source a user has: a run
directory or checkpoint of ours, a plain torchvision/timm model by name, or a random-init baseline. It sits
above the run's config and directory (:mod:`mmcr.run`, :mod:`mmcr.rundir`), which it reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mmcr.models import TORCHVISION_BACKBONES, available_backbones, build_backbone, build_encoder, is_backbone_name
from mmcr.run.config import ConfigError, RunConfig
from mmcr.rundir.checkpoint import WEIGHTS, InvalidCheckpointError, find_checkpoint
from mmcr.rundir.layout import CHECKPOINT_DIR

SOURCE_HELP = "run directory, checkpoint .pt, torchvision:<arch>, timm:<name> or random:<arch>"
"""The accepted model sources in words, for error messages and command-line help."""


def check_finite_weights(model: nn.Module, where: str | Path) -> None:
    """Refuse weights holding NaN/Inf (a diverged run): evaluating or exporting them would report chance
    accuracy or ship broken weights with no error."""
    bad = sum(int((~torch.isfinite(t)).sum()) for t in model.state_dict().values() if t.is_floating_point())
    if bad:
        total = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
        raise InvalidCheckpointError(
            f"{where} holds {bad} NaN/Inf weight(s) of {total}: the run diverged (too large an optim.lr or "
            "weight_decay?); use an earlier checkpoint, or retrain with a lower optim.lr or optim.grad_clip")


@dataclass
class ModelSource:
    """Where a loaded backbone came from: its architecture, stem, the source string, and for our runs
    the run's config (how it was trained: augmentation, normalisation, data) and checkpoint step.

    Attributes:
        arch: the backbone name (``resnet18``, ``timm:<name>``, ...).
        cifar_stem: whether the backbone has the CIFAR stem (3x3 stride-1 conv1, no max-pool).
        source: the source string, or the checkpoint file read.
        config: the run's :class:`~mmcr.run.config.RunConfig` (None for named models).
        step: the checkpoint's training step (None for named models).
        run_dir: the run directory of the checkpoint (None outside a run).

    Examples:
        >>> from mmcr.evaluate import ModelSource
        >>> ModelSource(arch="resnet18", cifar_stem=True, source="random:resnet18:cifar").describe()
        {'arch': 'resnet18', 'cifar_stem': True, 'source': 'random:resnet18:cifar', 'step': None}
    """

    arch: str
    cifar_stem: bool
    source: str
    config: RunConfig | None = None
    step: int | None = None
    run_dir: Path | None = None

    def describe(self) -> dict:
        """Architecture, stem, source and step as a JSON-ready dict (for result records)."""
        return {"arch": self.arch, "cifar_stem": self.cifar_stem, "source": self.source, "step": self.step}


def _named_model(s: str) -> tuple[nn.Module, ModelSource]:
    kind, _, rest = s.partition(":")
    parts = rest.split(":")
    arch = parts[0]
    flags = set(parts[1:])
    unknown = flags - {"random", "cifar"}
    if not arch or unknown:
        raise ValueError(f"cannot read model source {s!r}; use {kind}:<arch>[:random][:cifar], e.g. {kind}:resnet50")
    if kind == "timm":
        arch = f"timm:{arch}"
    if not is_backbone_name(arch):
        raise ValueError(f"unknown architecture {arch!r} in {s!r}; choose one of {', '.join(available_backbones())}")
    random = kind == "random" or "random" in flags
    cifar = "cifar" in flags or None
    if kind == "torchvision" and arch not in TORCHVISION_BACKBONES:
        raise ValueError(f"{arch!r} is not a torchvision model; use random:{arch} for a random-init baseline")
    weights = None if random else "DEFAULT"
    try:
        bb = build_backbone(arch, cifar_stem=cifar, weights=weights)
    except ValueError:
        raise
    except Exception as e:  # offline: torchvision/timm cannot fetch the weights
        raise ValueError(
            f"could not load pretrained weights for {arch!r} ({type(e).__name__}); they are fetched from the "
            f"internet on first use. Use 'random:{arch.removeprefix('timm:')}' for a random-init baseline."
        ) from e
    return bb.eval(), ModelSource(arch=arch, cifar_stem=bool(getattr(bb, "cifar_stem", False)), source=s)


def load_pretrained(source: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, ModelSource]:
    """Return ``(backbone in eval mode, ModelSource)`` for ``source``:

    - a run directory of ours (its newest readable checkpoint) or a checkpoint file (``*.pt``);
    - ``torchvision:<arch>`` (ImageNet weights; needs them on disk or a network);
    - ``timm:<name>`` (needs timm);
    - ``random:<arch>`` for a randomly initialised backbone (a baseline); ``:cifar`` adds the CIFAR stem.

    Args:
        source: one of the above (see :data:`SOURCE_HELP`).
        map_location: where checkpoint tensors are read to.

    Returns:
        ``(backbone, source)``: the backbone in eval mode, mapping (B, 3, h, w) images to (B, D) features,
        and its :class:`ModelSource`.

    Raises:
        ValueError: an unknown source, architecture or flag, or pretrained weights that cannot be fetched.
        InvalidCheckpointError: an unreadable checkpoint, or weights holding NaN/Inf.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import load_pretrained
        >>> backbone, source = load_pretrained("random:resnet_tiny:cifar")
        >>> source.arch, source.cifar_stem, source.config is None, backbone.training
        ('resnet_tiny', True, True, False)
        >>> with torch.no_grad():
        ...     backbone(torch.zeros(2, 3, 16, 16)).shape
        torch.Size([2, 64])
    """
    s = str(source)
    if s.startswith(("torchvision:", "random:", "timm:")):
        return _named_model(s)
    path = Path(s)
    if not path.exists():
        raise ValueError(f"model source {s!r} not found; give a {SOURCE_HELP}")
    state, ckpt_path = find_checkpoint(path, map_location, require=WEIGHTS)  # read as data, entries checked
    try:
        cfg = RunConfig.from_dict(state["config"])
    except ConfigError as e:
        raise InvalidCheckpointError(f"{ckpt_path} holds a config this version cannot read ({e})") from e
    enc = build_encoder(cfg.model)
    try:
        enc.load_state_dict(state["model"])
    except (RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())[:240]
        raise InvalidCheckpointError(
            f"{ckpt_path}: the weights do not match the model its config describes ({reason})") from e
    check_finite_weights(enc, ckpt_path)
    run_dir = ckpt_path.parent.parent if ckpt_path.parent.name == CHECKPOINT_DIR else None
    src = ModelSource(arch=cfg.model.backbone, cifar_stem=enc.backbone.cifar_stem, source=str(ckpt_path),
                      config=cfg, step=state.get("step"), run_dir=run_dir)
    return enc.backbone.eval(), src
