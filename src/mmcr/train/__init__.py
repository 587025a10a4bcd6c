"""Pretraining: config, the trainer loop, optimisers and schedules, checkpoints, distributed set-up."""

from mmcr.train.config import DEFAULTS, PRESETS, ConfigError, load_config
from mmcr.train.optim import LARS, build_optimizer, build_scheduler, lr_factor
from mmcr.train.trainer import NonFiniteLossError, train

__all__ = [
    "DEFAULTS",
    "LARS",
    "PRESETS",
    "ConfigError",
    "NonFiniteLossError",
    "build_optimizer",
    "build_scheduler",
    "load_config",
    "lr_factor",
    "train",
]
