"""A run: its typed description (:mod:`.config`), its directory layout (:mod:`.layout`), its
checkpoints (:mod:`.checkpoint`), files written atomically (:mod:`.files`) and its report
(:mod:`.report`). Training writes runs; evaluation, analysis and export read them through here."""

from mmcr.run.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    InvalidCheckpointError,
    UnsafeCheckpointError,
    find_checkpoint,
    load_latest,
    save_checkpoint,
)
from mmcr.run.config import ConfigError, RunConfig, available_presets, load_config, read_run_config
from mmcr.run.files import RunFileError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "ConfigError",
    "InvalidCheckpointError",
    "RunConfig",
    "RunFileError",
    "UnsafeCheckpointError",
    "available_presets",
    "find_checkpoint",
    "load_config",
    "load_latest",
    "read_run_config",
    "save_checkpoint",
]
