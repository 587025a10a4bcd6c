"""View-chunked two-pass backprop (train.view_chunk) against references, in float64.

Without batch-dependent layers (or with BatchNorm in eval mode) the chunked gradient is the unchunked
one. With BatchNorm in training mode it is the exact gradient of the model whose BatchNorm normalises
each chunk, built here by hand; running statistics are updated once per chunk; dropout masks replay.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmcr.distributed import DistInfo
from mmcr.objectives import build_objective
from mmcr.train.chunked import (
    activation_bytes_per_view,
    chunked_forward_backward,
    resolve_view_chunk,
    view_major_chunks,
)
from mmcr.train.context import StepContext
from mmcr.train.state import NonFiniteCounter, TrainState
from mmcr.train.step import forward_backward


def _net(bn: bool = False, dropout: float = 0.0) -> nn.Module:
    layers = [nn.Conv2d(3, 6, 3, padding=1)]
    if bn:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(24, 10)]
    if bn:
        layers.append(nn.BatchNorm1d(10))
    return nn.Sequential(*layers).double()


def _setup(model, objective="mmcr", chunk=None, **kw):
    obj = build_objective(objective, **kw)
    ctx = StepContext(forward=model, augment=None, small_augment=None, objective=obj, dist_info=DistInfo(),
                      global_batch=8, total_steps=1, param_dtype=torch.float64, amp_dtype=None, grad_clip=None,
                      channels_last=False, view_chunk=chunk)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainState(model=model, momentum=None, optimizer=opt,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0),
                       scaler=torch.amp.GradScaler("cpu", enabled=False), aug_generator=torch.Generator(),
                       nonfinite=NonFiniteCounter(torch.device("cpu")))
    return ctx, state


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


def _views(b=8, k=5, size=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, 3, size, size, generator=g, dtype=torch.float64)


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("objective", ["mmcr", "simclr", "barlow_twins", "vicreg"])
@pytest.mark.parametrize("chunk", [1, 7, 16])
def test_without_batch_statistics_chunked_equals_unchunked(objective, chunk):
    torch.manual_seed(0)
    a = _net()
    b = _net()
    b.load_state_dict(a.state_dict())
    groups = [_views()]
    ctx, state = _setup(a, objective)
    loss_a, _ = forward_backward(ctx, state, groups)
    ctx, state = _setup(b, objective, chunk=chunk)
    loss_b, _ = chunked_forward_backward(ctx, state, groups, chunk)
    assert loss_b.item() == pytest.approx(loss_a.item(), rel=1e-12)
    assert _rel(_grads(b), _grads(a)) <= 1e-6


def test_batchnorm_in_eval_mode_and_multi_resolution_groups():
    torch.manual_seed(1)
    a = _net(bn=True).eval()
    b = _net(bn=True).eval()
    b.load_state_dict(a.state_dict())
    groups = [_views(k=3, size=8), _views(k=4, size=4, seed=1)]  # full views + small crops
    ctx, state = _setup(a, "mmcr", lmbda=0.01)
    forward_backward(ctx, state, groups)
    ctx, state = _setup(b, "mmcr", chunk=5, lmbda=0.01)
    chunked_forward_backward(ctx, state, groups, 5)
    assert _rel(_grads(b), _grads(a)) <= 1e-6


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_batchnorm_in_training_mode_is_per_chunk_batchnorm_exactly(dropout):
    """The reference: the same chunks embedded one after another in one autograd graph (each chunk's
    BatchNorm uses its own statistics), the loss on all of them, one backward."""
    torch.manual_seed(2)
    a = _net(bn=True, dropout=dropout).train()
    b = _net(bn=True, dropout=dropout).train()
    b.load_state_dict(a.state_dict())
    views = _views(b=8, k=5)
    chunk = 12
    x = views.flatten(0, 1)
    torch.manual_seed(7)
    z = torch.empty(40, 10, dtype=torch.float64)
    parts = []
    for rows in view_major_chunks(8, 5, chunk):
        out = a(x[rows])
        parts.append((rows, out))
    z = torch.zeros(40, 10, dtype=torch.float64).index_put((torch.cat([r for r, _ in parts]),),
                                                           torch.cat([o for _, o in parts]))
    loss_ref = build_objective("mmcr")(z.view(8, 5, 10))
    loss_ref.backward()
    ctx, state = _setup(b, chunk=chunk)
    torch.manual_seed(7)
    loss, finite = chunked_forward_backward(ctx, state, [views], chunk)
    assert bool(finite) and loss.item() == pytest.approx(loss_ref.item(), rel=1e-12)
    assert _rel(_grads(b), _grads(a)) <= 1e-6
    for ba, bb in zip(a.buffers(), b.buffers()):  # running statistics updated once per chunk, not twice
        torch.testing.assert_close(bb, ba, rtol=1e-12, atol=0)


def test_chunked_training_resumes_bit_for_bit(tmp_path):
    from mmcr.run.config import load_config
    from mmcr.train import train

    base = ["train.batch_size=16", "augment.views=3", "augment.small_views=2", "model.projector.hidden=[32]",
            "model.projector.out_dim=16", "train.progress=false", "train.tensorboard=false", "train.threads=2",
            "eval.knn_every_epochs=0", "eval.final=false", "train.view_chunk=20", "optim.grad_clip=5",
            "model.momentum.enabled=true", "train.checkpoint_every_steps=2"]
    train(load_config("digits", base + [f"out={tmp_path / 'ref'}", "train.max_steps=4"]))
    train(load_config("digits", base + [f"out={tmp_path / 'cut'}", "train.max_steps=2"]))
    train(load_config("digits", base + [f"out={tmp_path / 'cut'}", "train.max_steps=4", "train.resume=auto"]))
    from mmcr.rundir import layout

    ref = torch.load(layout.checkpoint_path(tmp_path / "ref", 4), weights_only=True)
    cut = torch.load(layout.checkpoint_path(tmp_path / "cut", 4), weights_only=True)
    for key in ("model", "momentum"):
        for name, t in ref[key].items():
            assert torch.equal(t, cut[key][name]), f"{key}.{name}"


def test_auto_chunk_from_an_activation_budget():
    model = _net(bn=True).train()
    before = [b.clone() for b in model.buffers()]
    x2, x8 = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.randn(8, 3, 8, 8, dtype=torch.float64)
    per_view = activation_bytes_per_view(model, x2, None)
    assert per_view > 0 and activation_bytes_per_view(model, x8, None) == pytest.approx(per_view, rel=0.3)
    assert all(torch.equal(a, b) for a, b in zip(before, model.buffers()))  # the probe leaves no trace
    assert resolve_view_chunk("auto", model, x2, None, per_view * 10 / 2**30, total_views=100) == 10
    assert resolve_view_chunk("auto", model, x2, None, 1.0, total_views=100) is None  # all fit: no chunking
    assert resolve_view_chunk(32, model, x2, None, None, total_views=100) == 32
    assert resolve_view_chunk(None, model, x2, None, None, total_views=100) is None
