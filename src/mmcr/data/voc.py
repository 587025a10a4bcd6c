"""PASCAL VOC detection data in VOC's own on-disk layout, checked once up front.

    <root>/VOCdevkit/VOC2007/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/{trainval,test}.txt}
    <root>/VOCdevkit/VOC2012/...            (``root`` may also be the VOCdevkit folder itself)

The image lists come from torchvision's :class:`~torchvision.datasets.VOCDetection` (ImageSets/Main ->
image and annotation paths). The XML is read with ElementTree directly: torchvision's dict form
(``parse_voc_xml``) folds a lone <object> into a dict and cannot say which element is wrong. Added
here: validation with one-line errors naming the file (unparsable XML, a box outside the image, an
unknown class name, missing files), boxes as tensors, and the "difficult" flag kept per object so that
training can keep or drop those objects and evaluation can ignore them.

Boxes follow detectron2's reading of VOC: the XML's 1-based inclusive pixel indexes become
continuous ``(x1, y1, x2, y2) = (xmin - 1, ymin - 1, xmax, ymax)``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import VOCDetection

from mmcr.data.decode import DatasetError, decode_image

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class VOCFormatError(DatasetError):
    """A VOC root or file that does not follow VOC's layout; the message names the file."""


@dataclass
class VOCRecord:
    """One image: its path, size from the XML, boxes (n, 4) float32, labels (n,) int64 in 1..20
    (0 is the detector's background), and the per-object difficult flag (n,) bool."""

    image: str
    width: int
    height: int
    boxes: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor


def voc_devkit(root: str | Path) -> Path:
    """The folder holding ``VOCdevkit`` (torchvision's root) for ``root`` = that folder or VOCdevkit itself."""
    root = Path(root)
    if not root.is_dir():
        raise VOCFormatError(f"VOC root {root} is not a folder; pass the folder that holds VOCdevkit/VOC2007")
    if (root / "VOCdevkit").is_dir():
        return root
    if root.name == "VOCdevkit":
        return root.parent
    if root.name.startswith("VOC20") and root.parent.name == "VOCdevkit":
        return root.parent.parent
    raise VOCFormatError(f"{root} holds no VOCdevkit folder; pass the folder that holds VOCdevkit/VOC2007")


def _text(node, tag: str, xml: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise VOCFormatError(f"{xml}: <{node.tag}> has no <{tag}>")
    return child.text.strip()


def _number(node, tag: str, xml: str) -> float:
    raw = _text(node, tag, xml)
    try:
        return float(raw)
    except ValueError:
        raise VOCFormatError(f"{xml}: <{tag}> is {raw!r}, not a number") from None


def parse_annotation(xml_path: str | Path, classes=VOC_CLASSES) -> tuple[int, int, list, list, list]:
    """``(width, height, boxes, labels, difficult)`` of one VOC XML file, validated."""
    xml = str(xml_path)
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise VOCFormatError(f"{xml}: not valid XML ({e}); fix or replace the file") from None
    except OSError as e:
        raise VOCFormatError(f"{xml}: cannot be read ({e.strerror or e})") from None
    if root.tag != "annotation":
        raise VOCFormatError(f"{xml}: the root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise VOCFormatError(f"{xml}: no <size> element")
    width, height = _number(size, "width", xml), _number(size, "height", xml)
    if width < 1 or height < 1 or not width.is_integer() or not height.is_integer():
        raise VOCFormatError(f"{xml}: image size {width:g} x {height:g} is not a positive whole number of pixels")
    boxes, labels, difficult = [], [], []
    for i, obj in enumerate(root.findall("object")):
        name = _text(obj, "name", xml)
        if name not in classes:
            raise VOCFormatError(f"{xml}: object {i} has unknown class {name!r}; VOC classes are {', '.join(classes)}")
        diff_raw = obj.findtext("difficult", default="0").strip() or "0"
        if diff_raw not in ("0", "1"):
            raise VOCFormatError(f"{xml}: object {i} ({name}) has <difficult>{diff_raw}</difficult>; use 0 or 1")
        bb = obj.find("bndbox")
        if bb is None:
            raise VOCFormatError(f"{xml}: object {i} ({name}) has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bb, t, xml) for t in ("xmin", "ymin", "xmax", "ymax"))
        # 1-based inclusive pixel indexes; a 0 is tolerated (some tools write 0-based) and clamped.
        if xmin < 0 or ymin < 0 or xmax > width or ymax > height or xmax < 1 or ymax < 1:
            raise VOCFormatError(
                f"{xml}: object {i} ({name}) box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the "
                f"{width:g} x {height:g} image; fix the coordinates (1-based pixel indexes)"
            )
        if xmin > xmax or ymin > ymax:
            raise VOCFormatError(
                f"{xml}: object {i} ({name}) box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is empty (min > max)"
            )
        boxes.append([max(xmin - 1.0, 0.0), max(ymin - 1.0, 0.0), xmax, ymax])
        labels.append(classes.index(name) + 1)
        difficult.append(diff_raw == "1")
    return int(width), int(height), boxes, labels, difficult


def load_voc_split(root: str | Path, year: str, image_set: str, classes=VOC_CLASSES) -> list[VOCRecord]:
    """Every image of ``VOC<year>/ImageSets/Main/<image_set>.txt`` with its validated annotation."""
    tv_root = voc_devkit(root)
    base = tv_root / "VOCdevkit" / f"VOC{year}"
    if not base.is_dir():
        raise VOCFormatError(f"{base} not found; the {year} data belongs in VOCdevkit/VOC{year}")
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        if not (base / sub).is_dir():
            raise VOCFormatError(f"{base} has no {sub} folder; it is not in VOC's layout")
    split_file = base / "ImageSets" / "Main" / f"{image_set}.txt"
    if not split_file.is_file():
        raise VOCFormatError(f"{split_file} not found; VOC{year} {image_set} needs its image list there")
    try:
        ds = VOCDetection(str(tv_root), year=str(year), image_set=image_set, download=False)
    except (RuntimeError, ValueError) as e:
        raise VOCFormatError(f"VOC{year} {image_set} under {tv_root}: {e}") from None
    if not ds.images:
        raise VOCFormatError(f"{split_file} lists no images")
    records = []
    for img, xml in zip(ds.images, ds.annotations):
        if not Path(xml).is_file():
            raise VOCFormatError(f"{split_file} lists {Path(xml).stem} but {xml} is missing")
        if not Path(img).is_file():
            raise VOCFormatError(f"{split_file} lists {Path(img).stem} but {img} is missing")
        w, h, boxes, labels, diff = parse_annotation(xml, classes)
        records.append(
            VOCRecord(
                image=img,
                width=w,
                height=h,
                boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                labels=torch.tensor(labels, dtype=torch.int64),
                difficult=torch.tensor(diff, dtype=torch.bool),
            )
        )
    return records


class VOCDetectionData(torch.utils.data.Dataset):
    """Images and targets for training: item ``(index, flip)`` -> ``(uint8 (3, H, W), {"boxes", "labels"})``.

    ``keep_difficult`` keeps the difficult objects as training targets (detectron2's VOC loader, and so
    the SSL detection protocol, does). Flipping is decided by the caller so that it is part of a seeded,
    resumable stream.
    """

    def __init__(self, records: list[VOCRecord], keep_difficult: bool = True):
        self.records = records
        self.keep_difficult = keep_difficult

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, i: int) -> torch.Tensor:
        r = self.records[i]
        try:
            arr = decode_image(r.image)
        except (OSError, ValueError) as e:
            raise VOCFormatError(f"{r.image}: cannot be decoded ({type(e).__name__}: {e})") from None
        img = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        if tuple(img.shape[1:]) != (r.height, r.width):
            raise VOCFormatError(
                f"{r.image} is {img.shape[2]} x {img.shape[1]} but its annotation says {r.width} x {r.height}"
            )
        return img

    def __getitem__(self, item) -> tuple[torch.Tensor, dict]:
        i, flip = item if isinstance(item, tuple) else (item, False)
        r = self.records[i]
        img = self.load_image(i)
        keep = torch.ones_like(r.difficult) if self.keep_difficult else ~r.difficult
        boxes, labels = r.boxes[keep].clone(), r.labels[keep].clone()
        if flip:
            img = img.flip(-1)
            boxes[:, [0, 2]] = r.width - boxes[:, [2, 0]]
        return img, {"boxes": boxes, "labels": labels}
