import math

import pytest
import torch
from torch import nn

from mmcr.train.optim import LARS, build_optimizer, lr_factor, param_groups


def test_lr_factor_warmup_then_cosine():
    total, warm = 100, 10
    assert lr_factor(0, total, warm, "cosine", 1e-3) == pytest.approx(0.1)
    assert lr_factor(9, total, warm, "cosine", 1e-3) == pytest.approx(1.0)
    assert lr_factor(10, total, warm, "cosine", 1e-3) == pytest.approx(1.0)
    mid = lr_factor(55, total, warm, "cosine", 1e-3)
    assert mid == pytest.approx(1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(100, total, warm, "cosine", 1e-3) == pytest.approx(1e-3)
    assert lr_factor(50, total, 0, "constant", 1e-3) == 1.0


def test_lars_matches_reference_update():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    groups = param_groups(model, weight_decay=1e-2, exclude_1d=True)
    opt = LARS(groups, lr=0.5, momentum=0.9, eta=1e-3)
    params = [p.detach().clone() for p in model.parameters()]
    mus = [None] * len(params)
    for _ in range(3):
        x = torch.randn(8, 5)
        opt.zero_grad()
        model(x).pow(2).sum().backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        opt.step()
        for i, (p, g) in enumerate(zip(params, grads)):
            if p.ndim > 1:  # weights: decay + trust ratio
                u = g + 1e-2 * p
                trust = 1e-3 * p.norm() / u.norm()
                u = u * trust
            else:  # biases and BN: excluded
                u = g
            mus[i] = u.clone() if mus[i] is None else 0.9 * mus[i] + u
            params[i] = p - 0.5 * mus[i]
        for p, ref in zip(model.parameters(), params):
            torch.testing.assert_close(p.detach(), ref, rtol=1e-5, atol=1e-7)


def test_param_groups_exclude_1d():
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4))
    groups = param_groups(model, 1e-6, exclude_1d=True)
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars_exclude"]


def test_scaled_lr_and_unknown_optimizer():
    from dataclasses import replace

    from mmcr.run.config import OptimConfig

    model = nn.Linear(3, 2)
    cfg = OptimConfig(name="lars", lr=0.6, scale_lr=True)
    opt = build_optimizer(model, cfg, global_batch=512)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.2)
    with pytest.raises(ValueError, match="choose one of adam"):
        build_optimizer(model, replace(cfg, name="nope"), 256)


@pytest.mark.parametrize("name", ["adam", "adamw", "lars"])
def test_found_inf_skips_the_step_on_the_device(name):
    """optimizer.found_inf = 1 leaves weights and optimiser state as they were; 0 is a normal step."""
    from mmcr.run.config import OptimConfig
    from mmcr.train.optim import skips_on_device

    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    cfg = OptimConfig(name=name, lr=0.1, weight_decay=1e-2)
    oa, ob = build_optimizer(a, cfg, 256), build_optimizer(b, cfg, 256)
    assert skips_on_device(oa)
    for _i in range(3):
        grads = [torch.randn_like(p) for p in a.parameters()]
        for pa, pb, g in zip(a.parameters(), b.parameters(), grads):
            pa.grad, pb.grad = g.clone(), g.clone()
        ob.step()  # the reference takes every step
        oa.found_inf = torch.zeros(())
        oa.step()
        # then a skipped step with garbage gradients on a only
        for pa in a.parameters():
            pa.grad = torch.full_like(pa, float("nan"))
        oa.found_inf = torch.ones(())
        oa.step()
        oa.found_inf = None
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)
