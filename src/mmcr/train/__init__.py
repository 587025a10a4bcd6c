"""Pretraining: the trainer loop, its step, state, hooks and resume rules, optimisers and schedules.

The run description (config) lives in :mod:`mmcr.run`; distributed helpers in :mod:`mmcr.distributed`.
"""

from mmcr.run.config import ConfigError, RunConfig, load_config
from mmcr.train.hooks import Interrupted, NonFiniteLossError
from mmcr.train.optim import LARS, LR_SCHEDULES, OPTIMIZERS, build_optimizer, build_scheduler, lr_factor
from mmcr.train.trainer import train, train_one_epoch

__all__ = [
    "LARS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "ConfigError",
    "Interrupted",
    "NonFiniteLossError",
    "RunConfig",
    "build_optimizer",
    "build_scheduler",
    "load_config",
    "lr_factor",
    "train",
    "train_one_epoch",
]
