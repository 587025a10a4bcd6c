"""One function per evaluation, from a model source (run directory, checkpoint, ``torchvision:<arch>``,
``timm:<name>``, ``random:<arch>``) to a recorded result. The CLI calls these; so can notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mmcr.evaluate.export import check_export_path, export_backbone
from mmcr.evaluate.features import eval_transform_for, extract_features
from mmcr.evaluate.knn import check_test_classes, knn_accuracy
from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS, linear_probe
from mmcr.evaluate.results import destination, record_result
from mmcr.evaluate.semi import MIN_STEPS, FinetuneAugment, class_balanced_subset, finetune, read_subset_file
from mmcr.evaluate.transfer import transfer_probe
from mmcr.run.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range, check_seed

if TYPE_CHECKING:
    from mmcr.evaluate.sources import ModelSource
    from mmcr.run.config import RunConfig


def _load_model(source: str | Path, device=None):
    from mmcr.evaluate.sources import load_pretrained

    return load_pretrained(source)


def dataset_spec(run_cfg: RunConfig | None, dataset: str | None, root: str | None):
    """``(name, root, options, cache_dir)``: the arguments, else the run config's ``data`` section."""
    data = run_cfg.data if run_cfg is not None else None
    name = dataset or (data.name if data else None)
    if not name:
        raise ValueError("no dataset: pass --dataset (and --root), or evaluate a run directory of ours")
    same = data is not None and dataset in (None, data.name)
    if root is None and same:
        root = data.root
    options = dict(data.options) if same else {}
    return name, root, options, data.cache_dir if data else None


def load_split_pair(model_src: ModelSource, dataset: str | None, root: str | None, train_split: str,
                    test_split: str):
    """The training and test splits through :func:`mmcr.data.load_dataset`."""
    from mmcr.data import load_dataset, still_images

    name, root, options, cache_dir = dataset_spec(model_src.config, dataset, root)
    train = _labelled(still_images(load_dataset(name, root=root, split=train_split, cache_dir=cache_dir,
                                                     **options)))
    test = _labelled(still_images(load_dataset(name, root=root, split=test_split, cache_dir=cache_dir,
                                                    **options)))
    where = f"{test_split} split of {name}" + (f" {root}" if root else "")
    check_test_classes(train.labels, test.labels, where, train_split)
    if name in ("archive", "imagefolder", "npz") and root:  # name results after the data, not its format
        name = f"{name}-{Path(str(root).rstrip('/')).name.split('.')[0]}"
    return name, train, test


@dataclass
class Split:
    """The labelled images of one split of a data set."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    names: list[str] | None = None


def _labelled(ds) -> Split:
    """The labelled images of a split (label -1 marks unlabelled images, e.g. STL-10's extra split)."""
    if not hasattr(ds, "images"):
        raise ValueError(f"evaluation needs an in-memory dataset with .images; load {ds!r} without lazy=True")
    names = getattr(ds, "paths", None) or getattr(ds, "files", None) or (getattr(ds, "meta", None) or {}).get("files")
    keep = ds.labels >= 0
    if bool(keep.all()):
        return Split(ds.images, ds.labels, list(ds.classes), names)
    if not bool(keep.any()):
        raise ValueError("the split has no labelled images; evaluate on a labelled split (e.g. train, test)")
    idx = torch.nonzero(keep).flatten()
    kept_names = [names[i] for i in idx.tolist()] if names is not None else None
    return Split(ds.images[idx], ds.labels[idx], list(ds.classes), kept_names)


def _check_common(size, resize, batch_size) -> None:
    """The flags every evaluation shares, checked before a model or data set is loaded."""
    for flag, value in (("--size", size), ("--resize", resize)):
        if value is not None:
            AT_LEAST_1.check(flag, value, integer=True)
    AT_LEAST_1.check("--batch-size", batch_size, integer=True)


def _check_probe(weight_decays, val_fraction, seed) -> None:
    if not list(weight_decays):
        raise ValueError("--weight-decays is empty; give at least one candidate, e.g. 1e-4,1e-5")
    for wd in weight_decays:
        NON_NEGATIVE.check("every --weight-decays value", wd)
    Range(0, 1, lo_open=True, hi_open=True).check("--val-fraction", val_fraction)
    check_seed(seed, "--seed")


def _features(model, model_src, ds, size, resize, batch_size, device, progress, desc):
    tf = eval_transform_for(model_src, size=size, resize=resize)
    f, _ = extract_features(
        model, ds.images, transform=tf, batch_size=batch_size, device=device, progress=progress, description=desc
    )
    return f


def run_knn(
    source: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    k: int | None = None,
    temperature: float | None = None,
    size: int | None = None,
    resize: int | None = None,
    batch_size: int = 256,
    device: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Weighted kNN (see :func:`mmcr.evaluate.knn.knn_accuracy`) of a model on a dataset's splits.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        dataset: data set name for :func:`mmcr.data.load_dataset` (default: the run's own).
        root: its root (default: the run's own, for the run's data set).
        train_split: the split the neighbours come from.
        test_split: the split that is scored.
        k: neighbours per test image (default: the run's ``eval.knn_k``, as its pretraining summary; else 200).
        temperature: T of the vote weights, > 0 (default: the run's ``eval.knn_temperature``, else 0.1).
        size: centre-crop size of the eval view (default: the run's or the images' own).
        resize: short-side resize before the crop.
        batch_size: images per forward pass.
        device: where to run (default: the best available).
        out: where the result goes (default: the run directory, else ``mmcr-eval/<source>``).
        progress: show progress bars.

    Returns:
        ``top1``/``top5`` (percent), dataset, k, temperature, n_train, n_test, step, ``json`` (the result file).

    Raises:
        ValueError: a bad setting, model source or data set, or test classes the training split lacks.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from mmcr.evaluate import run_knn
        >>> tmp = tempfile.TemporaryDirectory()
        >>> data, images, labels = pathlib.Path(tmp.name) / "tiny.npz", np.zeros((8, 16, 16, 3), "u1"), np.arange(8) % 2
        >>> np.savez(data, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])  # a tiny .npz data set
        >>> result = run_knn("random:resnet_tiny:cifar", "npz", str(data), k=3, out=tmp.name, progress=False)
        >>> result["n_train"], result["n_test"], pathlib.Path(result["json"]).name
        (8, 4, 'knn_npz-tiny.json')
        >>> tmp.cleanup()
    """
    destination("knn", source, out)  # a bad --out or setting is refused before any work
    _check_common(size, resize, batch_size)
    if k is not None:
        AT_LEAST_1.check("--k", k, integer=True)
    if temperature is not None:
        POSITIVE.check("--temperature", temperature)
    model, model_src = _load_model(source)
    run_eval = model_src.config.eval if model_src.config is not None else None
    k = k if k is not None else (run_eval.knn_k if run_eval else 200)
    temperature = temperature if temperature is not None else (run_eval.knn_temperature if run_eval else 0.1)
    name, train, test = load_split_pair(model_src, dataset, root, train_split, test_split)
    ftr = _features(model, model_src, train, size, resize, batch_size, device, progress, f"{name} {train_split}")
    fte = _features(model, model_src, test, size, resize, batch_size, device, progress, f"{name} {test_split}")
    res = knn_accuracy(
        ftr, train.labels, fte, test.labels, k=k, temperature=temperature, num_classes=len(train.classes), device=device
    )
    res.update(
        {
            "dataset": name,
            "k": k,
            "temperature": temperature,
            "n_train": len(train.labels),
            "n_test": len(test.labels),
            "step": model_src.step,
        }
    )
    res["json"] = str(record_result("knn", res, source, out, tag=name, details=("k", "temperature")))
    return res


def run_linear(
    source: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    weight_decays=DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.1,
    aug_passes: int = 0,
    seed: int = 0,
    size: int | None = None,
    resize: int | None = None,
    batch_size: int = 256,
    device: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Linear probe (see :func:`mmcr.evaluate.linear.linear_probe`); ``aug_passes`` adds that many
    passes of the run's training augmentation (one view each) to the clean training features.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        dataset: data set name (default: the run's own).
        root: its root (default: the run's own).
        train_split: the split the probe is fitted (and validated) on.
        test_split: the split reported once.
        weight_decays: candidate L2 penalties, chosen on validation images carved from train.
        val_fraction: share of the training images held out for the choice, in (0, 1).
        aug_passes: augmented passes to add (needs a run of ours, whose augmentation they use).
        seed: seeds the carved split and the augmentation.
        size: centre-crop size of the eval view.
        resize: short-side resize before the crop.
        batch_size: images per forward pass.
        device: where to run.
        out: where the result goes.
        progress: show progress bars.

    Returns:
        The :func:`~mmcr.evaluate.linear.linear_probe` result plus dataset, step and ``json``.

    Raises:
        ValueError: a bad setting, model source or data set.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from mmcr.evaluate import run_linear
        >>> tmp = tempfile.TemporaryDirectory()
        >>> data, images, labels = pathlib.Path(tmp.name) / "tiny.npz", np.zeros((8, 16, 16, 3), "u1"), np.arange(8) % 2
        >>> np.savez(data, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])  # a tiny .npz data set
        >>> result = run_linear("random:resnet_tiny:cifar", "npz", str(data), weight_decays=[1e-2], val_fraction=0.5,
        ...                     out=tmp.name, progress=False)
        >>> result["weight_decay"], result["feature_dim"], pathlib.Path(result["json"]).name
        (0.01, 64, 'linear_npz-tiny.json')
        >>> tmp.cleanup()
    """
    destination("linear", source, out)  # a bad --out or setting is refused before any work
    _check_common(size, resize, batch_size)
    _check_probe(weight_decays, val_fraction, seed)
    NON_NEGATIVE.check("--aug-passes", aug_passes, integer=True)
    model, model_src = _load_model(source)
    name, train, test = load_split_pair(model_src, dataset, root, train_split, test_split)
    passes = [_features(model, model_src, train, size, resize, batch_size, device, progress, f"{name} {train_split}")]
    if aug_passes > 0:
        from mmcr.augment import MultiViewAugment

        if model_src.config is None:
            raise ValueError("--aug-passes uses the run's training augmentation; give a run directory or "
                             "checkpoint of ours, or use --aug-passes 0")
        aug = MultiViewAugment.from_config(model_src.config.augment, views=1, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        for p in range(aug_passes):
            f, _ = extract_features(
                model,
                train.images,
                transform=lambda x: aug(x, generator=gen).squeeze(1),  # one random view per image
                batch_size=batch_size,
                device=device,
                progress=progress,
                description=f"augmented pass {p + 1}",
            )
            passes.append(f)
    fte = _features(model, model_src, test, size, resize, batch_size, device, progress, f"{name} {test_split}")
    res = linear_probe(
        torch.stack(passes),
        train.labels,
        fte,
        test.labels,
        weight_decays=weight_decays,
        val_fraction=val_fraction,
        seed=seed,
        num_classes=len(train.classes),
        device=device,
        progress=progress,
    )
    res.update({"dataset": name, "step": model_src.step})
    res["json"] = str(record_result("linear", res, source, out, tag=name, details=("weight_decay", "passes")))
    return res


def run_semi(
    source: str | Path,
    fraction: float = 0.01,
    subset_file: str | Path | None = None,
    dataset: str | None = None,
    root: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    epochs: int = 30,
    min_steps: int = MIN_STEPS,
    lr: float = 0.01,
    head_lr: float = 0.1,
    weight_decay: float = 0.0,
    head_init: str = "linear",
    batch_size: int = 256,
    seed: int = 0,
    size: int | None = None,
    device: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Fine-tune on a class-balanced ``fraction`` of the training labels (or the subset in
    ``subset_file``) and report on the test split, beside the linear probe on the same subset that
    fine-tuning starts from (see :func:`mmcr.evaluate.semi.finetune`). Horizontal flips are used only
    when the run's own training augmentation flipped.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        fraction: share of the training labels kept, class-balanced, in (0, 1].
        subset_file: a file naming the labelled training images instead (one index or file name a line).
        dataset: data set name (default: the run's own).
        root: its root (default: the run's own).
        train_split: the split the labelled subset is drawn from.
        test_split: the split reported once.
        epochs: passes over the labelled subset.
        min_steps: floor on optimiser steps (small subsets get more epochs).
        lr: backbone learning rate, > 0.
        head_lr: classifier learning rate, > 0.
        weight_decay: L2 penalty, >= 0.
        head_init: how the classifier starts ("linear": from the linear probe on the subset).
        batch_size: images per step.
        seed: seeds the subset, the augmentation and the order.
        size: image size of the views.
        device: where to run.
        out: where the result goes.
        progress: show progress bars.

    Returns:
        The :func:`~mmcr.evaluate.semi.finetune` result (top1/top5 and the linear probe's ``linear_top1``
        on the same subset) plus dataset, subset, flip_p, step and ``json``.

    Raises:
        ValueError: a bad setting, model source, data set or subset index.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from mmcr.evaluate import run_semi
        >>> tmp = tempfile.TemporaryDirectory()
        >>> data, images, labels = pathlib.Path(tmp.name) / "tiny.npz", np.zeros((8, 16, 16, 3), "u1"), np.arange(8) % 2
        >>> np.savez(data, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])  # a tiny .npz data set
        >>> result = run_semi("random:resnet_tiny:cifar", 0.5, dataset="npz", root=str(data), epochs=1, min_steps=1,
        ...                   batch_size=4, out=tmp.name, progress=False)
        >>> result["n_labelled"], result["steps"], pathlib.Path(result["json"]).name
        (4, 1, 'semi_npz-tiny_0.5.json')
        >>> tmp.cleanup()
    """
    destination("semi", source, out)  # a bad --out or setting is refused before any work
    _check_common(size, None, batch_size)
    if subset_file is None:
        Range(0, 1, lo_open=True).check("--fraction", fraction)
    AT_LEAST_1.check("--epochs", epochs, integer=True)
    NON_NEGATIVE.check("--min-steps", min_steps, integer=True)
    for flag, value in (("--lr", lr), ("--head-lr", head_lr)):
        POSITIVE.check(flag, value)
    NON_NEGATIVE.check("--weight-decay", weight_decay)
    check_seed(seed, "--seed")
    model, model_src = _load_model(source)
    name, train, test = load_split_pair(model_src, dataset, root, train_split, test_split)
    if subset_file is not None:
        idx = read_subset_file(subset_file, train.names)
        if idx.numel() and int(idx.max()) >= len(train.labels):
            raise ValueError(f"subset index {int(idx.max())} is out of range for {len(train.labels)} images")
        subset = Path(subset_file).name
    else:
        idx = class_balanced_subset(train.labels, fraction, seed)
        subset = f"{fraction:g} (seed {seed})"
    tf = eval_transform_for(model_src, size=size)
    flip_p = 0.5
    if model_src.config is not None:
        from mmcr.augment import MultiViewAugment

        flip_p = 0.5 if max(MultiViewAugment.from_config(model_src.config.augment).probs["flip_p"]) > 0 else 0.0
    aug = FinetuneAugment(mean=tf.mean, std=tf.std, size=tf.size, flip_p=flip_p)
    res = finetune(
        model,
        train.images[idx],
        train.labels[idx],
        test.images,
        test.labels,
        num_classes=len(train.classes),
        epochs=epochs,
        min_steps=min_steps,
        batch_size=batch_size,
        lr=lr,
        head_lr=head_lr,
        weight_decay=weight_decay,
        head_init=head_init,
        train_transform=aug,
        eval_transform=tf,
        seed=seed,
        device=device,
        progress=progress,
    )
    res.update({"dataset": name, "subset": subset, "flip_p": flip_p, "step": model_src.step})
    tag = f"{name}_{Path(subset_file).stem if subset_file else f'{fraction:g}'}"
    res["json"] = str(record_result("semi", res, source, out, tag=tag,
                                    details=("linear_top1", "subset", "steps", "epochs", "head_init")))
    return res


def run_transfer(
    source: str | Path,
    dataset: str,
    root: str | Path,
    size: int | None = None,
    weight_decays=DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.1,
    seed: int = 0,
    batch_size: int = 256,
    num_workers: int = 0,
    device: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Transfer linear probe on a torchvision dataset from a local root (see :mod:`.transfer`).

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        dataset: a key of :data:`~mmcr.evaluate.TRANSFER_DATASETS`.
        root: the folder holding it in torchvision's layout (never downloaded).
        size: image size (default: 224, or the native/64 px size for CIFAR-stem models).
        weight_decays: candidate L2 penalties of the probe.
        val_fraction: share of train carved out for validation where there is no official split.
        seed: seeds the carved split.
        batch_size: images per forward pass.
        num_workers: DataLoader workers decoding the images.
        device: where to run.
        out: where the result goes.
        progress: show progress bars.

    Returns:
        The :func:`~mmcr.evaluate.transfer_probe` result plus step and ``json``.

    Raises:
        ValueError: a bad setting, model source or data set.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> from PIL import Image
        >>> from mmcr.evaluate import run_transfer
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dtd = pathlib.Path(tmp.name) / "dtd" / "dtd"  # a tiny two-class DTD in torchvision's layout
        >>> (dtd / "labels").mkdir(parents=True)
        >>> for cls, colour in [("blue", (0, 0, 255)), ("red", (255, 0, 0))]:
        ...     (dtd / "images" / cls).mkdir(parents=True)
        ...     for i in range(4):
        ...         Image.new("RGB", (12, 12), colour).save(dtd / "images" / cls / f"{i}.png")
        >>> for split, ids in [("train", "01"), ("val", "2"), ("test", "3")]:
        ...     lines = [f"{cls}/{i}.png" for cls in ("blue", "red") for i in ids]
        ...     _ = (dtd / "labels" / f"{split}1.txt").write_text("\\n".join(lines) + "\\n")
        >>> result = run_transfer("random:resnet_tiny:cifar", "dtd", tmp.name, size=16, weight_decays=[1e-2],
        ...                       out=pathlib.Path(tmp.name) / "eval", progress=False)
        >>> result["dataset"], result["n_test"], pathlib.Path(result["json"]).name
        ('dtd', 2, 'transfer_dtd.json')
        >>> tmp.cleanup()
    """
    destination("transfer", source, out)  # a bad --out or setting is refused before any work
    _check_common(size, None, batch_size)
    _check_probe(weight_decays, val_fraction, seed)
    model, model_src = _load_model(source)
    res = transfer_probe(
        model,
        dataset,
        root,
        model_src=model_src,
        size=size,
        batch_size=batch_size,
        num_workers=num_workers,
        weight_decays=weight_decays,
        val_fraction=val_fraction,
        seed=seed,
        device=device,
        progress=progress,
    )
    res["step"] = model_src.step
    res["json"] = str(record_result("transfer", res, source, out, tag=dataset, details=("weight_decay", "size")))
    return res


def run_export(source: str | Path, out: str | Path) -> dict:
    """Export a model's backbone (see :mod:`mmcr.evaluate.export`).

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        out: a ``.pt``, ``.pth`` or ``.safetensors`` file path.

    Returns:
        The export's metadata (see :func:`~mmcr.evaluate.export_backbone`) plus ``path``.

    Raises:
        ValueError: a bad model source or file suffix.
        RunFileError: ``out`` is a folder, the source, or a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> from mmcr.evaluate import load_exported, run_export
        >>> tmp = tempfile.TemporaryDirectory()
        >>> meta = run_export("random:resnet_tiny:cifar", pathlib.Path(tmp.name) / "backbone.safetensors")
        >>> meta["arch"], meta["cifar_stem"], type(load_exported(meta["path"])).__name__
        ('resnet_tiny', True, 'SmallResNet')
        >>> tmp.cleanup()
    """
    check_export_path(out, source)
    model, model_src = _load_model(source)
    meta = export_backbone(model, model_src, out)
    meta["path"] = str(out)
    return meta
