"""Everything a resumed run needs to continue bit for bit, listed once.

:class:`TrainState` holds the objects that change while training (model, momentum encoder, optimiser,
scheduler, loss scaler, the augmentation generator, the global RNGs) and the position in the data order
(epoch and batch within it, itself a pure function of seed, epoch and rank). ``state_dict()`` and
``load_state_dict()`` walk the same list, so nothing can be saved without being restored.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mmcr.models import MomentumEncoder
from mmcr.rundir.checkpoint import CheckpointError

# Objects with state_dict()/load_state_dict(), saved under these names.
_STATEFUL = ("model", "momentum", "optimizer", "scheduler", "scaler")


def _numpy_state() -> dict:
    """numpy's global RNG state as tensors and numbers, so that checkpoints load with weights_only."""
    name, key, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_state(state) -> None:
    if isinstance(state, dict):
        state = (state["name"], state["key"].cpu().numpy().astype(np.uint32), int(state["pos"]),
                 int(state["has_gauss"]), float(state["cached_gaussian"]))
    np.random.set_state(state)  # format v1 checkpoints hold numpy's own tuple


def rng_state(generator: torch.Generator, device: torch.device) -> dict:
    """The global RNGs and the augmentation generator of this process."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
        "augment": generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].cpu())  # (a checkpoint loaded onto a GPU has its tensors there)
    _set_numpy_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["augment"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


@dataclass
class NonFiniteCounter:
    """Skipped (NaN/Inf) steps, counted on the device so that no step waits for the host: the total,
    the current run of consecutive skips and the longest run since the last read."""

    device: torch.device
    total: torch.Tensor = field(init=False)
    run: torch.Tensor = field(init=False)
    longest: torch.Tensor = field(init=False)

    def __post_init__(self):
        self.reset(0)

    def reset(self, total: int) -> None:
        self.total = torch.tensor(total, device=self.device)
        self.run = torch.zeros((), dtype=torch.int64, device=self.device)
        self.longest = torch.zeros((), dtype=torch.int64, device=self.device)

    def record(self, ok: torch.Tensor) -> None:
        bad = (~ok).to(torch.int64)
        self.total = self.total + bad
        self.run = (self.run + 1) * bad
        self.longest = torch.maximum(self.longest, self.run)

    def start_window(self) -> None:
        """After a read: the longest run restarts from the current one."""
        self.longest = self.run.clone()


@dataclass
class TrainState:
    model: nn.Module
    momentum: MomentumEncoder | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    aug_generator: torch.Generator
    nonfinite: NonFiniteCounter
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0

    def state_dict(self, rngs) -> dict:
        """The checkpoint payload (``rngs``: this rank's RNG state, or every rank's in rank order)."""
        out = {name: (obj.state_dict() if obj is not None else None) for name in _STATEFUL
               for obj in [self._module(name)]}
        out.update(step=self.step, epoch=self.epoch, batch_in_epoch=self.batch_in_epoch,
                   nonfinite_total=int(self.nonfinite.total.item()), rng=rngs)
        return out

    def load_state_dict(self, saved: dict, rank: int, device: torch.device, skip: tuple[str, ...] = (),
                        where: str = "the checkpoint") -> None:
        """Restore what ``state_dict`` saved (``skip`` names objects a resume must rebuild instead). An
        object whose state is missing or does not fit is refused by name (:class:`CheckpointError`):
        a resume never continues with fresh weights or a fresh optimiser in place of saved ones."""
        for name in _STATEFUL:
            obj = self._module(name)
            if obj is None or name in skip:
                continue
            entry = saved.get(name)
            if name == "scaler" and not entry and not obj.is_enabled():
                continue  # {}: the state of a disabled loss scaler
            if not entry:
                raise CheckpointError(f"{where} holds no {name} state, so this run cannot continue from it; "
                                      "resume from a checkpoint written by mmcr pretrain, or start a new run")
            try:
                obj.load_state_dict(entry)
            except (RuntimeError, KeyError, ValueError, TypeError) as e:
                reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
                raise CheckpointError(f"{where}: its {name} state does not fit this run ({reason}); resume "
                                      "with the run's own config, or start a new run") from e
        self.step, self.epoch, self.batch_in_epoch = saved["step"], saved["epoch"], saved["batch_in_epoch"]
        self.nonfinite.reset(int(saved.get("nonfinite_total", 0)))
        rngs = saved["rng"]
        mine = rngs[rank] if isinstance(rngs, list) else rngs
        try:
            set_rng_state(mine, self.aug_generator, device)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as e:
            raise CheckpointError(f"{where}: its RNG state cannot be restored ({type(e).__name__}: {e}); the file is "
                                  "damaged or not an mmcr checkpoint") from e

    def _module(self, name: str):
        return self.momentum.module if name == "momentum" and self.momentum is not None else getattr(self, name)
