"""Weighted k-nearest-neighbour classification on L2-normalised features (Wu et al. 2018's monitor).

Each test point votes with its k most cosine-similar training points, neighbour i weighing
``exp(s_i / T)``. The authors use k = 200 and T = 0.5 on ImageNet; the default here, T = 0.1, is the
value most SSL libraries report with. Works on any device; test points go in batches so memory stays
at ``batch_size x N_train``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmcr.distributed import resolve_device
from mmcr.schema import AT_LEAST_1, POSITIVE


def _check(train_feats, train_labels, test_feats, test_labels, k, temperature):
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(
            f"features must be (N, D) with the same D, got train {tuple(train_feats.shape)} "
            f"and test {tuple(test_feats.shape)}"
        )
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError(f"train_labels must be ({train_feats.shape[0]},), got {tuple(train_labels.shape)}")
    if test_labels is not None and test_labels.shape != (test_feats.shape[0],):
        raise ValueError(f"test_labels must be ({test_feats.shape[0]},), got {tuple(test_labels.shape)}")
    AT_LEAST_1.check("k", k, integer=True)
    POSITIVE.check("temperature", temperature)
    if train_feats.shape[0] == 0:
        raise ValueError("kNN needs at least one training point")


def check_class_labels(labels: torch.Tensor, num_classes: int, name: str) -> None:
    """Labels of a classifier's data: class indices 0..num_classes-1 (a label outside cannot be voted for
    or scored, and would index past the score table)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name} must be class indices in 0..{num_classes - 1} (num_classes={num_classes}), got "
                         f"values in {int(labels.min())}..{int(labels.max())}; drop unlabelled (-1) images or raise "
                         "num_classes")


def check_test_classes(train_labels: torch.Tensor, test_labels: torch.Tensor, test_name: str,
                       train_name: str = "train") -> None:
    """Refuse a test split holding classes the training split lacks: a classifier fitted on the training
    split can never predict them, so the accuracy would be wrong without saying so."""
    missing = sorted(set(torch.unique(test_labels).tolist()) - set(torch.unique(train_labels).tolist()))
    if missing:
        n = int(torch.isin(test_labels, torch.tensor(missing)).sum())
        shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
        raise ValueError(f"the {test_name} has labels {shown} ({n} images) that no image of the "
                         f"{train_name} split has; a classifier fitted on {train_name} cannot predict them: "
                         "give both splits every class (or drop those test images)")


@torch.no_grad()
def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Class scores (N_test, C) of the weighted kNN vote, on ``device`` (default: train_feats'), for callers
    that need more than the accuracy (per-image predictions, other metrics).

    Args:
        train_feats: (N_train, D) features of the labelled points (L2-normalised here).
        train_labels: (N_train,) class indices.
        test_feats: (N_test, D) features to classify.
        k: neighbours per test point (clipped to N_train).
        temperature: T of the vote weights exp(similarity / T), > 0.
        num_classes: C (default: the largest training label + 1).
        batch_size: test points per similarity block (memory is batch_size x N_train).
        device: where to compute (default: train_feats' device).

    Returns:
        (N_test, C) float32 sums of the neighbours' weights per class.

    Raises:
        ValueError: mismatched shapes, k < 1, temperature <= 0, no training points, or labels outside 0..C-1.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import knn_scores
        >>> train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> scores = knn_scores(train, torch.tensor([0, 0, 1, 1]), torch.tensor([[1.0, 0.2], [0.2, 1.0]]), k=2)
        >>> scores.shape, scores.argmax(1).tolist()
        (torch.Size([2, 2]), [0, 1])
    """
    _check(train_feats, train_labels, test_feats, None, k, temperature)
    dev = resolve_device(device) if device is not None else train_feats.device
    train = F.normalize(train_feats.to(dev, torch.float32), dim=1)
    train_y = train_labels.to(dev, torch.int64)
    C = int(num_classes) if num_classes is not None else int(train_y.max().item()) + 1
    check_class_labels(train_y, C, "train_labels")
    k = min(k, train.shape[0])
    out = []
    for i in range(0, test_feats.shape[0], batch_size):
        q = F.normalize(test_feats[i : i + batch_size].to(dev, torch.float32), dim=1)
        sim, idx = (q @ train.T).topk(k, dim=1)
        w = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], C, device=dev)
        scores.scatter_add_(1, train_y[idx], w)
        out.append(scores)
    return torch.cat(out) if out else torch.zeros(0, C, device=dev)


@torch.no_grad()
def knn_accuracy(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent of the weighted kNN classifier: ``{"top1", "top5"}``.

    Features are L2-normalised here (cosine similarity); ``k`` is clipped to the training-set size and
    top-5 to the number of classes. Ties in the vote go to the lower class index.

    Args:
        train_feats: (N_train, D) features of the labelled points.
        train_labels: (N_train,) class indices.
        test_feats: (N_test, D) features to classify.
        test_labels: (N_test,) their true classes.
        k: neighbours per test point (the authors use 200).
        temperature: T of the vote weights exp(similarity / T), > 0.
        num_classes: C (default: the largest label in either split + 1).
        batch_size: test points per similarity block.
        device: where to compute (default: train_feats' device).

    Returns:
        ``{"top1": float, "top5": float}`` in percent.

    Raises:
        ValueError: as :func:`knn_scores`, or test labels outside 0..C-1.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import knn_accuracy
        >>> train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> test = torch.tensor([[1.0, 0.2], [0.2, 1.0]])
        >>> knn_accuracy(train, torch.tensor([0, 0, 1, 1]), test, torch.tensor([0, 1]), k=2)
        {'top1': 100.0, 'top5': 100.0}
    """
    _check(train_feats, train_labels, test_feats, test_labels, k, temperature)
    if num_classes is None:
        num_classes = int(max(train_labels.max().item(), test_labels.max().item())) + 1
    check_class_labels(test_labels, int(num_classes), "test_labels")
    scores = knn_scores(train_feats, train_labels, test_feats, k, temperature, num_classes, batch_size, device)
    return topk_accuracy(scores, test_labels)


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``{"top1", "top5"}`` in percent from class scores (N, C); top-5 uses min(5, C) classes.

    Shared by the kNN, the linear probe and fine-tuning, so that they rank ties the same way (the lower
    class first, as argmax does).

    Args:
        scores: (N, C) class scores (logits, votes, probabilities).
        labels: (N,) true classes.

    Returns:
        ``{"top1": float, "top5": float}`` in percent.

    Raises:
        ValueError: N is 0.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import topk_accuracy
        >>> topk_accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
        {'top1': 50.0, 'top5': 100.0}
    """
    labels = labels.to(scores.device)
    if scores.shape[0] == 0:
        raise ValueError("no test points to score")
    # stable sort so that equal scores rank the lower class first, as argmax does
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, : min(5, scores.shape[1])]
    hit = order == labels[:, None]
    return {
        "top1": 100.0 * hit[:, 0].float().mean().item(),
        "top5": 100.0 * hit.any(dim=1).float().mean().item(),
    }
