"""Manifold geometry of representations over plain arrays (numpy or torch, CPU or GPU).

Manifolds are (P, M, N) = manifolds x points x features, or a list of (M_i, N) arrays.

- :func:`manifold_capacity`: exact mean-field capacity, radius, dimension (optionally with the centres'
  shared low-rank structure removed); :func:`capacity_vs_margin`: the same over a sweep of margins;
  :func:`capacity_vs_points`: the finite-sample check (values against points per manifold);
  :func:`simulated_capacity`: the ground truth by separability.
- :func:`elliptical_geometry`: analytic radius/dimension from singular values, nuclear norms.
- :func:`participation_ratio`, :func:`effective_rank`, :func:`power_law_exponent`: spectra.
- :func:`centroid_similarity`, :func:`subspace_alignment`, :func:`gradient_coherence`: alignment.
- :func:`neural_predictivity`: PLS/ridge predictivity of recorded responses with a split-half ceiling.
"""

from mmcr.geometry.alignment import (
    PairSimilarity,
    centroid_similarity,
    gradient_coherence,
    principal_angles,
    subspace_alignment,
)
from mmcr.geometry.capacity import CapacityResult, capacity_vs_margin, manifold_capacity
from mmcr.geometry.elliptical import EllipticalGeometry, elliptical_geometry
from mmcr.geometry.lowrank import center_correlation, find_center_subspace
from mmcr.geometry.nnls import nnls_gram
from mmcr.geometry.predictivity import PredictivityResult, neural_predictivity, split_half_ceiling
from mmcr.geometry.sampling import FiniteSampleResult, capacity_vs_points
from mmcr.geometry.simcap import SimCapResult, is_separable, simulated_capacity
from mmcr.geometry.spectra import (
    PowerLawFit,
    effective_rank,
    eigenspectrum,
    participation_ratio,
    power_law_exponent,
)

__all__ = [
    "CapacityResult",
    "EllipticalGeometry",
    "FiniteSampleResult",
    "PairSimilarity",
    "PowerLawFit",
    "PredictivityResult",
    "SimCapResult",
    "capacity_vs_margin",
    "capacity_vs_points",
    "center_correlation",
    "centroid_similarity",
    "effective_rank",
    "eigenspectrum",
    "elliptical_geometry",
    "find_center_subspace",
    "gradient_coherence",
    "is_separable",
    "manifold_capacity",
    "neural_predictivity",
    "nnls_gram",
    "participation_ratio",
    "power_law_exponent",
    "principal_angles",
    "simulated_capacity",
    "split_half_ceiling",
    "subspace_alignment",
]
