"""Checkpoints that survive being killed: written to a temporary file, flushed, then renamed over
the target (atomic on POSIX), the newest N kept, and resume picks the newest one that loads."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from mmcr.models.loading import CHECKPOINT_FORMAT


def checkpoint_name(step: int) -> str:
    return f"ckpt_{step:08d}.pt"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``: a reader
    (or a resumed run) never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(state: dict, run_dir: str | Path, step: int, keep: int) -> Path:
    """Write ``checkpoints/ckpt_<step>.pt`` and delete all but the newest ``keep`` (keep <= 0: all)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    path = ckpt_dir / checkpoint_name(step)
    save_atomic({"format": CHECKPOINT_FORMAT, **state}, path)
    if keep > 0:
        for old in sorted(ckpt_dir.glob("ckpt_*.pt"))[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, Path] | None:
    """The newest checkpoint of ``run_dir`` that loads and carries our format; corrupt files are
    skipped with a warning. None when there is none."""
    for path in sorted((Path(run_dir) / "checkpoints").glob("ckpt_*.pt"), reverse=True):
        try:
            state = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e:  # a truncated file from a crash during a non-atomic copy, say
            warnings.warn(f"skipping unreadable checkpoint {path} ({type(e).__name__}: {e})", stacklevel=2)
            continue
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            return state, path
        warnings.warn(f"skipping {path}: not an mmcr checkpoint", stacklevel=2)
    return None


def load_checkpoint_file(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} not found; use --resume auto to pick the newest in the run directory")
    state = torch.load(path, map_location=map_location, weights_only=False)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an mmcr checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    return state
