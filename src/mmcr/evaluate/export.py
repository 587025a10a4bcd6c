"""Export a pretrained backbone as a plain state_dict (``.pt``) or as safetensors.

The exported keys are those of the model a user would build themselves, without the classifier:

- torchvision ResNets (ImageNet stem)::

      model = torchvision.models.resnet50()
      model.fc = torch.nn.Identity()            # the trunk has no classifier
      model.load_state_dict(torch.load("backbone.pt"), strict=True)

  ``model(x)`` then returns the 2048-d features the probes use; put a fresh ``nn.Linear`` back as
  ``fc`` to fine-tune. (Shipping the untrained ``fc`` of a fresh model would let ``strict=True`` pass
  without the Identity line, but would hide random weights inside a "pretrained" file.)
- torchvision ResNets with the CIFAR stem (3x3 stride-1 ``conv1``, no max-pool): build the same stem
  first, then load as above::

      model = torchvision.models.resnet50()
      model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
      model.maxpool = torch.nn.Identity()
      model.fc = torch.nn.Identity()

- the small CPU ResNets: ``mmcr.models.build_backbone(arch).load_state_dict(sd, strict=True)``;
- timm models: ``timm.create_model(name, num_classes=0, **backbone_options).load_state_dict(sd, strict=True)``
  (``backbone_options`` from the metadata, e.g. ``img_size=32`` for a ViT trained on 32 px crops).

:func:`load_exported` does all of this from the file's metadata (a JSON sidecar next to a ``.pt``, the
header metadata of a ``.safetensors``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torchvision
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from mmcr.models import apply_cifar_stem, build_backbone
from mmcr.rundir.checkpoint import InvalidCheckpointError, is_state_dict, load_torch_data
from mmcr.rundir.files import RunFileError, check_output, write_atomic, write_text_atomic

EXPORT_FORMAT = "mmcr-backbone-v1"


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under the key names of the plain architecture (see the module doc), so that
    users load them into a model they build themselves, without mmcr.

    Args:
        backbone: an mmcr backbone (a wrapped torchvision/timm model or a small ResNet).

    Returns:
        ``{name: tensor}`` detached, contiguous CPU tensors.

    Examples:
        >>> from mmcr.evaluate import backbone_state_dict
        >>> from mmcr.models import build_backbone
        >>> sd = backbone_state_dict(build_backbone("resnet18"))  # torchvision's keys, no "model." prefix
        >>> "conv1.weight" in sd, "fc.weight" in sd, sd["conv1.weight"].device.type
        (True, False, 'cpu')
    """
    sd = backbone.state_dict()
    if hasattr(backbone, "model") and all(k.startswith("model.") for k in sd):
        sd = {k[len("model.") :]: v for k, v in sd.items()}
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def check_export_path(out: str | Path, source: str | Path | None = None) -> Path:
    """``out`` as an export path: a ``.pt``/``.pth``/``.safetensors`` file name that is not a folder, not a
    run's checkpoint or record, and not the model source itself (an export must never replace them)."""
    out = Path(out)
    if out.suffix not in (".pt", ".pth", ".safetensors"):
        raise ValueError(f"export path must end in .pt, .pth or .safetensors, got {out.name!r}")
    if out.exists() and out.is_dir():
        raise RunFileError(f"export path {out} is a folder; give a file name ending in .pt or .safetensors")
    check_output(out, source, what="the export")
    if out.suffix != ".safetensors":
        check_output(out.with_name(out.name + ".json"), source, what="the export metadata")
    return out


def export_backbone(backbone: nn.Module, model_src, out: str | Path) -> dict[str, Any]:
    """Write ``backbone``'s state_dict to ``out`` (``.pt`` or ``.safetensors``, chosen by suffix).

    ``.pt`` files hold a plain ``{name: tensor}`` dict (``torch.load(..., weights_only=True)`` works)
    with metadata in ``<out>.json``; ``.safetensors`` files carry the metadata in their header.
    ``model_src`` is the :class:`~mmcr.evaluate.sources.ModelSource` of the backbone (or None). Files are written
    atomically with the user's usual permissions. Returns the metadata.

    Args:
        backbone: the backbone to export.
        model_src: its :class:`~mmcr.models.ModelSource` (arch, stem, source, step), or None.
        out: a ``.pt``, ``.pth`` or ``.safetensors`` file path.

    Returns:
        The metadata: format, arch, cifar_stem, feature_dim, backbone_options, source and step.

    Raises:
        ValueError: out has another suffix.
        RunFileError: out is a folder, the model source, or a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> from mmcr.evaluate import export_backbone
        >>> from mmcr.evaluate import load_pretrained
        >>> backbone, source = load_pretrained("random:resnet_tiny")
        >>> tmp = tempfile.TemporaryDirectory()
        >>> meta = export_backbone(backbone, source, pathlib.Path(tmp.name) / "backbone.pt")
        >>> meta["format"], meta["arch"], meta["feature_dim"], sorted(p.name for p in pathlib.Path(tmp.name).iterdir())
        ('mmcr-backbone-v1', 'resnet_tiny', 64, ['backbone.pt', 'backbone.pt.json'])
        >>> tmp.cleanup()
    """
    out = check_export_path(out, model_src.source if model_src is not None else None)
    sd = backbone_state_dict(backbone)
    meta = {
        "format": EXPORT_FORMAT,
        "arch": model_src.arch if model_src is not None else str(getattr(backbone, "arch", "unknown")),
        "cifar_stem": bool(model_src.cifar_stem if model_src is not None else getattr(backbone, "cifar_stem", False)),
        "feature_dim": int(getattr(backbone, "feature_dim", 0)),
        "backbone_options": dict(getattr(backbone, "options", None) or {}),
        "source": model_src.source if model_src is not None else "",
        "step": model_src.step if model_src is not None else None,
    }
    if out.suffix == ".safetensors":

        blob = save(sd, metadata={k: json.dumps(v) for k, v in meta.items()})
        write_atomic(out, lambda f: f.write(blob), what="export")
    else:
        write_atomic(out, lambda f: torch.save(sd, f), what="export")
        write_text_atomic(out.with_name(out.name + ".json"), json.dumps(meta, indent=2) + "\n", what="export metadata")
    return meta


def read_exported(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of an exported file (metadata is ``{}`` if the sidecar is missing).

    Read as data only: ``.safetensors`` hold nothing else, ``.pt`` files load with ``weights_only=True``
    and must hold a mapping of names to tensors (see :func:`mmcr.rundir.checkpoint.load_torch_data`).

    Args:
        path: an exported ``.pt``/``.pth`` (metadata in ``<path>.json``) or ``.safetensors`` file.

    Returns:
        ``(state_dict, metadata)``.

    Raises:
        ValueError: the file does not exist.
        InvalidCheckpointError: the file or its metadata cannot be read as an export.

    Examples:
        >>> import pathlib, tempfile
        >>> from mmcr.evaluate import export_backbone, read_exported
        >>> from mmcr.evaluate import load_pretrained
        >>> backbone, source = load_pretrained("random:resnet_tiny")
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "backbone.safetensors"
        >>> _ = export_backbone(backbone, source, path)
        >>> state_dict, meta = read_exported(path)
        >>> len(state_dict) == len(backbone.state_dict()), meta["source"]
        (True, 'random:resnet_tiny')
        >>> tmp.cleanup()
    """

    path = Path(path)
    if not path.exists():
        raise ValueError(f"exported backbone {path} not found")
    if path.suffix == ".safetensors":

        try:
            with safe_open(str(path), framework="pt") as f:
                raw = f.metadata() or {}
            sd, meta = load_file(str(path)), {k: json.loads(v) for k, v in raw.items()}
        except Exception as e:  # a truncated or foreign file: safetensors' own error, in one line
            reason = " ".join(str(e).split())[:160]
            raise InvalidCheckpointError(f"{path} is not a readable .safetensors file ({reason}); export it again "
                                         "with mmcr export") from e
        return sd, meta
    sd = load_torch_data(path, what="exported backbone")
    if not is_state_dict(sd):
        raise InvalidCheckpointError(f"{path} is not an exported backbone: it must hold a mapping of parameter names "
                                     f"to tensors, got a {type(sd).__name__}; export it with mmcr export")
    side = path.with_name(path.name + ".json")
    try:
        meta = json.loads(side.read_text()) if side.exists() else {}
    except (OSError, ValueError) as e:
        raise InvalidCheckpointError(f"cannot read the export metadata {side} ({e}); export the model again") from e
    return sd, meta


def build_plain_model(arch: str, cifar_stem: bool = False, options: dict | None = None) -> nn.Module:
    """The plain model an export loads into strictly: a torchvision model with ``fc = Identity`` (and the
    CIFAR stem when asked), a timm model without head (built with the run's ``backbone_options``), or one
    of our small ResNets.

    Args:
        arch: a torchvision ResNet name, ``timm:<name>``, or one of mmcr's small ResNets.
        cifar_stem: give a torchvision model the CIFAR stem (3x3 stride-1 conv1, no max-pool).
        options: timm model options (e.g. ``{"img_size": 32}``); none for other architectures.

    Returns:
        The model, randomly initialised; it returns features (B, D).

    Raises:
        ValueError: options for an architecture that takes none, or an unknown architecture.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import build_plain_model
        >>> model = build_plain_model("resnet18", cifar_stem=True)
        >>> model.conv1.stride, type(model.fc).__name__
        ((1, 1), 'Identity')
    """

    if arch.startswith("timm:"):
        return build_backbone(arch, options=options).model
    if options:
        raise ValueError(f"{arch} takes no backbone options, got {sorted(options)}")
    if not hasattr(torchvision.models, arch):
        return build_backbone(arch)
    model = getattr(torchvision.models, arch)()
    if cifar_stem:
        apply_cifar_stem(model)
    model.fc = nn.Identity()
    return model


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild the plain model of an export from its metadata and load the weights strictly.

    Args:
        path: an exported file with metadata (see :func:`export_backbone`).

    Returns:
        The plain model (see :func:`build_plain_model`) in eval mode.

    Raises:
        ValueError: the metadata names no architecture, or the weights do not fit it.

    Examples:
        >>> import pathlib, tempfile, torch
        >>> from mmcr.evaluate import export_backbone, load_exported
        >>> from mmcr.evaluate import load_pretrained
        >>> _ = torch.manual_seed(0)
        >>> backbone, source = load_pretrained("random:resnet_tiny")
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = pathlib.Path(tmp.name) / "backbone.safetensors"
        >>> _ = export_backbone(backbone, source, path)
        >>> model = load_exported(path)
        >>> x = torch.randn(2, 3, 16, 16)
        >>> with torch.no_grad():
        ...     same = torch.allclose(model(x), backbone(x))
        >>> same, model(x).shape
        (True, torch.Size([2, 64]))
        >>> tmp.cleanup()
    """
    sd, meta = read_exported(path)
    if "arch" not in meta:
        raise ValueError(f"{path} has no metadata naming its architecture; build the model yourself and load it")
    model = build_plain_model(meta["arch"], bool(meta.get("cifar_stem", False)), meta.get("backbone_options"))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:200]
        raise ValueError(f"{path}: the weights do not fit a plain {meta['arch']} ({reason})") from e
    return model.eval()
