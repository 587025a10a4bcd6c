"""Clip data sets and temporal views: video files (PyAV), frame folders, npz clips, the generated moving
digits; the window rule (a pure function of seed, epoch and sample), the three spatial modes, training
on each source, resume, chunking, another objective and the bad inputs of issue 20. Tiny generated
clips (16 frames of 32 px) and 1-6 training steps keep the file fast."""

from __future__ import annotations

import copy
import json
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from mmcr.augment.temporal import TemporalViews, WindowSampler
from mmcr.data import DatasetError, load_dataset, make_clip_loader, still_images
from mmcr.data.video import WindowReader, index_video

FRAMES, SIZE = 16, 32

TRAIN = ["train.max_steps=2", "train.epochs=2", "train.batch_size=4", "augment.views=4", "temporal.window=8",
         "train.progress=false", "train.tensorboard=false", "train.threads=1", "eval.knn_every_epochs=0",
         "eval.knn_k=5", "model.projector.hidden=[32]", "model.projector.out_dim=16", "data.val_fraction=0"]


def _clip(label: int, seed: int, frames: int = FRAMES, size: int = SIZE) -> np.ndarray:
    """(T, size, size, 3) uint8: a bright square whose position encodes time and whose colour the label."""
    rng = np.random.default_rng(seed)
    out = np.zeros((frames, size, size, 3), np.uint8)
    colour = [(255, 40, 40), (40, 255, 40), (40, 40, 255)][label % 3]
    x0 = rng.integers(0, size // 2)
    for t in range(frames):
        x = (x0 + t) % (size - 8)
        out[t, 8:16, x: x + 8] = colour
        out[t, :2] = t * 15  # a time stamp along the top rows
    return out


def write_video(path: Path, clip: np.ndarray, fps: int = 10, codec: str = "libx264", pts=None) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = clip.shape[2], clip.shape[1], "yuv420p"
        s.codec_context.gop_size = 6
        for i, img in enumerate(clip):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if pts is not None:
                frame.pts = pts[i]
                frame.time_base = Fraction(1, fps)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def video_tree(root: Path, per_class: int = 2, splits=("train", "test")) -> Path:
    for si, split in enumerate(splits):
        for label in range(2):
            d = root / split / f"class{label}"
            d.mkdir(parents=True)
            for i in range(per_class):
                write_video(d / f"clip{i}.mp4", _clip(label, 100 * si + 10 * label + i))
    return root


def frame_tree(root: Path, per_class: int = 2, splits=("train", "test")) -> Path:
    from PIL import Image

    for si, split in enumerate(splits):
        for label in range(2):
            for i in range(per_class):
                d = root / split / f"class{label}" / f"clip{i}"
                d.mkdir(parents=True)
                for t, img in enumerate(_clip(label, 100 * si + 10 * label + i)):
                    Image.fromarray(img).save(d / f"frame_{t + 1}.png")
    return root


def _decode_all(path: Path, size: int) -> np.ndarray:
    """Reference: every frame decoded from the start, converted like the reader does."""
    with av.open(str(path)) as c:
        out = [f.to_ndarray(width=size, height=size, format="rgb24", interpolation="AREA") for f in c.decode(video=0)]
    return np.stack(out)


# ------------------------------------------------------------------------------------------ reading
def test_index_and_seeking_reader_match_decoding_from_the_start(tmp_path):
    path = write_video(tmp_path / "a.mp4", _clip(0, 1))
    info = index_video(str(path))
    assert info["frames"] == FRAMES and info["fps"] == pytest.approx(10.0) and info["duration"] == pytest.approx(1.6)
    assert info["keyframes"][0] == 0 and len(info["keyframes"]) >= 2  # gop 6: seeking skips decoding
    ref = _decode_all(path, 16)
    reader = WindowReader(16)
    for frames in ([9, 11, 13], [0, 1], [15], [12, 3, 3]):  # any order, repeats allowed
        assert np.array_equal(reader.read(str(path), info, frames), ref[frames])
    with pytest.raises(ValueError, match="outside the 16 frames"):
        reader.read(str(path), info, [16])


def test_videofolder_and_framefolder_hold_the_same_clips(tmp_path):
    vids = load_dataset("videofolder", root=str(video_tree(tmp_path / "v")), split="train",
                        cache_dir=tmp_path / "cache", size=SIZE, lazy=True)
    frames = load_dataset("framefolder", root=str(frame_tree(tmp_path / "f")), split="train",
                          cache_dir=tmp_path / "cache", size=SIZE, lazy=True)
    assert len(vids) == len(frames) == 4 and vids.classes == frames.classes == ["class0", "class1"]
    assert vids.labels.tolist() == frames.labels.tolist() == [0, 0, 1, 1]
    assert vids.lengths.tolist() == frames.lengths.tolist() == [FRAMES] * 4
    exact = torch.from_numpy(_clip(1, 11)[[2, 5]]).permute(0, 3, 1, 2)
    assert torch.equal(frames.read(3, [2, 5]), exact)  # PNG is lossless
    assert (vids.read(3, [2, 5]).float() - exact.float()).abs().mean() < 8  # H.264 + yuv420p: close
    # decoded into memory (lazy=False) it is the same clips, cached; evaluation sees still frames
    mem = load_dataset("framefolder", root=str(tmp_path / "f"), split="train", cache_dir=tmp_path / "cache",
                       size=SIZE, lazy=False)
    assert torch.equal(mem.read(3, [2, 5]), exact)
    still = still_images(mem)
    assert still.images.shape == (16, 3, SIZE, SIZE) and still.labels.tolist() == [0] * 8 + [1] * 8
    assert torch.equal(still_images(frames).images, still.images)


def test_npz_clips_and_their_bad_inputs(tmp_path):
    good = np.stack([_clip(i % 2, i) for i in range(6)])
    np.savez(tmp_path / "c.npz", videos_train=good, labels_train=np.arange(6) % 2, videos_test=good[:2],
             labels_test=np.array([0, 1]))
    ds = load_dataset("npz", root=str(tmp_path / "c.npz"), split="train")
    assert len(ds) == 6 and ds.frames.shape == (96, 3, SIZE, SIZE) and ds.labels.tolist() == [0, 1] * 3
    assert torch.equal(ds.read(4, [7]), torch.from_numpy(good[4, [7]]).permute(0, 3, 1, 2))
    cases = {
        "rank": (dict(videos_train=good[0]), "shape \\(N, T, H, W, 3\\)"),
        "dtype": (dict(videos_train=good.astype(np.float32)), "dtype float32"),
        "labels": (dict(videos_train=good, labels_train=np.zeros(5, np.int64)), "6 clips but 5 labels"),
    }
    for name, (arrays, msg) in cases.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(DatasetError, match=msg) as e:
            load_dataset("npz", root=str(tmp_path / f"{name}.npz"), split="train")
        assert f"{name}.npz" in str(e.value) and "\n" not in str(e.value)
    np.savez(tmp_path / "img.npz", x_train=good[:, 0], y_train=np.zeros(6, np.int64))
    with pytest.raises(DatasetError, match="still_frames applies to .npz files of clips"):
        load_dataset("npz", root=str(tmp_path / "img.npz"), split="train", still_frames=2)


def test_bad_video_files_are_skipped_and_counted_or_raise(tmp_path):
    d = video_tree(tmp_path / "v", per_class=2, splits=("train",)) / "train" / "class0"
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("not a video at all\n")
    whole = (d / "clip0.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(whole[: len(whole) * 2 // 3])  # moov atom at the end: gone
    write_video(d / "vfr.mkv", _clip(0, 5), pts=[0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17, 19, 20, 22])
    with pytest.warns(UserWarning, match="skipped 4 unusable video file") as rec:
        ds = load_dataset("videofolder", root=str(tmp_path / "v"), split="train", cache_dir=tmp_path / "c",
                          size=SIZE, lazy=True)
    msg = str(rec[0].message)
    assert len(ds) == 4 and "empty.mp4 is empty" in msg and "text.mp4 is not a readable video" in msg
    assert "cut.mp4 has no video stream (truncated" in msg and "vfr.mkv has a variable frame rate" in msg
    with pytest.warns(UserWarning, match="skipped 4"):  # the cached index repeats the warning
        load_dataset("videofolder", root=str(tmp_path / "v"), split="train", cache_dir=tmp_path / "c", size=SIZE)
    for bad, what in (("empty.mp4", "is empty"), ("text.mp4", "not a readable video"), ("vfr.mkv", "variable")):
        solo = tmp_path / f"solo-{bad}"
        (solo / "a").mkdir(parents=True)
        (solo / "a" / bad).write_bytes((d / bad).read_bytes())
        with pytest.raises(DatasetError, match=what) as e:
            load_dataset("videofolder", root=str(solo), split="train", cache_dir=tmp_path / "c", size=SIZE,
                         on_error="raise")
        assert bad in str(e.value) and "\n" not in str(e.value)


def test_frame_folder_with_mixed_sizes_and_short_clips_are_refused(tmp_path):
    from PIL import Image

    root = frame_tree(tmp_path / "f", per_class=1, splits=("train",))
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "train" / "class0" / "clip0" / "frame_99.png")
    with pytest.raises(DatasetError, match="clip0 have different sizes \\(32x24, 32x32\\)"):
        load_dataset("framefolder", root=str(root), split="train", cache_dir=tmp_path / "c", size=SIZE)
    (root / "train" / "class0" / "clip0" / "frame_99.png").unlink()
    ds = load_dataset("framefolder", root=str(root), split="train", cache_dir=tmp_path / "c", size=SIZE, lazy=True)
    with pytest.raises(DatasetError, match="clip0 has 16 frames, shorter than the window of 20 frames"):
        make_clip_loader(ds, WindowSampler(4, window=20), batch_size=2)
    with pytest.raises(ValueError, match="needs the clips' frame rate"):
        make_clip_loader(ds, WindowSampler(4, window=0.5, unit="seconds"), batch_size=2)
    ds = load_dataset("framefolder", root=str(root), split="train", cache_dir=tmp_path / "c", size=SIZE, fps=20,
                      lazy=True)
    loader = make_clip_loader(ds, WindowSampler(4, window=0.5, unit="seconds", sampling="strided"), batch_size=2)
    loader.set_epoch(0)
    assert all((f[-1] - f[0]).item() == 9 for f in loader.windows_of(torch.arange(2))[1])  # 0.5 s at 20 fps


# ------------------------------------------------------------------------------------------ windows
def test_windows_are_a_pure_function_of_seed_epoch_and_sample():
    lengths = np.array([16, 40, 9])
    s = WindowSampler(4, window=8, seed=3)
    table = s.table(lengths)
    a = s.frames_of(table, 2, [0, 1, 2])
    assert np.array_equal(a[1], s.frames_of(table, 2, [0, 1, 2])[1])
    assert np.array_equal(a[1][1], s.frames_of(table, 2, [2, 1])[1][1])  # a sample's window ignores the batch
    assert not np.array_equal(a[1], s.frames_of(table, 3, [0, 1, 2])[1])
    for clip, f in zip(*a):
        assert f[-1] - f[0] < 8 and len(set(f.tolist())) == 4 and f.max() < lengths[clip] and np.all(np.diff(f) > 0)
    st = WindowSampler(3, window=9, sampling="strided")
    strided = st.frames_of(st.table(lengths), 0, [1])[1][0]
    assert np.array_equal(np.diff(strided), [4, 4])
    segs = WindowSampler(4, window=8, segment=16).table(lengths)  # 40 frames: segments [0,16) [16,40)
    assert segs.clip.tolist() == [0, 1, 1, 2] and segs.lo.tolist() == [0, 0, 16, 0]
    assert segs.hi.tolist()[1:3] == [16, 40]
    one = WindowSampler(5, window=1)
    stills = one.frames_of(one.table(lengths), 0, [0, 1])[1]  # augmentation-only: one frame, 5 times
    assert all(len(set(r.tolist())) == 1 for r in stills)


def test_spatial_modes_and_rank_shares(tmp_path):
    from mmcr.augment import MultiViewAugment
    from mmcr.distributed import DistInfo
    from mmcr.train.step import augment_shard

    frames = torch.from_numpy(np.stack([_clip(i, i) for i in range(4)])[:, :4]).permute(0, 1, 4, 2, 3).contiguous()
    base = dict(preset="cifar", views=1, size=24, scale=(0.3, 0.6))
    none = TemporalViews(MultiViewAugment(**base, seed=0), 4, "none")(frames)
    assert torch.equal(none, MultiViewAugment(**base).eval_transform()(frames.flatten(0, 1)).view(4, 4, 3, 24, 24))
    same = frames[:, :1].expand(-1, 4, -1, -1, -1).contiguous()  # four identical frames per window
    win = TemporalViews(MultiViewAugment(**base, seed=0), 4, "window")(same)
    per = TemporalViews(MultiViewAugment(**base, seed=0), 4, "frame")(same)
    assert torch.equal(win[:, 0], win[:, 3]) and not torch.equal(win[0, 0], win[1, 0])
    assert not torch.equal(per[:, 0], per[:, 3])
    # each rank's share of a global batch gets the views those windows get in one process
    for spatial in ("window", "frame"):
        views = TemporalViews(MultiViewAugment(**base, seed=0), 4, spatial)
        whole = augment_shard(views, frames, 4, DistInfo(), torch.Generator().manual_seed(1))
        for rank in range(2):
            info = DistInfo(rank=rank, world_size=2, local_rank=rank)
            part = augment_shard(views, frames[rank::2], 4, info, torch.Generator().manual_seed(1))
            assert torch.equal(part, whole[rank::2])


# ------------------------------------------------------------------------------------------ training
def _train(args, out):
    from mmcr.train import load_config, train

    return train(load_config("moving-digits", args + [f"out={out}"]))


@pytest.mark.parametrize("source", ["videofolder", "framefolder"])
def test_the_preset_trains_on_video_files_and_frame_folders(tmp_path, source):
    root = (video_tree if source == "videofolder" else frame_tree)(tmp_path / "data")
    out = tmp_path / "run"
    workers = ["data.num_workers=1"] if source == "videofolder" else []  # decoded in a worker process
    summary = _train(TRAIN + workers + [f"data.name={source}", f"data.root={root}", f"data.cache_dir={tmp_path / 'c'}",
                                        "data.options={size: 32, lazy: true}"], out)
    assert summary["steps"] == 2 and summary["nonfinite_steps"] == 0
    for key in ("knn_top1_learned", "knn_top1_random_init", "knn_top1_raw_pixels"):
        assert 0 <= summary[key] <= 100
    assert json.loads((out / "summary.json").read_text())["knn_top1_learned"] == summary["knn_top1_learned"]


def test_moving_digits_chunked_momentum_and_simclr(tmp_path):
    small = ["data.options={size: 16, frames: 8}", "augment.overrides.size=16", "eval.final=false"]
    base = TRAIN + small + ["train.max_steps=1"]
    ref = _train(base, tmp_path / "a")
    chunked = _train(base + ["train.view_chunk=4"], tmp_path / "b")
    other = _train(base + ["objective.name=simclr", "temporal.spatial=frame"], tmp_path / "c")
    momentum = _train(base + ["model.momentum.enabled=true", "train.view_chunk=8"], tmp_path / "d")
    for s in (ref, chunked, other, momentum):
        assert s["steps"] == 1 and s["nonfinite_steps"] == 0
    log = lambda d: [r for r in map(json.loads, (d / "metrics.jsonl").read_text().splitlines()) if "loss" in r]  # noqa: E731
    assert np.isfinite(log(tmp_path / "c")[-1]["loss"])


def test_resume_replays_the_same_windows_bit_for_bit(tmp_path):
    from mmcr.rundir import layout
    from mmcr.rundir.checkpoint import read_checkpoint

    args = TRAIN + ["data.options={size: 16, frames: 8}", "augment.overrides.size=16", "eval.final=false",
                    "train.max_steps=6", "train.checkpoint_every_steps=2", "temporal.spatial=window",
                    "train.keep_checkpoints=0"]
    _train(args, tmp_path / "ref")
    _train([a for a in args if a != "train.max_steps=6"] + ["train.max_steps=3"], tmp_path / "run")
    _train(args + ["train.resume=auto"], tmp_path / "run")
    last = lambda d: read_checkpoint(layout.list_checkpoints(d)[-1][1])  # noqa: E731
    a, b = last(tmp_path / "ref"), last(tmp_path / "run")
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key


def test_image_data_refuses_temporal_settings_and_clips_refuse_multicrop(tmp_path):
    from mmcr.run.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="temporal.\\* configure the windows of clip data sets"):
        _train(TRAIN + ["data.name=digits", "augment.overrides.size=16", "temporal.window=4"], tmp_path / "a")
    with pytest.raises(ConfigError, match="multi-crop"):
        _train(TRAIN + ["data.options={size: 16, frames: 8}", "augment.small_views=2"], tmp_path / "b")
    with pytest.raises(ConfigError, match="every view the same frame"):
        load_config("moving-digits", ["temporal.window=1", "temporal.spatial=none"])
    with pytest.raises(ConfigError, match="whole number of frames"):
        load_config("moving-digits", ["temporal.window=2.5"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config("moving-digits", ["temporal.window=1", "temporal.spatial=frame"])  # augmentation-only


def test_moving_digits_are_deterministic_and_disjoint(tmp_path):
    from mmcr.data.moving_digits import moving_digits

    a, la = moving_digits("test", size=16, frames=4, seed=0)
    b, _ = moving_digits("test", size=16, frames=4, seed=0)
    c, _ = moving_digits("test", size=16, frames=4, seed=1)
    assert a.shape == (1000, 4, 16, 16) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.bincount(la).tolist() == [100] * 10
    assert (a[:, 0] != a[:, -1]).any(axis=(1, 2)).mean() > 0.95  # the digits move
    with pytest.raises(DatasetError, match="takes no root"):
        load_dataset("moving-digits", root="x", split="train")


def test_analyze_measures_temporal_manifolds_beside_class_manifolds(tmp_path):
    from mmcr.geometry.analyze import run_analysis

    clips = np.stack([_clip(i % 2, i) for i in range(8)])
    np.savez(tmp_path / "c.npz", videos_test=clips, labels_test=np.arange(8) % 2)
    res = run_analysis("random:resnet_tiny", "npz", tmp_path / "geo", root=str(tmp_path / "c.npz"), n_images=6,
                       n_views=4, n_classes=2, n_per_class=8, n_t=10, fit_range=(2, 10), layers=["output"],
                       finite_sample_repeats=0, progress=False)
    t = res["temporal"]["output"]
    assert res["settings"]["temporal"]["n_clips"] == 6 and res["settings"]["temporal"]["frames_per_window"] == 4
    assert t["capacity"]["capacity"] > 0 and t["capacity"]["radius"] > 0 and t["capacity"]["dimension"] > 0
    assert len(t["capacity"]["alpha"]) == 6 and "output" in res["class"] and "output" in res["augmentation"]
    report = (tmp_path / "geo" / "report.md").read_text()
    assert "## Temporal manifolds" in report and "Temporal manifolds: 6 clips x 4 frames" in report


def test_a_clip_that_breaks_after_indexing_is_skipped_or_raises(tmp_path):
    root = video_tree(tmp_path / "v", per_class=1, splits=("train",))
    ds = load_dataset("videofolder", root=str(root), split="train", cache_dir=tmp_path / "c", size=SIZE, lazy=True)
    (root / "train" / "class0" / "clip0.mp4").write_bytes(b"\0" * 100)  # changed since it was indexed
    with pytest.warns(UserWarning, match="skipped undecodable clip .*clip0.mp4"):
        x, label = ds[(0, (1, 2))]
    assert label == 1 and ds.skipped == 1 and torch.equal(x, ds.read(1, [1, 2]))  # the stand-in's own label
    ds = copy.copy(ds)  # as a new worker gets it: no open containers
    ds.on_error = "raise"
    (root / "train" / "class1" / "clip0.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(DatasetError, match="cannot decode clip .*class1/clip0.mp4.*on_error='skip'"):
        ds.read(1, [0])
