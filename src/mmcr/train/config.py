"""One config object per run: defaults, YAML presets shipped in the package, ``--set a.b=value``
overrides, and validation that names the valid choices.

A config is a plain nested dict (saved as ``config.yaml`` in every run directory); the schema is the
DEFAULTS tree below: a key that is not in it is rejected, and a value must have the default's type.
Sections whose contents are free-form (``augment.overrides``, ``objective.kwargs``) are checked by the
component that consumes them.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "seed": 0,
    "out": None,
    "data": {
        "name": "digits",
        "root": None,
        "train_split": "train",
        "test_split": "test",
        "options": {},
        "val_fraction": 0.1,
        "cache_dir": None,
        "num_workers": 0,
    },
    "augment": {"preset": "cifar", "views": 8, "overrides": {}},
    "model": {
        "backbone": "resnet_tiny",
        "cifar_stem": True,
        "zero_init_residual": False,
        "projector": {"hidden": [128], "out_dim": 64},
        "channels_last": False,
        "sync_bn": False,
        "momentum": {"enabled": False, "tau": 0.99, "schedule": "constant"},
    },
    "objective": {"name": "mmcr", "kwargs": {}},
    "optim": {
        "name": "adam",
        "lr": 1e-3,
        "scale_lr": False,
        "weight_decay": 1e-6,
        "momentum": 0.9,
        "betas": [0.9, 0.999],
        "lars_eta": 1e-3,
        "warmup_epochs": 0.0,
        "schedule": "constant",
        "final_lr_ratio": 1e-3,
        "grad_clip": None,
    },
    "train": {
        "epochs": 10,
        "batch_size": 32,
        "device": "auto",
        "precision": "auto",
        "compile": False,
        "max_steps": None,
        "time_budget_s": None,
        "checkpoint_every_steps": 0,
        "keep_checkpoints": 3,
        "resume": None,
        "log_every_steps": 10,
        "max_nonfinite_steps": 10,
        "progress": True,
        "tensorboard": True,
        "threads": None,
    },
    "eval": {
        "knn_every_epochs": 1,
        "knn_k": 200,
        "knn_temperature": 0.1,
        "knn_max_train": 10000,
        "final": True,
    },
}

CHOICES: dict[str, tuple] = {
    "optim.name": ("adam", "adamw", "sgd", "lars"),
    "optim.schedule": ("constant", "cosine"),
    "train.precision": ("auto", "fp32", "bf16", "fp16", "fp64"),
    "model.momentum.schedule": ("constant", "cosine"),
    "objective.name": ("mmcr", "simclr", "barlow_twins", "vicreg"),
    "augment.preset": ("cifar", "stl10", "byol", "eval"),
    "data.name": ("digits", "cifar10", "cifar100", "stl10", "imagefolder", "archive", "npz"),
}
# Keys whose value may be None or a number (checked as numbers when set).
_OPTIONAL_NUMBERS = {
    "optim.grad_clip",
    "train.max_steps",
    "train.time_budget_s",
    "train.threads",
}
_OPTIONAL_STRINGS = {"out", "data.root", "data.cache_dir", "train.resume"}
_FREE_FORM = {"data.options", "augment.overrides", "objective.kwargs"}

PRESETS = (
    "digits",
    "cifar10",
    "cifar10-mini",
    "cifar100",
    "cifar100-mini",
    "stl10",
    "stl10-mini",
    "imagenet100",
    "imagenet100-mini",
    "imagenet",
    "imagenet-mini",
)


class ConfigError(ValueError):
    """A config key or value that is not valid; the message lists what is."""


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in base:
            valid = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key {path!r}; valid keys here: {valid}")
        if path in _FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{path} must be a mapping, got {value!r}")
            base[key] = {**base[key], **value}
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} is a section; set its fields, e.g. {path}.{next(iter(base[key]))}=...")
            _merge(base[key], value, path + ".")
        else:
            base[key] = _check_value(path, base[key], value)
    return base


def _check_value(path: str, default: Any, value: Any) -> Any:
    if path in CHOICES and value not in CHOICES[path]:
        raise ConfigError(f"invalid value {value!r} for {path}; choose one of {', '.join(CHOICES[path])}")
    if value is None:
        if default is None or path in _OPTIONAL_NUMBERS or path in _OPTIONAL_STRINGS:
            return None
        raise ConfigError(f"{path} cannot be null (default {default!r})")
    if path in _OPTIONAL_NUMBERS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number or null, got {value!r}")
        return value
    if path in _OPTIONAL_STRINGS or default is None:
        return str(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be true or false, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"{path} must be an integer, got {value!r}")
            value = int(value)
        return type(default)(value) if isinstance(default, float) else value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{path} must be a list like {default!r}, got {value!r}")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{path} must be a string, got {value!r}")
    return value


def parse_override(text: str) -> dict:
    """``"optim.lr=2e-3"`` -> ``{"optim": {"lr": 0.002}}``; the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=2e-3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def _looks_numeric(s: str) -> bool:
    # YAML 1.1 reads "2e-3" as a string; accept it as the number every user means.
    try:
        float(s)
        return True
    except ValueError:
        return False


def preset_path(name: str) -> Path:
    return Path(str(resources.files("mmcr") / "configs" / f"{name}.yaml"))


def load_config(preset: str | Path | None = "digits", overrides: list[str] | None = None) -> dict:
    """Resolve a run config: DEFAULTS <- preset (shipped name or YAML path) <- overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if preset is not None:
        path = Path(preset)
        if not (path.suffix in (".yaml", ".yml") and path.exists()):
            if str(preset) not in PRESETS:
                raise ConfigError(
                    f"unknown preset {str(preset)!r}; choose one of {', '.join(PRESETS)} or give a YAML file path"
                )
            path = preset_path(str(preset))
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        data = _normalise_numbers(data)
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections")
        _merge(cfg, data)
    for text in overrides or []:
        _merge(cfg, parse_override(text))
    validate(cfg)
    return cfg


def _normalise_numbers(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _normalise_numbers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_normalise_numbers(v) for v in node]
    if isinstance(node, str) and _looks_numeric(node) and not node.strip().isalpha():
        return float(node)
    return node


def validate(cfg: dict) -> None:
    """Cross-field checks that single values cannot express."""
    if cfg["augment"]["views"] < 1:
        raise ConfigError(f"augment.views must be >= 1, got {cfg['augment']['views']}")
    if cfg["train"]["batch_size"] < 1:
        raise ConfigError(f"train.batch_size must be >= 1, got {cfg['train']['batch_size']}")
    if cfg["train"]["epochs"] < 1 and cfg["train"]["max_steps"] is None:
        raise ConfigError("train.epochs must be >= 1 (or set train.max_steps)")
    if cfg["optim"]["lr"] <= 0:
        raise ConfigError(f"optim.lr must be positive, got {cfg['optim']['lr']}")
    if not 0.0 <= cfg["data"]["val_fraction"] < 1.0:
        raise ConfigError(f"data.val_fraction must lie in [0, 1), got {cfg['data']['val_fraction']}")
    if cfg["model"]["momentum"]["enabled"] and cfg["objective"]["name"] != "mmcr":
        raise ConfigError("model.momentum.enabled is supported with objective.name=mmcr only")


def dump_config(cfg: dict, path: str | Path) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
