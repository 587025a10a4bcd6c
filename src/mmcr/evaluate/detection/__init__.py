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

The package, by concern: :mod:`.config` (preset, overrides, protocols), :mod:`.model` (the C4 detector),
:mod:`.data` (VOC sets, the resumable stream), :mod:`.loop` (training, precise BN, prediction),
:mod:`.metrics` (AP with pycocotools) and :mod:`.run` (``run_detection``).
"""

from mmcr.evaluate.detection.config import (
    CHOICES,
    DETECTION_PRESETS,
    detection_preset_path,
    load_detection_config,
    protocol_schedule,
)
from mmcr.evaluate.detection.data import StreamSampler, load_protocol_data
from mmcr.evaluate.detection.loop import precise_bn, predict, step_lr_factor, train_loop
from mmcr.evaluate.detection.metrics import detection_ap, require_pycocotools
from mmcr.evaluate.detection.model import C4RoIPool, Res5Head, build_c4_detector, c4_split, freeze_batchnorm
from mmcr.evaluate.detection.run import run_detection

__all__ = [
    "CHOICES",
    "DETECTION_PRESETS",
    "C4RoIPool",
    "Res5Head",
    "StreamSampler",
    "build_c4_detector",
    "c4_split",
    "detection_ap",
    "detection_preset_path",
    "freeze_batchnorm",
    "load_detection_config",
    "load_protocol_data",
    "precise_bn",
    "predict",
    "protocol_schedule",
    "require_pycocotools",
    "run_detection",
    "step_lr_factor",
    "train_loop",
]
