"""Full-image views cut by the decoding workers: the boxes follow torchvision's RandomResizedCrop, the
crops equal torchvision's resized_crop of the fully decoded image (within the DCT-scaling bound), they
replay from (seed, epoch, index), and the device finishes them like its own crops."""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from scipy.stats import ks_2samp
from torchvision.transforms import RandomResizedCrop

from mmcr.augment import MultiViewAugment
from mmcr.data import CropSpec, DatasetError, decode_views, load_dataset, make_loader
from mmcr.data.views import box_generator, dct_reduction, decode_encoded, encode_views, sample_boxes

SCALE, RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)


@functools.lru_cache(maxsize=1)
def _sample_photo() -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))


def _photo(height: int, width: int) -> np.ndarray:
    """A real photograph (scikit-learn's bundled sample, 427 x 640) cropped or enlarged to (height, width)."""
    img = _sample_photo()
    if height > img.height or width > img.width:
        img = img.resize((max(width, img.width * height // img.height), max(height, img.height * width // img.width)),
                         Image.BICUBIC)
    return np.asarray(img)[:height, :width]


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _box_statistics(height: int, width: int) -> dict:
    """Area fraction, aspect and relative position of (n, 4) boxes (top, left, h, w)."""
    return {"area": lambda b: b[:, 2] * b[:, 3] / (height * width), "aspect": lambda b: b[:, 3] / b[:, 2],
            "top": lambda b: b[:, 0] / height, "left": lambda b: b[:, 1] / width}


def test_boxes_follow_torchvision_random_resized_crop():
    """KS tests of area fraction, aspect and position against RandomResizedCrop.get_params on the same
    image sizes (4,000 boxes each, fixed seeds); and the fallback box is torchvision's, exactly."""
    n = 4000
    torch.manual_seed(0)
    worst = 1.0
    for height, width in ((375, 500), (500, 333), (60, 200)):  # 60 x 200 is outside the ratio: many fallbacks
        ours = np.concatenate([sample_boxes(height, width, 2, SCALE, RATIO, box_generator(7, 0, i))
                               for i in range(n // 2)]).astype(float)
        ref = np.array([RandomResizedCrop.get_params(torch.empty(3, height, width), list(SCALE), list(RATIO))
                        for _ in range(n)], dtype=float)
        stats = {name: (f(ours), f(ref)) for name, f in _box_statistics(height, width).items()}
        for name, (a, b) in stats.items():
            res = ks_2samp(a, b)
            print(f"{height}x{width} {name}: KS D={res.statistic:.4f} p={res.pvalue:.3f}")
            worst = min(worst, res.pvalue)
            assert res.pvalue > 1e-3, (height, width, name, res)
    print(f"smallest KS p-value over 12 tests: {worst:.3f}")
    # every try fails on a 10 x 1000 strip: both fall back to the same centre crop
    ref = RandomResizedCrop.get_params(torch.empty(3, 10, 1000), list(SCALE), list(RATIO))
    assert sample_boxes(10, 1000, 3, SCALE, RATIO, box_generator(0, 0, 0)).tolist() == [list(ref)] * 3


def _errors(views: torch.Tensor, ref_views: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.abs(views.numpy().astype(np.int16) - ref_views.numpy().astype(np.int16)).ravel())


def test_views_equal_torchvision_resized_crop_of_the_decoded_image():
    """Crops decoded at full scale equal torchvision's resized_crop of the fully decoded image (within
    1 grey level: the resize's integer rounding); crops decoded at 1/2-1/8 scale (DCT scaling) differ
    as a two-step resize does: as much as Pillow's own reducing_gap=1 shortcut (reduce by an integer
    factor, then resize; within 25 %) on the same boxes, and under mean 2.5 / 99th percentile 16 /
    max 64 grey levels (of 255)."""
    bic = TF.InterpolationMode.BICUBIC
    full_err, dct_err, gap_err = [], [], []
    for (height, width), size, count in (((375, 500), 224, 8), ((375, 500), 64, 24), ((600, 800), 224, 24)):
        data = _jpeg(_photo(height, width))
        decoded = Image.open(io.BytesIO(data)).convert("RGB")  # the reference: torchvision's ImageFolder loader
        ref = torch.from_numpy(np.array(decoded)).permute(2, 0, 1)
        spec = CropSpec(2, (size, size), SCALE, RATIO, "bicubic", seed=3)
        for index in range(count):
            views = decode_views(data, spec, 5, index)
            assert views.shape == (2, 3, size, size) and views.dtype == torch.uint8
            boxes = sample_boxes(height, width, 2, SCALE, RATIO, box_generator(3, 5, index))
            reduced = dct_reduction(boxes, (size, size)) > 1
            for v, (t, lf, h, w) in enumerate(boxes.tolist()):
                want = TF.resized_crop(ref, t, lf, h, w, [size, size], interpolation=bic, antialias=True)
                (dct_err if reduced else full_err).append(_errors(views[v], want))
                if reduced:
                    gap = decoded.resize((size, size), Image.BICUBIC, box=(lf, t, lf + w, t + h), reducing_gap=1.0)
                    gap_err.append(_errors(torch.from_numpy(np.array(gap)).permute(2, 0, 1), want))
    full, dct, gap = (torch.cat(e).float() for e in (full_err, dct_err, gap_err))

    def q99(e):
        return float(np.quantile(e.numpy(), 0.99))

    print(f"full scale: {len(full_err)} views, mean {full.mean():.4f}, max {full.max():.0f}")
    print(f"DCT-scaled: {len(dct_err)} views, mean {dct.mean():.2f}, p99 {q99(dct):.0f}, max {dct.max():.0f}; "
          f"Pillow reducing_gap=1: mean {gap.mean():.2f}, p99 {q99(gap):.0f}, max {gap.max():.0f}")
    assert len(full_err) > 10 and len(dct_err) > 10
    assert full.max() <= 1 and full.mean() < 0.01
    assert dct.mean() <= 1.25 * gap.mean() and q99(dct) <= 1.25 * q99(gap)
    assert dct.mean() < 2.5 and q99(dct) <= 16 and dct.max() <= 64


def _folder(root, sizes=((90, 120), (60, 40), (150, 100), (48, 64)), per_class=3):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[(i + len(c)) % len(sizes)]
            arr = np.clip(rng.integers(0, 255, (1, 1, 3)) + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / "train" / c / f"{i}.jpg", quality=90)
    return root


def test_folder_views_replay_from_seed_epoch_and_index(tmp_path):
    ds = load_dataset("imagefolder", _folder(tmp_path / "f"), split="train", lazy=True, size=32)
    spec = CropSpec(3, (24, 24), SCALE, RATIO, "bicubic", seed=1)
    crops = ds.with_crops(spec)
    assert crops.image_size == (24, 24) and ds.image_size == (32, 32)

    def epoch(workers, e, start=0):
        loader = make_loader(crops, batch_size=2, seed=4, num_workers=workers)
        loader.set_epoch(e, start_batch=start)
        return list(loader)

    inline, worker = epoch(0, 0), epoch(1, 0)
    assert inline[0][0].shape == (2, 3, 3, 24, 24) and inline[0][0].dtype == torch.uint8
    for (xa, ya), (xb, yb) in zip(inline, worker):  # the same boxes in a worker process
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, _), (xb, _) in zip(inline[1:], epoch(0, 0, start=1)):  # resume mid-epoch: the same views
        assert torch.equal(xa, xb)
    assert not torch.equal(inline[0][0], epoch(0, 1)[0][0])  # another epoch, other boxes (and order)
    # a subset keeps each file's id: its views are the ones the file gets in the whole list
    sub = crops.subset([4, 1])
    assert torch.equal(sub[1][0], crops[1][0]) and torch.equal(sub[0][0], crops[4][0])


@pytest.mark.parametrize("affine", [{}, {"degrees": 20, "translate": (0.1, 0.1), "shear": 5,
                                        "affine_interpolation": "bilinear"}])
def test_apply_views_finishes_crops_like_the_device_path(affine):
    """Pre-cropped views get the flips, affine warps, colour, blur and solarisation the device applies to
    its own crops: apply_views(views, p) == apply(images, p with every box the whole image)."""
    aug = MultiViewAugment("byol", views=2, seed=0, size=40, **affine)
    images = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    p = aug.sample_params(5, 40, 40, torch.Generator().manual_seed(3))
    out = aug.apply_views(images[:, None].expand(-1, 2, -1, -1, -1).contiguous(), p)
    n = 10
    p.top, p.left = torch.zeros(n, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)
    p.height, p.width = torch.full((n,), 40), torch.full((n,), 40)
    want = aug.apply(images, p)
    assert out.shape == (5, 2, 3, 40, 40)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="expected uint8 views"):
        aug.apply_views(images, p)
    with pytest.raises(ValueError, match="color_first"):
        MultiViewAugment("stl10", views=2, size=40).apply_views(images[:, None].expand(-1, 2, -1, -1, -1), p)


def _encoded_vs_cpu(device: str):
    spec = CropSpec(2, (48, 48), SCALE, RATIO, "bilinear", seed=0)
    datas = [_jpeg(_photo(90 + 7 * i, 120 - 5 * i)) for i in range(4)] + [b"\xff\xd8 broken \xff\xd9"]
    items = [encode_views(d, spec, 2, i) for i, d in enumerate(datas[:4])]
    cpu = torch.stack([decode_views(d, spec, 2, i) for i, d in enumerate(datas[:4])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = ("jpeg", torch.frombuffer(bytearray(datas[4]), dtype=torch.uint8), items[0][2])
    out, lost = decode_encoded(items + [bad], spec, device)
    assert out.shape == (5, 2, 3, 48, 48) and out.device.type == device and lost == 1
    assert torch.equal(out[4], out[0])  # the broken file took another sample's place
    with pytest.raises(DatasetError, match="cannot decode JPEG 4"):
        decode_encoded(items + [bad], spec, device, on_error="raise")
    return out[:4].cpu(), cpu


def test_batched_decoding_on_the_cpu_equals_the_worker_path():
    """decode_encoded (one decode_jpeg call for the batch, crops on the device) on the CPU: the same
    views as the workers' path for images whose boxes allow no DCT scaling."""
    out, cpu = _encoded_vs_cpu("cpu")
    assert torch.equal(out, cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (nvJPEG)")
def test_batched_gpu_decoding_matches_the_cpu_views():
    out, cpu = _encoded_vs_cpu("cuda")
    err = _errors(out, cpu)
    print(f"nvJPEG vs libjpeg views: mean {err.mean():.3f}, max {err.max():.0f}")
    assert err.mean() < 1.0 and err.max() <= 32


def test_corrupt_files_in_full_image_views_are_skipped_or_raised(tmp_path):
    root = _folder(tmp_path / "f")
    (root / "train" / "b" / "9.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = load_dataset("imagefolder", root, split="train", lazy=True, size=32)
    spec = CropSpec(2, (16, 16), SCALE, RATIO, "bilinear")
    bad = ds.files.index(str(root / "train" / "b" / "9.jpg"))
    with pytest.warns(UserWarning, match="skipped undecodable image"):
        views, label = ds.with_crops(spec)[bad]
    assert views.shape == (2, 3, 16, 16)
    raising = load_dataset("imagefolder", root, split="train", lazy=True, size=32, on_error="raise").with_crops(spec)
    loader = make_loader(raising.subset([bad, 0]), batch_size=2, num_workers=1)
    loader.set_epoch(0)
    with pytest.raises(DatasetError) as err:  # a worker's error reaches the user as its own one line
        list(loader)
    assert str(err.value).startswith("cannot decode image") and "\n" not in str(err.value)


def test_full_image_views_options_are_refused_by_name_where_they_cannot_apply(tmp_path, capsys):
    from mmcr.cli import main

    root = _folder(tmp_path / "f", per_class=6)
    base = ["pretrain", "imagenet-mini", "--set", f"data.root={root}", "--set", "data.val_fraction=0.25",
            "--set", "train.batch_size=4", "--out", str(tmp_path / "run"), "--set", f"data.cache_dir={tmp_path / 'c'}"]
    cases = [
        (["--set", "data.options.lazy=false"], "data.full_image_views=true needs files decoded by workers"),
        (["--set", "augment.small_views=2"], "augment.small_views > 0 crops the decoded square"),
        (["--set", "data.decode_device=cuda", "--device", "cpu"], "data.decode_device=cuda needs a CUDA"),
        (["--set", "data.full_image_views=false", "--set", "data.decode_device=cuda"], "set data.full_image_views"),
    ]
    for extra, msg in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and msg in err, err
