"""The evaluations pretraining runs by itself: the online kNN monitor on the validation split carved
from the training set (never the test split), and the final kNN on the test split of the learned
backbone next to a random-init backbone of the same architecture and raw pixels. Both use the one
feature extractor (:mod:`mmcr.evaluate.features`) and are distributed-correct (every rank extracts a
shard; the kNN runs over the whole split). Accuracies are percentages, as everywhere in mmcr."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from mmcr.data import load_dataset, still_images
from mmcr.distributed import DistInfo
from mmcr.evaluate.features import dataset_features
from mmcr.evaluate.knn import check_test_classes, knn_accuracy


@dataclass
class KnnSettings:
    k: int = 200
    temperature: float = 0.1
    max_train: int | None = 10000

    @classmethod
    def from_config(cls, eval_cfg) -> KnnSettings:
        return cls(eval_cfg.knn_k, eval_cfg.knn_temperature, eval_cfg.knn_max_train)


def knn_top1(backbone: nn.Module, bank_ds, query_ds, transform, knn: KnnSettings, dist_info: DistInfo) -> dict:
    """Weighted kNN of ``query_ds`` against the memory bank ``bank_ds`` (top-1/top-5 in percent); clip
    sets are evaluated on their still frames (``mmcr.data.still_images``)."""

    bank_ds, query_ds = still_images(bank_ds), still_images(query_ds)
    ftr, ytr = dataset_features(backbone, bank_ds, transform, dist_info=dist_info, max_n=knn.max_train)
    fq, yq = dataset_features(backbone, query_ds, transform, dist_info=dist_info)
    return knn_accuracy(ftr, ytr, fq, yq, k=knn.k, temperature=knn.temperature, num_classes=len(bank_ds.classes))


class _Pixels(nn.Module):
    """Identity 'backbone' on the normalised pixels, the floor any representation should beat."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def final_evaluation(backbone: nn.Module, random_backbone: nn.Module, cfg, transform, dist_info: DistInfo) -> dict:
    """kNN top-1 (percent) on the held-out test split: learned, random-init and raw pixels.

    The labelled training split is the memory bank (STL-10 pretrains on train+unlabeled). Final numbers
    only: nothing is selected on them. When the data set has no test split, or its splits disagree, the
    result says why under ``final_eval_skipped`` and a warning is printed.
    """

    d = cfg.data
    try:
        bank = load_dataset(d.name, root=d.root, split="train", cache_dir=d.cache_dir, **d.options)
        test = load_dataset(d.name, root=d.root, split=d.test_split, cache_dir=d.cache_dir, **d.options)
        if list(bank.classes) != list(test.classes):
            raise ValueError(f"the {d.test_split!r} split's classes differ from the training split's")
        if hasattr(bank, "labels") and hasattr(test, "labels"):  # streamed shards hold no label list up front
            if not bool((bank.labels >= 0).any()):
                raise ValueError("the training split has no labels (clips outside class folders)")
            check_test_classes(bank.labels[bank.labels >= 0], test.labels[test.labels >= 0],
                               f"{d.test_split!r} split")
    except (ValueError, FileNotFoundError) as e:
        reason = str(e)
        if dist_info.is_main:
            warnings.warn(f"final evaluation skipped: {reason}", stacklevel=2)
        return {"final_eval_skipped": reason}
    knn = KnnSettings.from_config(cfg.eval)
    out = {}
    for name, model in (("learned", backbone), ("random_init", random_backbone), ("raw_pixels", _Pixels())):
        out[f"knn_top1_{name}"] = knn_top1(model, bank, test, transform, knn, dist_info)["top1"]
    out.update({"knn_k": knn.k, "knn_temperature": knn.temperature, "eval_split": d.test_split})
    return out
