"""``mmcr export brainscore``: any model source as a Brain-Score vision model plugin.

The plugin folder has the layout of brain-score/vision's model plugins (``brainscore_vision/models/<dir>``):

    __init__.py                    registers the identifier in ``model_registry`` as a ``ModelCommitment``
    model.py                       get_model (the network in ``PytorchWrapper`` with its own preprocessing),
                                   get_layers, get_bibtex; the architecture code; no mmcr import
    plugin.json                    architecture, preprocessing, layers, weights file and its sha256
    weights.safetensors            the backbone's weights (checked against the sha256 before loading)
    region_layer_map/<id>.json     V1, V2, V4, IT -> layer (where ModelCommitment also looks for it)
    setup.py, requirements.txt     torch, torchvision, safetensors, numpy, pillow (+ timm for timm models)
    test.py                        the model tutorial's test
    mmcr_metadata.json             where the model came from; participation ratio and power-law alpha of the
                                   committed layers on the stimuli; the layer-choice scores (if chosen on data)

The model's input is its eval view at a fixed size: the short side resized (antialiased, the run's
interpolation) to the run's crop size, a centre crop, the run's normalisation. Brain-Score hands a model
its stimulus files (the image spanning the model's 8 visual degrees); a CIFAR run therefore sees each
stimulus shrunk to 32 px, as it saw its training images. Named models (torchvision, timm, random) take
224 px with ImageNet statistics. ``image_size`` overrides the size.

The commitment: a given region-layer map, the layers with the best cross-validated predictivity of the
user's recordings (:func:`choose_layers`), or the defaults for ResNets (:func:`default_region_layer_map`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import string
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save
from torch import nn

import mmcr
from mmcr.evaluate.export import backbone_state_dict
from mmcr.evaluate.features import eval_transform_for, layer_features, layer_summary
from mmcr.evaluate.sources import load_pretrained
from mmcr.geometry import neural_predictivity, participation_ratio, power_law_exponent
from mmcr.rundir.files import RunFileError, default_mode, describe_write_failure

REGIONS = ("V1", "V2", "V4", "IT")
PLUGIN_FORMAT = "mmcr-brainscore-plugin-v1"
DEFAULT_STIMULI = 200  # generated images for the spectra when no recordings are given
NAMED_MODEL_SIZE = 224  # what Brain-Score's standard preprocessing feeds ImageNet models
MAX_PCA_COMPONENTS = 1000  # Brain-Score's layer selection reduces each layer to 1,000 principal components
FEATURE_BUDGET_BYTES = 2 << 30  # layers whose features would exceed this together are extracted in turn
BIBTEX = """@inproceedings{yerxa2023mmcr,
  title = {Learning Efficient Coding of Natural Images with Maximum Manifold Capacity Representations},
  author = {Yerxa, Thomas and Kuang, Yilun and Simoncelli, Eero and Chung, SueYeon},
  booktitle = {Advances in Neural Information Processing Systems},
  volume = {36},
  year = {2023}
}"""
# Brain-Score's website refuses identifiers with hyphens; registrations are found by the text
# model_registry['<identifier>'] and activations are cached in files named identifier=<identifier>,...
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,199}")
_PLUGIN_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_STAGE = re.compile(r"^(layer\d+|layers\.\d+)$")


class BrainScoreExportError(ValueError):
    """A Brain-Score export that cannot be made as asked; the message says what to change."""


# ----------------------------------------------------------------------------------------- checks
def check_identifier(identifier: str) -> str:
    """``identifier`` if Brain-Score would accept it, else :class:`BrainScoreExportError` saying why."""
    if "-" in identifier:
        raise BrainScoreExportError(f"identifier {identifier!r} contains a hyphen, which Brain-Score's submission "
                                    f"refuses; use underscores ({identifier.replace('-', '_')!r})")
    if not _IDENTIFIER.fullmatch(identifier):
        raise BrainScoreExportError(f"identifier {identifier!r} is not one Brain-Score can register; use 1-200 "
                                    "letters, digits, underscores or dots, starting with a letter or digit")
    if "resnet50_tutorial" in identifier:
        raise BrainScoreExportError(f"identifier {identifier!r} names Brain-Score's tutorial model, which its "
                                    "submission refuses; choose your own name")
    return identifier


def plain_network(backbone: nn.Module) -> nn.Module:
    """The module whose parameter and layer names the plugin uses: the torchvision/timm model inside our
    wrapper (``layer1``, not ``model.layer1``), or the small ResNet itself."""
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) else backbone


def check_layers(net: nn.Module, layers: list[str], what: str = "layer") -> None:
    modules = dict(net.named_modules())
    unknown = [n for n in layers if not n or n not in modules]
    if unknown:
        raise BrainScoreExportError(f"the model has no {what} {', '.join(map(repr, unknown))}; it has "
                                    f"{layer_summary(net)}")


def stage_layers(net: nn.Module) -> list[str]:
    """The residual stages (``layer1``.. of torchvision/timm ResNets, ``layers.<i>`` of the small ResNets)."""
    return [n for n, _ in net.named_modules() if _STAGE.match(n)]


def default_region_layer_map(net: nn.Module) -> dict[str, str]:
    """V1 -> first stage, V2 and V4 -> the second-to-last, IT -> the last (ResNets with 3 or more stages).

    For four-stage ResNets this is V1: layer1, V2: layer3, V4: layer3, IT: layer4, the commonest choice of
    Brain-Score's own layer selection among the ResNet plugins of brainscore-vision 2.4.2 whose maps name
    whole stages or their blocks (V1 layer1 152 of 208, V2 layer3 133 of 208, V4 layer3 121 of 208, IT
    layer4 163 of 208): stages deepen in receptive field and invariance as the ventral stream does.
    """
    stages = stage_layers(net)
    if len(stages) < 3:
        raise BrainScoreExportError("no default region-layer map for this model (it has no ResNet stages layer1.. "
                                    "or layers.0..); pass --region-layer-map FILE or --choose-layers NEURAL.npz")
    return {"V1": stages[0], "V2": stages[-2], "V4": stages[-2], "IT": stages[-1]}


def read_region_layer_map(path: str | Path) -> dict[str, str]:
    """A JSON object mapping each of V1, V2, V4, IT to one layer name."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BrainScoreExportError(f"region-layer map {path} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BrainScoreExportError(f"region-layer map {path} is not readable JSON ({e})") from None
    if not isinstance(mapping, dict):
        raise BrainScoreExportError(f"region-layer map {path} must be a JSON object like "
                                    '{"V1": "layer1", "V2": "layer3", "V4": "layer3", "IT": "layer4"}')
    return check_region_layer_map(mapping, str(path))


def check_region_layer_map(mapping: dict, where: str = "region-layer map") -> dict[str, str]:
    missing = [r for r in REGIONS if r not in mapping]
    if missing:
        raise BrainScoreExportError(f"{where} lacks {', '.join(missing)}; map each of {', '.join(REGIONS)} to a layer")
    extra = sorted(set(mapping) - set(REGIONS))
    if extra:
        raise BrainScoreExportError(f"{where} has unknown region(s) {', '.join(extra)}; Brain-Score records "
                                    f"{', '.join(REGIONS)}")
    bad = [r for r in REGIONS if not isinstance(mapping[r], str) or not mapping[r]]
    if bad:
        raise BrainScoreExportError(f"{where}: {', '.join(bad)} must name one layer (a string)")
    return {r: mapping[r] for r in REGIONS}


def _plugin_dir_name(out_dir: Path) -> None:
    name = out_dir.name
    if not _PLUGIN_DIR.fullmatch(name):
        raise BrainScoreExportError(f"plugin folder name {name!r} cannot be a plugin under brainscore_vision/models; "
                                    "use letters, digits, underscores or hyphens (e.g. the identifier)")


def _check_out_dir(out_dir: Path, force: bool) -> None:
    _plugin_dir_name(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainScoreExportError(f"{out_dir} is a file; give a folder for the plugin")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise BrainScoreExportError(f"{out_dir} exists and is not empty; choose another folder or pass --force "
                                    "to replace it")


# ----------------------------------------------------------------------------------------- stimuli
def generated_stimuli(n: int, size: int = 256, seed: int = 0) -> torch.Tensor:
    """``n`` uint8 (n, 3, size, size) test images: three coloured oriented gratings of random frequency and
    phase under Gaussian windows, on smooth coloured noise; deterministic in ``seed``."""
    if n < 2:
        raise BrainScoreExportError(f"at least 2 stimuli are needed, got {n}")
    g = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1, 1, size)
    yy, xx = axis.view(1, 1, size, 1), axis.view(1, 1, 1, size)
    out = torch.empty(n, 3, size, size, dtype=torch.uint8)
    for lo in range(0, n, 32):
        b = min(32, n - lo)
        noise = torch.randn(b, 3, 8, 8, generator=g)
        img = torch.nn.functional.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False) * 0.15
        theta, freq, phase, cx, cy, width = (torch.rand(6, b, 3, 1, 1, generator=g) * torch.tensor(
            [math.pi, 14.0, 2 * math.pi, 1.2, 1.2, 0.6]).view(6, 1, 1, 1, 1)).unbind(0)
        cx, cy, width = cx - 0.6, cy - 0.6, width + 0.4
        wave = torch.sin((xx * theta.cos() + yy * theta.sin()) * (freq + 2.0) * math.pi + phase)  # (b, 3, H, W)
        window = torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width**2))
        colour = torch.rand(b, 3, 3, generator=g) * 2 - 1  # (image, grating, channel)
        img = img + 0.35 * torch.einsum("bgc,bghw->bchw", colour, wave * window)
        out[lo : lo + b] = ((img + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return out


def read_neural_npz(path: str | Path) -> tuple[torch.Tensor, dict[str, np.ndarray], np.ndarray | None]:
    """``(images uint8 (S, 3, H, W), {region: responses}, labels or None)`` from an ``.npz`` holding
    ``images`` (S, H, W, 3) uint8, one or more of ``V1``/``V2``/``V4``/``IT`` as (S, n_neuroids) mean
    responses or (n_repeats, S, n_neuroids) single repetitions, and optionally ``labels`` (S,) categories
    that stratify the train/test splits. Loaded without pickle."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise BrainScoreExportError(f"neural data {path} not found") from None
    except (OSError, ValueError) as e:
        raise BrainScoreExportError(f"neural data {path} is not a readable .npz ({e})") from None
    with data:
        if "images" not in data.files:
            raise BrainScoreExportError(f"{path} has no 'images' array; it needs images (S, H, W, 3) uint8 and "
                                        f"responses named {', '.join(REGIONS)}")
        images = data["images"]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise BrainScoreExportError(f"{path}: images must be uint8 (S, H, W, 3), got {images.dtype} "
                                        f"{images.shape}")
        s = images.shape[0]
        unknown = sorted(set(data.files) - set(REGIONS) - {"images", "labels"})
        if unknown:
            raise BrainScoreExportError(f"{path} has unknown array(s) {', '.join(unknown)}; it takes images, "
                                        f"labels and {', '.join(REGIONS)}")
        responses = {}
        for r in (r for r in REGIONS if r in data.files):
            y = data[r]
            stim_axis = 0 if y.ndim == 2 else 1
            if y.ndim not in (2, 3) or y.shape[stim_axis] != s or not np.issubdtype(y.dtype, np.number):
                raise BrainScoreExportError(f"{path}: {r} must be (S={s}, n_neuroids) or (n_repeats, S={s}, "
                                            f"n_neuroids) numbers, got {y.dtype} {y.shape}")
            if not np.isfinite(y).all():
                raise BrainScoreExportError(f"{path}: {r} contains NaN/Inf; drop or impute those neuroids")
            responses[r] = y.astype(np.float64)
        if not responses:
            raise BrainScoreExportError(f"{path} has no responses; add at least one of {', '.join(REGIONS)}")
        labels = data["labels"] if "labels" in data.files else None
    if labels is not None and labels.shape != (s,):
        raise BrainScoreExportError(f"{path}: labels must have shape ({s},), got {labels.shape}")
    if s < 10:
        raise BrainScoreExportError(f"{path} has {s} stimuli; held-out predictivity needs at least 10")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))), responses, labels


# ----------------------------------------------------------------------------------------- features
def _layer_groups(net: nn.Module, layers: list[str], n: int, probe: torch.Tensor, transform) -> list[list[str]]:
    """Layers in groups whose features for ``n`` stimuli fit :data:`FEATURE_BUDGET_BYTES` together."""
    widths = {k: v.shape[1] for k, v in layer_features(net, probe, layers, transform=transform).items()}
    groups: list[list[str]] = [[]]
    used = 0
    for name in layers:
        need = widths[name] * n * 4
        if groups[-1] and used + need > FEATURE_BUDGET_BYTES:
            groups.append([])
            used = 0
        groups[-1].append(name)
        used += need
    return groups


def centred_gram(feats: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """(N, N) float64 Gram matrix of the centred rows of ``feats`` (N, D), accumulated over feature chunks."""
    gram = torch.zeros(feats.shape[0], feats.shape[0], dtype=torch.float64)
    for lo in range(0, feats.shape[1], chunk):
        x = feats[:, lo : lo + chunk].to(torch.float64)
        x = x - x.mean(0, keepdim=True)
        gram += x @ x.T
    return gram


def _per_layer(net, images, layers, transform, batch_size, device, fn) -> dict[str, Any]:
    """``fn(centred Gram)`` for every layer, extracting as many layers per pass as memory allows."""
    out = {}
    for group in _layer_groups(net, layers, images.shape[0], images[:1], transform):
        feats = layer_features(net, images, group, transform=transform, batch_size=batch_size, device=device)
        for name in group:
            out[name] = fn(centred_gram(feats.pop(name)))
    return out


def spectrum_from_gram(gram: torch.Tensor) -> np.ndarray:
    """Descending covariance eigenvalues of the features behind a centred Gram matrix."""
    lam = torch.linalg.eigvalsh(gram).flip(0).clamp_min(0) / (gram.shape[0] - 1)
    return lam.numpy()


def spectral_summary(gram: torch.Tensor, fit_range: tuple[int, int] = (11, 500)) -> dict[str, Any]:
    """Participation ratio and power-law decay (``mmcr.geometry``, as in ``mmcr analyze``) of one layer."""
    lam = spectrum_from_gram(gram)
    res: dict[str, Any] = {"n_stimuli": int(gram.shape[0])}
    try:
        res["participation_ratio"] = participation_ratio(lam)
    except ValueError as e:
        res["participation_ratio"] = None
        res["participation_ratio_error"] = str(e)
    try:
        res["power_law"] = power_law_exponent(lam, fit_range=fit_range).to_dict()
    except ValueError as e:
        res["power_law"] = {"error": str(e)}
    return res


def pca_scores(gram: torch.Tensor, n_components: int = MAX_PCA_COMPONENTS) -> np.ndarray:
    """Principal-component scores (N, k) of the features behind a centred Gram matrix (k <= n_components,
    components with non-zero variance only)."""
    lam, vec = torch.linalg.eigh(gram)
    lam, vec = lam.flip(0), vec.flip(1)
    keep = int(min(n_components, int((lam > lam[0] * 1e-12).sum()) if lam[0] > 0 else 0))
    if keep == 0:
        return np.zeros((gram.shape[0], 1))
    return (vec[:, :keep] * lam[:keep].sqrt()).numpy()


def choose_layers(net, images, responses, labels, candidates, transform, *, seed=0, batch_size=64,
                  device="cpu") -> tuple[dict[str, str], dict[str, Any]]:
    """Per recorded region, the candidate layer whose features best predict the responses on held-out
    stimuli: each layer reduced to its principal components on the stimuli (at most 1,000, as Brain-Score's
    layer selection), PLS with 25 components and no rescaling, 10 random 90/10 splits of the stimuli
    (stratified by ``labels`` if given), median over neuroids of the held-out Pearson r
    (:func:`mmcr.geometry.neural_predictivity`). Returns ``(chosen {region: layer}, scores)``."""

    def score_all(gram):
        x = pca_scores(gram)
        return {r: neural_predictivity(x, y, labels=labels, seed=seed, standardize=False).to_dict()
                for r, y in responses.items()}

    per_layer = _per_layer(net, images, candidates, transform, batch_size, device, score_all)
    chosen, table = {}, {}
    for r in responses:
        scores = {layer: per_layer[layer][r] for layer in candidates}
        key = "ceiled_score" if all(s["ceiled_score"] is not None for s in scores.values()) else "score"
        chosen[r] = max(candidates, key=lambda layer: scores[layer][key])
        table[r] = {"chosen": chosen[r], "by": key, "layers": scores}
    return chosen, table


# ----------------------------------------------------------------------------------------- the plugin
def network_spec(backbone: nn.Module, model_src) -> dict[str, Any]:
    """What the plugin's model.py needs to rebuild the architecture."""
    arch = model_src.arch
    if arch.startswith("timm:"):
        return {"kind": "timm", "arch": arch[5:], "cifar_stem": False}
    if hasattr(backbone, "widths") and hasattr(backbone, "blocks"):
        return {"kind": "small", "arch": arch, "cifar_stem": True, "widths": list(backbone.widths),
                "blocks": list(backbone.blocks)}
    return {"kind": "torchvision", "arch": arch, "cifar_stem": bool(model_src.cifar_stem)}


def readout_layer(net: nn.Module) -> str:
    """The pooled output Brain-Score's behavioural readouts are fitted on."""
    children = [n for n, _ in net.named_children()]
    for name in ("avgpool", "pool", "global_pool"):
        if name in children:
            return name
    return children[-1]


def input_view(model_src, image_size: int | None) -> dict[str, Any]:
    """The plugin's preprocessing: the run's eval view (crop size, interpolation, normalisation) or ImageNet
    statistics at 224 px, as a fixed-size view of any stimulus (short side resized to the size, centre crop)."""
    tf = eval_transform_for(model_src)
    size = image_size if image_size is not None else (tf.size[0] if model_src.config is not None and tf.size
                                                     else NAMED_MODEL_SIZE)
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise BrainScoreExportError(f"image size must be an integer of at least 8 pixels, got {size!r}")
    return {"size": size, "interpolation": tf.interpolation, "mean": list(tf.mean), "std": list(tf.std)}


def _template(name: str, **values: str) -> str:
    """A file of the plugin template (``brainscore_plugin/``, package data), ``$name`` filled in for .tmpl."""
    text = resources.files("mmcr.evaluate").joinpath("brainscore_plugin", name).read_text(encoding="utf-8")
    return string.Template(text).substitute(values) if name.endswith(".tmpl") else text


def _write_plugin(tmp: Path, plugin: dict, blob: bytes, mapping: dict, metadata: dict, scores) -> None:
    identifier = plugin["identifier"]
    requirements = ["torch>=2.0", "torchvision>=0.15", "safetensors>=0.4", "numpy", "pillow"]
    if plugin["network"]["kind"] == "timm":
        requirements.append("timm>=0.9")
    (tmp / "region_layer_map").mkdir()
    (tmp / "weights.safetensors").write_bytes(blob)
    files = {"plugin.json": plugin, f"region_layer_map/{identifier}.json": mapping, "mmcr_metadata.json": metadata}
    if scores is not None:
        files["layer_scores.json"] = scores
    for name, content in files.items():
        (tmp / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    (tmp / "__init__.py").write_text(_template("__init__.py.tmpl", identifier=identifier), encoding="utf-8")
    (tmp / "test.py").write_text(_template("test.py.tmpl", identifier=identifier), encoding="utf-8")
    (tmp / "model.py").write_text(_template("model.py"), encoding="utf-8")
    (tmp / "setup.py").write_text(_template("setup.py"), encoding="utf-8")


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Put the finished ``tmp`` folder at ``out_dir`` (an old one is moved aside first, then removed)."""
    os.chmod(tmp, default_mode(directory=True))
    (tmp / "region_layer_map").chmod(default_mode(directory=True))
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if old is not None:  # put the previous plugin back
            os.replace(old / out_dir.name, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _weights_note(model_src) -> str:
    s = model_src.source
    if s.startswith("random:") or ":random" in s:
        return "random initialisation (a baseline, not a trained model)"
    if s.startswith(("torchvision:", "timm:")):
        return f"the library's default pretrained weights of {s}"
    return f"trained run checkpoint {s} (step {model_src.step})"


def _commitment(net, neural, neural_path, mapping, candidates, transform, seed, batch_size, device):
    """``(region-layer map, how it was made, layer-choice scores or None)``."""
    if neural is None:
        if mapping is not None:
            return mapping, "given", None
        return default_region_layer_map(net), "default for ResNets", None
    images, responses, labels = neural
    candidates = candidates or stage_layers(net)
    if not candidates:
        raise BrainScoreExportError("the model has no ResNet stages to choose from; name the candidates with "
                                    f"--layers (it has {layer_summary(net)})")
    check_layers(net, candidates)
    chosen, scores = choose_layers(net, images, responses, labels, candidates, transform, seed=seed,
                                   batch_size=batch_size, device=device)
    rest = [r for r in REGIONS if r not in chosen]
    if rest:
        try:
            defaults = default_region_layer_map(net)
        except BrainScoreExportError:
            raise BrainScoreExportError(f"{neural_path} has no responses for {', '.join(rest)} and this model has "
                                        "no default layers for them; add those regions to the .npz") from None
        chosen.update({r: defaults[r] for r in rest})
        scores["default_for"] = rest
    return {r: chosen[r] for r in REGIONS}, f"chosen on {neural_path}", scores


def _describe(identifier, model_src, spec, view, mapping, how, scores, layers, readout, sha, weights_url, spectra):
    """``(plugin.json, mmcr_metadata.json)`` contents."""

    cfg = model_src.config
    plugin = {"format": PLUGIN_FORMAT, "identifier": identifier, "network": spec, "preprocessing": view,
              "layers": layers, "behavioral_readout_layer": readout,
              "weights": {"file": "weights.safetensors", "sha256": sha, "url": weights_url},
              "bibtex": BIBTEX if cfg is not None and cfg.objective.name == "mmcr" else ""}
    metadata = {
        "format": "mmcr-brainscore-metadata-v1", "identifier": identifier, "mmcr_version": mmcr.__version__,
        "source": model_src.describe(), "weights": _weights_note(model_src), "weights_sha256": sha,
        "objective": cfg.objective.name if cfg is not None else None,
        "trained_on": cfg.data.name if cfg is not None else None,
        "preprocessing": view, "region_layer_map": mapping, "commitment": how, "layers": layers,
        "behavioral_readout_layer": readout, "spectra": spectra,
    }
    if scores is not None:
        metadata["layer_choice"] = scores
    return plugin, metadata


def _write_folder(out_dir: Path, write) -> None:
    """``write(tmp)`` into a hidden folder beside ``out_dir``, then rename it into place: nothing half-written."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        write(tmp)
        _replace_dir(tmp, out_dir)
    except OSError as e:

        raise RunFileError(describe_write_failure(out_dir, e) + "; nothing was written") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_brainscore_plugin(
    source: str | Path,
    out_dir: str | Path,
    identifier: str,
    *,
    region_layer_map: str | Path | None = None,
    choose_layers_from: str | Path | None = None,
    candidate_layers: list[str] | None = None,
    image_size: int | None = None,
    n_stimuli: int | None = None,
    seed: int = 0,
    force: bool = False,
    batch_size: int = 64,
    device: str = "cpu",
    fit_range: tuple[int, int] = (11, 500),
    weights_url: str | None = None,
) -> dict[str, Any]:
    """Write the Brain-Score plugin of ``source`` (any :func:`mmcr.evaluate.sources.load_pretrained` source) to
    ``out_dir`` (see the module doc). The folder is built beside ``out_dir`` and renamed into place, so a
    failure leaves nothing half-written; a non-empty ``out_dir`` is replaced only with ``force``. Returns
    the metadata written to ``mmcr_metadata.json``. ``weights_url``: where the plugin fetches
    ``weights.safetensors`` when the folder lacks it (for submissions whose weights exceed the zip limit)."""

    check_identifier(identifier)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    if region_layer_map is not None and choose_layers_from is not None:
        raise BrainScoreExportError("give either --region-layer-map or --choose-layers, not both")
    if candidate_layers is not None and choose_layers_from is None:
        raise BrainScoreExportError("--layers names the candidates of --choose-layers; pass --choose-layers too")
    if weights_url is not None and not re.match(r"(https?|file)://\S+$", weights_url):
        raise BrainScoreExportError(f"--weights-url must be an http(s):// or file:// URL, got {weights_url!r}")
    mapping = read_region_layer_map(region_layer_map) if region_layer_map is not None else None
    neural = read_neural_npz(choose_layers_from) if choose_layers_from is not None else None
    if neural is not None and n_stimuli is not None:
        raise BrainScoreExportError("--stimuli sets the generated stimuli; with --choose-layers the spectra use the "
                                    "recordings' images, so leave --stimuli out")
    n_stimuli = DEFAULT_STIMULI if n_stimuli is None else n_stimuli
    if neural is None and (int(n_stimuli) != n_stimuli or n_stimuli < 2):
        raise BrainScoreExportError(f"--stimuli must be an integer of at least 2, got {n_stimuli}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random-init sources are reproducible
        backbone, model_src = load_pretrained(source)
    net = plain_network(backbone).eval()
    spec = network_spec(backbone, model_src)
    view = input_view(model_src, image_size)
    transform = eval_transform_for(model_src, size=view["size"], resize=view["size"])
    mapping, how, scores = _commitment(net, neural, choose_layers_from, mapping, candidate_layers, transform, seed,
                                       batch_size, device)
    check_layers(net, list(mapping.values()))
    order = {n: i for i, (n, _) in enumerate(net.named_modules())}
    layers = sorted(set(mapping.values()), key=order.__getitem__)
    readout = readout_layer(net)
    stimuli = neural[0] if neural is not None else generated_stimuli(n_stimuli, 256, seed)
    spectra = _per_layer(net, stimuli, layers, transform, batch_size, device,
                         lambda gram: spectral_summary(gram, fit_range))

    blob = save(backbone_state_dict(backbone))
    stimuli_note = (f"the images of {choose_layers_from}" if neural is not None
                    else f"{n_stimuli} generated grating images (256 px, seed {seed})")
    plugin, metadata = _describe(identifier, model_src, spec, view, mapping, how, scores, layers, readout,
                                 hashlib.sha256(blob).hexdigest(), weights_url,
                                 {"stimuli": stimuli_note, "fit_range": list(fit_range), "layers": spectra})
    _write_folder(out_dir, lambda tmp: _write_plugin(tmp, plugin, blob, mapping, metadata, scores))
    metadata["path"] = str(out_dir)
    return metadata
