"""The settings of each evaluation (kNN, linear probe, semi-supervised fine-tuning, transfer) and of the
Brain-Score export, as sections of :mod:`mmcr.schema`: the ``mmcr eval ...`` flags, ``--set``,
``--config`` files and the keyword arguments of :func:`mmcr.evaluate.run_knn` & co. all set these
fields and are checked by the same rules. Where a run is evaluated, ``None`` means "the run's own"."""

from __future__ import annotations

from mmcr.data import DATASET_NAMES
from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS
from mmcr.evaluate.transfer import TRANSFER_DATASETS
from mmcr.schema import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SEED, ConfigError, Range, option, section

OPEN_FRACTION = Range(0, 1, lo_open=True, hi_open=True)
MIN_STEPS = 500  # the floor of fine-tuning's optimiser steps; fixed in advance (see mmcr.evaluate.semi)
HEAD_INITS = ("linear", "random")


def _datasets() -> list[str]:
    return sorted(DATASET_NAMES)


def _weight_decays(values: list[float]) -> str | None:
    return None if values else "give at least one candidate, e.g. [1e-4, 1e-5]"


@section
class FeatureSettings:
    """What every evaluation of frozen features shares: the data and how images become features."""

    dataset: str | None = option(None, choices=_datasets, doc="data set (default: the run's data.name)")
    root: str | None = option(None, doc="dataset root or archive (default: the run's data.root)")
    train_split: str = option("train", doc="split the classifier is fitted on")
    test_split: str = option("test", doc="split that is reported (never used to select)")
    size: int | None = option(None, check=AT_LEAST_1, doc="centre-crop size (default: the images' size)")
    batch_size: int = option(256, check=AT_LEAST_1, doc="images per forward pass")
    progress: bool = option(True, doc="show progress bars")


@section
class ProbeSettings(FeatureSettings):
    """Evaluations of frozen features, which may resize before cropping."""

    resize: int | None = option(None, check=AT_LEAST_1, doc="resize the shorter side before cropping")


@section
class KnnSettings(ProbeSettings):
    k: int | None = option(None, check=AT_LEAST_1, doc="neighbours (default: the run's eval.knn_k, else 200)")
    temperature: float | None = option(None, check=POSITIVE,
                                       doc="vote temperature (default: the run's eval.knn_temperature, else 0.1; "
                                           "the authors used 0.5)")


@section
class LinearSettings(ProbeSettings):
    weight_decays: list[float] = option(list(DEFAULT_WEIGHT_DECAYS), check=NON_NEGATIVE, validate=_weight_decays,
                                        doc="L2 strengths to choose from on the validation split")
    val_fraction: float = option(0.1, check=OPEN_FRACTION, doc="validation part carved from the training split")
    aug_passes: int = option(0, check=NON_NEGATIVE, doc="extra passes of the run's training augmentation")
    seed: int = option(0, check=SEED, doc="seeds the validation split and the augmented passes")


@section
class FinetuneSettings:
    """How :func:`mmcr.evaluate.semi.finetune` trains: SGD (momentum 0.9, Nesterov), cosine schedule."""

    epochs: int = option(30, check=AT_LEAST_1, doc="epochs, raised when they give fewer than min_steps steps")
    min_steps: int = option(MIN_STEPS, check=NON_NEGATIVE, doc="least number of optimiser steps")
    batch_size: int = option(256, check=AT_LEAST_1, doc="images per step")
    lr: float = option(0.01, check=POSITIVE, doc="backbone learning rate")
    head_lr: float = option(0.1, check=POSITIVE, doc="classifier learning rate")
    weight_decay: float = option(0.0, check=NON_NEGATIVE, doc="weight decay of the fine-tuning")
    head_init: str = option("linear", choices=lambda: list(HEAD_INITS),
                            doc="linear: start from the linear probe on the same subset (reported beside); random")
    grad_clip: float | None = option(1.0, check=POSITIVE, doc="max gradient norm (null = no clipping)")
    probe_weight_decays: list[float] | None = option(None, check=NON_NEGATIVE, validate=_weight_decays,
                                                     doc="L2 strengths of the starting probe (default: the "
                                                         "linear probe's)")
    seed: int = option(0, check=SEED, doc="seeds the subset, the head and the batches")
    progress: bool = option(False, doc="show progress bars")


@section
class SemiSettings(FinetuneSettings, FeatureSettings):
    """``mmcr eval semi``: the data and features of every evaluation, the labelled subset, and how
    fine-tuning trains (:class:`FinetuneSettings`)."""

    fraction: float = option(0.01, check=Range(0, 1, lo_open=True), doc="class-balanced label fraction")
    subset_file: str | None = option(None, doc="file of indices or file names (ImageNet subset lists)")
    progress: bool = option(True, doc="show progress bars")

    def finetune_settings(self) -> FinetuneSettings:
        """The fine-tuning part of these settings."""
        return FinetuneSettings.from_dict({f: getattr(self, f) for f in FinetuneSettings.__dataclass_fields__})


@section
class TransferSettings:
    dataset: str | None = option(None, choices=lambda: sorted(TRANSFER_DATASETS), doc="transfer data set (required)")
    root: str | None = option(None, doc="folder holding the data set in torchvision's layout (required)")
    size: int | None = option(None, check=AT_LEAST_1,
                              doc="crop size (default 224, or native/64 px for CIFAR-stem models)")
    weight_decays: list[float] = option(list(DEFAULT_WEIGHT_DECAYS), check=NON_NEGATIVE, validate=_weight_decays,
                                        doc="L2 strengths to choose from on the validation split")
    val_fraction: float = option(0.1, check=OPEN_FRACTION, doc="used when the data set has no val split")
    seed: int = option(0, check=SEED, doc="seeds the validation split")
    batch_size: int = option(256, check=AT_LEAST_1, doc="images per forward pass")
    num_workers: int = option(0, check=NON_NEGATIVE, doc="image-decoding workers")
    progress: bool = option(True, doc="show progress bars")

    def required(self) -> None:
        """Refuse a run without its data (the defaults stay buildable for --help-config/--print-config)."""
        for key in ("dataset", "root"):
            if getattr(self, key) is None:
                raise ConfigError(f"transfer needs {key} (--{key} or --set {key}=...); "
                                  + (f"choose one of {', '.join(sorted(TRANSFER_DATASETS))}" if key == "dataset"
                                     else "give the folder holding the data set"))


@section
class BrainscoreExportSettings:
    identifier: str | None = option(None, doc="the Brain-Score model identifier (no hyphens; required)")
    region_layer_map: str | None = option(None, doc='JSON file {"V1": layer, "V2": ..., "V4": ..., "IT": ...}')
    choose_layers: str | None = option(None, doc="choose each region's layer by held-out neural predictivity on "
                                                 "these recordings (.npz)")
    layers: list[str] | None = option(None, doc="candidate layers for choose_layers (default: the ResNet stages)")
    image_size: int | None = option(None, check=AT_LEAST_1,
                                    doc="input size the model sees (default: the run's crop size; 224 for named "
                                        "models)")
    stimuli: int | None = option(None, check=AT_LEAST_1,
                                 doc="generated stimuli for the spectra when no recordings are given (default 200)")
    seed: int = option(0, check=SEED, doc="seeds random-init sources and the generated stimuli")
    batch_size: int = option(64, check=AT_LEAST_1, doc="images per forward pass")
    device: str = option("cpu", doc="where the spectra and layer choice are computed (cpu, cuda)")
    weights_url: str | None = option(None, doc="where the plugin downloads weights.safetensors if its folder lacks "
                                               "it (sha256-checked)")
    force: bool = option(False, doc="replace the output folder if it exists and is not empty")

    def check(self) -> None:
        if self.region_layer_map is not None and self.choose_layers is not None:
            raise ConfigError("give region_layer_map or choose_layers, not both")
