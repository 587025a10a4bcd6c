"""Run monitoring: ``metrics.jsonl`` (one JSON object per line), TensorBoard when installed, and a
rich progress bar with loss, learning rate, images/s, views/s and ETA. Rank 0 only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mmcr.run import layout
from mmcr.run.files import open_append, write_text_atomic


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


class ProgressDisplay:
    """A rich progress bar over training steps. Disabled, it shows no bar but still prints notes
    (epoch-end kNN figures) on the main process."""

    def __init__(self, total_steps: int, enabled: bool = True, initial: int = 0, main: bool = True):
        self.enabled = enabled and main
        self.main = main
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]pretrain"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[ips]:.0f} img/s  {task.fields[vps]:.0f} views/s"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, completed=initial, loss=float("nan"),
                                             lr=0.0, ips=0.0, vps=0.0)
        self._last = time.perf_counter()
        self._rate_images = 0.0
        self._rate_views = 0.0

    def update(self, step: int, loss: float | None, lr: float, images: int, views: int) -> None:
        """Advance to ``step``; ``loss`` None keeps the last value shown (it is read every log interval)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        dt, self._last = max(now - self._last, 1e-9), now
        # exponential smoothing so the rate reads steadily
        a = 0.2 if self._rate_images else 1.0
        self._rate_images = (1 - a) * self._rate_images + a * images / dt
        self._rate_views = (1 - a) * self._rate_views + a * views / dt
        fields = {"loss": loss} if loss is not None else {}
        self._progress.update(self._task, completed=step, lr=lr, ips=self._rate_images, vps=self._rate_views,
                              **fields)

    def note(self, text: str) -> None:
        if self.enabled:
            self._progress.console.print(text)
        elif self.main:
            print(text, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._progress.stop()
