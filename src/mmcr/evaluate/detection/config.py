"""The detection protocol's settings as a :mod:`mmcr.schema` section tree (:class:`DetectionConfig`; its
defaults are the ``voc-c4`` preset), YAML files and ``--set`` overrides merged onto it and checked, and
each protocol's schedule (training sets, test set, iterations, decay steps)."""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path

from mmcr.schema import (
    AT_LEAST_1,
    FRACTION,
    FRACTION_OPEN,
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
    Range,
    build,
    merge,
    option,
    parse_override,
    read_yaml,
    section,
    subsection,
    to_dict,
)

UNIT_OPEN_LOW = Range(0, 1, lo_open=True)  # (0, 1]

DETECTION_PRESETS = ("voc-c4",)
NORMS = ("sync", "frozen")
CHOICES = {"model.norm": NORMS}
IMAGE_SET = re.compile(r"^[^/]+/[^/]+$")


def detection_preset_path(name: str) -> Path:
    return Path(str(resources.files("mmcr") / "configs" / "detection" / f"{name}.yaml"))


def _image_sets(sets: list[str]) -> str | None:
    if sets and all(IMAGE_SET.match(s) for s in sets):
        return None
    return "give 'YEAR/SET' image sets like ['2007/trainval']"


def _increasing(values: list) -> str | None:
    return None if values and values == sorted(values) else "give an increasing, non-empty list"


@section
class ProtocolConfig:
    """One protocol (``--protocol NAME``): training image sets, test set, iterations, lr decay steps."""

    train: list[str] = option(["2007/trainval"], validate=_image_sets, doc="training image sets, 'YEAR/SET'")
    test: str = option("2007/test", validate=lambda s: _image_sets([s]), doc="test image set, 'YEAR/SET'")
    iterations: int = option(7200, check=NON_NEGATIVE, doc="schedule length")
    steps: list[int] = option([5400, 6600], check=NON_NEGATIVE,
                              validate=lambda v: None if v == sorted(v) else "give increasing iterations",
                              doc="iterations where the lr is multiplied by solver.gamma")


#: The preset's protocols: the paper's 07+12 (VOC2007+2012 trainval -> VOC2007 test) and 07 alone (no
#: canonical SSL schedule exists for it; it keeps the 07+12 schedule's epochs, ~23, and step fractions).
PROTOCOLS = {
    "voc07+12": {"train": ["2007/trainval", "2012/trainval"], "test": "2007/test", "iterations": 24000,
                 "steps": [18000, 22000]},
    "voc07": {"train": ["2007/trainval"], "test": "2007/test", "iterations": 7200, "steps": [5400, 6600]},
}


@section
class DetectionModelConfig:
    norm: str = option("sync", choices=lambda: list(NORMS),
                       doc="sync: BatchNorm statistics over all ranks' images; frozen: FrozenBatchNorm everywhere")
    extra_norm: bool = option(True, doc="a norm layer after res5 in the box head (MoCo's Res5ROIHeadsExtraNorm)")
    roi_resolution: int = option(14, check=AT_LEAST_1, doc="RoIAlign output at stride 16; res5 halves it")
    anchor_sizes: list[int] = option([32, 64, 128, 256, 512], check=AT_LEAST_1, validate=_increasing,
                                     doc="anchor sides in pixels")
    aspect_ratios: list[float] = option([0.5, 1.0, 2.0], check=POSITIVE, validate=_increasing,
                                        doc="anchor aspect ratios")
    rpn_pre_nms_top_n_train: int = option(12000, check=AT_LEAST_1)
    rpn_post_nms_top_n_train: int = option(2000, check=AT_LEAST_1)
    rpn_pre_nms_top_n_test: int = option(6000, check=AT_LEAST_1)
    rpn_post_nms_top_n_test: int = option(1000, check=AT_LEAST_1)
    rpn_batch_size_per_image: int = option(256, check=AT_LEAST_1)
    roi_batch_size_per_image: int = option(512, check=AT_LEAST_1)
    roi_positive_fraction: float = option(0.25, check=UNIT_OPEN_LOW)
    score_thresh_test: float = option(0.05, check=FRACTION)
    nms_thresh_test: float = option(0.5, check=FRACTION)
    detections_per_image: int = option(100, check=AT_LEAST_1)


@section
class DetectionInputConfig:
    min_size_train: list[int] = option([480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800], check=AT_LEAST_1,
                                       validate=lambda v: None if v else "give at least one size",
                                       doc="shorter side, one drawn per image")
    max_size_train: int = option(1333, check=AT_LEAST_1)
    min_size_test: int = option(800, check=AT_LEAST_1)
    max_size_test: int = option(1333, check=AT_LEAST_1)
    flip: bool = option(True, doc="horizontal flip with probability 0.5")
    keep_difficult: bool = option(True, doc="difficult objects stay training targets (detectron2's VOC loader); "
                                            "always ignored in evaluation")


@section
class SolverConfig:
    batch_size: int = option(16, check=AT_LEAST_1,
                             doc="images per iteration over all ranks; scale lr linearly when changing it")
    lr: float = option(0.02, check=POSITIVE)
    momentum: float = option(0.9, check=FRACTION_OPEN)
    weight_decay: float = option(1e-4, check=NON_NEGATIVE)
    weight_decay_norm: float = option(0.0, check=NON_NEGATIVE, doc="on BatchNorm weights and biases")
    warmup_iters: int = option(100, check=NON_NEGATIVE)
    warmup_factor: float = option(0.001, check=UNIT_OPEN_LOW, doc="linear warmup from lr * warmup_factor")
    gamma: float = option(0.1, check=UNIT_OPEN_LOW, doc="lr factor at each of the protocol's steps")
    amp: bool = option(False, doc="bfloat16 autocast (CUDA only); the protocol trains in float32")
    precise_bn_iters: int = option(200, check=NON_NEGATIVE,
                                   doc="recompute BatchNorm statistics over this many training batches before testing")
    checkpoint_every: int = option(1000, check=NON_NEGATIVE)
    log_every: int = option(20, check=AT_LEAST_1)
    test_batch_per_rank: int = option(1, check=AT_LEAST_1)
    num_workers: int = option(4, check=NON_NEGATIVE, doc="image-decoding workers per rank")


@section
class DetectionConfig:
    """``mmcr eval detection``: Faster R-CNN R50-C4 on PASCAL VOC. The defaults are the ``voc-c4`` preset
    (MoCo's detectron2 config pascal_voc_R_50_C4_24k_moco); ``configs/detection/voc-c4.yaml`` is the same
    preset as a readable file (a test keeps the two equal)."""

    protocols: dict = option(PROTOCOLS, doc="--protocol NAME -> {train, test, iterations, steps}")
    model: DetectionModelConfig = subsection(DetectionModelConfig)
    input: DetectionInputConfig = subsection(DetectionInputConfig)
    solver: SolverConfig = subsection(SolverConfig)

    def check(self) -> None:
        for name, p in self.protocols.items():
            given = p if isinstance(p, dict) else {}
            missing = [k for k in ("train", "test", "iterations", "steps") if k not in given]
            if missing:
                raise ConfigError(f"protocols.{name} needs the fields train, test, iterations, steps; missing "
                                  f"{', '.join(missing)}")
            build(ProtocolConfig, p, f"protocols.{name}.")


def detection_config(config: str | Path | None = None, overrides: list[str] | None = None) -> DetectionConfig:
    """The ``voc-c4`` defaults <- ``config`` (a YAML file with fields to change, or a shipped preset
    name) <- ``--set`` style overrides (``"solver.lr=0.01"``), checked by the schema: unknown keys,
    types, ranges and choices are refused by name. A protocol given in part keeps the preset's other
    fields; a new one is given whole."""
    data = to_dict(DetectionConfig())
    if config is not None:
        path = Path(config)
        if not path.is_file():
            if str(config) not in DETECTION_PRESETS:
                raise ConfigError(f"detection config {str(config)!r} not found; give a YAML file or one of "
                                  f"{', '.join(DETECTION_PRESETS)}")
            path = detection_preset_path(str(config))
        merge(data, read_yaml(path, what="detection config sections (model:, input:, solver:, protocols:)"))
    for text in overrides or []:
        merge(data, parse_override(text))
    return DetectionConfig.from_dict(data)


def load_detection_config(config: str | Path | None = None, overrides: list[str] | None = None) -> dict:
    """:func:`detection_config` as the plain mapping a detection run records in its ``config.yaml`` and
    compares on resume."""
    return to_dict(detection_config(config, overrides))


def flag_overrides(overrides: list[str] | None, flags: dict[str, tuple[str, object]]) -> list[str]:
    """``overrides`` plus ``key=value`` for each given flag (``{key: (flag, value)}``, None = not given); a
    flag that contradicts an override of the same key is refused by name."""
    given: dict = {}
    for text in overrides or []:
        merge(given, parse_override(text))
    out = list(overrides or [])
    for key, (flag, value) in flags.items():
        if value is None:
            continue
        section_, name = key.split(".")
        other = given.get(section_, {}).get(name) if isinstance(given.get(section_), dict) else None
        if other is not None and other != value:
            raise ConfigError(f"{flag} {value} contradicts {key}={other} (from --set); give {key} once")
        out.append(f"{key}={value}")
    return out


def protocol_schedule(cfg: dict, protocol: str, iterations: int | None = None) -> dict:
    """The protocol's entry, with ``iterations`` overriding its length: the decay steps keep their
    fractions of the schedule (the warmup keeps its ``solver.warmup_iters``)."""
    if protocol not in cfg["protocols"]:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(cfg['protocols'])}")
    p = copy.deepcopy(cfg["protocols"][protocol])
    if iterations is not None:
        if iterations < 0:
            raise ValueError(f"--iterations must be >= 0, got {iterations}")
        base = max(p["iterations"], 1)
        p["steps"] = [round(s * iterations / base) for s in p["steps"]]
        p["iterations"] = iterations
    return p
