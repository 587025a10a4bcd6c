"""Manifold geometry of representations: capacity, radius, dimension, spectra, alignment, predictivity."""

from mmcr.geometry.capacity import CapacityResult, manifold_capacity
from mmcr.geometry.lowrank import center_correlation, find_center_subspace
from mmcr.geometry.nnls import nnls_gram

__all__ = [
    "CapacityResult",
    "center_correlation",
    "find_center_subspace",
    "manifold_capacity",
    "nnls_gram",
]
