"""The run description: one typed, validated object per run, saved as ``config.yaml`` in its directory.

``load_config(preset, overrides)`` resolves defaults <- a YAML preset (shipped name or file) <-
``section.key=value`` overrides into a :class:`RunConfig`. Everything that reads how a run was made
(the trainer, evaluation, ``mmcr analyze``, export) reads this object, never a raw dict.

Validation happens here and only here: unknown keys, wrong types, numbers outside their meaning
(signs, ranges) and names that are not in their registry (objectives, data sets, backbones,
augmentation presets, optimisers) are rejected with one line naming the key and what is valid. The
choices are read from the registries themselves, so a new objective or data set is a valid config
value as soon as it is registered. Free-form sections (``data.options``, ``augment.overrides``,
``objective.kwargs``) are checked by the component that consumes them, when the run is built.

Each field also says what a resumed run may do when it changes (``resume=``): ``free`` (applied,
recorded), ``apply`` (needs ``train.allow_config_change=true``, then applied and recorded) or
``fixed`` (defines the run's weights or data order; never changed on resume).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import operator
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A config key or value that is not valid; the message says which and what is."""


# ------------------------------------------------------------------------------------------ checks
@dataclass(frozen=True)
class Range:
    """A numeric constraint: lo <= x (< if lo_open) and x <= hi (< if hi_open); None = unbounded. NaN never
    passes, and neither does +-inf unless ``infinite`` says a field means something by it."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    infinite: bool = False

    def ok(self, x: float) -> bool:
        if x != x:  # NaN
            return False
        if not self.infinite and x in (float("inf"), float("-inf")):
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def describe(self, integer: bool = False) -> str:
        lo, hi = _num(self.lo), _num(self.hi)
        finite = "" if self.infinite or integer else " and finite"
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {lo}{finite}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {hi}{finite}"
        return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"

    def check(self, name: str, value, integer: bool = False, error: type[ValueError] = ValueError):
        """``value`` when it is a number (an integer if ``integer``) inside the range, else ``error`` with
        the one-line message the config gives: the same rule for config fields, CLI flags and library
        arguments."""
        import numbers

        if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
                integer and not (isinstance(value, numbers.Integral) or float(value).is_integer())):
            raise error(f"{name} must be {'an integer' if integer else 'a number'} {self.describe(integer)}, "
                        f"got {value!r}")
        if not self.ok(value):
            raise error(f"{name} must be {self.describe(integer)}, got {value!r}")
        return int(value) if integer else value


def _num(x: float | None) -> str:
    return "" if x is None else str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, None, lo_open=True)
NON_NEGATIVE = Range(0, None)
AT_LEAST_1 = Range(1, None)
FRACTION = Range(0, 1)
FRACTION_OPEN = Range(0, 1, hi_open=True)
SEED = Range(0, 2**32 - 1)  # numpy's legacy seeding takes 32 bits: one rule for runs and library calls
#: Largest working image side (``data.options.size``): far beyond any recipe (ImageNet: 224), far below
#: sizes that cannot fit in memory for any data set.
MAX_IMAGE_SIZE = 4096
#: Largest ``train.threads``: above it a thread pool only exhausts memory (it is clamped to the machine's
#: cores, with a warning, when the run starts).
MAX_THREADS = 1024


def check_seed(seed, name: str = "seed", error: type[ValueError] = ValueError) -> int:
    """The one rule for seeds, in configs and library calls alike: an integer in [0, 2**32 - 1]."""
    return SEED.check(name, seed, integer=True, error=error)


def _choices(getter: Callable[[], Any]) -> Callable[[], list[str]]:
    return lambda: sorted(getter())


def _objectives():
    from mmcr.objectives import OBJECTIVES

    return OBJECTIVES


def _datasets():
    from mmcr.data import DATASET_NAMES

    return DATASET_NAMES


def _augment_presets():
    from mmcr.augment import TRAIN_PRESETS

    return TRAIN_PRESETS


def _temporal(name: str):
    def get():
        from mmcr.augment import temporal

        return getattr(temporal, name)

    return get


def _optimizers():
    from mmcr.train.optim import OPTIMIZERS

    return OPTIMIZERS


def _schedules():
    from mmcr.train.optim import SCHEDULES

    return SCHEDULES


def _momentum_schedules():
    from mmcr.models.momentum import SCHEDULES

    return SCHEDULES


def _check_backbone(name: str) -> str | None:
    from mmcr.models import available_backbones, is_backbone_name

    if is_backbone_name(name):
        return None
    return f"choose one of {', '.join(available_backbones())}"


def _check_view_chunk(value) -> str | None:
    if value == "auto" or (isinstance(value, int) and value >= 1):
        return None
    return "use a positive number of views per chunk, 'auto' (from train.max_activation_gb) or null (all at once)"


def _check_name(name: str) -> str | None:
    """A run name becomes one folder under runs/: no separators, no '..', no hidden or empty names."""
    if name and "/" not in name and "\\" not in name and not name.startswith(".") and name.isprintable():
        return None
    return ("a run name is one folder name under runs/ (no '/', no leading '.'); use --out DIR to choose "
            "another folder")


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _check_device(name: str) -> str | None:
    return None if _DEVICE.match(name) else "use auto, cpu, cuda, cuda:<index> or mps"


# What a precision name means for the encoder's autocast dtype; the one registry of precisions.
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")


def _field(default, *, check: Range | None = None, choices: Callable[[], list[str]] | None = None,
           validate: Callable[[Any], str | None] | None = None, resume: str = "apply", doc: str = ""):
    meta = {"check": check, "choices": choices, "validate": validate, "resume": resume, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _section(cls, resume: str | None = None):
    return field(default_factory=cls, metadata={"resume": resume})


# ------------------------------------------------------------------------------------------ schema
@dataclass
class DataConfig:
    name: str = _field("digits", choices=_choices(_datasets), resume="fixed", doc="data set (mmcr.data registry)")
    root: str | None = _field(None, resume="free", doc="folder, archive or file of the data set")
    train_split: str = _field("train", resume="fixed")
    test_split: str = _field("test", resume="free", doc="split of the final evaluation (never used to select)")
    options: dict = _field({}, resume="fixed", doc="loader options, checked by the data set's loader")
    val_fraction: float = _field(0.1, check=FRACTION_OPEN, resume="fixed",
                                 doc="validation split carved from the training split (0 = none)")
    cache_dir: str | None = _field(None, resume="free", doc="decoded-data cache (default $MMCR_CACHE)")
    num_workers: int = _field(0, check=NON_NEGATIVE, resume="free", doc="decoding workers (lazy folders)")
    full_image_views: bool = _field(False, resume="fixed",
                                    doc="the workers cut the RandomResizedCrop views from each file's full image "
                                        "(the recipe; lazy imagefolder or webdataset); false: crops of the "
                                        "data.options.size square, on the device")
    decode_device: str = _field("cpu", choices=lambda: ["cpu", "cuda"],
                                doc="where full-image views are decoded: cpu (workers, JPEG DCT scaling) or cuda "
                                    "(batched nvJPEG)")


@dataclass
class AugmentConfig:
    preset: str = _field("cifar", choices=_choices(_augment_presets), doc="training augmentation preset")
    views: int = _field(8, check=AT_LEAST_1, doc="views per image at full resolution")
    overrides: dict = _field({}, doc="preset overrides, checked by MultiViewAugment: size, scale, ratio, "
                                     "interpolation, flip_p, colour jitter, blur, solarize_p, mean, std; "
                                     "affine: degrees, translate, affine_scale, shear, fill, affine_interpolation")
    small_views: int = _field(0, check=NON_NEGATIVE,
                              doc="extra low-resolution crops per image (multi-crop); each counts once in the centroid")
    small_size: int | None = _field(None, check=AT_LEAST_1, doc="side of the small crops (default: half the views')")
    small_scale: list[float] = _field([0.05, 0.4], check=Range(0, 1, lo_open=True),
                                      doc="area fraction range of the small crops")


@dataclass
class TemporalConfig:
    """Temporal views of clip data sets (videofolder, framefolder, moving-digits, npz with videos_*): a
    manifold is a window of one clip and its augment.views frames are the views (mmcr.augment.temporal).
    Augmentation-only MMCR on still frames: window=1 with spatial=frame."""

    window: float = _field(8.0, check=POSITIVE, doc="the window the frames of a manifold are drawn from, in "
                                                     "temporal.unit (frames: an integer)")
    unit: str = _field("frames", choices=_choices(_temporal("UNITS")), doc="unit of window and segment")
    sampling: str = _field("random", choices=_choices(_temporal("SAMPLING")),
                           doc="frames of a window: random (without replacement) or strided (evenly spaced)")
    spatial: str = _field("none", choices=_choices(_temporal("SPATIAL")),
                          doc="spatial augmentation of the frames (augment.preset/overrides): none, one draw per "
                              "window, or one per frame")
    segment: float | None = _field(None, check=POSITIVE, resume="fixed",
                                   doc="cut clips into segments of this length (temporal.unit), one window each "
                                       "per epoch; null = one window per clip")


@dataclass
class ProjectorConfig:
    hidden: list[int] = _field([128], check=AT_LEAST_1, resume="fixed")
    out_dim: int = _field(64, check=AT_LEAST_1, resume="fixed")


@dataclass
class MomentumConfig:
    enabled: bool = _field(False, resume="fixed")
    tau: float = _field(0.99, check=FRACTION)
    schedule: str = _field("constant", choices=_choices(_momentum_schedules))


@dataclass
class ModelConfig:
    backbone: str = _field("resnet_tiny", validate=_check_backbone, resume="fixed",
                           doc="backbone (mmcr.models registry): resnet18..152, wide/resnext, resnet_tiny/small/mini, "
                               "timm:<name>")
    backbone_options: dict = _field({}, resume="fixed",
                                    doc="further timm.create_model arguments, e.g. {img_size: 32} for a ViT on "
                                        "32 px crops; torchvision and small ResNets take none")
    cifar_stem: bool = _field(True, resume="fixed", doc="3x3 stride-1 conv1 without max-pool")
    zero_init_residual: bool = _field(False, resume="fixed")
    projector: ProjectorConfig = _section(ProjectorConfig)
    channels_last: bool = _field(False, resume="free")
    sync_bn: bool = _field(False, resume="fixed")
    momentum: MomentumConfig = _section(MomentumConfig)


@dataclass
class ObjectiveConfig:
    name: str = _field("mmcr", choices=_choices(_objectives))
    kwargs: dict = _field({}, doc="objective arguments, checked by the objective")


@dataclass
class OptimConfig:
    name: str = _field("adam", choices=_choices(_optimizers))
    lr: float = _field(1e-3, check=POSITIVE)
    scale_lr: bool = _field(False, doc="lr x global batch / 256")
    weight_decay: float = _field(1e-6, check=NON_NEGATIVE)
    momentum: float = _field(0.9, check=FRACTION_OPEN, doc="SGD/LARS momentum")
    betas: list[float] = _field([0.9, 0.999], check=FRACTION_OPEN, doc="Adam betas")
    lars_eta: float = _field(1e-3, check=POSITIVE)
    warmup_epochs: float = _field(0.0, check=NON_NEGATIVE)
    schedule: str = _field("constant", choices=_choices(_schedules))
    final_lr_ratio: float = _field(1e-3, check=FRACTION)
    grad_clip: float | None = _field(None, check=POSITIVE, doc="max gradient norm (null = no clipping)")


@dataclass
class TrainConfig:
    epochs: int = _field(10, check=AT_LEAST_1, resume="free")
    batch_size: int = _field(32, check=AT_LEAST_1, resume="fixed", doc="global batch in images")
    device: str = _field("auto", validate=_check_device, resume="free", doc="auto, cpu, cuda, cuda:<index> or mps")
    precision: str = _field("auto", choices=lambda: list(PRECISIONS))
    compile: bool = _field(False, resume="free")
    max_steps: int | None = _field(None, check=AT_LEAST_1, resume="free")
    time_budget_s: float | None = _field(None, check=POSITIVE, resume="free")
    checkpoint_every_steps: int = _field(0, check=NON_NEGATIVE, resume="free", doc="0 = at epoch ends only")
    keep_checkpoints: int = _field(3, check=NON_NEGATIVE, resume="free", doc="0 = keep all")
    resume: str | None = _field(None, resume="free", doc="'auto' or a checkpoint path")
    allow_config_change: bool = _field(False, resume="free",
                                       doc="let a resumed run apply changed optimiser/objective/augmentation")
    overwrite: bool = _field(False, resume="free",
                             doc="start a new run in --out although it holds another run's records and checkpoints "
                                 "(they are deleted first); without it such a directory is refused")
    log_every_steps: int = _field(10, check=AT_LEAST_1, resume="free")
    max_nonfinite_steps: int = _field(10, check=AT_LEAST_1, resume="free")
    progress: bool = _field(True, resume="free")
    tensorboard: bool = _field(True, resume="free")
    threads: int | None = _field(None, check=Range(1, MAX_THREADS), resume="free",
                                 doc="CPU threads (clamped to this machine's cores, with a warning)")
    view_chunk: int | str | None = _field(None, validate=lambda v: _check_view_chunk(v),
                                         doc="views per chunk (per process) of the two-pass backprop: memory stays "
                                             "fixed as views grow; 'auto' from max_activation_gb; null = all at once")
    max_activation_gb: float | None = _field(None, check=POSITIVE,
                                             doc="activation budget of view_chunk=auto (null: half the free "
                                                 "memory of the device, or of the machine on a CPU)")


@dataclass
class EvalConfig:
    knn_every_epochs: int = _field(1, check=NON_NEGATIVE, resume="free", doc="0 = no online kNN")
    knn_k: int = _field(200, check=AT_LEAST_1, resume="free")
    knn_temperature: float = _field(0.1, check=POSITIVE, resume="free")
    knn_max_train: int = _field(10000, check=AT_LEAST_1, resume="free")
    final: bool = _field(True, resume="free", doc="kNN on the test split at the end")
    geometry_every_epochs: int = _field(0, check=NON_NEGATIVE, resume="free",
                                        doc="manifold geometry on a validation subset every N epochs (augmentation "
                                            "and class manifolds' capacity, radius, dimension; participation "
                                            "ratio, power-law alpha); 0 = off")
    geometry_images: int = _field(500, check=AT_LEAST_1, resume="free",
                                  doc="validation images of the geometry subset (class manifolds, spectrum)")
    geometry_manifolds: int = _field(50, check=AT_LEAST_1, resume="free",
                                     doc="subset images whose augmentation manifolds are measured")
    geometry_views: int = _field(16, check=AT_LEAST_1, resume="free", doc="views per augmentation manifold")


@dataclass
class RunConfig:
    name: str = _field("run", validate=lambda v: _check_name(v), resume="free",
                       doc="run name: runs/<name>-<time>/ when --out is not given")
    seed: int = _field(0, check=SEED, resume="fixed")
    out: str | None = _field(None, resume="free", doc="run directory")
    data: DataConfig = _section(DataConfig)
    augment: AugmentConfig = _section(AugmentConfig)
    temporal: TemporalConfig = _section(TemporalConfig)
    model: ModelConfig = _section(ModelConfig)
    objective: ObjectiveConfig = _section(ObjectiveConfig)
    optim: OptimConfig = _section(OptimConfig)
    train: TrainConfig = _section(TrainConfig)
    eval: EvalConfig = _section(EvalConfig)

    # ---------------------------------------------------------------------------------- conversions
    @classmethod
    def from_dict(cls, data: dict) -> RunConfig:
        """A validated config from a nested mapping (missing keys take their defaults)."""
        cfg = _build(cls, data, "")
        validate(cfg)
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with ``section.key`` paths set (``cfg.replace(**{"train.epochs": 3})``), validated."""
        data = self.to_dict()
        for path, value in changes.items():
            _merge(data, _nest(path, value))
        return RunConfig.from_dict(data)


_SECTION_TYPES = {}


def _hints(cls) -> dict[str, Any]:
    if cls not in _SECTION_TYPES:
        _SECTION_TYPES[cls] = typing.get_type_hints(cls)
    return _SECTION_TYPES[cls]


def _build(cls, data: Any, prefix: str):
    if not isinstance(data, dict):
        first = dataclasses.fields(cls)[0].name
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} is a section; set its fields, e.g. "
                          f"{prefix}{first}=...")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        valid = ", ".join(sorted(names))
        raise ConfigError(f"unknown config key {prefix + str(unknown[0])!r}; valid keys here: {valid}")
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        typ, path = hints[key], prefix + key
        if dataclasses.is_dataclass(typ):
            kwargs[key] = _build(typ, value, path + ".")
        else:
            kwargs[key] = _check_field(path, typ, names[key].metadata, value)
    return cls(**kwargs)


def _optional(typ) -> tuple[Any, bool]:
    args = typing.get_args(typ)
    if typing.get_origin(typ) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else functools.reduce(operator.or_, rest)), True
    return typ, False


def _number(path: str, value: Any, want: type) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path} must be {'an integer' if want is int else 'a number'}, got {value!r}")
    if want is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _check_field(path: str, typ, meta, value: Any) -> Any:
    base, optional = _optional(typ)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path} cannot be null")
    origin = typing.get_origin(base)
    if origin in (typing.Union, types.UnionType):  # int | str: a number of something, or a keyword
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{path} must be an integer or a keyword, got {value!r}")
        out = value
    elif base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        out = value
    elif base in (int, float):
        out = _number(path, value, base)
    elif base is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # a folder called 2024, say
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        out = value
    elif base is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        out = dict(value)
    elif origin is list:
        (item,) = typing.get_args(base)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list of {item.__name__}s, got {value!r}")
        out = [_number(f"{path}[{i}]", v, item) for i, v in enumerate(value)]
    else:  # pragma: no cover - the schema only uses the types above
        raise TypeError(f"unsupported config type {typ} at {path}")
    check: Range | None = meta.get("check")
    if check is not None:
        integer = base is int or (origin is list and typing.get_args(base) == (int,))
        for v in out if isinstance(out, list) else [out]:
            if not check.ok(v):
                raise ConfigError(f"{path} must be {check.describe(integer)}, got {v!r}")
    choices = meta.get("choices")
    if choices is not None and out not in choices():
        raise ConfigError(f"invalid value {out!r} for {path}; choose one of {', '.join(choices())}")
    validator = meta.get("validate")
    if validator is not None:
        hint = validator(out)
        if hint:
            raise ConfigError(f"invalid value {out!r} for {path}; {hint}")
    return out


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that single values cannot express."""
    if cfg.model.momentum.enabled and cfg.objective.name != "mmcr":
        raise ConfigError("model.momentum.enabled is supported with objective.name=mmcr only")
    from mmcr.models import SMALL_BACKBONES

    if cfg.model.backbone in SMALL_BACKBONES and not cfg.model.cifar_stem:
        raise ConfigError(
            f"model.backbone={cfg.model.backbone} always has the CIFAR stem (3x3 stride-1 conv, no max-pool); "
            "set model.cifar_stem=true or choose a torchvision ResNet for the ImageNet stem"
        )
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas must be two numbers like [0.9, 0.999], got {cfg.optim.betas}")
    scale = cfg.augment.small_scale
    if len(scale) != 2 or scale[0] > scale[1]:
        raise ConfigError(f"augment.small_scale must be an increasing pair like [0.05, 0.4], got {scale}")
    size = cfg.data.options.get("size")
    if size is not None:
        Range(1, MAX_IMAGE_SIZE).check("data.options.size", size, integer=True, error=ConfigError)
    if cfg.train.overwrite and cfg.train.resume is not None:
        raise ConfigError(f"train.overwrite=true starts a new run in place of the old one, so it cannot go with "
                          f"train.resume={cfg.train.resume} (--resume); drop one of them")
    _validate_temporal(cfg.temporal)
    _validate_augment(cfg.augment)


def _validate_augment(a: AugmentConfig) -> None:
    """augment.overrides are checked by the augmentation itself (names and values, e.g. the affine keys),
    here once so that a bad value is a one-line config error before any data is loaded."""
    from mmcr.augment import MultiViewAugment  # imported here: mmcr.augment reads check_seed from this module

    try:
        MultiViewAugment(a.preset, views=1, seed=0, **a.overrides)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"augment.overrides: {e}") from e


def _validate_temporal(t: TemporalConfig) -> None:
    if t.unit == "frames" and not float(t.window).is_integer():
        raise ConfigError(f"temporal.window must be a whole number of frames with temporal.unit=frames, got {t.window}")
    if t.segment is not None and t.segment < t.window:
        raise ConfigError(f"temporal.segment ({t.segment}) must be at least temporal.window ({t.window})")
    if t.unit == "frames" and t.window == 1 and t.spatial == "none":
        raise ConfigError("temporal.window=1 with temporal.spatial=none makes every view the same frame; set "
                          "temporal.spatial=frame (augmentation-only MMCR on frames) or a longer window")


# ------------------------------------------------------------------------------------ YAML + CLI
def available_presets() -> list[str]:
    """The shipped run presets: the YAML files in ``mmcr/configs``."""
    folder = resources.files("mmcr") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> Path:
    return Path(str(resources.files("mmcr") / "configs" / f"{name}.yaml"))


def _looks_numeric(s: str) -> bool:
    # YAML 1.1 reads "2e-3" as a string; accept it as the number every user means.
    try:
        float(s)
    except ValueError:
        return False
    return s.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _normalise_numbers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _normalise_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_normalise_numbers(v) for v in node]
    if isinstance(node, str) and _looks_numeric(node):
        return float(node)
    return node


def _nest(path: str, value: Any) -> dict:
    out: dict = {}
    node = out
    parts = path.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override key {path!r} must look like section.key, e.g. optim.lr")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def parse_override(text: str) -> dict:
    """``"optim.lr=2e-3"`` -> ``{"optim": {"lr": 0.002}}``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=2e-3")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read the value of override {text!r} as YAML ({_yaml_problem(e)}); "
                          "quote strings and close brackets, e.g. model.projector.hidden=[64,32]") from e
    return _nest(key, _normalise_numbers(value))


def _merge(base: dict, update: dict) -> dict:
    """Deep merge of plain mappings (unknown keys are left for the schema to reject with a message)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: str | Path) -> dict:
    """A YAML file of config sections as a dict; syntax errors become one-line ConfigErrors."""
    path = Path(path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {_yaml_problem(e)}; fix the file") from e
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror}); check the path") from e
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config sections (data:, model:, train:, ...)")
    return _normalise_numbers(data)


def load_config(preset: str | Path | None = "digits", overrides: list[str] | None = None) -> RunConfig:
    """Resolve a run config: defaults <- preset (shipped name or YAML path) <- ``key=value`` overrides."""
    data: dict = {}
    if preset is not None:
        path = Path(preset)
        if not (path.suffix in (".yaml", ".yml") and path.exists()):
            if str(preset) not in available_presets():
                raise ConfigError(
                    f"unknown preset {str(preset)!r}; choose one of {', '.join(available_presets())} "
                    "or give a YAML file path"
                )
            path = preset_path(str(preset))
        data = read_yaml(path)
    for text in overrides or []:
        _merge(data, parse_override(text))
    return RunConfig.from_dict(data)


def read_run_config(path: str | Path) -> RunConfig:
    """The config of a run directory (``config.yaml``) or a config file."""
    path = Path(path)
    if path.is_dir():
        from mmcr.run.layout import CONFIG_FILE

        path = path / CONFIG_FILE
    return RunConfig.from_dict(read_yaml(path))


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    from mmcr.run.files import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------------------ differences
def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and not prefix.endswith(("options.", "overrides.", "kwargs.")):
        out = {}
        for k, v in node.items():
            if isinstance(v, dict) and k in ("options", "overrides", "kwargs"):
                out[prefix + k] = v
            else:
                out.update(_flatten(v, prefix + k + "."))
        return out
    return {prefix.rstrip("."): node}


def _resume_rule(path: str) -> str:
    cls: Any = RunConfig
    rule = "apply"
    for part in path.split("."):
        f = {x.name: x for x in dataclasses.fields(cls)}[part]
        rule = f.metadata.get("resume") or rule
        cls = _hints(cls)[part]
    return rule


@dataclass
class ConfigChange:
    path: str
    old: Any
    new: Any
    rule: str  # free | apply | fixed

    def __str__(self) -> str:
        return f"{self.path}: {self.old!r} -> {self.new!r}"


def config_changes(old: RunConfig, new: RunConfig) -> list[ConfigChange]:
    """Every field that differs between two configs, with its resume rule."""
    a, b = _flatten(old.to_dict()), _flatten(new.to_dict())
    return [ConfigChange(k, a.get(k), b.get(k), _resume_rule(k)) for k in a if a.get(k) != b.get(k)]


def describe_fields() -> list[tuple[str, Any, str]]:
    """``(path, default, description)`` for every field, for help texts and docs."""
    out: list[tuple[str, Any, str]] = []

    def walk(cls, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            typ = _hints(cls)[f.name]
            if dataclasses.is_dataclass(typ):
                walk(typ, prefix + f.name + ".")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            parts = [f.metadata.get("doc") or ""]
            if f.metadata.get("check") is not None:
                integer = _optional(typ)[0] is int or typing.get_args(typ) == (int,)
                parts.append(f"{f.metadata['check'].describe(integer)}")
            if f.metadata.get("choices") is not None:
                parts.append("one of " + ", ".join(f.metadata["choices"]()))
            out.append((prefix + f.name, default, "; ".join(p for p in parts if p)))

    walk(RunConfig, "")
    return out
