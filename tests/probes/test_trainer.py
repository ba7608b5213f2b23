"""The batched trainer equals scikit-learn fitted layer by layer (and target by target)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from probekit.errors import ProbekitError
from probes import BatchedProbeTrainer, ProbeConfig


def _stack(L=3, n=800, d=16, k=3, seed=0):
    """``L`` layers of one latent ``z`` with a ``k``-class label read linearly from it.

    Layer l is ``z`` plus Gaussian noise of std ``4 * 0.35**l``: layer l carries the label
    with decreasing noise, so per-layer accuracies differ. Features are on different
    scales per layer, so the probes' standardization matters.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    y = (z @ torch.randn(d, k, generator=g)).argmax(1)
    noise = 4.0 * 0.35 ** torch.arange(L, dtype=torch.float32)
    scale = torch.rand(L, 1, d, generator=g) * 3
    X = (z + noise[:, None, None] * torch.randn(L, n, d, generator=g)) * scale
    return X, y


def _sk_score(est, X, y, tr, te):
    """Fit a scikit-learn estimator on standardized training rows of one layer; its held-out score."""
    X, y = X.numpy(), y.numpy()
    sc = StandardScaler().fit(X[tr])
    est.fit(sc.transform(X[tr]), y[tr])
    return est.score(sc.transform(X[te]), y[te])


def test_fixed_C_per_layer_matches_logistic_regression():
    X, y = _stack()
    tr, te = np.arange(600), np.arange(600, 800)
    fit = BatchedProbeTrainer(C=0.5, max_iter=500).fit(X[:, tr], y[tr])
    ours = fit.score(X[:, te], y[te])
    ref = [_sk_score(LogisticRegression(C=0.5, max_iter=500), X[layer], y, tr, te) for layer in range(X.shape[0])]
    for layer in range(X.shape[0]):
        assert abs(float(ours[layer]) - ref[layer]) <= 0.005
    # the layers differ as built: less noise, higher accuracy (by a margin well above one test row)
    assert all(b - a >= 0.05 for a, b in zip(ref, ref[1:])), ref


def test_cv_per_layer_matches_logistic_regression_cv():
    X, y = _stack(seed=1)
    tr, te = np.arange(600), np.arange(600, 800)
    Cs = (0.01, 0.1, 1.0)
    fit = BatchedProbeTrainer(Cs=Cs, cv=3, max_iter=500).fit(X[:, tr], y[tr])
    ours = fit.score(X[:, te], y[te])
    for layer in range(X.shape[0]):
        ref = LogisticRegressionCV(Cs=list(Cs), cv=StratifiedKFold(3), scoring="accuracy", l1_ratios=(0.0,),
                                   use_legacy_attributes=False, max_iter=500)
        ref_score = _sk_score(ref, X[layer], y, tr, te)
        assert float(fit.C[layer, 0]) == pytest.approx(ref.C_)
        assert abs(float(ours[layer]) - ref_score) <= 0.005


def test_multi_target_binary_probes_match_per_target_fits():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(2, 500, 10, generator=g)
    W = torch.randn(10, 5, generator=g)
    Y = ((X[1] @ W + torch.randn(500, 5, generator=g)) > 0).long()  # 5 binary targets (e.g. grid cells)
    fit = BatchedProbeTrainer(C=1.0, max_iter=500).fit(X, Y)
    acc = fit.score(X, Y)  # [layer, target]
    assert acc.shape == (2, 5)
    for t in range(5):
        sc = StandardScaler().fit(X[1].numpy())
        ref = LogisticRegression(C=1.0, max_iter=500).fit(sc.transform(X[1].numpy()), Y[:, t].numpy())
        assert abs(float(acc[1, t]) - ref.score(sc.transform(X[1].numpy()), Y[:, t].numpy())) <= 0.005
        np.testing.assert_allclose(fit.coef[1, :, t].numpy(), ref.coef_[0], atol=5e-3)


def test_ridge_per_layer_and_target_matches_sklearn():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(3, 400, 12, generator=g, dtype=torch.float64)
    Y = X[2] @ torch.randn(12, 4, generator=g, dtype=torch.float64) + torch.randn(400, 4, generator=g, dtype=torch.float64)
    fit = BatchedProbeTrainer(kind="ridge", C=0.1, dtype="float64").fit(X, Y)
    for layer in range(3):
        sc = StandardScaler().fit(X[layer].numpy())
        ref = Ridge(alpha=10.0).fit(sc.transform(X[layer].numpy()), Y.numpy())
        pred = fit.decision(X)[layer]
        np.testing.assert_allclose(pred.numpy(), ref.predict(sc.transform(X[layer].numpy())), atol=1e-8)


def test_bad_inputs():
    X, y = _stack(n=100)
    trainer = BatchedProbeTrainer(C=1.0)
    with pytest.raises(ProbekitError, match="rows"):
        trainer.fit(X, y[:50])
    X_bad = X.clone()
    X_bad[1, 7, 3] = float("nan")
    with pytest.raises(ProbekitError, match="NaN/inf.*row 7"):
        trainer.fit(X_bad, y)
    with pytest.raises(ProbekitError, match="one class"):
        trainer.fit(X, torch.zeros(100, dtype=torch.long))
    with pytest.raises(ProbekitError, match="kind"):
        ProbeConfig(kind="svm")


@pytest.mark.parametrize("d", [100, 500, 770])
def test_gram_from_block_triangle_equals_the_full_product(d):
    from probes.solvers import gram

    X = torch.randn(2, 300, d, generator=torch.Generator().manual_seed(d))
    G = gram(X)
    assert G.shape == (2, d, d)
    torch.testing.assert_close(G, X.transpose(1, 2) @ X, rtol=1e-5, atol=1e-3)
    assert torch.equal(G, G.transpose(1, 2))
