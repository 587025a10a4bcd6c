"""Two CPU processes (gloo): every objective returns the one-process loss of the concatenated batch, own-row
gradients are world_size x the one-process gradient, and under DDP parameter gradients match exactly."""

from __future__ import annotations

import datetime
import os
import socket
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mmcr.objectives import build_objective, rank, world_size

WORLD, B, K, D, D_IN = 2, 6, 3, 5, 7
CASES = [
    ("mmcr", {}, False),
    ("mmcr", {"lmbda": 0.3}, False),
    ("mmcr", {"lmbda": 0.3}, True),
    ("simclr", {"temperature": 0.5}, False),
    ("barlow_twins", {}, False),
    ("vicreg", {}, False),
]


def global_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(WORLD * B, K, D, generator=g), torch.randn(WORLD * B, K, D, generator=g)


def model_and_input(seed: int) -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(D_IN, D)
    with torch.no_grad():
        model.weight.copy_(torch.randn(D, D_IN, generator=g))
        model.bias.copy_(torch.randn(D, generator=g))
    return model, torch.randn(WORLD * B, K, D_IN, generator=g)


def run_case(name, kwargs, momentum, z, z_m):
    loss_fn = build_objective(name, **kwargs)
    x = z.clone().requires_grad_(True)
    loss = loss_fn(x, z_m) if momentum else loss_fn(x)
    loss.backward()
    return loss.detach(), x.grad, {k: v.clone() for k, v in loss_fn.last_components.items()}


def model_grads(name, kwargs, momentum, model, inputs, z_m):
    loss_fn = build_objective(name, **kwargs)
    z = model(inputs)
    loss = loss_fn(z, z_m) if momentum else loss_fn(z)
    loss.backward()
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return torch.cat([p.grad.flatten() for p in inner.parameters()])


def worker(r: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        # Both ranks live on this machine: talk over loopback whatever the hostname resolves to.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=r,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        own = slice(r * B, (r + 1) * B)
        results = {"rank": rank(), "world_size": world_size(), "cases": [], "ddp": []}
        for i, (name, kwargs, momentum) in enumerate(CASES):
            z, z_m = global_batch(i)
            results["cases"].append(run_case(name, kwargs, momentum, z[own], z_m[own]))
            model, inputs = model_and_input(i)
            ddp = nn.parallel.DistributedDataParallel(model)
            results["ddp"].append(model_grads(name, kwargs, momentum, ddp, inputs[own], z_m[own]))
        try:  # unequal per-rank batches must fail loudly on every rank
            build_objective("mmcr")(torch.randn(B + r, K, D))
        except ValueError as err:
            results["size_error"] = str(err)
        torch.save(results, f"{out}/rank{r}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    if sys.platform == "win32":
        pytest.skip("the two-process test uses gloo over TCP on Linux/macOS")
    out = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{n}-{kw}-{'mom' if m else ''}" for n, kw, m in CASES])
def test_gathered_loss_and_gradients_match_one_process(two_rank_results, case):
    name, kwargs, momentum = CASES[case]
    z, z_m = global_batch(case)
    loss, grad, comps = run_case(name, kwargs, momentum, z, z_m)
    for r, res in enumerate(two_rank_results):
        assert res["rank"] == r and res["world_size"] == WORLD
        r_loss, r_grad, r_comps = res["cases"][case]
        assert abs(r_loss.item() - loss.item()) <= 1e-6 * abs(loss.item())
        # Documented scaling: own rows receive world_size x the one-process gradient.
        assert rel_err(r_grad / WORLD, grad[r * B : (r + 1) * B]) <= 1e-6
        for key, value in comps.items():
            assert key in r_comps
            assert abs(r_comps[key].item() - value.item()) <= 1e-6 * max(abs(value.item()), 1e-6), key


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{n}-{kw}-{'mom' if m else ''}" for n, kw, m in CASES])
def test_ddp_parameter_gradients_equal_one_process(two_rank_results, case):
    name, kwargs, momentum = CASES[case]
    model, inputs = model_and_input(case)
    _, z_m = global_batch(case)
    ref = model_grads(name, kwargs, momentum, model, inputs, z_m)
    for res in two_rank_results:
        assert rel_err(res["ddp"][case], ref) <= 1e-6


def test_unequal_rank_batches_raise(two_rank_results):
    for res in two_rank_results:
        assert "same shape" in res["size_error"] and "[(6, 5), (7, 5)]" in res["size_error"]
