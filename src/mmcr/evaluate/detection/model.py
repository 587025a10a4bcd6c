"""The C4 Faster R-CNN assembled from torchvision's parts around a pretrained ResNet: stem .. layer3 as the
stride-16 trunk, layer4 as the RoI box head, BatchNorm synchronised or frozen."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.resnet import ResNet
from torchvision.ops import MultiScaleRoIAlign, RoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from mmcr.augment import IMAGENET_MEAN, IMAGENET_STD
from mmcr.data.voc import VOC_CLASSES
from mmcr.models.backbones import SmallResNet


def c4_split(backbone: nn.Module) -> tuple[nn.Sequential, nn.Module]:
    """``(trunk, res5)`` of a ResNet backbone: the trunk is the stem and every stage but the last
    (stem..layer3 of a torchvision ResNet), res5 the last stage. The modules are shared, not copied."""

    inner = getattr(backbone, "model", backbone)
    if isinstance(inner, ResNet):
        m = inner
        parts = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
        trunk = nn.Sequential(OrderedDict((n, getattr(m, n)) for n in parts))
        return trunk, m.layer4
    if isinstance(inner, SmallResNet):
        blocks = list(inner.layers)
        starts = [i for i, b in enumerate(blocks) if b.downsample is not None and i > 0]
        if not starts:
            raise ValueError("the C4 layout needs a backbone with at least two stages")
        k = starts[-1]
        stem = OrderedDict(conv1=inner.conv1, bn1=inner.bn1, relu=inner.relu, stages=nn.Sequential(*blocks[:k]))
        trunk = nn.Sequential(stem)
        return trunk, nn.Sequential(*blocks[k:])
    arch = getattr(backbone, "arch", type(backbone).__name__)
    raise ValueError(f"detection needs a ResNet backbone (torchvision ResNets or mmcr's small ResNets), got {arch!r}")


@torch.no_grad()
def _probe(trunk: nn.Module, res5: nn.Module, size: int = 128) -> tuple[int, int, int]:
    """``(stride, trunk channels, res5 channels)`` from a forward pass in eval mode (statistics untouched)."""
    modes = [(m, m.training) for m in (trunk, res5)]
    trunk.eval()
    res5.eval()
    try:
        dev = next(trunk.parameters()).device
        f = trunk(torch.zeros(1, 3, size, size, device=dev))
        g = res5(f)
    finally:
        for m, was in modes:
            m.train(was)
    stride = size // f.shape[-1]
    if stride * f.shape[-1] != size or stride & (stride - 1):
        raise ValueError(
            f"the backbone's res4 output {tuple(f.shape[-2:])} for {size} px input is not a power-of-2 stride"
        )
    return stride, f.shape[1], g.shape[1]


class C4RoIPool(nn.Module):
    """RoIAlign (aligned, as detectron2's ROIAlignV2) of each proposal on the single stride-``stride`` map.

    torchvision's MultiScaleRoIAlign serves FPNs; it infers the scale per call and cannot align pixel
    centres, so the one-level C4 case uses ``torchvision.ops.RoIAlign`` directly."""

    def __init__(self, resolution: int, stride: int):
        super().__init__()
        self.stride = stride
        self.align = RoIAlign(resolution, 1.0 / stride, sampling_ratio=0, aligned=True)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes) -> torch.Tensor:
        return self.align(features["0"], proposals)


class Res5Head(nn.Sequential):
    """res5 on each pooled RoI, an optional norm layer (MoCo's extra norm), global average pooling."""

    def __init__(self, res5: nn.Module, channels: int, extra_norm: bool):
        layers: OrderedDict[str, nn.Module] = OrderedDict(res5=res5)
        if extra_norm:
            layers["norm"] = nn.BatchNorm2d(channels)
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten(1)
        super().__init__(layers)
        self.out_channels = channels


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d replaced by torchvision's FrozenBatchNorm2d holding its current statistics."""
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        module.add_module(name, freeze_batchnorm(child))
    return module


def build_c4_detector(
    backbone: nn.Module,
    model_cfg: dict,
    input_cfg: dict,
    num_classes: int = len(VOC_CLASSES),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
) -> FasterRCNN:
    """torchvision's FasterRCNN in the C4 layout around a pretrained ResNet ``backbone`` (shared, not
    copied). ``model_cfg``/``input_cfg`` are the preset's ``model`` and ``input`` sections. Every
    parameter is trainable; with ``model_cfg["norm"] == "frozen"`` the BatchNorms become frozen."""
    trunk, res5 = c4_split(backbone)
    stride, c4, c5 = _probe(trunk, res5)
    trunk.out_channels = c4
    trunk.stride = stride
    anchors = AnchorGenerator(
        sizes=(tuple(model_cfg["anchor_sizes"]),), aspect_ratios=(tuple(model_cfg["aspect_ratios"]),)
    )
    head = Res5Head(res5, c5, model_cfg["extra_norm"])
    predictor = FastRCNNPredictor(c5, num_classes + 1)
    # detectron2's initialisation of the new layers (torchvision's predictor keeps nn.Linear's default).
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    model = FasterRCNN(
        trunk,
        num_classes=None,
        min_size=tuple(input_cfg["min_size_train"]),
        max_size=input_cfg["max_size_train"],
        image_mean=list(mean),
        image_std=list(std),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(c4, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=model_cfg["rpn_pre_nms_top_n_train"],
        rpn_post_nms_top_n_train=model_cfg["rpn_post_nms_top_n_train"],
        rpn_pre_nms_top_n_test=model_cfg["rpn_pre_nms_top_n_test"],
        rpn_post_nms_top_n_test=model_cfg["rpn_post_nms_top_n_test"],
        rpn_batch_size_per_image=model_cfg["rpn_batch_size_per_image"],
        box_roi_pool=MultiScaleRoIAlign(["0"], model_cfg["roi_resolution"], 0),  # replaced below
        box_head=head,
        box_predictor=predictor,
        box_score_thresh=model_cfg["score_thresh_test"],
        box_nms_thresh=model_cfg["nms_thresh_test"],
        box_detections_per_img=model_cfg["detections_per_image"],
        box_batch_size_per_image=model_cfg["roi_batch_size_per_image"],
        box_positive_fraction=model_cfg["roi_positive_fraction"],
    )
    # FasterRCNN's constructor accepts only its FPN pooler type; the C4 pooler goes in afterwards.
    model.roi_heads.box_roi_pool = C4RoIPool(model_cfg["roi_resolution"], stride)
    model.train_min_size, model.train_max_size = model.transform.min_size, model.transform.max_size
    model.test_min_size = int(input_cfg["min_size_test"])
    model.test_max_size = int(input_cfg["max_size_test"])
    if model_cfg["norm"] == "frozen":
        freeze_batchnorm(model)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def set_eval_sizes(model: FasterRCNN, training: bool) -> None:
    """torchvision's transform draws the shorter side from ``min_size`` in training and uses its last
    entry at test time; the protocol tests at its own size, so the two are swapped in here."""
    t = model.transform
    if training:
        t.min_size, t.max_size = model.train_min_size, model.train_max_size
    else:
        t.min_size, t.max_size = (model.test_min_size,), model.test_max_size
