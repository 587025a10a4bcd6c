"""The settings of a geometry analysis (``mmcr analyze``, :func:`mmcr.geometry.analyze.run_analysis`,
:func:`mmcr.geometry.compare.compare_models`) as a section of :mod:`mmcr.schema`: the flags, ``--set``,
``--config`` files and keyword arguments all set these fields and are checked by the same rules."""

from __future__ import annotations

from mmcr.augment import TRAIN_PRESETS
from mmcr.data import DATASET_NAMES
from mmcr.objectives import OBJECTIVES
from mmcr.schema import AT_LEAST_1, NON_NEGATIVE, SEED, ConfigError, Range, option, section

AT_LEAST_2 = Range(2, None)


@section
class AnalysisSettings:
    dataset: str | None = option(None, choices=lambda: sorted(DATASET_NAMES),
                                 doc="data set (default: the run's own, else digits)")
    root: str | None = option(None, doc="data set root or archive (default: the run's data.root)")
    split: str = option("test", doc="split to analyse")
    layers: list[str] | None = option(None, doc="module names ('output' = final features; default: the stages)")
    n_images: int = option(50, check=AT_LEAST_2, doc="augmentation manifolds (images)")
    n_views: int = option(20, check=AT_LEAST_2, doc="views per augmentation manifold")
    n_classes: int = option(10, check=AT_LEAST_2, doc="class manifolds (classes)")
    n_per_class: int = option(20, check=AT_LEAST_2, doc="images per class manifold")
    kappa: float = option(0.0, check=NON_NEGATIVE, doc="margin of the mean-field capacity")
    n_t: int = option(200, check=AT_LEAST_1, doc="Gaussian samples per manifold")
    correlated: bool = option(False, doc="remove the centres' shared low-rank structure")
    simcap: bool = option(False, doc="also compute the simulated capacity (slower)")
    simcap_reps: int = option(20, check=AT_LEAST_1, doc="repeats of the simulated capacity")
    fit_range: list[int] = option([11, 500], check=AT_LEAST_1, doc="rank range [first, last] of the power-law fit")
    n_components: int = option(5, check=AT_LEAST_1, doc="shared low-rank components removed with correlated")
    max_features: int = option(4096, check=AT_LEAST_1, doc="random projection above this many features")
    augment_preset: str | None = option(None, choices=lambda: sorted(TRAIN_PRESETS),
                                        doc="augmentation preset for the views of models without a run (a run "
                                            "uses its own; default cifar)")
    batch_size: int = option(256, check=AT_LEAST_1, doc="images per forward pass")
    seed: int = option(0, check=SEED, doc="seeds the images, views, projections and random-init models")
    gradient_objective: str | None = option(None, choices=lambda: sorted(OBJECTIVES),
                                            doc="also measure gradient coherence of this objective on the output")
    gradient_images: int = option(16, check=AT_LEAST_1, doc="augmentation manifolds for gradient coherence")
    finite_sample_repeats: int = option(5, check=NON_NEGATIVE,
                                        doc="finite-sample check: repeats per subsample size (0: off)")
    progress: bool = option(True, doc="show progress bars")

    def check(self) -> None:
        lo_hi = self.fit_range
        if len(lo_hi) != 2 or lo_hi[0] >= lo_hi[1]:
            raise ConfigError(f"fit_range must be two ranks [first, last] with 1 <= first < last, got {lo_hi}; "
                              "e.g. --fit-range 11,500")
        if self.layers is not None and not self.layers:
            raise ConfigError("layers is empty; name module names, or null for the default stages")
