"""Evaluation numerics: kNN against a float64 brute-force reference and scikit-learn, the linear probe
against scikit-learn's LogisticRegression, the protocol (no selection on test), feature extraction."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.transforms.v2 import functional as TF

from mmcr.augment import EvalTransform
from mmcr.evaluate import (
    extract_features,
    fit_logistic,
    knn_accuracy,
    knn_scores,
    linear_probe,
    sklearn_C,
    topk_accuracy,
)
from mmcr.evaluate.linear import logistic_objective


def _blobs(n, d, c, sep, seed):
    """Gaussian classes; the centres depend only on (d, c, sep), so calls with different seeds give
    train and test samples of the same problem."""
    centers = np.random.default_rng(1234).normal(size=(c, d)) * sep
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = centers[y] + rng.normal(size=(n, d))
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64)


def _knn_reference(train, ytr, test, k, T, C):
    """Brute force in float64, one test point at a time."""
    a = train.double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    q = test.double().numpy()
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = np.zeros((q.shape[0], C))
    for i in range(q.shape[0]):
        s = a @ q[i]
        nn_idx = np.argsort(-s, kind="stable")[: min(k, len(s))]
        for j in nn_idx:
            out[i, ytr[j]] += np.exp(s[j] / T)
    return out


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(5, 60),
    m=st.integers(1, 20),
    d=st.integers(2, 8),
    c=st.integers(2, 6),
    k=st.integers(1, 70),
    T=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
    bs=st.integers(1, 32),
)
def test_knn_scores_match_float64_reference(n, m, d, c, k, T, seed, bs):
    g = torch.Generator().manual_seed(seed)
    train, test = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    ytr = torch.randint(0, c, (n,), generator=g)
    ours = knn_scores(train, ytr, test, k=k, temperature=T, num_classes=c, batch_size=bs).double().numpy()
    ref = _knn_reference(train, ytr.numpy(), test, k, T, c)
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=1e-6)


def test_knn_k1_equals_sklearn_cosine_nearest_neighbour():
    from sklearn.neighbors import KNeighborsClassifier

    xtr, ytr = _blobs(300, 16, 5, 0.6, 0)
    xte, yte = _blobs(200, 16, 5, 0.6, 1)
    skl = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(xtr.numpy(), ytr.numpy())
    expected = 100.0 * (skl.predict(xte.numpy()) == yte.numpy()).mean()
    assert knn_accuracy(xtr, ytr, xte, yte, k=1)["top1"] == pytest.approx(expected)


def test_knn_is_scale_invariant_and_top5_bounds_top1():
    xtr, ytr = _blobs(200, 8, 7, 0.5, 2)
    xte, yte = _blobs(100, 8, 7, 0.5, 3)
    a = knn_accuracy(xtr, ytr, xte, yte)
    b = knn_accuracy(xtr * 7.5, ytr, xte * 0.01, yte, batch_size=7)
    assert a == b
    assert a["top5"] >= a["top1"]
    # the accuracy is the fraction (in percent) of test points whose float64 reference vote is right
    ref = _knn_reference(xtr, ytr.numpy(), xte, 200, 0.1, 7).argmax(1)
    assert a["top1"] == pytest.approx(100.0 * (ref == yte.numpy()).mean())


def test_knn_bad_input_raises():
    x, y = torch.randn(10, 4), torch.zeros(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="same D"):
        knn_accuracy(x, y, torch.randn(3, 5), torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="temperature"):
        knn_accuracy(x, y, x, y, temperature=0)
    with pytest.raises(ValueError, match="k must be"):
        knn_accuracy(x, y, x, y, k=0)


def test_topk_accuracy_with_fewer_than_five_classes():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
    acc = topk_accuracy(scores, torch.tensor([1, 2]))
    assert acc == {"top1": 50.0, "top5": 100.0}


def test_linear_probe_agrees_with_sklearn_within_half_a_point():
    from sklearn.linear_model import LogisticRegression

    # overlapping classes so that the accuracy (about 70 %) is sensitive to the fitted weights
    xtr, ytr = _blobs(3000, 32, 8, 0.3, 4)
    xte, yte = _blobs(2000, 32, 8, 0.3, 5)
    xtr_np, xte_np = xtr.double().numpy(), xte.double().numpy()
    for wd in (1e-2, 1e-4):
        ours = fit_logistic(xtr, ytr, wd, num_classes=8, standardize=False)
        acc_ours = 100.0 * (ours.predict(xte) == yte).float().mean().item()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skl = LogisticRegression(C=sklearn_C(wd, 3000), tol=1e-8, max_iter=5000).fit(xtr_np, ytr.numpy())
        acc_skl = 100.0 * skl.score(xte_np, yte.numpy())
        assert abs(acc_ours - acc_skl) <= 0.5, (wd, acc_ours, acc_skl)
        assert 40 < acc_ours < 95
        # same optimum: our objective is no worse than scikit-learn's solution evaluated the same way
        skl_model = type(ours)(
            torch.tensor(skl.coef_, dtype=torch.float32),
            torch.tensor(skl.intercept_, dtype=torch.float32),
            ours.mean,
            ours.std,
            wd,
            0,
        )
        assert logistic_objective(ours, xtr, ytr) <= logistic_objective(skl_model, xtr, ytr) + 1e-5


def test_linear_probe_never_selects_on_test():
    xtr, ytr = _blobs(600, 16, 4, 0.4, 6)
    xte, yte = _blobs(300, 16, 4, 0.4, 7)
    a = linear_probe(xtr, ytr, xte, yte, weight_decays=(1e-1, 1e-2, 1e-3))
    shuffled = yte[torch.randperm(len(yte), generator=torch.Generator().manual_seed(0))]
    b = linear_probe(xtr, ytr, xte, shuffled, weight_decays=(1e-1, 1e-2, 1e-3))
    assert a["weight_decay"] == b["weight_decay"]
    assert a["val_top1"] == b["val_top1"]
    assert a["top1"] > b["top1"]
    assert set(a["val_top1"]) == {"0.1", "0.01", "0.001"}
    assert a["sklearn_C"] == pytest.approx(1 / (a["weight_decay"] * 600))


def test_linear_probe_with_augmented_passes_and_official_val():
    xtr, ytr = _blobs(400, 8, 3, 0.5, 8)
    xte, yte = _blobs(200, 8, 3, 0.5, 9)
    passes = torch.stack([xtr, xtr + 0.1 * torch.randn_like(xtr), xtr + 0.1 * torch.randn_like(xtr)])
    res = linear_probe(passes, ytr, xte, yte, weight_decays=(1e-2, 1e-4))
    assert res["passes"] == 3 and res["n_train"] == 1200 and res["val_source"] == "carved"
    xva, yva = _blobs(100, 8, 3, 0.5, 10)
    res = linear_probe(xtr, ytr, xte, yte, weight_decays=(1e-2,), val_feats=xva, val_labels=yva)
    assert res["val_source"] == "official" and res["n_train"] == 500
    with pytest.raises(ValueError, match="passes"):
        linear_probe(torch.randn(5, 8), ytr, xte, yte)


def test_eval_transform_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 40, 50), dtype=torch.uint8, generator=g)
    tf = EvalTransform(size=32, resize=36, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    ref = TF.center_crop(TF.resize(imgs.float() / 255, [36], antialias=True).clamp(0, 1), [32, 32])
    ref = TF.normalize(ref, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3])
    torch.testing.assert_close(tf(imgs), ref)
    with pytest.raises(ValueError, match="uint8"):
        tf(imgs.float())
    # a crop larger than the images: they are resized up to it first, as the training crops were
    big = EvalTransform(size=64)(imgs)
    ref = TF.center_crop(TF.resize(imgs.float() / 255, [64], antialias=True).clamp(0, 1), [64, 64])
    torch.testing.assert_close(big, TF.normalize(ref, list(EvalTransform().mean), list(EvalTransform().std)))


def test_extract_features_is_batch_invariant_and_restores_mode():
    from mmcr.models import build_backbone

    torch.manual_seed(0)
    bb = build_backbone("resnet_tiny").train()
    imgs = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    tf = EvalTransform()
    f1, _ = extract_features(bb, imgs, transform=tf, batch_size=3)
    f2, _ = extract_features(bb, imgs, transform=tf, batch_size=10)
    torch.testing.assert_close(f1, f2, rtol=1e-4, atol=1e-5)
    assert f1.shape == (10, bb.feature_dim) and bb.training
    loader = [(imgs[:6], torch.arange(6)), (imgs[6:], torch.arange(6, 10))]
    f3, y3 = extract_features(bb, loader, transform=tf)
    torch.testing.assert_close(f3, f1, rtol=1e-4, atol=1e-5)
    assert y3.tolist() == list(range(10))


def test_eval_transform_follows_the_run_config():
    from mmcr.augment import IMAGENET_MEAN
    from mmcr.evaluate.features import eval_transform_for
    from mmcr.evaluate.sources import ModelSource
    from mmcr.run.config import load_config

    cfg = load_config("digits", ["augment.overrides.size=24", "augment.overrides.mean=[0.5,0.5,0.5]",
                                 "augment.overrides.std=[0.2,0.2,0.2]"])
    src = ModelSource("resnet_tiny", True, "run", config=cfg)
    tf = eval_transform_for(src)
    assert (tf.size, tf.mean, tf.std) == ((24, 24), (0.5,) * 3, (0.2,) * 3)
    assert eval_transform_for(src, size=20).size == (20, 20)
    plain = eval_transform_for(None)
    assert plain.mean == IMAGENET_MEAN and plain.size is None
    imgs = torch.randint(0, 256, (3, 3, 30, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert tf(imgs).shape == (3, 3, 24, 24)
