"""One function per evaluation, from a model source (run directory, checkpoint, ``torchvision:<arch>``,
``timm:<name>``, ``random:<arch>``) to a recorded result. The CLI calls these; so can notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from mmcr.augment import MultiViewAugment
from mmcr.data import load_dataset, still_images
from mmcr.evaluate.brainscore import export_brainscore_plugin
from mmcr.evaluate.detection import run_detection
from mmcr.evaluate.detection.config import DetectionConfig
from mmcr.evaluate.export import check_export_path, export_backbone
from mmcr.evaluate.features import eval_transform_for, extract_features
from mmcr.evaluate.knn import check_test_classes, knn_accuracy
from mmcr.evaluate.linear import linear_probe
from mmcr.evaluate.results import destination, record_result
from mmcr.evaluate.semi import FinetuneAugment, class_balanced_subset, finetune, read_subset_file
from mmcr.evaluate.settings import (
    BrainscoreExportSettings,
    KnnSettings,
    LinearSettings,
    ProbeSettings,
    SemiSettings,
    TransferSettings,
)
from mmcr.evaluate.sources import load_pretrained
from mmcr.evaluate.transfer import transfer_probe
from mmcr.registry import Registry
from mmcr.schema import resolve

if TYPE_CHECKING:
    from mmcr.evaluate.sources import ModelSource
    from mmcr.run.config import RunConfig


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


def _features(model, model_src, ds, s: ProbeSettings, device, desc):
    tf = eval_transform_for(model_src, size=s.size, resize=s.resize)
    f, _ = extract_features(
        model, ds.images, transform=tf, batch_size=s.batch_size, device=device, progress=s.progress, description=desc
    )
    return f


def run_knn(source: str | Path, settings: KnnSettings | None = None, *, device: str | None = None,
            out: str | Path | None = None, **changes) -> dict:
    """Weighted kNN (see :func:`mmcr.evaluate.knn.knn_accuracy`) of a model on a data set's splits. The
    neighbours and temperature default to the run's ``eval.knn_k``/``eval.knn_temperature`` (as in its
    pretraining summary), else 200 and 0.1.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        settings: a :class:`~mmcr.evaluate.settings.KnnSettings` (default: its defaults).
        device: where to run (default: the best available).
        out: where the result goes (default: the run directory, else ``mmcr-eval/<source>``).
        **changes: settings fields to change (``dataset``, ``root``, ``k``, ``temperature``, ``size``, ...),
            checked like the settings.

    Returns:
        ``top1``/``top5`` (percent), dataset, k, temperature, n_train, n_test, step, ``json`` (the result file).

    Raises:
        ValueError: a bad setting (an unknown field is refused by name), model source or data set.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from mmcr.evaluate import run_knn
        >>> tmp = tempfile.TemporaryDirectory()
        >>> data, images, labels = pathlib.Path(tmp.name) / "tiny.npz", np.zeros((8, 16, 16, 3), "u1"), np.arange(8) % 2
        >>> np.savez(data, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])  # a tiny .npz data set
        >>> result = run_knn("random:resnet_tiny:cifar", dataset="npz", root=str(data), k=3, out=tmp.name,
        ...                  progress=False)
        >>> result["n_train"], result["n_test"], pathlib.Path(result["json"]).name
        (8, 4, 'knn_npz-tiny.json')
        >>> tmp.cleanup()
    """
    s = resolve(KnnSettings, settings, changes)
    destination("knn", source, out)  # a bad --out or setting is refused before any work
    model, model_src = load_pretrained(source)
    run_eval = model_src.config.eval if model_src.config is not None else None
    k = s.k if s.k is not None else (run_eval.knn_k if run_eval else 200)
    temperature = s.temperature if s.temperature is not None else (run_eval.knn_temperature if run_eval else 0.1)
    name, train, test = load_split_pair(model_src, s.dataset, s.root, s.train_split, s.test_split)
    ftr = _features(model, model_src, train, s, device, f"{name} {s.train_split}")
    fte = _features(model, model_src, test, s, device, f"{name} {s.test_split}")
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


def _augmented_passes(model, model_src, train, s: LinearSettings, device) -> list[torch.Tensor]:
    """``s.aug_passes`` feature passes of the run's training augmentation (one view per image each)."""
    if model_src.config is None:
        raise ValueError("--aug-passes uses the run's training augmentation; give a run directory or "
                         "checkpoint of ours, or use --aug-passes 0")
    aug = MultiViewAugment.from_config(model_src.config.augment, views=1, seed=s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    passes = []
    for p in range(s.aug_passes):
        f, _ = extract_features(
            model,
            train.images,
            transform=lambda x: aug(x, generator=gen).squeeze(1),  # one random view per image
            batch_size=s.batch_size,
            device=device,
            progress=s.progress,
            description=f"augmented pass {p + 1}",
        )
        passes.append(f)
    return passes


def run_linear(source: str | Path, settings: LinearSettings | None = None, *, device: str | None = None,
               out: str | Path | None = None, **changes) -> dict:
    """Linear probe (see :func:`mmcr.evaluate.linear.linear_probe`): the weight decay chosen on validation
    images carved from the training split, reported once on the test split. ``aug_passes`` adds that many
    passes of the run's training augmentation (one view each) to the clean training features.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        settings: a :class:`~mmcr.evaluate.settings.LinearSettings` (default: its defaults).
        device: where to run (default: the best available).
        out: where the result goes (default: the run directory, else ``mmcr-eval/<source>``).
        **changes: settings fields to change (``weight_decays``, ``val_fraction``, ``aug_passes``, ``seed``, ...),
            checked like the settings.

    Returns:
        The :func:`~mmcr.evaluate.linear.linear_probe` result plus dataset, step and ``json``.

    Raises:
        ValueError: a bad setting (an unknown field is refused by name), model source or data set.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from mmcr.evaluate import run_linear
        >>> tmp = tempfile.TemporaryDirectory()
        >>> data, images, labels = pathlib.Path(tmp.name) / "tiny.npz", np.zeros((8, 16, 16, 3), "u1"), np.arange(8) % 2
        >>> np.savez(data, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])  # a tiny .npz data set
        >>> result = run_linear("random:resnet_tiny:cifar", dataset="npz", root=str(data), weight_decays=[1e-2],
        ...                     val_fraction=0.5, out=tmp.name, progress=False)
        >>> result["weight_decay"], result["feature_dim"], pathlib.Path(result["json"]).name
        (0.01, 64, 'linear_npz-tiny.json')
        >>> tmp.cleanup()
    """
    s = resolve(LinearSettings, settings, changes)
    destination("linear", source, out)  # a bad --out or setting is refused before any work
    model, model_src = load_pretrained(source)
    name, train, test = load_split_pair(model_src, s.dataset, s.root, s.train_split, s.test_split)
    passes = [_features(model, model_src, train, s, device, f"{name} {s.train_split}")]
    if s.aug_passes > 0:
        passes += _augmented_passes(model, model_src, train, s, device)
    fte = _features(model, model_src, test, s, device, f"{name} {s.test_split}")
    res = linear_probe(
        torch.stack(passes),
        train.labels,
        fte,
        test.labels,
        weight_decays=s.weight_decays,
        val_fraction=s.val_fraction,
        seed=s.seed,
        num_classes=len(train.classes),
        device=device,
        progress=s.progress,
    )
    res.update({"dataset": name, "step": model_src.step})
    res["json"] = str(record_result("linear", res, source, out, tag=name, details=("weight_decay", "passes")))
    return res


def _semi_subset(s: SemiSettings, train) -> tuple[torch.Tensor, str]:
    """The indices of the labelled subset and how it is named in the result."""
    if s.subset_file is not None:
        idx = read_subset_file(s.subset_file, train.names)
        if idx.numel() and int(idx.max()) >= len(train.labels):
            raise ValueError(f"subset index {int(idx.max())} is out of range for {len(train.labels)} images")
        return idx, Path(s.subset_file).name
    return class_balanced_subset(train.labels, s.fraction, s.seed), f"{s.fraction:g} (seed {s.seed})"


def run_semi(source: str | Path, settings: SemiSettings | None = None, *, device: str | None = None,
             out: str | Path | None = None, **changes) -> dict:
    """Fine-tune on a class-balanced ``fraction`` of the training labels (or the subset in
    ``subset_file``) and report on the test split, beside the linear probe on the same subset that
    fine-tuning starts from (see :func:`mmcr.evaluate.semi.finetune`). Horizontal flips are used only
    when the run's own training augmentation flipped.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        settings: a :class:`~mmcr.evaluate.settings.SemiSettings` (default: its defaults).
        device: where to run (default: the best available).
        out: where the result goes (default: the run directory, else ``mmcr-eval/<source>``).
        **changes: settings fields to change (``fraction``, ``subset_file``, ``epochs``, ``lr``, ...),
            checked like the settings.

    Returns:
        The :func:`~mmcr.evaluate.semi.finetune` result (top1/top5 and the linear probe's ``linear_top1``
        on the same subset) plus dataset, subset, flip_p, step and ``json``.

    Raises:
        ValueError: a bad setting (an unknown field is refused by name), model source or data set.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        >>> import pathlib, tempfile
        >>> import numpy as np
        >>> from mmcr.evaluate import run_semi
        >>> tmp = tempfile.TemporaryDirectory()
        >>> data, images, labels = pathlib.Path(tmp.name) / "tiny.npz", np.zeros((8, 16, 16, 3), "u1"), np.arange(8) % 2
        >>> np.savez(data, x_train=images, y_train=labels, x_test=images[:4], y_test=labels[:4])  # a tiny .npz data set
        >>> result = run_semi("random:resnet_tiny:cifar", dataset="npz", root=str(data), fraction=0.5, epochs=1,
        ...                   min_steps=2, out=tmp.name, progress=False)
        >>> result["n_labelled"], result["steps"], pathlib.Path(result["json"]).name
        (4, 2, 'semi_npz-tiny_0.5.json')
        >>> tmp.cleanup()
    """
    s = resolve(SemiSettings, settings, changes)
    destination("semi", source, out)  # a bad --out or setting is refused before any work
    model, model_src = load_pretrained(source)
    name, train, test = load_split_pair(model_src, s.dataset, s.root, s.train_split, s.test_split)
    idx, subset = _semi_subset(s, train)
    tf = eval_transform_for(model_src, size=s.size)
    flip_p = 0.5
    if model_src.config is not None:
        flip_p = 0.5 if max(MultiViewAugment.from_config(model_src.config.augment).probs["flip_p"]) > 0 else 0.0
    aug = FinetuneAugment(mean=tf.mean, std=tf.std, size=tf.size, flip_p=flip_p)
    res = finetune(model, train.images[idx], train.labels[idx], test.images, test.labels,
                   num_classes=len(train.classes), settings=s.finetune_settings(), train_transform=aug,
                   eval_transform=tf, device=device)
    res.update({"dataset": name, "subset": subset, "flip_p": flip_p, "step": model_src.step})
    tag = f"{name}_{Path(s.subset_file).stem if s.subset_file else f'{s.fraction:g}'}"
    res["json"] = str(record_result("semi", res, source, out, tag=tag,
                                    details=("linear_top1", "subset", "steps", "epochs", "head_init")))
    return res


def run_transfer(source: str | Path, settings: TransferSettings | None = None, *, device: str | None = None,
                 out: str | Path | None = None, **changes) -> dict:
    """Transfer linear probe on a torchvision data set from a local root (see :mod:`.transfer`): frozen
    features of the source, the weight decay chosen on a validation split, the test split reported once.

    Args:
        source: a run directory, checkpoint, ``torchvision:<arch>``, ``timm:<name>`` or ``random:<arch>``.
        settings: a :class:`~mmcr.evaluate.settings.TransferSettings` (default: its defaults).
        device: where to run (default: the best available).
        out: where the result goes (default: the run directory, else ``mmcr-eval/<source>``).
        **changes: settings fields to change (``dataset``, ``root``: required; ``size``, ...),
            checked like the settings.

    Returns:
        The :func:`~mmcr.evaluate.transfer.transfer_probe` result plus step and ``json``.

    Raises:
        ValueError: a bad setting (an unknown field is refused by name), model source or data set.
        RunFileError: ``out`` would replace a run's checkpoint or record.

    Examples:
        The transfer sets are torchvision's on-disk formats, which are not shipped (so this one is skipped):

        >>> from mmcr.evaluate import run_transfer
        >>> run_transfer("runs/mine", dataset="flowers102", root="data/flowers")["top1"]  # doctest: +SKIP
        91.2
    """
    s = resolve(TransferSettings, settings, changes)
    s.required()
    destination("transfer", source, out)  # a bad --out or setting is refused before any work
    model, model_src = load_pretrained(source)
    res = transfer_probe(
        model,
        s.dataset,
        s.root,
        model_src=model_src,
        size=s.size,
        batch_size=s.batch_size,
        num_workers=s.num_workers,
        weight_decays=s.weight_decays,
        val_fraction=s.val_fraction,
        seed=s.seed,
        device=device,
        progress=s.progress,
    )
    res["step"] = model_src.step
    res["json"] = str(record_result("transfer", res, source, out, tag=s.dataset, details=("weight_decay", "size")))
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
    model, model_src = load_pretrained(source)
    meta = export_backbone(model, model_src, out)
    meta["path"] = str(out)
    return meta


# ------------------------------------------------------------------------------------------ registry
# The evaluations: builder = the function that runs one, options = its settings section (the fields its
# CLI flags, --set and keyword arguments set; detection's is the fine-tuning config, set with --set).
EVALUATIONS = Registry("evaluation", "evaluations")
EVALUATIONS.register("knn", run_knn, options=KnnSettings,
                     doc="weighted kNN top-1 of frozen features (k=200, T=0.1 unless the run says)")
EVALUATIONS.register("linear", run_linear, options=LinearSettings,
                     doc="linear probe on frozen features, weight decay chosen on validation")
EVALUATIONS.register("semi", run_semi, options=SemiSettings,
                     doc="semi-supervised fine-tuning on 1% or 10% of the labels (or a subset file)")
EVALUATIONS.register("transfer", run_transfer, options=TransferSettings,
                     doc="linear probe on a transfer data set (Flowers-102, DTD, Food-101, CIFAR-100, STL-10)")
EVALUATIONS.register("detection", run_detection, options=DetectionConfig,
                     doc="Faster R-CNN R50-C4 fine-tuned on PASCAL VOC: AP, AP50, AP75")
EVALUATIONS.register("brainscore", export_brainscore_plugin, options=BrainscoreExportSettings,
                     doc="a Brain-Score vision plugin of the model (layers per region, spectra), scored by Brain-Score")
