"""A run's directory: its layout (:mod:`.layout`), checkpoints (:mod:`.checkpoint`), files written
atomically (:mod:`.files`) and its report (:mod:`.report`). The bottom layer: training writes here,
evaluation, analysis and export read from here, and it imports nothing above it."""

from mmcr.rundir.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    InvalidCheckpointError,
    UnsafeCheckpointError,
    find_checkpoint,
    load_latest,
    save_checkpoint,
)
from mmcr.rundir.files import RunFileError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "InvalidCheckpointError",
    "RunFileError",
    "UnsafeCheckpointError",
    "find_checkpoint",
    "load_latest",
    "save_checkpoint",
]
