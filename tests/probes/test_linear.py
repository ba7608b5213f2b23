"""LinearProbe against scikit-learn: estimator contract, parity, planted signals."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge, RidgeCV
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

from probekit.errors import ProbekitError
from probes import KINDS, LinearProbe

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


def _classes(n=900, d=20, k=4, seed=0, noise=2.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(0.2, 4, size=d) + rng.normal(size=d) * 3
    w = rng.normal(size=(d, k))
    y = (StandardScaler().fit_transform(X) @ w + noise * rng.normal(size=(n, k))).argmax(1)
    return X, y


@pytest.mark.parametrize("kind", KINDS)
def test_sklearn_estimator_checks(kind):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(LinearProbe(kind=kind, C=1.0), on_fail=None)
    failed = [r["check_name"] for r in results if r["status"] == "failed"]
    assert failed == []


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logistic_fixed_C_matches_sklearn(k, C):
    X, y = _classes(k=k)
    tr, te = slice(0, 600), slice(600, None)
    sc = StandardScaler().fit(X[tr])
    ref = LogisticRegression(C=C, max_iter=1000).fit(sc.transform(X[tr]), y[tr])
    probe = LinearProbe(C=C, max_iter=1000).fit(X[tr], y[tr])
    assert abs(probe.score(X[te], y[te]) - ref.score(sc.transform(X[te]), y[te])) <= 0.005
    # same optimum, so the same probabilities
    np.testing.assert_allclose(probe.predict_proba(X[te]), ref.predict_proba(sc.transform(X[te])), atol=2e-3)


def test_logistic_cv_matches_logistic_regression_cv():
    X, y = _classes(n=1200, k=3, noise=3.0, seed=1)
    tr, te = slice(0, 800), slice(800, None)
    sc = StandardScaler().fit(X[tr])
    ref = LogisticRegressionCV(Cs=list(CS), cv=StratifiedKFold(3), scoring="accuracy", l1_ratios=(0.0,),
                               use_legacy_attributes=False, max_iter=1000).fit(sc.transform(X[tr]), y[tr])
    probe = LinearProbe(Cs=CS, cv=3, max_iter=1000).fit(X[tr], y[tr])
    assert np.atleast_1d(probe.C_)[0] == pytest.approx(ref.C_)
    assert abs(probe.score(X[te], y[te]) - ref.score(sc.transform(X[te]), y[te])) <= 0.005


def test_ridge_matches_sklearn_fixed_and_cv():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(600, 15)) * rng.uniform(0.5, 3, size=15)
    y = X @ rng.normal(size=15) + 4 * rng.normal(size=600)
    sc = StandardScaler().fit(X[:400])
    Xs = sc.transform(X)
    probe = LinearProbe(kind="ridge", C=0.01).fit(X[:400], y[:400])
    ref = Ridge(alpha=100.0).fit(Xs[:400], y[:400])
    np.testing.assert_allclose(probe.predict(X[400:]), ref.predict(Xs[400:]), atol=1e-8)
    probe = LinearProbe(kind="ridge", Cs=CS, cv=3).fit(X[:400], y[:400])
    ref = RidgeCV(alphas=[1 / c for c in CS], cv=KFold(3)).fit(Xs[:400], y[:400])
    assert 1 / np.atleast_1d(probe.C_)[0] == pytest.approx(ref.alpha_)
    assert probe.score(X[400:], y[400:]) == pytest.approx(ref.score(Xs[400:], y[400:]), abs=1e-6)


def test_works_in_cross_val_score_and_pipeline():
    X, y = _classes(n=300, k=3)
    ours = cross_val_score(make_pipeline(StandardScaler(), LinearProbe(C=1.0, standardize=False)), X, y, cv=3)
    ref = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=1.0)), X, y, cv=3)
    np.testing.assert_allclose(ours, ref, atol=0.005)


def test_planted_linear_direction_found():
    rng = np.random.default_rng(3)
    d = 32
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    X = rng.normal(size=(4000, d))
    y = (X @ w > 0).astype(int)
    probe = LinearProbe(C=1.0).fit(X, y)
    cos = float(probe.direction_[0] @ w)
    assert cos >= 0.99
    assert probe.score(X, y) > 0.97


def test_planted_nonlinear_signal_not_found():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3000, 8))
    y = ((X[:, 0] > 0) ^ (X[:, 1] > 0)).astype(int)  # XOR: no linear direction carries it
    probe = LinearProbe().fit(X[:2000], y[:2000])
    assert probe.score(X[2000:], y[2000:]) < probe.majority_ + 0.05
    # while a depth-2 interaction feature makes it linear
    Xq = np.c_[X, X[:, 0] * X[:, 1]]
    assert LinearProbe().fit(Xq[:2000], y[:2000]).score(Xq[2000:], y[2000:]) > 0.9


def test_regression_reports_r2_and_classification_majority():
    X, y = _classes(n=400, k=2)
    probe = LinearProbe(C=1.0).fit(X, y)
    assert probe.majority_ == pytest.approx(np.bincount(y).max() / len(y))
    rng = np.random.default_rng(5)
    Xr = rng.normal(size=(300, 4))
    yr = Xr @ np.array([1.0, -2.0, 0.5, 0.0])
    assert LinearProbe(kind="ridge", C=100.0).fit(Xr, yr).score(Xr, yr) > 0.99


def test_bad_inputs_are_one_line_errors():
    X, y = _classes(n=100, k=2)
    with pytest.raises(ProbekitError, match="one class"):
        LinearProbe().fit(X, np.zeros(100, dtype=int))
    with pytest.raises(ProbekitError, match="kind"):
        LinearProbe(kind="svm").fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        LinearProbe().fit(np.where(np.arange(100)[:, None] == 3, np.nan, X), y)
