"""A run's typed description (:mod:`.config`): every key of a pretraining run, its defaults, ranges and
resume rules. Where a run's files live and how they are written is :mod:`mmcr.rundir`."""

from mmcr.run.config import ConfigError, RunConfig, available_presets, load_config, read_run_config

__all__ = ["ConfigError", "RunConfig", "available_presets", "load_config", "read_run_config"]
