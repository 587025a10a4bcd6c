"""Two gloo processes on the CPU against one process on the concatenated batch."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from mmcr.distributed import GlobalBatchNorm, convert_sync_batchnorm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bn_worker(rank, world, port, x, w, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    bn = convert_sync_batchnorm(nn.BatchNorm2d(3), torch.device("cpu"))
    assert isinstance(bn, GlobalBatchNorm)
    n = x.shape[0] // world
    xs = x[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    y = bn(xs)
    (y * w[rank * n : (rank + 1) * n]).sum().backward()
    # parameter gradients are per-rank partial sums (DDP would average them); sum them here
    gw = bn.weight.grad.clone()
    dist.all_reduce(gw)
    torch.save({"y": y.detach(), "gx": xs.grad, "gw": gw, "rm": bn.running_mean, "rv": bn.running_var},
               os.path.join(out_dir, f"r{rank}.pt"))
    dist.destroy_process_group()


def test_global_batchnorm_equals_full_batch(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4) * 3 + 1
    w = torch.randn(8, 3, 4, 4)
    mp.spawn(_bn_worker, args=(2, _free_port(), x, w, str(tmp_path)), nprocs=2, join=True)
    ref_bn = nn.BatchNorm2d(3)
    xr = x.clone().requires_grad_(True)
    yr = ref_bn(xr)
    (yr * w).sum().backward()
    r = [torch.load(tmp_path / f"r{i}.pt") for i in range(2)]
    torch.testing.assert_close(torch.cat([r[0]["y"], r[1]["y"]]), yr.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r[0]["gx"], r[1]["gx"]]), xr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r[0]["gw"], ref_bn.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r[0]["rm"], ref_bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r[0]["rv"], ref_bn.running_var, rtol=1e-5, atol=1e-6)
