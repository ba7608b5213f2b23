"""The batched probe trainer on a GPU equals scikit-learn (marked ``gpu``: out of the default run;
benchmarks/gpu_check.sh runs it where a CUDA device is lent)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from probes import BatchedProbeTrainer
from tests.probes.test_trainer import _sk_score, _stack


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["logistic", "ridge"])
def test_gpu_trainer_equals_scikit_learn(kind):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with benchmarks/gpu_check.sh)"
    X, y = _stack()
    tr, te = np.arange(600), np.arange(600, 800)
    if kind == "ridge":
        y = y.float() + 0.3 * torch.randn(len(y), generator=torch.Generator().manual_seed(2))
    fit = BatchedProbeTrainer(kind=kind, C=0.5, max_iter=500, device="cuda").fit(X[:, tr].cuda(), y[tr].cuda())
    ours = fit.score(X[:, te].cuda(), y[te].cuda()).cpu()
    est = (lambda: LogisticRegression(C=0.5, max_iter=500)) if kind == "logistic" else (lambda: Ridge(alpha=2.0))
    for layer in range(X.shape[0]):
        assert abs(float(ours[layer]) - _sk_score(est(), X[layer], y, tr, te)) <= 0.005
