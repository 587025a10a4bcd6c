"""The training progress bar: loss, learning rate, images/s, views/s and ETA (rich), main process only."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ProgressDisplay:
    """A rich progress bar over training steps. Disabled, it shows no bar but still prints notes
    (epoch-end kNN figures) on the main process."""

    def __init__(self, total_steps: int, enabled: bool = True, initial: int = 0, main: bool = True):
        self.enabled = enabled and main
        self.main = main
        if not enabled:
            return
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
