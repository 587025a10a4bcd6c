"""Manifold geometry during pretraining (``eval.geometry_every_epochs``): the paper's Figure 2 over training.

On a fixed, seeded subset of the validation split (carved from the training set, never the test split)
it measures, with the backbone in eval mode:

- augmentation manifolds: ``eval.geometry_views`` training-augmentation views of each of the first
  ``eval.geometry_manifolds`` subset images (the same views every time: the augmentation has its own
  fixed seed and does not touch the training streams);
- class manifolds: the eval-view features of the subset grouped by label;
- for both, the mean-field capacity, radius and dimension (:func:`mmcr.geometry.manifold_capacity`);
- the participation ratio and power-law exponent alpha of the subset's eval-view features
  (:func:`mmcr.geometry.participation_ratio`, :func:`mmcr.geometry.power_law_exponent`).

Every rank computes the same figures locally (no collective), so DDP runs cannot hang on it; the main
process logs them. The global torch RNG is left as it was, so training continues bit for bit as it
would without the measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmcr.augment import MultiViewAugment
from mmcr.data import make_loader, still_images
from mmcr.geometry import manifold_capacity, participation_ratio, power_law_exponent

GEOMETRY_KEYS = ("geo_aug_capacity", "geo_aug_radius", "geo_aug_dimension", "geo_class_capacity",
                 "geo_class_radius", "geo_class_dimension", "geo_participation_ratio", "geo_powerlaw_alpha")


@dataclass
class GeometrySettings:
    images: int = 500
    manifolds: int = 50
    views: int = 16
    n_t: int = 100
    seed: int = 0

    @classmethod
    def from_config(cls, eval_cfg, seed: int) -> GeometrySettings:
        return cls(eval_cfg.geometry_images, eval_cfg.geometry_manifolds, eval_cfg.geometry_views, seed=seed)


class GeometryProbe:
    """The fixed subset, its views' augmentation and the eval view; ``measure(backbone)`` gives the figures."""

    def __init__(self, val_ds, augment_cfg, transform, settings: GeometrySettings, device: torch.device):
        ds = still_images(val_ds)
        if not hasattr(ds, "labels") or not hasattr(ds, "subset"):
            raise ValueError(f"eval.geometry_every_epochs needs a validation split with a label list (got "
                             f"{type(ds).__name__}, a stream); set eval.geometry_every_epochs=0")
        labelled = torch.nonzero(ds.labels >= 0).flatten()
        g = torch.Generator().manual_seed(settings.seed)
        pick = labelled[torch.randperm(len(labelled), generator=g)[: settings.images]].sort().values
        self.images, self.labels = _images_of(ds.subset(pick))
        self.settings, self.transform, self.device = settings, transform, device
        self.augment = MultiViewAugment.from_config(augment_cfg, views=settings.views, seed=settings.seed)

    def measure(self, backbone: nn.Module) -> dict[str, float]:
        """The figures of ``GEOMETRY_KEYS`` (a figure that cannot be computed, e.g. too few classes, is left out)."""
        s = self.settings
        fork = torch.random.get_rng_state()
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                feats = _features(backbone, self.transform(self.images.to(self.device)))
                few = self.images[: s.manifolds].to(self.device)
                gen = torch.Generator().manual_seed(s.seed)  # the same views at every measurement
                views = self.augment(few, generator=gen).flatten(0, 1)
                aug = _features(backbone, views).view(few.shape[0], s.views, -1)
        finally:
            backbone.train(was_training)
            torch.random.set_rng_state(fork)
        out: dict[str, float] = {}
        classes = [feats[self.labels == c] for c in self.labels.unique().tolist()]
        for name, manifolds in (("aug", aug), ("class", [m for m in classes if len(m) >= 2])):
            try:
                res = manifold_capacity(manifolds, n_t=s.n_t, seed=s.seed)
            except ValueError:  # e.g. fewer than 2 manifolds, or a centre at the global mean
                continue
            out.update({f"geo_{name}_capacity": res.capacity, f"geo_{name}_radius": res.radius,
                        f"geo_{name}_dimension": res.dimension})
        try:
            out["geo_participation_ratio"] = participation_ratio(feats)
            out["geo_powerlaw_alpha"] = power_law_exponent(feats).alpha
        except ValueError:  # zero variance, or too few eigenvalues for the fit
            pass
        return {k: float(v) for k, v in out.items()}


def _features(backbone: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([backbone(x[i:i + batch]).flatten(1).float().cpu() for i in range(0, x.shape[0], batch)])


def _images_of(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 images and labels of a (small) data set, through the one loader every split uses."""
    loader = make_loader(ds, batch_size=256, shuffle=False, drop_last=False, seed=0)
    loader.set_epoch(0)
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
