"""Alignment between manifolds: centroid similarity, principal-subspace alignment, gradient coherence.

These are the measures the MMCR paper uses to show that its objective pulls manifolds of the same class
together (similar centroids, aligned subspaces, coherent gradients) while spreading different classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mmcr.geometry._arrays import manifold_list, to_numpy


@dataclass
class PairSimilarity:
    """A (P, P) similarity matrix and its off-diagonal entries split by whether the pair shares a label.

    Attributes:
        matrix: (P, P) similarities between all manifolds (or examples).
        same: (n_same,) upper-triangle entries of pairs with the same label (empty without labels).
        different: (n_different,) entries of pairs with different labels (all pairs without labels).

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import PairSimilarity
        >>> sim = PairSimilarity(np.eye(3), same=np.array([0.5]), different=np.array([0.0, 0.25]))
        >>> sim.to_dict()
        {'same_mean': 0.5, 'different_mean': 0.125, 'n_same': 1, 'n_different': 2}
    """

    matrix: np.ndarray
    same: np.ndarray
    different: np.ndarray

    @property
    def same_mean(self) -> float:
        """Mean similarity of same-label pairs (nan when there are none)."""
        return float(self.same.mean()) if self.same.size else float("nan")

    @property
    def different_mean(self) -> float:
        """Mean similarity of different-label pairs (nan when there are none)."""
        return float(self.different.mean()) if self.different.size else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """Means and pair counts as a JSON-ready dict (the matrix left out)."""
        return {
            "same_mean": self.same_mean,
            "different_mean": self.different_mean,
            "n_same": int(self.same.size),
            "n_different": int(self.different.size),
        }


def _split_pairs(matrix: np.ndarray, labels: Any) -> PairSimilarity:
    P = matrix.shape[0]
    iu = np.triu_indices(P, 1)
    vals = matrix[iu]
    if labels is None:
        return PairSimilarity(matrix, np.empty(0), vals)
    lab = to_numpy(labels).reshape(-1)
    if lab.shape[0] != P:
        raise ValueError(f"labels must have one entry per manifold ({P}), got {lab.shape[0]}")
    same = lab[iu[0]] == lab[iu[1]]
    return PairSimilarity(matrix, vals[same], vals[~same])


def centroid_similarity(manifolds: Any, labels: Any = None, center: bool = False) -> PairSimilarity:
    """Cosine similarity between manifold centroids, split into same-label and different-label pairs.

    Args:
        manifolds: (P, M, N) array or list of (M_i, N) arrays.
        labels: (P,) class of each manifold (e.g. the class of the image behind an augmentation manifold).
        center: subtract the mean of all points first (useful for non-negative features such as ReLU
            outputs, whose centroids otherwise all point the same way).

    Returns:
        :class:`PairSimilarity` over the (P, P) centroid cosine matrix.

    Raises:
        ValueError: labels do not have one entry per manifold.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import centroid_similarity
        >>> centres = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])  # P = 3 manifolds in N = 2
        >>> manifolds = centres[:, None, :] + np.array([[0.1, 0.1], [-0.1, -0.1]])  # (3, 2, 2)
        >>> sim = centroid_similarity(manifolds, labels=[0, 0, 1])
        >>> sim.matrix.shape, round(sim.same_mean, 4), round(sim.different_mean, 4)
        ((3, 3), 1.0, 0.0)
    """
    ms = manifold_list(manifolds)
    c = torch.stack([m.mean(0) for m in ms])
    if center:
        c = c - torch.cat(ms).mean(0)
    c = c / torch.linalg.norm(c, dim=1, keepdim=True).clamp_min(1e-300)
    return _split_pairs(to_numpy(c @ c.T), labels)


def subspace_alignment(manifolds: Any, labels: Any = None, n_components: int = 5) -> PairSimilarity:
    """Mean squared cosine of the principal angles between manifolds' top principal subspaces, in [0, 1].

    1 means the two manifolds vary along the same directions, 0 orthogonal directions. Each manifold's
    subspace is spanned by the top ``n_components`` right singular vectors of its centred points.

    Args:
        manifolds: (P, M, N) array or list of (M_i, N) arrays.
        labels: (P,) class of each manifold, to split the pairs.
        n_components: dimension of each principal subspace (capped by the manifolds' own sizes).

    Returns:
        :class:`PairSimilarity` over the (P, P) alignment matrix.

    Raises:
        ValueError: n_components < 1, or labels do not have one entry per manifold.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import subspace_alignment
        >>> t = np.array([-1.0, 0.0, 1.0])[:, None]
        >>> e = np.eye(3)
        >>> manifolds = np.stack([t * e[0], 2 + t * e[0], t * e[1]])  # lines along x, x and y: (3, 3, 3)
        >>> sim = subspace_alignment(manifolds, labels=[0, 0, 1], n_components=1)
        >>> round(sim.same_mean, 4), round(sim.different_mean, 4)
        (1.0, 0.0)
    """
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    ms = manifold_list(manifolds)
    k = min([n_components] + [min(m.shape) for m in ms])
    U = torch.stack([_top_directions(m - m.mean(0), k) for m in ms])  # (P, k, N)
    P = U.shape[0]
    cross = (U.reshape(P * k, -1) @ U.reshape(P * k, -1).T).reshape(P, k, P, k).permute(0, 2, 1, 3)
    cos = torch.linalg.svdvals(cross)  # (P, P, k): cosines of the principal angles
    return _split_pairs(to_numpy((cos**2).mean(-1)), labels)


def _top_directions(x: torch.Tensor, k: int) -> torch.Tensor:
    """Top-k right singular vectors (k, N) of x (M, N), through the small side's Gram matrix when M < N."""
    if x.shape[0] >= x.shape[1]:
        return torch.linalg.svd(x, full_matrices=False)[2][:k]
    lam, u = torch.linalg.eigh(x @ x.T)
    u, lam = u[:, -k:].flip(1), lam[-k:].flip(0)
    v = (u.T @ x) / torch.sqrt(lam.clamp_min(1e-300))[:, None]
    # Re-orthonormalise (tiny eigenvalues lose accuracy through the Gram matrix).
    return torch.linalg.qr(v.T)[0].T


def principal_angles(a: Any, b: Any, n_components: int = 5) -> np.ndarray:
    """Principal angles (radians, ascending) between the top principal subspaces of two point sets.

    Args:
        a: (M_a, N) points.
        b: (M_b, N) points.
        n_components: dimension of each principal subspace (capped by the point sets' sizes).

    Returns:
        (k,) angles in [0, pi/2], ascending, k = min(n_components, sizes).

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import principal_angles
        >>> square = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
        >>> zeros = np.zeros((4, 1))
        >>> a = np.hstack([square, zeros])  # points in the x-y plane
        >>> b = np.hstack([square[:, :1], zeros, square[:, 1:]])  # points in the x-z plane
        >>> [round(float(angle), 4) for angle in principal_angles(a, b, n_components=2)]
        [0.0, 1.5708]
    """
    ms = manifold_list([a, b])
    k = min([n_components] + [min(m.shape) for m in ms])
    bases = [_top_directions(m - m.mean(0), k) for m in ms]
    cos = torch.linalg.svdvals(bases[0] @ bases[1].T).clamp(-1, 1)
    return np.sort(np.arccos(to_numpy(cos)))


def gradient_coherence(
    model: nn.Module,
    objective: Callable[[torch.Tensor], torch.Tensor],
    views: torch.Tensor,
    labels: Any = None,
    params: list[str] | None = None,
) -> PairSimilarity:
    """Cosine similarity of per-example gradients of a batch objective, same class vs different class.

    The objective L(z) takes embeddings z of shape (B, k, d) and returns a scalar; its parameter gradient
    splits into per-example parts g_b = (dz_b/dtheta)^T dL/dz_b, whose sum is the batch gradient. The
    coherence of two examples is cos(g_a, g_b).

    Args:
        model: maps (n, 3, h, w) images to (n, d) embeddings; run in eval mode (batch-norm statistics
            fixed) so that examples do not interact through the network.
        objective: e.g. ``mmcr.objectives.MMCRLoss()``.
        views: (B, k, 3, h, w) augmented views of B images.
        labels: (B,) classes.
        params: names of the parameters to differentiate (default: all that require grad).

    Returns:
        :class:`PairSimilarity` over the (B, B) gradient cosine matrix.

    Raises:
        ValueError: views is not 5-d, a name in ``params`` is unknown, or nothing requires grad.

    Examples:
        >>> import numpy as np
        >>> import torch
        >>> from mmcr import MMCRLoss
        >>> from mmcr.geometry import gradient_coherence
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 8))
        >>> views = torch.randn(4, 2, 3, 4, 4)  # (B, k, 3, h, w)
        >>> sim = gradient_coherence(model, MMCRLoss(), views, labels=[0, 0, 1, 1])
        >>> sim.matrix.shape, sim.same.shape, bool(np.allclose(np.diag(sim.matrix), 1.0))
        ((4, 4), (2,), True)
    """
    if views.ndim != 5:
        raise ValueError(f"views must be (B, k, 3, h, w), got shape {tuple(views.shape)}")
    B, k = views.shape[:2]
    was_training = model.training
    model.eval()
    try:
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        if params is not None:
            missing = [n for n in params if n not in named]
            if missing:
                raise ValueError(f"unknown parameter names {missing[:3]}; use names from model.named_parameters()")
            named = {n: named[n] for n in params}
        if not named:
            raise ValueError("the model has no trainable parameters to take gradients of")
        with torch.no_grad():
            z = model(views.flatten(0, 1)).reshape(B, k, -1)
        z = z.detach().requires_grad_(True)
        upstream = torch.autograd.grad(objective(z), z)[0]  # (B, k, d) = dL/dz
        grads = []
        # One example at a time (B backward passes of k views each): exact and works for any module,
        # including ones torch.func cannot vmap over.
        for b in range(B):
            out = model(views[b]).reshape(k, -1)
            g = torch.autograd.grad((out * upstream[b]).sum(), list(named.values()), allow_unused=True)
            flat = torch.cat(
                [(gi if gi is not None else torch.zeros_like(p)).reshape(-1) for gi, p in zip(g, named.values())]
            )
            grads.append(flat.detach().to(torch.float64))
        G = torch.stack(grads)
    finally:
        model.train(was_training)
    G = G / torch.linalg.norm(G, dim=1, keepdim=True).clamp_min(1e-300)
    return _split_pairs(to_numpy(G @ G.T), labels)
