"""Detection transfer: Faster R-CNN in the C4 layout fine-tuned on PASCAL VOC (the protocol of MoCo,
BYOL and Barlow Twins, whose detectron2 config the MMCR paper follows).

    backbone   stem .. layer3 of the pretrained ResNet (stride 16; "res4")
    RPN        one 3x3 conv + objectness/box convs on the stride-16 map, 15 anchors per position
    RoI pool   RoIAlign (aligned, 14 x 14) on the stride-16 map
    box head   layer4 ("res5", halves the RoI to 7 x 7) [+ a norm layer] -> average pool
    predictor  21-way classifier and class-specific box regression

Everything is torchvision's (``FasterRCNN``, ``RPNHead``, ``AnchorGenerator``, ``RoIAlign``); this
module assembles it, trains it by iterations with SGD, warmup and step decay (DDP under torchrun,
BatchNorm synchronised across ranks or frozen), resumes from atomic checkpoints, and scores the VOC2007
test set with pycocotools (AP over IoU 0.50:0.95, AP50, AP75; difficult objects ignored).

Metric note: pycocotools interpolates precision at 101 recall points; detectron2's VOC evaluator,
which produced the published numbers, uses VOC2007's 11-point rule. The two differ by up to about a
point, so compare sources evaluated by this same command.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import time
from collections import OrderedDict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.resnet import ResNet
from torchvision.ops import MultiScaleRoIAlign, RoIAlign
from torchvision.ops.misc import FrozenBatchNorm2d

from mmcr.augment import IMAGENET_MEAN, IMAGENET_STD
from mmcr.data.voc import VOC_CLASSES, VOCDetectionData, VOCFormatError, load_voc_split
from mmcr.evaluate.features import eval_transform_for, progress_bar
from mmcr.evaluate.results import destination, output_dir, record_result

DETECTION_PRESETS = ("voc-c4",)
CHOICES = {"model.norm": ("sync", "frozen")}


# ----------------------------------------------------------------------------------------- config


def preset_path(name: str) -> Path:
    return Path(str(resources.files("mmcr") / "configs" / "detection" / f"{name}.yaml"))


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    """Merge ``update`` into ``base``: only keys the preset has, each with the preset value's type."""
    from mmcr.run.config import ConfigError

    if not isinstance(update, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a mapping, got {update!r}")
    for key, value in update.items():
        path = f"{prefix}{key}"
        if prefix == "protocols." and key not in base:
            base[key] = value  # a new protocol, checked whole by _check_protocol
            continue
        if key not in base:
            raise ConfigError(f"unknown detection config key {path!r}; valid keys here: {', '.join(sorted(base))}")
        old = base[key]
        if isinstance(old, dict):
            _merge(old, value, path + ".")
            continue
        if path in CHOICES and value not in CHOICES[path]:
            raise ConfigError(f"invalid value {value!r} for {path}; choose one of {', '.join(CHOICES[path])}")
        if isinstance(old, bool):
            ok = isinstance(value, bool)
        elif isinstance(old, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if ok and isinstance(old, int) and isinstance(value, float):
                ok = value.is_integer()
                value = int(value)
        elif isinstance(old, list):
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, type(old))
        if not ok:
            raise ConfigError(f"{path} must be like {old!r}, got {value!r}")
        base[key] = float(value) if isinstance(old, float) else value
    return base


def _check_protocol(name: str, p: dict) -> None:
    from mmcr.run.config import ConfigError

    if not isinstance(p, dict) or set(p) != {"train", "test", "iterations", "steps"}:
        raise ConfigError(f"protocols.{name} needs exactly the fields train, test, iterations, steps; got {p!r}")
    if not isinstance(p["train"], list) or not p["train"]:
        raise ConfigError(f"protocols.{name}.train must be a list of image sets like ['2007/trainval']")
    sets = [*p["train"], p["test"]]
    for s in sets:
        if not isinstance(s, str) or s.count("/") != 1:
            raise ConfigError(f"protocols.{name}: image sets are 'YEAR/SET' strings like '2007/trainval', got {s!r}")
    it, steps = p.get("iterations"), p.get("steps")
    if not isinstance(it, int) or it < 0:
        raise ConfigError(f"protocols.{name}.iterations must be an integer >= 0, got {it!r}")
    if not isinstance(steps, list) or any(not isinstance(s, int) for s in steps) or steps != sorted(steps):
        raise ConfigError(f"protocols.{name}.steps must be an increasing list of iterations, got {steps!r}")


def load_detection_config(
    config: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """The shipped ``voc-c4`` preset <- ``config`` (a YAML file with fields to change, or a shipped
    preset name) <- ``--set`` style overrides (``"solver.lr=0.01"``). Unknown keys and wrong types
    are rejected by name."""
    from mmcr.run.config import ConfigError, parse_override

    with open(preset_path("voc-c4")) as f:
        cfg = yaml.safe_load(f)
    if config is not None and str(config) not in DETECTION_PRESETS[:1]:
        path = Path(config)
        if not path.is_file():
            if str(config) in DETECTION_PRESETS:
                path = preset_path(str(config))
            else:
                raise ConfigError(
                    f"detection config {str(config)!r} not found; give a YAML file or one of "
                    f"{', '.join(DETECTION_PRESETS)}"
                )
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
        _merge(cfg, data)
    for text in overrides or []:
        _merge(cfg, parse_override(text))
    for name, p in cfg["protocols"].items():
        _check_protocol(name, p)
    s, i, m = cfg["solver"], cfg["input"], cfg["model"]
    lows = {"solver.batch_size": 1, "solver.test_batch_per_rank": 1, "solver.log_every": 1, "model.roi_resolution": 1}
    lows.update(
        {
            f"solver.{k}": 0
            for k in (
                "warmup_iters",
                "precise_bn_iters",
                "checkpoint_every",
                "num_workers",
                "weight_decay",
                "weight_decay_norm",
                "momentum",
            )
        }
    )
    for key, low in lows.items():
        sec, name = key.split(".")
        if cfg[sec][name] < low:
            raise ConfigError(f"{key} must be >= {low}, got {cfg[sec][name]}")
    if s["lr"] <= 0 or not 0 < s["warmup_factor"] <= 1 or not 0 < s["gamma"] <= 1:
        raise ConfigError("solver.lr must be > 0 and solver.warmup_factor and solver.gamma lie in (0, 1]")
    if not m["anchor_sizes"] or not m["aspect_ratios"] or min(m["anchor_sizes"] + m["aspect_ratios"]) <= 0:
        raise ConfigError("model.anchor_sizes and model.aspect_ratios must be non-empty lists of positive numbers")
    if not i["min_size_train"] or any(not isinstance(v, int) or v < 1 for v in i["min_size_train"]):
        raise ConfigError(f"input.min_size_train must be a list of positive integers, got {i['min_size_train']!r}")
    return cfg


def protocol_schedule(cfg: dict, protocol: str, iterations: int | None = None) -> dict:
    """The protocol's entry, with ``iterations`` overriding its length: the decay steps keep their
    fractions of the schedule (the warmup keeps its ``solver.warmup_iters``)."""
    if protocol not in cfg["protocols"]:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(cfg['protocols'])}")
    p = copy.deepcopy(cfg["protocols"][protocol])
    if iterations is not None:
        if iterations < 0:
            raise ValueError(f"--iterations must be >= 0, got {iterations}")
        base = max(p["iterations"], 1)
        p["steps"] = [round(s * iterations / base) for s in p["steps"]]
        p["iterations"] = iterations
    return p


# ------------------------------------------------------------------------------------------ model


def c4_split(backbone: nn.Module) -> tuple[nn.Sequential, nn.Module]:
    """``(trunk, res5)`` of a ResNet backbone: the trunk is the stem and every stage but the last
    (stem..layer3 of a torchvision ResNet), res5 the last stage. The modules are shared, not copied."""
    from mmcr.models.backbones import SmallResNet

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


def _set_eval_sizes(model: FasterRCNN, training: bool) -> None:
    """torchvision's transform draws the shorter side from ``min_size`` in training and uses its last
    entry at test time; the protocol tests at its own size, so the two are swapped in here."""
    t = model.transform
    if training:
        t.min_size, t.max_size = model.train_min_size, model.train_max_size
    else:
        t.min_size, t.max_size = (model.test_min_size,), model.test_max_size


# ---------------------------------------------------------------------------------------- metrics


def require_pycocotools() -> None:
    """pycocotools computes the AP; it comes with the ``detection`` extra. Checked before any training."""
    try:
        import pycocotools  # noqa: F401
    except ImportError as e:
        raise ValueError("eval detection needs pycocotools for the VOC AP: "
                         "pip install 'mmcr-toolkit[detection]'") from e


def _voc_style_cocoeval():
    from pycocotools import mask as mask_utils
    from pycocotools.cocoeval import COCOeval

    class VOCStyleCOCOeval(COCOeval):
        """COCOeval where difficult objects (given as ``iscrowd=1``, pycocotools' way to mark a ground
        truth as ignored: detections matched to it are neither TP nor FP) overlap by the usual IoU.
        pycocotools measures crowd overlap as intersection / detection area; VOC uses plain IoU."""

        def computeIoU(self, imgId, catId):  # noqa: N802 - pycocotools' name
            gt, dt = self._gts[imgId, catId], self._dts[imgId, catId]
            if not gt or not dt:
                return []
            # the same stable score order and cut-off that COCOeval.evaluateImg applies to these rows
            order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: self.params.maxDets[-1]]
            return mask_utils.iou([dt[i]["bbox"] for i in order], [g["bbox"] for g in gt], [0] * len(gt))

    return VOCStyleCOCOeval


def detection_ap(
    ground_truth: list[dict[str, torch.Tensor]],
    detections: list[dict[str, torch.Tensor]],
    classes=VOC_CLASSES,
) -> dict[str, Any]:
    """AP (IoU 0.50:0.95), AP50 and AP75 in percent, by pycocotools, plus AP50 per class.

    ``ground_truth[i]``: ``boxes`` (n, 4) x1y1x2y2, ``labels`` (n,) in 1..C, optional ``difficult``
    (n,) bool -- difficult objects are ignored (a detection on one is neither TP nor FP, a missed one
    costs no recall). ``detections[i]``: ``boxes``, ``scores``, ``labels`` for the same image.
    Classes without ground truth are left out of the means (pycocotools' rule).
    """
    require_pycocotools()
    from pycocotools.coco import COCO

    if len(ground_truth) != len(detections):
        raise ValueError(f"{len(ground_truth)} ground-truth images but {len(detections)} detection entries")

    def xywh(b: torch.Tensor) -> list[list[float]]:
        b = b.detach().double().cpu().reshape(-1, 4)
        return torch.cat([b[:, :2], b[:, 2:] - b[:, :2]], 1).tolist()

    images, anns, dets = [], [], []
    for i, (gt, dt) in enumerate(zip(ground_truth, detections)):
        images.append({"id": i})
        diff = gt.get("difficult")
        diff = torch.zeros(len(gt["labels"]), dtype=torch.bool) if diff is None else diff
        for box, lab, d in zip(xywh(gt["boxes"]), gt["labels"].tolist(), diff.tolist()):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(d),
                }
            )
        for box, score, lab in zip(xywh(dt["boxes"]), dt["scores"].tolist(), dt["labels"].tolist()):
            dets.append({"image_id": i, "category_id": int(lab), "bbox": box, "score": float(score)})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(classes)]
    res: dict[str, Any] = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "AP50_per_class": {}}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": cats}
        coco_gt.createIndex()
        if not dets:
            return res
        coco_dt = coco_gt.loadRes(dets)
        ev = _voc_style_cocoeval()(coco_gt, coco_dt, "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]  # VOC has no size breakdown
        ev.evaluate()
        ev.accumulate()
    prec = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall points, classes), 100 dets
    thr = ev.params.iouThrs

    def mean(p: np.ndarray) -> float:
        v = p[p > -1]
        return float(100.0 * v.mean()) if v.size else 0.0

    res["AP"] = mean(prec)
    res["AP50"] = mean(prec[np.isclose(thr, 0.5)])
    res["AP75"] = mean(prec[np.isclose(thr, 0.75)])
    for k, cat in enumerate(ev.params.catIds):
        p = prec[np.isclose(thr, 0.5)][:, :, k]
        if (p > -1).any():
            res["AP50_per_class"][classes[cat - 1]] = mean(p)
    return res


# ------------------------------------------------------------------------------------------- data


class StreamSampler(torch.utils.data.Sampler):
    """Per-rank batches ``[(index, flip), ...]`` of iterations ``start .. stop - 1`` of an endless
    stream: epoch ``e`` is a permutation drawn from ``(seed, e)``, iteration ``t`` takes global
    positions ``t*B .. (t+1)*B - 1`` and rank ``r`` its ``r``-th share. The stream is a pure function
    of the iteration, so a resumed run sees exactly the batches it would have seen."""

    def __init__(self, n: int, batch: int, start: int, stop: int, rank: int, world: int, seed: int, flip: bool):
        if batch % world:
            raise ValueError(f"solver.batch_size {batch} must be divisible by the {world} ranks")
        self.n, self.batch, self.start, self.stop = n, batch, start, stop
        self.rank, self.world, self.seed, self.flip = rank, world, seed, flip
        self._epoch: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def _order(self, e: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._epoch is None or self._epoch[0] != e:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            self._epoch = (e, torch.randperm(self.n, generator=g), torch.rand(self.n, generator=g) < 0.5)
        return self._epoch[1], self._epoch[2]

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        b = self.batch // self.world
        for t in range(self.start, self.stop):
            out = []
            for pos in range(t * self.batch + self.rank * b, t * self.batch + (self.rank + 1) * b):
                perm, flips = self._order(pos // self.n)
                j = pos % self.n
                out.append((int(perm[j]), bool(flips[j]) and self.flip))
            yield out


def _as_list(batch):
    return batch


def _loader(ds, batch_sampler, workers: int, pin: bool):
    return torch.utils.data.DataLoader(
        ds, batch_sampler=batch_sampler, collate_fn=_as_list, num_workers=workers, pin_memory=pin
    )


def _to_device(batch, dev: torch.device):
    images = [img.to(dev, non_blocking=True).float().div_(255.0) for img, _ in batch]
    targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for _, t in batch]
    return images, targets


def load_protocol_data(root: str | Path, protocol: dict) -> tuple[list, list]:
    """Records of the protocol's training image sets (concatenated) and of its test set."""
    train = []
    for spec in protocol["train"]:
        year, image_set = spec.split("/")
        train.extend(load_voc_split(root, year, image_set))
    year, image_set = protocol["test"].split("/")
    return train, load_voc_split(root, year, image_set)


# ------------------------------------------------------------------------------------------ train


def _param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict]:
    norm, other = [], []
    for m in model.modules():
        for p in m.parameters(recurse=False):
            (norm if isinstance(m, nn.modules.batchnorm._NormBase) else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": weight_decay_norm}]


def lr_factor(it: int, solver: dict, steps: list[int]) -> float:
    """detectron2's WarmupMultiStepLR: linear warmup from ``warmup_factor``, times gamma per passed step."""
    f = solver["gamma"] ** sum(1 for s in steps if s <= it)
    w = solver["warmup_iters"]
    if it < w:
        a = it / w
        f *= solver["warmup_factor"] * (1 - a) + a
    return f


@torch.no_grad()
def precise_bn(model: FasterRCNN, batches, dev: torch.device, autocast) -> int:
    """Replace every BatchNorm's running statistics by the plain average over ``batches`` (detectron2's
    PreciseBN): the exponential averages of training lag behind the last weights. Returns the number of
    batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    _set_eval_sizes(model, True)
    n = 0
    try:
        for batch in batches:
            images, targets = _to_device(batch, dev)
            with autocast():
                model(images, targets)
            n += 1
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
    return n


@torch.no_grad()
def predict(model: FasterRCNN, loader, dev: torch.device, autocast, progress: bool, total: int) -> dict[int, dict]:
    """Detections for each test image index of the loader (boxes in the original image's pixels)."""
    model.eval()
    _set_eval_sizes(model, False)
    out: dict[int, dict] = {}
    with progress_bar(total, "detection test", enabled=progress) as advance:
        for batch, idx in loader:
            images, _ = _to_device(batch, dev)
            with autocast():
                dets = model(images)
            for i, d in zip(idx, dets):
                out[i] = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in d.items()}
            advance(len(idx))
    return out


class _TestBatches(torch.utils.data.Sampler):
    def __init__(self, indices: list[int], batch: int):
        self.indices, self.batch = indices, batch

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch)

    def __iter__(self):
        for s in range(0, len(self.indices), self.batch):
            yield [(i, False) for i in self.indices[s : s + self.batch]]


class _IndexedData(torch.utils.data.Dataset):
    """Test items carry their index so that ranks' detections can be put back in order."""

    def __init__(self, ds: VOCDetectionData):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, item):
        return self.ds[item], item[0]


def _collate_indexed(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


def train_loop(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    batches,
    start: int,
    total: int,
    solver: dict,
    steps: list[int],
    seed: int,
    rank: int,
    dev: torch.device,
    autocast,
    after_step,
) -> int:
    """Iterations ``start .. total - 1``: the scheduled lr, every random draw of the step (image sizes,
    RPN and RoI sampling) seeded from ``(seed, iteration, rank)`` so that a resumed run repeats it, one
    SGD step on the summed losses, then ``after_step(iteration + 1, losses)``. Returns the steps taken."""
    if start >= total:
        return 0
    net.train()
    _set_eval_sizes(getattr(net, "module", net), True)
    done = 0
    for it, batch in zip(range(start, total), batches):
        for g in opt.param_groups:
            g["lr"] = solver["lr"] * lr_factor(it, solver, steps)
        torch.manual_seed((seed * 1_000_003 + it) * 4096 + rank)
        images, targets = _to_device(batch, dev)
        with autocast():
            losses = net(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise ValueError(
                f"the detection loss became {loss.item()} at iteration {it}; lower solver.lr (now {solver['lr']}) "
                "or check the data"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        after_step(it + 1, losses)
    return done


def _settings_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _settings_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_detection(
    source: str | Path,
    root: str | Path,
    protocol: str = "voc07+12",
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    iterations: int | None = None,
    norm: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    restart: bool = False,
    device: str = "auto",
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune a C4 Faster R-CNN from ``source`` on the protocol's VOC training sets and report AP,
    AP50 and AP75 on its test set. Run under ``torchrun`` for several GPUs.

    Work (config, metrics log, checkpoints) goes to ``<dir>/detection/<protocol>/`` where ``<dir>`` is
    the run directory (see :func:`mmcr.evaluate.results.output_dir`); running the same command again
    resumes from the newest checkpoint there (``restart=True`` discards them). The result is recorded
    like every evaluation (``eval/detection_<protocol>.json`` and a report line).
    """
    from mmcr.distributed import cleanup, convert_sync_batchnorm, setup
    from mmcr.models import load_pretrained
    from mmcr.rundir import layout
    from mmcr.rundir.checkpoint import DETECTION, load_latest, save_checkpoint
    from mmcr.rundir.files import open_append, write_text_atomic

    require_pycocotools()
    t_start = time.perf_counter()
    destination("detection", source, out)  # a bad --out is refused before any work
    extra = list(overrides or [])
    if norm is not None:
        extra.append(f"model.norm={norm}")
    if workers is not None:
        extra.append(f"solver.num_workers={workers}")
    cfg = load_detection_config(config, extra)
    sched = protocol_schedule(cfg, protocol, iterations)
    solver = cfg["solver"]
    root = Path(root)
    if not root.exists():
        raise VOCFormatError(f"VOC root {root} does not exist; pass the folder that holds VOCdevkit/VOC2007")
    was_initialised = dist.is_available() and dist.is_initialized()
    di = setup(device)
    try:
        dev = di.device
        if solver["amp"] and dev.type != "cuda":
            raise ValueError("solver.amp (bfloat16 autocast) needs a CUDA device; set solver.amp=false")

        def autocast():
            if solver["amp"]:
                return torch.autocast("cuda", dtype=torch.bfloat16)
            return contextlib.nullcontext()

        torch.manual_seed(seed)  # random:<arch> sources and the new layers start from the seed
        backbone, model_src = load_pretrained(source)  # first: a refused source costs no data loading
        train_records, test_records = load_protocol_data(root, sched)
        tag = protocol
        base = Path(out).parent if out is not None and str(out).endswith(".json") else output_dir(source, out)
        work = base / "detection" / tag.replace("+", "_")
        settings = {"source": str(source), "protocol": protocol, "schedule": sched, "config": cfg, "seed": seed}
        # what a resumed run must share with the checkpoint: not the operational knobs
        same = copy.deepcopy(settings)
        for k in ("num_workers", "log_every", "checkpoint_every", "test_batch_per_rank"):
            del same["config"]["solver"][k]

        norm_stats = eval_transform_for(model_src)  # the normalisation the backbone was trained with
        model = build_c4_detector(backbone, cfg["model"], cfg["input"], mean=norm_stats.mean, std=norm_stats.std)
        if di.enabled and cfg["model"]["norm"] == "sync":
            model = convert_sync_batchnorm(model, dev)  # before the optimizer: the CPU variant makes new parameters
        model.to(dev)
        opt = torch.optim.SGD(
            _param_groups(model, solver["weight_decay"], solver["weight_decay_norm"]),
            lr=solver["lr"],
            momentum=solver["momentum"],
        )
        start = 0
        if restart and di.is_main:
            for _, f in layout.list_checkpoints(work):
                f.unlink()
        if di.enabled:
            dist.barrier()
        found = None if restart else load_latest(work, move_corrupt=di.is_main, require=DETECTION)
        if found is not None:
            state, path = found
            if state.get("kind") != "detection":
                raise ValueError(f"{path} is not a detection checkpoint; pass --restart or another --out")
            diff = _settings_diff(state["settings"], same)
            if diff:
                raise ValueError(
                    f"{work} holds a detection run with other settings ({', '.join(diff[:4])} differ); "
                    "pass --restart to discard it, or --out to work elsewhere"
                )
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
            except (RuntimeError, KeyError, ValueError) as e:
                raise ValueError(f"{path} does not fit this detector ({' '.join(str(e).split())[:200]}); pass "
                                 "--restart to discard it, or --out to work elsewhere") from e
            start = int(state["iteration"])
            if di.is_main:
                print(f"detection: resuming {work} at iteration {start} of {sched['iterations']}")
        if di.is_main:
            work.mkdir(parents=True, exist_ok=True)
            write_text_atomic(work / "config.yaml", yaml.safe_dump(settings, sort_keys=False), what="detection config")
        net: nn.Module = model
        if di.enabled:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        train_ds = VOCDetectionData(train_records, keep_difficult=cfg["input"]["keep_difficult"])
        total = sched["iterations"]
        workers_n = solver["num_workers"]
        pin = dev.type == "cuda"

        def stream(a: int, b: int):
            s = StreamSampler(
                len(train_ds), solver["batch_size"], a, b, di.rank, di.world_size, seed, cfg["input"]["flip"]
            )
            return _loader(train_ds, s, workers_n, pin)

        t_train = time.perf_counter()
        last: dict[str, float] = {}
        log = open_append(work / "metrics.jsonl", "the detection log") if di.is_main and start < total else None

        def after_step(step: int, losses: dict[str, torch.Tensor]) -> None:
            nonlocal last
            if log is not None and (step % solver["log_every"] == 0 or step == total):
                last = {k: float(v.detach()) for k, v in losses.items()}
                rec = {"iteration": step, "lr": opt.param_groups[0]["lr"], "loss": sum(last.values()), **last}
                log.write(json.dumps(rec) + "\n")
                log.flush()
            every = solver["checkpoint_every"]
            if di.is_main and (step == total or (every > 0 and step % every == 0)):
                state = {
                    "kind": "detection",
                    "iteration": step,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "settings": same,
                }
                save_checkpoint(state, work, step, keep=2)

        try:
            with progress_bar(total - start, "detection train", enabled=progress and di.is_main) as advance:
                done = train_loop(
                    net,
                    opt,
                    stream(start, total),
                    start,
                    total,
                    solver,
                    sched["steps"],
                    seed,
                    di.rank,
                    dev,
                    autocast,
                    lambda step, losses: (after_step(step, losses), advance()),
                )
        finally:
            if log is not None:
                log.close()
        train_seconds = time.perf_counter() - t_train

        n_bn = 0
        if solver["precise_bn_iters"] > 0 and cfg["model"]["norm"] != "frozen" and total > 0:
            torch.manual_seed(seed * 1_000_003 + 2**20 + di.rank)
            n_bn = precise_bn(model, stream(total, total + solver["precise_bn_iters"]), dev, autocast)

        t_eval = time.perf_counter()
        test_ds = _IndexedData(VOCDetectionData(test_records))
        mine = list(range(di.rank, len(test_records), di.world_size))
        test_loader = torch.utils.data.DataLoader(
            test_ds,
            batch_sampler=_TestBatches(mine, solver["test_batch_per_rank"]),
            collate_fn=_collate_indexed,
            num_workers=workers_n,
            pin_memory=pin,
        )
        preds = predict(model, test_loader, dev, autocast, progress and di.is_main, len(mine))
        if di.enabled:
            parts = [None] * di.world_size
            dist.all_gather_object(parts, preds)
            for p in parts:
                preds.update(p)
        result: dict[str, Any] = {}
        if di.is_main:
            gts = [{"boxes": r.boxes, "labels": r.labels, "difficult": r.difficult} for r in test_records]
            dets = [preds[i] for i in range(len(test_records))]
            result = detection_ap(gts, dets)
        eval_seconds = time.perf_counter() - t_eval
        if di.enabled:
            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
        result.update(
            {
                "protocol": protocol,
                "train_sets": sched["train"],
                "test_set": sched["test"],
                "iterations": total,
                "steps": sched["steps"],
                "batch_size": solver["batch_size"],
                "lr": solver["lr"],
                "norm": cfg["model"]["norm"],
                "world_size": di.world_size,
                "device": str(dev),
                "amp": solver["amp"],
                "n_train": len(train_records),
                "n_test": len(test_records),
                "resumed_from": start,
                "precise_bn_batches": n_bn,
                "final_losses": last,
                "train_seconds": train_seconds,
                "seconds_per_1000_iterations": 1000 * train_seconds / done if done else None,
                "eval_seconds": eval_seconds,
                "seconds": time.perf_counter() - t_start,
                "metric": "pycocotools COCOeval bbox, 101-point interpolation, 100 detections per image, "
                "difficult objects ignored",
                "work_dir": str(work),
                "step": model_src.step,
            }
        )
        if di.is_main:
            result["json"] = str(
                record_result("detection", result, source, out, tag=tag, details=("AP", "AP50", "AP75", "iterations"))
            )
        return result
    finally:
        if not was_initialised:
            cleanup()
