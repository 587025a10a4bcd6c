"""The detection protocol's settings: the shipped ``voc-c4`` preset, YAML files and ``--set`` overrides
merged onto it and checked, and each protocol's schedule (training sets, test set, iterations, decay steps)."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

from mmcr.run.config import ConfigError, parse_override

DETECTION_PRESETS = ("voc-c4",)
CHOICES = {"model.norm": ("sync", "frozen")}


def detection_preset_path(name: str) -> Path:
    return Path(str(resources.files("mmcr") / "configs" / "detection" / f"{name}.yaml"))


def _overlay(base: dict, update: dict, prefix: str = "") -> dict:
    """Merge ``update`` into ``base``: only keys the preset has, each with the preset value's type."""

    if not isinstance(update, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {update!r}")
    for key, value in update.items():
        path = f"{prefix}{key}"
        if prefix == "protocols." and key not in base:
            base[key] = value  # a new protocol, checked whole by _check_protocol
            continue
        if key not in base:
            raise ConfigError(f"unknown detection config key {path!r}; valid keys here: {', '.join(sorted(base))}")
        old = base[key]
        if isinstance(old, dict):
            _overlay(old, value, path + ".")
            continue
        if path in CHOICES and value not in CHOICES[path]:
            raise ConfigError(f"invalid value {value!r} for {path}; choose one of {', '.join(CHOICES[path])}")
        if isinstance(old, bool):
            ok = isinstance(value, bool)
        elif isinstance(old, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(old, int) and isinstance(value, float):
                ok = value.is_integer()
                value = int(value)
        elif isinstance(old, list):
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, type(old))
        if not ok:
            raise ConfigError(f"{path} must be like {old!r}, got {value!r}")
        base[key] = float(value) if isinstance(old, float) else value
    return base


def _check_protocol(name: str, p: dict) -> None:

    if not isinstance(p, dict) or set(p) != {"train", "test", "iterations", "steps"}:
        raise ConfigError(f"protocols.{name} needs exactly the fields train, test, iterations, steps; got {p!r}")
    if not isinstance(p["train"], list) or not p["train"]:
        raise ConfigError(f"protocols.{name}.train must be a list of image sets like ['2007/trainval']")
    sets = [*p["train"], p["test"]]
    for s in sets:
        if not isinstance(s, str) or s.count("/") != 1:
            raise ConfigError(f"protocols.{name}: image sets are 'YEAR/SET' strings like '2007/trainval', got {s!r}")
    it, steps = p.get("iterations"), p.get("steps")
    if not isinstance(it, int) or it < 0:
        raise ConfigError(f"protocols.{name}.iterations must be an integer >= 0, got {it!r}")
    if not isinstance(steps, list) or any(not isinstance(s, int) for s in steps) or steps != sorted(steps):
        raise ConfigError(f"protocols.{name}.steps must be an increasing list of iterations, got {steps!r}")


def load_detection_config(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """The shipped ``voc-c4`` preset <- ``config`` (a YAML file with fields to change, or a shipped
    preset name) <- ``--set`` style overrides (``"solver.lr=0.01"``). Unknown keys and wrong types
    are rejected by name."""

    with open(detection_preset_path("voc-c4")) as f:
        cfg = yaml.safe_load(f)
    if config is not None and str(config) not in DETECTION_PRESETS[:1]:
        path = Path(config)
        if not path.is_file():
            if str(config) in DETECTION_PRESETS:
                path = detection_preset_path(str(config))
            else:
                raise ConfigError(
                    f"detection config {str(config)!r} not found; give a YAML file or one of "
                    f"{', '.join(DETECTION_PRESETS)}"
                )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        _overlay(cfg, data)
    for text in overrides or []:
        _overlay(cfg, parse_override(text))
    for name, p in cfg["protocols"].items():
        _check_protocol(name, p)
    s, i, m = cfg["solver"], cfg["input"], cfg["model"]
    lows = {"solver.batch_size": 1, "solver.test_batch_per_rank": 1, "solver.log_every": 1, "model.roi_resolution": 1}
    lows.update(
        {
            f"solver.{k}": 0
            for k in (
                "warmup_iters",
                "precise_bn_iters",
                "checkpoint_every",
                "num_workers",
                "weight_decay",
                "weight_decay_norm",
                "momentum",
            )
        }
    )
    for key, low in lows.items():
        sec, name = key.split(".")
        if cfg[sec][name] < low:
            raise ConfigError(f"{key} must be >= {low}, got {cfg[sec][name]}")
    if s["lr"] <= 0 or not 0 < s["warmup_factor"] <= 1 or not 0 < s["gamma"] <= 1:
        raise ConfigError("solver.lr must be > 0 and solver.warmup_factor and solver.gamma lie in (0, 1]")
    if not m["anchor_sizes"] or not m["aspect_ratios"] or min(m["anchor_sizes"] + m["aspect_ratios"]) <= 0:
        raise ConfigError("model.anchor_sizes and model.aspect_ratios must be non-empty lists of positive numbers")
    if not i["min_size_train"] or any(not isinstance(v, int) or v < 1 for v in i["min_size_train"]):
        raise ConfigError(f"input.min_size_train must be a list of positive integers, got {i['min_size_train']!r}")
    return cfg


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
