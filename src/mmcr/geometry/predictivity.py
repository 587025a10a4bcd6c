"""Neural predictivity: how well a linear map from model features predicts recorded responses.

Following the Brain-Score recipe: features -> responses by PLS regression (25 components) or ridge with
a cross-validated strength, fitted on repeated (stratified) train/test splits of the stimuli; per-neuroid
Pearson r on the held-out stimuli, averaged over splits, median over neuroids. The ceiling is the
split-half reliability of the responses over repetitions with the Spearman-Brown correction; the ceiled
score is raw / ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.cross_decomposition import PLSRegression
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

from mmcr.geometry._arrays import checked_seed, to_numpy


@dataclass
class PredictivityResult:
    """Result of :func:`neural_predictivity`: raw and ceiled scores with the per-neuroid values behind them.

    Attributes:
        score: median of ``per_neuroid``.
        per_neuroid: (n_neuroids,) held-out Pearson r averaged over splits.
        ceiling: median split-half Spearman-Brown reliability (None without repetitions).
        ceiled_score: score / ceiling (None without a positive ceiling).
        method: "pls" or "ridge".
        n_splits: number of train/test splits.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import neural_predictivity
        >>> rng = np.random.default_rng(0)
        >>> features = rng.standard_normal((40, 4))
        >>> result = neural_predictivity(features, features[:, :2], method="ridge", n_splits=2)
        >>> result.per_neuroid.shape, result.ceiling, result.to_dict()["n_neuroids"]
        ((2,), None, 2)
    """

    score: float
    per_neuroid: np.ndarray
    ceiling: float | None
    ceiled_score: float | None
    method: str
    n_splits: int

    def to_dict(self) -> dict[str, Any]:
        """Scores, method, splits and neuroid count as a JSON-ready dict (per-neuroid values left out)."""
        return {
            "score": self.score,
            "ceiling": self.ceiling,
            "ceiled_score": self.ceiled_score,
            "method": self.method,
            "n_splits": self.n_splits,
            "n_neuroids": int(self.per_neuroid.size),
        }


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r between matching columns of a and b (n, k); 0 where a column is constant."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(0) / den
    return np.where(den > 0, r, 0.0)


def split_half_ceiling(repeats: Any, n_splits: int = 10, seed: int | None = 0) -> np.ndarray:
    """Per-neuroid split-half reliability of (n_repeats, n_stimuli, n_neuroids) responses, Spearman-Brown
    corrected (2r / (1 + r)) and averaged over ``n_splits`` random halvings of the repetitions: the
    score a perfect model could reach given the recordings' noise.

    Args:
        repeats: (n_repeats >= 2, n_stimuli, n_neuroids) single-repetition responses.
        n_splits: random halvings of the repetitions to average over.
        seed: seeds the halvings.

    Returns:
        (n_neuroids,) corrected reliabilities (at most 1).

    Raises:
        ValueError: repeats is not 3-d with at least 2 repetitions.

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import split_half_ceiling
        >>> rng = np.random.default_rng(0)
        >>> signal = rng.standard_normal((1, 60, 3))  # (1, n_stimuli, n_neuroids)
        >>> ceiling = split_half_ceiling(signal + 0.5 * rng.standard_normal((4, 60, 3)), n_splits=5)
        >>> ceiling.shape, bool(np.all((ceiling > 0.8) & (ceiling <= 1)))  # reliable: noise is small
        ((3,), True)
    """
    R = np.asarray(to_numpy(repeats), dtype=np.float64)
    if R.ndim != 3 or R.shape[0] < 2:
        raise ValueError(f"repeats must be (n_repeats >= 2, n_stimuli, n_neuroids), got shape {R.shape}")
    rng = np.random.default_rng(checked_seed(seed))
    out = np.zeros(R.shape[2])
    for _ in range(n_splits):
        perm = rng.permutation(R.shape[0])
        h = R.shape[0] // 2
        r = pearson_columns(R[perm[:h]].mean(0), R[perm[h:]].mean(0))
        out += 2 * r / (1 + r)
    return out / n_splits


def neural_predictivity(
    features: Any,
    responses: Any,
    labels: Any = None,
    method: str = "pls",
    n_components: int = 25,
    alphas: Any = None,
    n_splits: int = 10,
    test_size: float = 0.1,
    seed: int | None = 0,
    standardize: bool = True,
) -> PredictivityResult:
    """Cross-validated linear predictivity of responses from features.

    Args:
        features: (n_stimuli, n_features) model features.
        responses: (n_stimuli, n_neuroids) means, or (n_repeats, n_stimuli, n_neuroids) (averaged; the ceiling).
        labels: optional (n_stimuli,) categories to stratify the splits by.
        method: "pls" (PLS regression) or "ridge" (RidgeCV).
        n_components: PLS components (capped by the training stimuli and features).
        alphas: ridge strengths RidgeCV chooses from (default 1e-3 to 1e5, 17 log-spaced).
        n_splits: repeated random train/test splits of the stimuli.
        test_size: fraction of the stimuli held out in each split.
        seed: seeds the splits and the ceiling's halvings.
        standardize: z-score features on the training stimuli; False only centres them (PCA scores keep variances).

    Returns:
        :class:`PredictivityResult` (with a ceiling when ``responses`` holds repetitions).

    Raises:
        ValueError: the shapes do not match as above, or method is neither "pls" nor "ridge".

    Examples:
        >>> import numpy as np
        >>> from mmcr.geometry import neural_predictivity
        >>> features = np.random.default_rng(0).standard_normal((60, 5))  # (n_stimuli, n_features)
        >>> repeats = features[:, :3] + 0.5 * np.random.default_rng(1).standard_normal((4, 60, 3))  # (4, 60, 3)
        >>> result = neural_predictivity(features, repeats, method="ridge", n_splits=3)
        >>> bool(result.score > 0.9), bool(result.ceiling > 0.9), result.per_neuroid.shape
        (True, True, (3,))
    """
    X = np.asarray(to_numpy(features), dtype=np.float64)
    Y = np.asarray(to_numpy(responses), dtype=np.float64)
    repeats = None
    if Y.ndim == 3:
        repeats, Y = Y, Y.mean(0)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(
            f"features must be (n_stimuli, n_features) and responses (n_stimuli, n_neuroids) or "
            f"(n_repeats, n_stimuli, n_neuroids) with the same stimuli; got {X.shape} and {Y.shape}"
        )
    if method not in ("pls", "ridge"):
        raise ValueError(f"method must be 'pls' or 'ridge', got {method!r}")
    if labels is not None:
        splitter = StratifiedShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed)
        splits = splitter.split(X, to_numpy(labels))
    else:
        splits = ShuffleSplit(n_splits=n_splits, test_size=test_size, random_state=seed).split(X)
    alphas = np.logspace(-3, 5, 17) if alphas is None else np.asarray(alphas, dtype=np.float64)
    rs = []
    for train, test in splits:
        mu, sd = X[train].mean(0), X[train].std(0)
        sd = np.where(sd > 0, sd, 1.0) if standardize else np.ones_like(sd)
        xtr, xte = (X[train] - mu) / sd, (X[test] - mu) / sd
        if method == "pls":
            k = int(min(n_components, xtr.shape[0] - 1, xtr.shape[1]))
            reg = PLSRegression(n_components=k, scale=False)
        else:
            reg = RidgeCV(alphas=alphas)
        reg.fit(xtr, Y[train])
        pred = reg.predict(xte).reshape(len(test), -1)
        rs.append(pearson_columns(pred, Y[test]))
    per = np.mean(rs, 0)
    score = float(np.median(per))
    ceiling = None
    ceiled = None
    if repeats is not None:
        ceiling = float(np.median(split_half_ceiling(repeats, seed=seed)))
        ceiled = score / ceiling if ceiling > 0 else None
    return PredictivityResult(score, per, ceiling, ceiled, method, n_splits)
