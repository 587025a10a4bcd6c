"""VOC AP with pycocotools (an optional dependency): AP over IoU 0.50:0.95, AP50 and AP75, difficult
objects ignored, 101-point interpolation."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch

from mmcr.data.voc import VOC_CLASSES


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
