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
from probes.stream import fit_ridge_store


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
