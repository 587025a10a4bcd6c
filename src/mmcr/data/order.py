"""The data order every loader shares, and how a loader worker's error reaches the user."""

from __future__ import annotations

import numpy as np
import torch

from mmcr.data.decode import DatasetError


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The permutation of range(n) used in ``epoch`` (identity when not shuffling)."""
    if not shuffle:
        return torch.arange(n)
    # SeedSequence mixes (seed, epoch) into a well-spread stream seed; consecutive epochs don't correlate.
    s = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.randperm(n, generator=torch.Generator().manual_seed(s))


def one_line_worker_errors(batches):
    """Iterate a DataLoader, re-raising a worker's DatasetError as its own one-line message (torch
    wraps it in the worker's traceback text)."""
    it = iter(batches)
    while True:
        try:
            batch = next(it)
        except StopIteration:
            return
        except DatasetError as e:
            text = str(e)
            if "Original Traceback" not in text:
                raise
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
            raise DatasetError(last.split("Error: ", 1)[-1]) from None
        yield batch
