"""The layout of a run directory, spelled once. Every run directory describes itself::

    <run>/config.yaml            the resolved RunConfig
    <run>/metrics.jsonl          one JSON record per logged step or event
    <run>/checkpoints/ckpt_<step>.pt   (unreadable ones are moved to checkpoints/corrupt/)
    <run>/summary.json           the end-of-run summary
    <run>/report.md              pretraining report, then one line per evaluation
    <run>/eval/<kind>_<tag>.json evaluation results
"""

from __future__ import annotations

import re
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
CHECKPOINT_DIR = "checkpoints"
CORRUPT_DIR = "corrupt"  # inside CHECKPOINT_DIR
SUPERSEDED_DIR = "superseded"  # inside CHECKPOINT_DIR: newer checkpoints of a timeline a resume abandoned
EVAL_DIR = "eval"

_CKPT = re.compile(r"^ckpt_(\d+)\.pt$")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"ckpt_{step:08d}.pt"


def checkpoint_step(path: str | Path) -> int | None:
    """The step in a checkpoint file name, or None when the name is not a checkpoint's."""
    m = _CKPT.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files of a run, oldest first (by step, not by name)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in folder.iterdir() if p.is_file()]
    return sorted((s, p) for s, p in found if s is not None)


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and ((p / CONFIG_FILE).exists() or checkpoint_dir(p).is_dir())


#: The files that record a run (written by training; outputs of evaluation and export never replace them).
RECORD_FILES = (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE, REPORT_FILE)
#: Everything a run's training writes into its directory (what ``train.overwrite=true`` replaces).
RUN_FILES = (*RECORD_FILES, "loss.png", "knn.png", "knn_time.png")
RUN_FOLDERS = (CHECKPOINT_DIR, EVAL_DIR, "tensorboard")


def protected_reason(path: str | Path) -> str | None:
    """Why writing ``path`` would replace a run's own checkpoint or record, or None when it would not."""
    p = Path(path).absolute()
    parent = p.parent
    if parent.name in (CORRUPT_DIR, SUPERSEDED_DIR) and parent.parent.name == CHECKPOINT_DIR:
        parent = parent.parent
    if parent.name == CHECKPOINT_DIR:
        return f"inside the checkpoints folder of run {parent.parent}"
    if p.name in RECORD_FILES and is_run_dir(p.parent):
        return f"the {p.name} of run {p.parent}"
    return None


def run_records(run_dir: str | Path) -> list[str]:
    """The names of the records and checkpoints a run directory holds (empty for a fresh directory)."""
    d = Path(run_dir)
    found = [n for n in (*RECORD_FILES, EVAL_DIR) if (d / n).exists()]
    if list_checkpoints(d):
        found.append(CHECKPOINT_DIR)
    return found
