"""Linear probe: multinomial logistic regression on frozen features, fitted on the device by full-batch
L-BFGS (``torch.optim.LBFGS`` with a strong-Wolfe line search).

Objective, for features X (N, D) and labels y::

    mean_i CE(W x_i + b, y_i) + weight_decay / 2 * ||W||_F^2        (b is not penalised)

which is scikit-learn's ``LogisticRegression(C=1 / (weight_decay * N))`` exactly, so results can be
checked against it. The protocol of :func:`linear_probe`: choose ``weight_decay`` on a validation split
(carved from the training set by image, or an official validation split), refit on all training
images, report once on the test split. The test split is never used to select anything.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mmcr.distributed import resolve_device
from mmcr.evaluate.features import progress_bar
from mmcr.evaluate.knn import check_class_labels, topk_accuracy
from mmcr.schema import NON_NEGATIVE, check_seed

DEFAULT_WEIGHT_DECAYS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
"""Candidate weight decays of the probe's validation search (strongest first), 1e-1 to 1e-6 by decades."""


@dataclass
class LogisticModel:
    """A fitted probe: ``scores(x) = ((x - mean) / std) @ weight.T + bias``.

    Attributes:
        weight: (C, D) weights on standardised features.
        bias: (C,) biases.
        mean: (D,) feature means of the fit (zeros without standardisation).
        std: (D,) feature standard deviations of the fit (ones without standardisation).
        weight_decay: the L2 penalty it was fitted with.
        iterations: L-BFGS iterations the fit took.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import LogisticModel
        >>> probe = LogisticModel(weight=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), bias=torch.zeros(2),
        ...                       mean=torch.zeros(2), std=torch.ones(2), weight_decay=0.0, iterations=0)
        >>> probe.predict(torch.tensor([[3.0, 1.0], [0.0, 2.0]])).tolist()
        [0, 1]
    """

    weight: torch.Tensor
    bias: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    weight_decay: float
    iterations: int

    def scores(self, feats: torch.Tensor) -> torch.Tensor:
        """Class scores (N, C) (logits) of features (N, D), on the probe's device."""
        x = (feats.to(self.weight.device, torch.float32) - self.mean) / self.std
        return x @ self.weight.T + self.bias

    def predict(self, feats: torch.Tensor) -> torch.Tensor:
        """Predicted classes (N,) of features (N, D)."""
        return self.scores(feats).argmax(dim=1)


def sklearn_C(weight_decay: float, n_samples: int) -> float:
    """The ``C`` of scikit-learn's LogisticRegression that gives the same optimum as ``weight_decay``.

    Args:
        weight_decay: the probe's L2 penalty (> 0) on the mean-scaled objective.
        n_samples: N, the number of training rows the probe was fitted on.

    Returns:
        C = 1 / (weight_decay * N).

    Examples:
        >>> from mmcr.evaluate import sklearn_C
        >>> sklearn_C(1e-2, 50)
        2.0
    """
    return 1.0 / (weight_decay * n_samples)


def fit_logistic(
    feats: torch.Tensor,
    labels: torch.Tensor,
    weight_decay: float,
    num_classes: int | None = None,
    standardize: bool = True,
    max_iter: int = 1000,
    tol: float = 1e-5,
    init: LogisticModel | None = None,
    device: str | torch.device | None = None,
) -> LogisticModel:
    """Fit the L2-regularised multinomial logistic regression by full-batch L-BFGS.

    Args:
        feats: (N, D) training features.
        labels: (N,) class indices.
        weight_decay: L2 penalty (>= 0) on the weights (not the bias).
        num_classes: C (default: the largest label + 1).
        standardize: z-score each feature with this fit's mean and standard deviation.
        max_iter: L-BFGS iteration cap.
        tol: bound on the largest gradient entry at convergence (scikit-learn's ``tol`` on the same objective).
        init: a fitted :class:`LogisticModel` to warm-start from (used along a regularisation path).
        device: where to fit (default: feats' device).

    Returns:
        The fitted :class:`LogisticModel` (weight (C, D), bias (C,)).

    Raises:
        ValueError: feats is not (N >= 1, D) with matching labels, or weight_decay is negative.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import fit_logistic
        >>> labels = torch.arange(40) % 2
        >>> feats = torch.stack([2.0 * labels, torch.linspace(-1, 1, 40)], 1)  # (N, D): class 1 at x = 2
        >>> probe = fit_logistic(feats, labels, weight_decay=1e-3)
        >>> probe.weight.shape, bool((probe.predict(feats) == labels).all())
        (torch.Size([2, 2]), True)
    """
    if feats.ndim != 2 or labels.shape != (feats.shape[0],):
        raise ValueError(f"need feats (N, D) and labels (N,), got {tuple(feats.shape)} and {tuple(labels.shape)}")
    NON_NEGATIVE.check("weight_decay", weight_decay)
    if feats.shape[0] == 0:
        raise ValueError("the probe needs at least one training feature vector, got 0")
    dev = resolve_device(device) if device is not None else feats.device
    X = feats.to(dev, torch.float32)
    y = labels.to(dev, torch.int64)
    C = int(num_classes) if num_classes is not None else int(y.max().item()) + 1
    if standardize:
        mean = X.mean(0)
        std = X.std(0, unbiased=False).clamp_min(1e-6)
    else:
        mean = torch.zeros(X.shape[1], device=dev)
        std = torch.ones(X.shape[1], device=dev)
    Xs = (X - mean) / std
    W = torch.zeros(C, X.shape[1], device=dev) if init is None else init.weight.detach().clone().to(dev)
    b = torch.zeros(C, device=dev) if init is None else init.bias.detach().clone().to(dev)
    W.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(torch.addmm(b, Xs, W.T), y)
        if weight_decay > 0:
            loss = loss + 0.5 * weight_decay * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return LogisticModel(W.detach(), b.detach(), mean, std, float(weight_decay), iters)


def logistic_objective(model: LogisticModel, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """The value of the fitted objective (mean cross-entropy + penalty) on ``feats``; for checks."""
    s = model.scores(feats)
    ce = F.cross_entropy(s, labels.to(s.device)).item()
    return ce + 0.5 * model.weight_decay * model.weight.pow(2).sum().item()


def _split_indices(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(labels.shape[0])
    try:
        tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels)
    except ValueError:  # a class with a single image cannot be stratified; fall back to a plain split
        tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed)
    return np.sort(tr), np.sort(va)


def _check_probe_inputs(train_feats, train_labels, weight_decays, seed, val_feats, val_labels, val_fraction):
    """``train_feats`` as (passes, N, D), after the checks of every argument."""
    if train_feats.ndim == 2:
        train_feats = train_feats[None]
    if train_feats.ndim != 3 or train_feats.shape[1] != train_labels.shape[0]:
        raise ValueError(
            f"train_feats must be (N, D) or (passes, N, D) matching train_labels ({train_labels.shape[0]},), "
            f"got {tuple(train_feats.shape)}"
        )
    if not weight_decays:
        raise ValueError("weight_decays is empty; give at least one candidate")
    for wd in weight_decays:
        NON_NEGATIVE.check("every weight decay", wd)
    check_seed(seed)
    if train_feats.shape[1] == 0:
        raise ValueError("the probe needs at least one training feature vector, got 0")
    if (val_feats is None) != (val_labels is None):
        raise ValueError("give both val_feats and val_labels, or neither")
    if val_feats is None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    return train_feats


def _probe_splits(train_feats, train_labels, val_feats, val_labels, val_fraction: float, seed: int):
    """(fit, validation, full) rows: validation carved by image from the clean pass, or the official one."""
    P = train_feats.shape[0]

    def rows(idx: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        f = train_feats if idx is None else train_feats[:, torch.as_tensor(idx)]
        lab = train_labels if idx is None else train_labels[torch.as_tensor(idx)]
        return f.reshape(-1, f.shape[-1]), lab.repeat(P)

    if val_feats is None:
        tr_idx, va_idx = _split_indices(train_labels.cpu().numpy(), val_fraction, seed)
        fit_x, fit_y = rows(tr_idx)
        val_x, val_y = train_feats[0, torch.as_tensor(va_idx)], train_labels[torch.as_tensor(va_idx)]
        full_x, full_y = rows(None)
    else:
        fit_x, fit_y = rows(None)
        val_x, val_y = val_feats, val_labels
        full_x, full_y = torch.cat([fit_x, val_feats]), torch.cat([fit_y, val_labels])
    return fit_x, fit_y, val_x, val_y, full_x, full_y


def _select_and_refit(fit, fit_set: list, val_x, val_y, full_x, full_y, weight_decays, progress: bool):
    """Fit each weight decay (strong to weak: warm starts stay well-conditioned), keep the best on
    validation (ties: the stronger one seen first), refit it on all the training data. ``fit_set``
    ([x, y] of the sweep) is emptied before the full set moves to the device, so the two never share it."""
    val_top1: dict[str, float] = {}
    best, best_acc, model, best_model = None, -math.inf, None, None
    with progress_bar(len(weight_decays) + 1, "linear probe", enabled=progress) as advance:
        for wd in sorted(weight_decays, reverse=True):
            model = fit(*fit_set, wd, init=model)
            acc = topk_accuracy(model.scores(val_x), val_y)["top1"]
            val_top1[f"{wd:g}"] = acc
            if acc > best_acc:
                best, best_acc, best_model = wd, acc, model
            advance()
        fit_set.clear()
        final = fit(full_x.to(val_x.device), full_y.to(val_x.device), best, init=best_model)
        advance()
    return best, val_top1, final


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, weight_decays: tuple[float, ...] | list[float] = DEFAULT_WEIGHT_DECAYS,
                 val_fraction: float = 0.1, val_feats: torch.Tensor | None = None,
                 val_labels: torch.Tensor | None = None, seed: int = 0, num_classes: int | None = None,
                 standardize: bool = True, max_iter: int = 1000, tol: float = 1e-5,
                 device: str | torch.device | None = None, progress: bool = False) -> dict:
    """Select the weight decay on validation data, refit on all training data, report on test.

    ``train_feats`` is (N, D), or (P, N, D) for P passes over the same N training images (pass 0 clean,
    the others augmented): the validation split is then carved by image, validation uses the clean pass
    only, and fits use every pass. With ``val_feats``/``val_labels`` (an official validation split) no
    split is carved and the refit uses train and validation together, as in Kornblith et al. (2019).

    Args:
        train_feats: (N, D) or (P, N, D) training features.
        train_labels: (N,) their classes.
        test_feats: (N_test, D) test features, used once for the final report.
        test_labels: (N_test,) their classes.
        weight_decays: candidate L2 penalties (>= 0), searched strongest first.
        val_fraction: share of the training images carved out for validation (stratified), in (0, 1).
        val_feats: (N_val, D) official validation features (then no split is carved).
        val_labels: (N_val,) their classes.
        seed: seeds the carved split.
        num_classes: C (default: the largest label + 1).
        standardize: z-score features with the fit's statistics.
        max_iter: L-BFGS iteration cap per fit.
        tol: largest gradient entry at convergence.
        device: where to fit.
        progress: show a progress bar.

    Returns:
        A dict with ``top1``, ``top5``, ``weight_decay``, ``sklearn_C``, ``val_top1`` (per candidate),
        ``val_source``, ``n_train``, ``n_test``, ``passes``, ``feature_dim``, ``iterations`` and ``seconds``.

    Raises:
        ValueError: mismatched shapes, no candidates, a negative weight decay, val_fraction outside (0, 1),
            only one of val_feats/val_labels, or labels outside 0..C-1.

    Examples:
        >>> import torch
        >>> from mmcr.evaluate import linear_probe
        >>> _ = torch.manual_seed(0)
        >>> def clusters(n):  # two separated classes in D = 4
        ...     labels = torch.arange(n) % 2
        ...     return torch.randn(n, 4) * 0.3 + 2.0 * labels[:, None], labels
        >>> (train, train_labels), (test, test_labels) = clusters(40), clusters(10)
        >>> result = linear_probe(train, train_labels, test, test_labels, weight_decays=[1e-2, 1e-4])
        >>> result["top1"], result["weight_decay"], result["val_source"], result["n_train"]
        (100.0, 0.01, 'carved', 40)
        >>> from mmcr.evaluate import DEFAULT_WEIGHT_DECAYS  # the candidates when none are given
        >>> DEFAULT_WEIGHT_DECAYS
        (0.1, 0.01, 0.001, 0.0001, 1e-05, 1e-06)
    """
    t0 = time.perf_counter()
    train_feats = _check_probe_inputs(train_feats, train_labels, weight_decays, seed, val_feats, val_labels,
                                      val_fraction)
    dev = resolve_device(device)
    P, N, _ = train_feats.shape
    if num_classes is None:
        num_classes = int(max(train_labels.max().item(), test_labels.max().item())) + 1
    check_class_labels(train_labels, int(num_classes), "train_labels")
    check_class_labels(test_labels, int(num_classes), "test_labels")
    fit_x, fit_y, val_x, val_y, full_x, full_y = _probe_splits(train_feats, train_labels, val_feats, val_labels,
                                                               val_fraction, seed)
    fit_set = [fit_x.to(dev), fit_y.to(dev)]
    del fit_x, fit_y  # only fit_set holds the sweep's rows now: freed before the refit
    fit = functools.partial(fit_logistic, num_classes=num_classes, standardize=standardize, max_iter=max_iter,
                            tol=tol, device=dev)
    best, val_top1, final = _select_and_refit(fit, fit_set, val_x.to(dev), val_y.to(dev), full_x, full_y,
                                              weight_decays, progress)
    test = topk_accuracy(final.scores(test_feats.to(dev)), test_labels.to(dev))
    return {"top1": test["top1"], "top5": test["top5"], "weight_decay": best,
            "sklearn_C": sklearn_C(best, full_x.shape[0]), "val_top1": val_top1,
            "val_source": "carved" if val_feats is None else "official", "n_train": int(full_x.shape[0]),
            "n_test": int(test_feats.shape[0]), "passes": P, "feature_dim": int(train_feats.shape[-1]),
            "iterations": final.iterations, "seconds": time.perf_counter() - t0}
