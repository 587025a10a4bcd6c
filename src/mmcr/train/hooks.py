"""What happens around the steps: when to stop (step limit, time budget, Ctrl-C/SIGTERM, all ranks
agreeing), and what is read back and logged every ``train.log_every_steps`` steps.

Stopping decisions are taken at decision points: after every step in a single process (host clocks and
flags, no device read), and every ``log_every_steps`` steps under torchrun, where one collective makes
every rank stop at the same step (each rank's own clock would otherwise let them part and hang in the
next collective).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch

from mmcr.distributed import DistInfo, any_rank
from mmcr.train.state import TrainState
from mmcr.train.step import StepResult


class NonFiniteLossError(ValueError, RuntimeError):
    """Raised after too many consecutive steps with a NaN/Inf loss or gradient, or when the weights
    themselves became NaN/Inf. A ValueError (settings to change: the command line prints one line); also
    a RuntimeError, as it always was."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C or SIGTERM after writing a checkpoint at the last finished step."""

    def __init__(self, step: int, checkpoint):
        super().__init__(f"interrupted at step {step}")
        self.step = step
        self.checkpoint = checkpoint


class StopSignals:
    """Turns the first SIGINT/SIGTERM into a flag the loop acts on at the next step boundary (so a
    checkpoint of a consistent state can be written); a second SIGINT stops at once."""

    def __init__(self):
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class StopRule:
    """Decides, at decision points, whether training stops: the last step (host counter), or why it stops
    early: ``time_budget`` (host clock) or ``interrupt`` (a signal); agreed across ranks."""

    def __init__(self, total_steps: int, time_budget_s: float | None, log_every: int, signals: StopSignals,
                 dist_info: DistInfo):
        self.total_steps = total_steps
        self.time_budget_s = time_budget_s
        self.log_every = log_every
        self.signals = signals
        self.dist_info = dist_info
        self.t_start = time.perf_counter()
        self.reason: str | None = None

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def check(self, step: int) -> bool:
        if step >= self.total_steps:
            return True
        if self.dist_info.enabled and step % self.log_every:
            return False  # ranks agree only at logging steps (one collective there)
        over = self.time_budget_s is not None and self.elapsed() >= self.time_budget_s
        time_up, interrupted = any_rank([over, self.signals.received is not None], self.dist_info)
        if interrupted:
            self.reason = "interrupt"
        elif time_up:
            self.reason = "time_budget"
        return self.reason is not None


class StepLogger:
    """Accumulates nothing on the host per step; every ``log_every`` steps (and at the last step) it
    reads the step's loss, the objective's components, the gradient norm and the skip counters in one
    transfer, writes a metrics record and raises :class:`NonFiniteLossError` when too many consecutive
    steps were skipped."""

    def __init__(self, log, progress, objective, log_every: int, max_nonfinite: int, images_per_step: int,
                 views_per_step: int, steps_per_epoch: int):
        self.log, self.progress, self.objective = log, progress, objective
        self.log_every, self.max_nonfinite = log_every, max_nonfinite
        self.images, self.views = images_per_step, views_per_step
        self.steps_per_epoch = steps_per_epoch
        self._t = time.perf_counter()
        self._n = 0

    def after_step(self, state: TrainState, result: StepResult, last: bool) -> None:
        self._n += 1
        lr = state.optimizer.param_groups[0]["lr"]
        if state.step % self.log_every and not last:
            self.progress.update(state.step, loss=None, lr=lr, images=self.images, views=self.views)
            return
        comps = {k: v for k, v in getattr(self.objective, "last_components", {}).items()
                 if k != "loss" and isinstance(v, torch.Tensor) and v.numel() == 1}
        names = ["loss", "grad_norm", "nonfinite_total", "longest_skip_run", *comps]
        vals = [result.loss, result.grad_norm, state.nonfinite.total, state.nonfinite.longest, *comps.values()]
        dev = result.loss.device
        read = torch.stack([v.detach().reshape(()).to(dev, torch.float64) for v in vals]).tolist()  # the one read
        values = dict(zip(names, read))
        now = time.perf_counter()
        step_time = (now - self._t) / max(self._n, 1)
        self._t, self._n = now, 0
        longest = int(values.pop("longest_skip_run"))
        state.nonfinite.start_window()
        if longest >= self.max_nonfinite:
            raise NonFiniteLossError(
                f"{longest} consecutive steps had a NaN/Inf loss or gradient (up to step {state.step}); "
                "lower optim.lr, set optim.grad_clip, or use train.precision=fp32"
            )
        values["nonfinite_total"] = int(values["nonfinite_total"])
        self.log.metrics(
            step=state.step,
            epoch=state.epoch + state.batch_in_epoch / self.steps_per_epoch,
            lr=lr,
            images_per_s=self.images / max(step_time, 1e-12),
            views_per_s=self.views / max(step_time, 1e-12),
            step_time_s=step_time,
            **values,
        )
        self.progress.update(state.step, loss=values["loss"], lr=lr, images=self.images, views=self.views)
