"""Data sets -> uint8 image tensors + labels (CIFAR, STL-10, image folders, archives, digits, npz, tar
shards), cached; full-image views cut by the decoding workers (``views``); clip sets (video files, frame
folders, npz clips, moving digits) for temporal MMCR (``video.py``).

    ds = load_dataset("archive", root="../shared/data/cifar10_jpeg.tar.gz", split="train")
    train, val = split_train_val(ds, val_fraction=0.1, seed=0)
    loader = make_loader(train, batch_size=32, seed=0)
    for epoch in range(epochs):
        loader.set_epoch(epoch)          # the order is a pure function of (seed, epoch, rank, world_size)
        for images, labels in loader:    # uint8 (B, 3, H, W), int64 (B,)
            ...
"""

from mmcr.data.cache import default_cache_dir
from mmcr.data.clip_loader import make_clip_loader
from mmcr.data.datasets import ImageDataset, LazyImageFolder, resize_square
from mmcr.data.decode import DatasetError, decode_image
from mmcr.data.loader import InMemoryLoader, ShardLoader, WorkerLoader, epoch_order, make_loader
from mmcr.data.registry import DATASET_NAMES, DATASETS, dataset_options, load_dataset
from mmcr.data.shards import ShardSet, load_webdataset
from mmcr.data.split import split_train_val
from mmcr.data.video import ClipDataset, FileClips, is_clip_set, still_images
from mmcr.data.views import CropSpec, decode_views

__all__ = [
    "CropSpec",
    "DATASETS",
    "DATASET_NAMES",
    "ClipDataset",
    "FileClips",
    "DatasetError",
    "ImageDataset",
    "InMemoryLoader",
    "ShardLoader",
    "ShardSet",
    "LazyImageFolder",
    "WorkerLoader",
    "dataset_options",
    "decode_image",
    "decode_views",
    "resize_square",
    "default_cache_dir",
    "epoch_order",
    "is_clip_set",
    "load_dataset",
    "load_webdataset",
    "make_clip_loader",
    "make_loader",
    "split_train_val",
    "still_images",
]
