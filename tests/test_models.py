import pytest
import torch

from mmcr.models import Encoder, MomentumEncoder, Projector, build_backbone


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("resnet_tiny", 8), ("resnet_small", 16)])
def test_backbone_shapes(name, size):
    b = build_backbone(name, cifar_stem=True)
    out = b(torch.zeros(2, 3, size, size))
    assert out.shape == (2, b.feature_dim)


def test_unknown_backbone_lists_choices():
    with pytest.raises(ValueError, match="resnet18"):
        build_backbone("resnet9000")


def test_cifar_stem_keeps_resolution():
    b = build_backbone("resnet18", cifar_stem=True)
    assert b.model.conv1.stride == (1, 1) and isinstance(b.model.maxpool, torch.nn.Identity)


def test_projector_and_momentum_update():
    torch.manual_seed(0)
    enc = Encoder(build_backbone("resnet_tiny"), Projector(64, [32], 16))
    mom = MomentumEncoder(enc, tau=0.9)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    before = [p.clone() for p in mom.module.parameters()]
    mom.update(enc)
    for b, m, o in zip(before, mom.module.parameters(), enc.parameters()):
        torch.testing.assert_close(m, 0.9 * b + 0.1 * o)
    assert all(not p.requires_grad for p in mom.module.parameters())


def test_momentum_cosine_schedule_ends_at_one():
    enc = Projector(4, [], 2)
    mom = MomentumEncoder(enc, tau=0.99, schedule="cosine")
    assert mom.tau(0, 100) == pytest.approx(0.99)
    assert mom.tau(100, 100) == pytest.approx(1.0)
