"""A run's record: ``metrics.jsonl`` (one JSON object per line, truncated to the checkpoint on resume)
and TensorBoard scalars when it is installed. Rank 0 writes it; anyone reads it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mmcr.rundir import layout
from mmcr.rundir.files import open_append, write_text_atomic


class MetricsLog:
    """Appends records to ``<run>/metrics.jsonl``. On resume, records logged after the checkpoint's
    step (by the run that was killed) are dropped so that the log matches the continued run."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True, truncate_after: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / layout.METRICS_FILE
        self._tb = None
        if not enabled:
            return
        if self.path.exists() or self.path.is_symlink():
            self._truncate(truncate_after)
        self._f = open_append(self.path, what="the metrics log")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except Exception:  # tensorboard is optional; metrics.jsonl is the record
                self._tb = None

    def _truncate(self, step: int) -> None:
        """Rewrite the log without the records after ``step`` (atomically: a link is replaced, not followed)."""
        keep = []
        lines = [] if self.path.is_symlink() else self.path.read_text().splitlines()
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            if rec.get("step", 0) <= step:
                keep.append(line)
        write_text_atomic(self.path, "".join(k + "\n" for k in keep), what="the metrics log")

    def _write(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def metrics(self, step: int, **values: Any) -> None:
        if not self.enabled:
            return
        rec = {"step": step, "wall_time": time.time(), **{k: v for k, v in values.items() if v is not None}}
        self._write(rec)
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, step)

    def event(self, name: str, **values: Any) -> None:
        if self.enabled:
            self._write({"event": name, "wall_time": time.time(), **values})

    def close(self) -> None:
        if self.enabled:
            self._f.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / layout.METRICS_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
