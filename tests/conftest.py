"""Shared fixtures: paths of the shared data and test vectors, skipping cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIFAR_ARCHIVE = SHARED / "data" / "cifar10_jpeg.tar.gz"
MFTMA_DIR = SHARED / "testvectors" / "mftma"


@pytest.fixture(autouse=True)
def _few_threads():
    # CI has 2 cores; keep every test on the same thread count so timings and results are stable.
    torch.set_num_threads(2)
    yield


@pytest.fixture
def cifar_archive() -> Path:
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"shared CIFAR-10 archive not found: {CIFAR_ARCHIVE}")
    return CIFAR_ARCHIVE


@pytest.fixture
def mftma_dir() -> Path:
    if not (MFTMA_DIR / "gauss_small.npz").exists():
        pytest.skip(f"shared MFTMA test vectors not found in {MFTMA_DIR}")
    return MFTMA_DIR
