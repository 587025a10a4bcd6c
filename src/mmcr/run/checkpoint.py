"""Checkpoints that survive kills, full disks and corruption.

A checkpoint is one ``torch.save``d dict tagged with :data:`CHECKPOINT_FORMAT`, written atomically
(:mod:`mmcr.run.files`). The newest ``keep`` are kept. Readers take the newest one that loads; a
resuming run moves unreadable files aside (``checkpoints/corrupt/``) so that they never outrank, and
never cause the rotation to delete, a good checkpoint.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch

from mmcr.run import layout
from mmcr.run.files import save_torch_atomic

CHECKPOINT_FORMAT = "mmcr-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read; the message names the file and what to do."""


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int) -> Path:
    """Write ``checkpoints/ckpt_<step>.pt`` atomically, then delete all but the newest ``keep``
    (``keep`` <= 0: keep all). The file just written is never deleted."""
    path = layout.checkpoint_path(run_dir, step)
    save_torch_atomic({"format": CHECKPOINT_FORMAT, **state}, path, what=f"checkpoint {path.name}")
    if keep > 0:
        others = [p for _, p in layout.list_checkpoints(run_dir) if p != path]
        for old in others[: max(len(others) - (keep - 1), 0)]:
            old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load one checkpoint file; a missing, unreadable or foreign file raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} not found; give a run directory or an existing .pt file")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a checkpoint file, or the run directory as the source")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated zip, random bytes, a data file given by mistake, ...
        reason = (str(e).splitlines() or [type(e).__name__])[0].split(". ")[0]
        raise CheckpointError(f"{path} is not a readable checkpoint ({reason[:160]}); give an mmcr checkpoint "
                              "or run directory") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mmcr checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    return state


def _move_aside(path: Path, run_dir: Path, folder: str) -> Path:
    dest_dir = layout.checkpoint_dir(run_dir) / folder
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / path.name
    n = 1
    while dest.exists():
        dest = dest_dir / f"{path.name}.{n}"
        n += 1
    shutil.move(str(path), dest)
    return dest


def load_latest(
    run_dir: str | Path, map_location: str | torch.device = "cpu", move_corrupt: bool = False
) -> tuple[dict, Path] | None:
    """The newest checkpoint of ``run_dir`` that loads, or None. Unreadable files are skipped with a
    warning; with ``move_corrupt`` (a run resuming in its own directory) they are moved to
    ``checkpoints/corrupt/``."""
    run_dir = Path(run_dir)
    for _, path in reversed(layout.list_checkpoints(run_dir)):
        try:
            return read_checkpoint(path, map_location), path
        except CheckpointError as e:
            if move_corrupt:
                dest = _move_aside(path, run_dir, layout.CORRUPT_DIR)
                warnings.warn(f"{e}; moved it to {dest}", stacklevel=2)
            else:
                warnings.warn(f"skipping it: {e}", stacklevel=2)
    return None


def supersede_newer(run_dir: str | Path, step: int) -> list[Path]:
    """Move checkpoints newer than ``step`` to ``checkpoints/superseded/`` (a run resumed from an
    older checkpoint starts a new timeline; the old one's files must not outrank it)."""
    run_dir = Path(run_dir)
    return [_move_aside(p, run_dir, layout.SUPERSEDED_DIR) for s, p in layout.list_checkpoints(run_dir) if s > step]


def find_checkpoint(source: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, Path]:
    """A checkpoint from a run directory (its newest readable one) or a checkpoint file."""
    path = Path(source)
    if path.is_dir():
        if not layout.list_checkpoints(path):
            raise CheckpointError(f"no checkpoints in {layout.checkpoint_dir(path)}; give a checkpoint file or a "
                                  "run directory that has trained at least to its first checkpoint")
        found = load_latest(path, map_location)
        if found is None:
            raise CheckpointError(f"none of the checkpoints in {layout.checkpoint_dir(path)} can be read; resume the "
                                  "run (--resume auto) to write a new one")
        return found
    return read_checkpoint(path, map_location), path
