"""Detection transfer (``mmcr eval detection``): the VOC reader, the C4 Faster R-CNN assembly, the AP
metric against hand-worked and independently computed values, resumption, bad input, and learning
on a generated VOC-format data set of squares and discs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmcr.cli import main
from mmcr.data.voc import VOC_CLASSES, VOCDetectionData, VOCFormatError, load_voc_split, parse_annotation
from mmcr.evaluate.detection import (
    StreamSampler,
    build_c4_detector,
    detection_ap,
    load_detection_config,
    protocol_schedule,
    run_detection,
    step_lr_factor,
)
from mmcr.evaluate.sources import load_pretrained
from mmcr.run.config import ConfigError

SHAPES = {"square": "tvmonitor", "disc": "pottedplant"}

# A CPU-sized version of the protocol: 64 x 80 images shown at their own size, anchors for 14-28 px
# objects, fewer proposals and RoIs, a 8 x 8 RoIAlign; everything else is the shipped preset.
SMALL = [
    "input.min_size_train=[64]",
    "input.max_size_train=128",
    "input.min_size_test=64",
    "input.max_size_test=128",
    "model.anchor_sizes=[16,24,32]",
    "model.aspect_ratios=[1.0]",
    "model.rpn_pre_nms_top_n_train=600",
    "model.rpn_post_nms_top_n_train=128",
    "model.rpn_pre_nms_top_n_test=300",
    "model.rpn_post_nms_top_n_test=64",
    "model.rpn_batch_size_per_image=64",
    "model.roi_batch_size_per_image=32",
    "model.roi_resolution=8",
    "solver.batch_size=4",
    "solver.warmup_iters=20",
    "solver.precise_bn_iters=10",
    "solver.checkpoint_every=0",
    "solver.log_every=25",
    "solver.test_batch_per_rank=8",
    "solver.num_workers=0",
]


def _xml(w: int, h: int, objects: list[tuple[str, tuple, bool]]) -> str:
    rows = [f"<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>"]
    for name, (x0, y0, x1, y1), diff in objects:
        rows.append(
            f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "\n".join(rows + ["</annotation>"])


def make_voc(root: Path, n_trainval: int = 40, n_test: int = 20, seed: int = 0, year: str = "2007") -> Path:
    """A VOC-format data set: noisy 64 x 80 images with 1-3 squares (tvmonitor) and discs (pottedplant)
    of 14-28 px in random colours, so the class is in the shape; every 7th object is marked difficult."""
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / f"VOC{year}"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / d).mkdir(parents=True, exist_ok=True)
    h, w = 64, 80
    yy, xx = np.mgrid[:h, :w]
    count = 0
    splits = [("trainval", n_trainval)] + ([("test", n_test)] if n_test else [])
    for split, n in splits:
        ids = []
        for k in range(n):
            iid = f"{year}_{split}_{k:04d}"
            img = rng.normal(110, 25, (h, w, 3)) + rng.normal(0, 20, (1, 1, 3))
            objects, boxes = [], []
            for _ in range(int(rng.integers(1, 4))):
                s = int(rng.integers(14, 29))
                x0, y0 = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
                if any(x0 < b[2] + 2 and x0 + s + 2 > b[0] and y0 < b[3] + 2 and y0 + s + 2 > b[1] for b in boxes):
                    continue
                kind = "square" if rng.random() < 0.5 else "disc"
                if kind == "square":
                    mask = (xx >= x0) & (xx < x0 + s) & (yy >= y0) & (yy < y0 + s)
                else:
                    mask = (xx - x0 - s / 2 + 0.5) ** 2 + (yy - y0 - s / 2 + 0.5) ** 2 <= (s / 2) ** 2
                img[mask] = rng.uniform(0, 255, 3)
                boxes.append((x0, y0, x0 + s, y0 + s))
                count += 1
                # VOC's 1-based inclusive pixel indexes
                objects.append((SHAPES[kind], (x0 + 1, y0 + 1, x0 + s, y0 + s), count % 7 == 0))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(base / "JPEGImages" / f"{iid}.jpg", quality=95)
            (base / "Annotations" / f"{iid}.xml").write_text(_xml(w, h, objects))
            ids.append(iid)
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("voc"))


@pytest.fixture
def one_thread():
    # The small detector runs thousands of tiny ops per step; with two intra-op threads on a busy
    # 2-core machine every op waits for both (40 iterations: 25 s with 2 threads, 4.5 s with 1, at load 7).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ reader


def test_reader_boxes_labels_difficult_and_flip(voc):
    recs = load_voc_split(voc, "2007", "trainval")
    assert len(recs) == 40
    r = recs[0]
    xml = (voc / "VOCdevkit/VOC2007/Annotations" / (Path(r.image).stem + ".xml")).read_text()
    first = xml.split("<bndbox>")[1]
    xmin = int(first.split("<xmin>")[1].split("<")[0])
    assert r.boxes[0, 0].item() == xmin - 1  # 1-based inclusive -> continuous
    assert set(r.labels.tolist()) <= {VOC_CLASSES.index(c) + 1 for c in SHAPES.values()}
    assert sum(int(x.difficult.sum()) for x in recs) > 0
    ds = VOCDetectionData(recs, keep_difficult=False)
    i = next(k for k, x in enumerate(recs) if x.difficult.any())
    img, t = ds[i]
    assert img.dtype == torch.uint8 and img.shape == (3, 64, 80)
    assert len(t["boxes"]) == int((~recs[i].difficult).sum())
    img_f, t_f = ds[(i, True)]
    assert torch.equal(img_f, img.flip(-1))
    assert torch.allclose(t_f["boxes"][:, [2, 0]], 80 - t["boxes"][:, [0, 2]])
    assert len(VOCDetectionData(recs, keep_difficult=True)[i][1]["boxes"]) == len(recs[i].labels)


def _one_image_voc(root: Path, xml_text: str, image: bool = True) -> Path:
    base = root / "VOCdevkit" / "VOC2007"
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "Annotations" / "000001.xml").write_text(xml_text)
    if image:
        Image.new("RGB", (80, 64)).save(base / "JPEGImages" / "000001.jpg")
    (base / "ImageSets/Main/test.txt").write_text("000001\n")
    return root


@pytest.mark.parametrize(
    "xml_text, image, needle",
    [
        ("<annotation><size><width>80</width>", True, "not valid XML"),
        (_xml(80, 64, [("dog", (1, 1, 81, 20), False)]), True, "outside the 80 x 64 image"),
        (_xml(80, 64, [("dog", (5, 1, 4, 20), False)]), True, "is empty"),
        (_xml(80, 64, [("unicorn", (1, 1, 10, 10), False)]), True, "unknown class 'unicorn'"),
        (_xml(80, 64, [("dog", (1, 1, 10, "ten"), False)]), True, "not a number"),
        ("<annotation><object/></annotation>", True, "no <size>"),
        (_xml(80, 64, [("dog", (1, 1, 10, 10), False)]).replace("<bndbox>", "<box>").replace("</bndbox>", "</box>"),
         True, "no <bndbox>"),
        (_xml(80, 64, [("dog", (1, 1, 10, 10), False)]), False, "JPEGImages/000001.jpg is missing"),
    ],
    ids=["malformed-xml", "box-outside", "empty-box", "unknown-class", "bad-number", "no-size", "no-bndbox",
         "missing-image"],
)
def test_bad_annotations_name_the_file(tmp_path, xml_text, image, needle):
    root = _one_image_voc(tmp_path, xml_text, image)
    with pytest.raises(VOCFormatError) as e:
        load_voc_split(root, "2007", "test")
    msg = str(e.value)
    assert needle in msg and "000001" in msg and "\n" not in msg


def test_bad_roots(tmp_path):
    with pytest.raises(VOCFormatError, match="not a folder"):
        load_voc_split(tmp_path / "nowhere", "2007", "test")
    with pytest.raises(VOCFormatError, match="no VOCdevkit"):
        load_voc_split(tmp_path, "2007", "test")
    (tmp_path / "VOCdevkit" / "VOC2007" / "Annotations").mkdir(parents=True)
    with pytest.raises(VOCFormatError, match="no JPEGImages folder"):
        load_voc_split(tmp_path, "2007", "test")
    with pytest.raises(VOCFormatError, match="VOC2012 not found"):
        load_voc_split(tmp_path / "VOCdevkit", "2012", "trainval")  # the VOCdevkit folder itself is accepted
    base = tmp_path / "VOCdevkit" / "VOC2007"
    (base / "JPEGImages").mkdir()
    (base / "ImageSets" / "Main").mkdir(parents=True)
    with pytest.raises(VOCFormatError, match="test.txt not found"):
        load_voc_split(tmp_path, "2007", "test")
    (base / "ImageSets/Main/test.txt").write_text("000009\n")
    with pytest.raises(VOCFormatError, match="lists 000009 but .*000009.xml is missing"):
        load_voc_split(tmp_path, "2007", "test")


def test_zero_based_coordinates_are_clamped(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(_xml(80, 64, [("cat", (0, 0, 80, 64), True)]))
    w, h, boxes, labels, diff = parse_annotation(p)
    assert (w, h) == (80, 64) and boxes == [[0.0, 0.0, 80.0, 64.0]]
    assert labels == [VOC_CLASSES.index("cat") + 1] and diff == [True]


def test_cli_reports_bad_root_in_one_line(tmp_path, capsys):
    rc = main(["eval", "detection", "random:resnet_tiny", "--root", str(tmp_path / "missing"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "missing" in err and "VOCdevkit" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------ config


def test_config_overrides_are_checked():
    cfg = load_detection_config(None, ["solver.lr=0.01", "model.norm=frozen"])
    assert cfg["solver"]["lr"] == 0.01 and cfg["model"]["norm"] == "frozen"
    assert cfg["protocols"]["voc07+12"]["train"] == ["2007/trainval", "2012/trainval"]
    with pytest.raises(ConfigError, match="unknown config key 'solver.lrr'; valid keys here: .*lr"):
        load_detection_config(None, ["solver.lrr=0.01"])
    with pytest.raises(ConfigError, match="model.norm"):
        load_detection_config(None, ["model.norm=group"])
    with pytest.raises(ConfigError, match="solver.batch_size must be an integer, got 2.5"):
        load_detection_config(None, ["solver.batch_size=2.5"])
    with pytest.raises(ValueError, match="unknown protocol 'coco'"):
        protocol_schedule(cfg, "coco")
    p = protocol_schedule(cfg, "voc07+12", iterations=2400)
    assert p["iterations"] == 2400 and p["steps"] == [1800, 2200]


def test_lr_schedule_warmup_and_steps():
    solver = {"gamma": 0.1, "warmup_iters": 100, "warmup_factor": 0.001}
    assert step_lr_factor(0, solver, [18000, 22000]) == pytest.approx(0.001)
    assert step_lr_factor(50, solver, [18000, 22000]) == pytest.approx(0.5005)
    assert step_lr_factor(100, solver, [18000, 22000]) == 1.0
    assert step_lr_factor(18000, solver, [18000, 22000]) == pytest.approx(0.1)
    assert step_lr_factor(23999, solver, [18000, 22000]) == pytest.approx(0.01)


def test_stream_is_resumable_and_split_across_ranks():
    full = list(StreamSampler(10, 4, 0, 8, 0, 1, seed=3, flip=True))
    assert list(StreamSampler(10, 4, 5, 8, 0, 1, seed=3, flip=True)) == full[5:]
    halves = [list(StreamSampler(10, 4, 0, 8, r, 2, seed=3, flip=True)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == full
    flat = [i for batch in full for i, _ in batch]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs
    assert any(f for batch in full for _, f in batch) and not any(f for b in StreamSampler(10, 4, 0, 8, 0, 1, 3, False)
                                                                  for _, f in b)
    with pytest.raises(ValueError, match="divisible"):
        StreamSampler(10, 3, 0, 8, 0, 2, seed=3, flip=True)


# ------------------------------------------------------------------------------------- C4 assembly


def test_c4_layout_of_resnet50(one_thread):
    backbone, _ = load_pretrained("random:resnet50")
    cfg = load_detection_config()
    model = build_c4_detector(backbone, cfg["model"], cfg["input"])
    trunk = model.backbone
    rn = backbone.model
    assert [n for n, _ in trunk.named_children()] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    assert trunk.out_channels == 1024 and trunk.stride == 16
    with torch.no_grad():
        f = trunk.eval()(torch.zeros(1, 3, 224, 320))
    assert f.shape == (1, 1024, 14, 20)  # stride 16
    head = model.roi_heads.box_head
    assert head.res5 is rn.layer4 and head.out_channels == 2048 and isinstance(head.norm, torch.nn.BatchNorm2d)
    pool = model.roi_heads.box_roi_pool.align
    assert pool.output_size in (14, (14, 14)) and pool.spatial_scale == 1 / 16 and pool.aligned
    with torch.no_grad():
        r = head.eval()(torch.zeros(2, 1024, 14, 14))
    assert r.shape == (2, 2048)
    pred = model.roi_heads.box_predictor
    assert pred.cls_score.out_features == 21 and pred.bbox_pred.out_features == 84
    assert model.rpn.head.cls_logits.out_channels == 15
    assert all(p.requires_grad for p in model.parameters())  # every layer is fine-tuned
    assert model.transform.min_size == tuple(range(480, 801, 32)) and model.test_min_size == 800

    frozen_cfg = load_detection_config(None, ["model.norm=frozen"])
    frozen = build_c4_detector(load_pretrained("random:resnet18")[0], frozen_cfg["model"], frozen_cfg["input"])
    assert frozen.backbone.out_channels == 256 and frozen.backbone.stride == 16
    assert frozen.roi_heads.box_head.out_channels == 512
    kinds = {type(m).__name__ for m in frozen.modules()}
    assert "BatchNorm2d" not in kinds and "FrozenBatchNorm2d" in kinds
    assert all(p.requires_grad for p in frozen.parameters())


def test_every_part_of_the_small_detector_learns(voc, one_thread):
    backbone, _ = load_pretrained("random:resnet_tiny")
    cfg = load_detection_config(None, SMALL)
    model = build_c4_detector(backbone, cfg["model"], cfg["input"])
    assert model.backbone.stride == 2  # CIFAR stem: stride 1, one stride-2 stage before res5
    ds = VOCDetectionData(load_voc_split(voc, "2007", "trainval"))
    batch = [ds[i] for i in range(4)]
    model.train()
    losses = model([img.float() / 255 for img, _ in batch], [t for _, t in batch])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    for name in ("backbone.conv1.weight", "backbone.stages.0.conv1.weight", "rpn.head.conv.0.0.weight",
                 "roi_heads.box_head.res5.0.conv1.weight", "roi_heads.box_head.norm.weight",
                 "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_non_resnet_backbones_are_rejected():
    cfg = load_detection_config()
    with pytest.raises(ValueError, match="needs a ResNet backbone"):
        build_c4_detector(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)), cfg["model"], cfg["input"])


# ------------------------------------------------------------------------------------------ metric


def _t(rows):
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def _gt(boxes, labels, difficult=None):
    d = {"boxes": _t(boxes), "labels": torch.tensor(labels)}
    if difficult is not None:
        d["difficult"] = torch.tensor(difficult)
    return d


def _dt(boxes, scores, labels):
    return {"boxes": _t(boxes), "scores": torch.tensor(scores, dtype=torch.float64), "labels": torch.tensor(labels)}


A, B = [10, 10, 50, 50], [60, 60, 100, 100]
FAR = [200, 200, 240, 240]
# 101-point interpolated precision: 1.0 up to recall 0.5 (51 points), 2/3 above it (50 points)
TP_FP_TP = 100 * (51 + 50 * 2 / 3) / 101


def test_ap_of_hand_worked_predictions():
    gt = [_gt([A, B], [1, 1])]
    res = detection_ap(gt, [_dt([A, FAR, B], [0.9, 0.8, 0.7], [1, 1, 1])])
    assert res["AP"] == pytest.approx(TP_FP_TP) and res["AP50"] == pytest.approx(TP_FP_TP)
    assert res["AP75"] == pytest.approx(TP_FP_TP)
    assert res["AP50_per_class"] == {"aeroplane": pytest.approx(TP_FP_TP)}
    shifted = [19, 10, 59, 50]  # intersection 31 x 40 = 1240, union 1960: IoU 0.633
    res = detection_ap([_gt([A], [1])], [_dt([shifted], [0.9], [1])])
    assert res["AP50"] == pytest.approx(100) and res["AP75"] == 0
    assert res["AP"] == pytest.approx(30)  # 3 of the 10 thresholds 0.50:0.95 are <= 0.633
    # two classes: the mean over the classes that have ground truth; a wrong class is a miss and a FP
    res = detection_ap([_gt([A, B], [1, 2])], [_dt([A, B], [0.9, 0.8], [1, 3])])
    assert res["AP50"] == pytest.approx(50) and set(res["AP50_per_class"]) == {"aeroplane", "bicycle"}
    assert detection_ap([_gt([A], [1])], [_dt([], [], [])])["AP50"] == 0.0


def test_difficult_objects_are_neither_tp_nor_fp():
    hard = [120, 10, 160, 50]
    base = detection_ap([_gt([A, B], [1, 1])], [_dt([A, FAR, B], [0.9, 0.8, 0.7], [1, 1, 1])])
    # a top-scoring detection on a difficult object, and a missed difficult object: nothing changes
    gt = [_gt([A, B, hard, [10, 60, 40, 90]], [1, 1, 1, 1], [False, False, True, True])]
    res = detection_ap(gt, [_dt([hard, A, FAR, B], [0.95, 0.9, 0.8, 0.7], [1, 1, 1, 1])])
    assert res["AP"] == pytest.approx(base["AP"]) and res["AP50"] == pytest.approx(TP_FP_TP)
    # the same objects counted as ordinary: the detection is a TP and the miss costs recall
    plain = detection_ap([_gt(gt[0]["boxes"].tolist(), [1, 1, 1, 1])],
                         [_dt([hard, A, FAR, B], [0.95, 0.9, 0.8, 0.7], [1, 1, 1, 1])])
    assert plain["AP50"] < 80
    # a small detection inside a difficult box overlaps it by IoU 0.25: a false positive as in VOC
    # (pycocotools' crowd rule, intersection / detection area = 1, would have ignored it)
    inner = [120, 10, 140, 30]
    res = detection_ap([_gt([A, hard], [1, 1], [False, True])], [_dt([inner, A], [0.9, 0.8], [1, 1])])
    # FP then TP: recall 1 is reached at precision 1/2, which every recall point then gets
    assert res["AP50"] == pytest.approx(50)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _reference_ap(gts, dts, num_classes: int, thr: float) -> float:
    """COCO's greedy matching (highest score first; best unmatched ordinary object, else any ignored
    one) and 101-point interpolated precision, written from the definitions in float64."""
    aps = []
    for c in range(1, num_classes + 1):
        scores, tps, n_pos = [], [], 0
        for gt, dt in zip(gts, dts):
            gm = gt["labels"].numpy() == c
            g = gt["boxes"].numpy()[gm]
            ign = gt["difficult"].numpy()[gm] if "difficult" in gt else np.zeros(len(g), bool)
            n_pos += int((~ign).sum())
            dm = dt["labels"].numpy() == c
            d, s = dt["boxes"].numpy()[dm], dt["scores"].numpy()[dm]
            order = np.argsort(-s, kind="stable")
            ious = _iou(d[order], g) if len(g) and len(d) else np.zeros((len(d), len(g)))
            used = np.zeros(len(g), bool)
            for row, k in enumerate(order):
                cand = [(ious[row, j], j) for j in range(len(g)) if not ign[j] and not used[j] and ious[row, j] >= thr]
                if cand:
                    used[max(cand)[1]] = True
                    scores.append(s[k])
                    tps.append(1)
                elif any(ign[j] and ious[row, j] >= thr for j in range(len(g))):
                    continue  # matched a difficult object: ignored
                else:
                    scores.append(s[k])
                    tps.append(0)
        if n_pos == 0:
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        tp = np.asarray(tps, float)[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        recall = ctp / n_pos
        precision = ctp / np.maximum(ctp + cfp, np.finfo(float).eps)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        pts = []
        for r in np.linspace(0, 1, 101):
            i = np.searchsorted(recall, r, side="left")
            pts.append(precision[i] if i < len(precision) else 0.0)
        aps.append(np.mean(pts))
    return 100 * float(np.mean(aps))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_ap_matches_an_independent_reference(seed):
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for _ in range(int(rng.integers(1, 4))):
        n, m = int(rng.integers(1, 5)), int(rng.integers(0, 7))
        g = rng.uniform(0, 60, (n, 2))
        gb = np.concatenate([g, g + rng.uniform(5, 40, (n, 2))], 1)
        jitter = rng.normal(0, 4, (m, 4))
        db = gb[rng.integers(0, n, m)] + jitter if m else np.zeros((0, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
        gts.append(_gt(gb.tolist(), rng.integers(1, 3, n).tolist(), (rng.random(n) < 0.2).tolist()))
        dts.append(_dt(db.tolist(), rng.uniform(0.05, 1, m).tolist(), rng.integers(1, 3, m).tolist()))
    res = detection_ap(gts, dts, classes=("a", "b"))
    if all(int((~g["difficult"]).sum()) == 0 for g in gts):
        return
    assert res["AP50"] == pytest.approx(_reference_ap(gts, dts, 2, 0.5), abs=1e-9)
    assert res["AP75"] == pytest.approx(_reference_ap(gts, dts, 2, 0.75), abs=1e-9)
    ap = np.mean([_reference_ap(gts, dts, 2, t) for t in np.linspace(0.5, 0.95, 10)])
    assert res["AP"] == pytest.approx(ap, abs=1e-9)


# ---------------------------------------------------------------------------------- end to end


def test_learns_to_find_shapes_and_records_the_result(voc, tmp_path, capsys, one_thread):
    """200 CPU iterations of a random-init resnet_tiny: AP50 clearly above the untrained detector's."""
    args = ["eval", "detection", "random:resnet_tiny", "--root", str(voc), "--protocol", "voc07", "--no-progress",
            "--iterations", "0", "--out", str(tmp_path / "untrained")]
    for o in SMALL:
        args += ["--set", o]
    assert main(args) == 0
    line = capsys.readouterr().out
    assert line.startswith("detection: ") and "AP50" in line
    untrained = json.loads((tmp_path / "untrained/eval/detection_voc07.json").read_text())
    trained = run_detection("random:resnet_tiny", voc, protocol="voc07", overrides=SMALL, iterations=200,
                            out=tmp_path / "trained", progress=False)
    print(f"AP50 untrained {untrained['AP50']:.1f} trained {trained['AP50']:.1f} (AP {trained['AP']:.1f}, "
          f"AP75 {trained['AP75']:.1f}); {trained['seconds_per_1000_iterations']:.0f} s per 1000 iterations")
    assert untrained["AP50"] < 5
    assert trained["AP50"] > 25 and trained["AP50"] > untrained["AP50"] + 20
    assert trained["n_train"] == 40 and trained["n_test"] == 20 and trained["precise_bn_batches"] == 10
    report = (tmp_path / "trained" / "report.md").read_text()
    assert "eval detection voc07" in report and "AP50=" in report
    assert (tmp_path / "trained/detection/voc07/checkpoints/ckpt_00000200.pt").exists()
    metrics = [json.loads(x) for x in (tmp_path / "trained/detection/voc07/metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == list(range(25, 201, 25))


def test_an_interrupted_run_resumes_exactly(voc, tmp_path, one_thread):
    ov = [*SMALL, "solver.checkpoint_every=3", "solver.batch_size=2", "solver.precise_bn_iters=0"]
    kw = dict(protocol="voc07", overrides=ov, iterations=6, out=tmp_path, progress=False)
    first = run_detection("random:resnet_tiny", voc, **kw)
    ckpts = tmp_path / "detection/voc07/checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.pt")) == ["ckpt_00000003.pt", "ckpt_00000006.pt"]
    end = torch.load(ckpts / "ckpt_00000006.pt", weights_only=True)["model"]
    (ckpts / "ckpt_00000006.pt").unlink()  # as if killed between the checkpoints
    again = run_detection("random:resnet_tiny", voc, **kw)
    assert again["resumed_from"] == 3
    resumed = torch.load(ckpts / "ckpt_00000006.pt", weights_only=True)["model"]
    for k, v in end.items():
        assert torch.allclose(resumed[k].double(), v.double(), rtol=1e-5, atol=1e-6), k
    assert again["AP"] == pytest.approx(first["AP"], abs=0.5)
    done = run_detection("random:resnet_tiny", voc, **kw)  # finished: evaluates again, trains nothing
    assert done["resumed_from"] == 6 and done["AP"] == pytest.approx(again["AP"], abs=1e-9)
    with pytest.raises(ValueError, match="other settings .*solver.lr"):
        run_detection("random:resnet_tiny", voc, **{**kw, "overrides": [*ov, "solver.lr=0.01"]})


def test_two_cpu_processes_agree_with_one(tmp_path, one_thread):
    """torchrun with 2 gloo ranks (synchronised BatchNorm, gathered detections) evaluates like one process."""
    root = make_voc(tmp_path / "voc", n_trainval=8, n_test=6, seed=1)
    ov = [*SMALL, "solver.precise_bn_iters=0", "solver.test_batch_per_rank=1"]
    cli = ["-m", "mmcr.cli", "eval", "detection", "random:resnet_tiny", "--root", str(root), "--protocol", "voc07",
           "--iterations", "3", "--no-progress", "--out", str(tmp_path / "run"), "--device", "cpu"]
    for o in ov:
        cli += ["--set", o]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *cli]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "run/eval/detection_voc07.json").read_text())
    assert two["world_size"] == 2 and two["n_test"] == 6
    # one process resumes the finished run (world size is not a setting) and evaluates all test images
    one = run_detection("random:resnet_tiny", root, protocol="voc07", overrides=ov, iterations=3,
                        out=tmp_path / "run", progress=False, device="cpu")
    assert one["world_size"] == 1 and one["resumed_from"] == 3
    assert one["AP"] == pytest.approx(two["AP"], abs=1e-6) and one["AP50"] == pytest.approx(two["AP50"], abs=1e-6)
