"""Ridge probes streamed from an on-disk store equal the in-memory batched fit and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

import probekit as pk
from probes import BatchedProbeTrainer, ProbeConfig
from probes.stream import fit_logistic_store, fit_ridge_store


@pytest.fixture(scope="module")
def disk_store(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "acts"
    return pk.cache_activations(tiny_model, pk.tasks.get("parens"), n=12, out=out, shard_rows=100)


@pytest.mark.parametrize("C", [0.1, None])
def test_streamed_ridge_equals_in_memory_fit(disk_store, C):
    values, defined = disk_store.label("depth")
    cfg = ProbeConfig(kind="ridge", C=C, Cs=(0.01, 0.1, 1.0), cv=3, dtype="float64")
    streamed = fit_ridge_store(disk_store, "depth", config=cfg, batch_rows=97)
    X = disk_store.stack()[:, defined].double()
    y = values[defined].double()
    memory = BatchedProbeTrainer(cfg).fit(X, y)
    torch.testing.assert_close(streamed.decision(X), memory.decision(X), atol=1e-6, rtol=1e-6)
    if C is None:
        for layer in range(X.shape[0]):
            sc = StandardScaler().fit(X[layer].numpy())
            ref = RidgeCV(alphas=[100.0, 10.0, 1.0], cv=KFold(3)).fit(sc.transform(X[layer].numpy()), y.numpy())
            assert 1 / float(streamed.C[layer, 0]) == pytest.approx(ref.alpha_)
            np.testing.assert_allclose(streamed.decision(X)[layer, :, 0].numpy(),
                                       ref.predict(sc.transform(X[layer].numpy())), atol=1e-6)


def _objective(fit, X, y, C):
    """scikit-learn's multinomial objective per layer, ``C * sum(cross-entropy) + ||coef||^2 / 2``."""
    z = fit.decision(X)  # [layer, n, classes]
    target = torch.as_tensor(np.searchsorted(fit.classes, y.numpy()))
    ce = torch.nn.functional.cross_entropy(z.transpose(1, 2), target.expand(z.shape[0], -1), reduction="none").sum(1)
    return C * ce + 0.5 * (fit.coef**2).sum((1, 2))


@pytest.mark.parametrize("C", [0.5, None])
def test_streamed_logistic_equals_in_memory_fit(disk_store, C):
    """Logistic probes fitted block by block from the on-disk store (blocks smaller than a shard and than the
    folds) equal the batched trainer on the stacked rows: same solver, same folds, the same chosen C, and the
    standardisation from streamed sums equal to 1e-9. The objective is strictly convex, so both runs reach the
    same optimal value; where it is flat (weak regularisation) the weights may stop apart along the flat
    directions, so the weights are compared through the objective and the predictions."""
    values, defined = disk_store.label("depth")
    cfg = ProbeConfig(C=C, Cs=(0.1, 1.0, 10.0), cv=3, dtype="float64", max_iter=2000, tol=1e-9)
    streamed = fit_logistic_store(disk_store, "depth", config=cfg, batch_rows=37)
    X, y = disk_store.stack()[:, defined].double(), values[defined]
    memory = BatchedProbeTrainer(cfg).fit(X, y)
    torch.testing.assert_close(streamed.mean, memory.mean, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(streamed.scale, memory.scale, atol=1e-9, rtol=1e-9)
    assert torch.equal(streamed.C, memory.C)
    np.testing.assert_array_equal(streamed.classes, memory.classes)
    assert len(memory.classes) > 2  # multinomial: depth takes several values
    if C is None:
        torch.testing.assert_close(streamed.cv_scores, memory.cv_scores)
    Cl = memory.C[:, 0].to(torch.float64)
    torch.testing.assert_close(_objective(streamed, X, y, Cl), _objective(memory, X, y, Cl), rtol=1e-7, atol=0)
    agree = (streamed.decision(X).argmax(-1) == memory.decision(X).argmax(-1)).double().mean()
    assert agree >= 0.995


def test_streamed_logistic_refuses_bad_input(disk_store):
    with pytest.raises(pk.ProbekitError, match="fit_ridge_store"):
        fit_logistic_store(disk_store, "depth", config=ProbeConfig(kind="ridge"))
    with pytest.raises(pk.ProbekitError, match="defined on no rows"):
        fit_logistic_store(disk_store, "depth", rows=torch.zeros(len(disk_store), dtype=torch.bool))
