"""Core patching metrics against closed forms (torch's own softmax / KL)."""

from __future__ import annotations

import pytest
import torch

from probekit import metrics
from probekit.errors import ProbekitError


@pytest.fixture
def logits():
    return torch.randn(4, 3, 9, generator=torch.Generator().manual_seed(0))


def test_logit_diff_prob_logprob(logits):
    a, w = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 0, 8, 7])
    last = logits[:, -1]
    ld = torch.stack([last[i, a[i]] - last[i, w[i]] for i in range(4)])
    assert torch.allclose(metrics.logit_diff(logits, a, w, reduce="none"), ld)
    assert metrics.logit_diff(logits, a, w) == pytest.approx(float(ld.mean()))
    p = torch.softmax(last, -1)[torch.arange(4), a]
    assert torch.allclose(metrics.prob(logits, a, reduce="none"), p, atol=1e-6)
    assert torch.allclose(metrics.logprob(logits, a, reduce="none"), p.log(), atol=1e-5)
    assert metrics.logit_diff(logits, a, w, pos=0) == pytest.approx(
        float((logits[torch.arange(4), 0, a] - logits[torch.arange(4), 0, w]).mean()))


def test_kl(logits):
    other = logits + torch.randn_like(logits)
    ref = torch.nn.functional.kl_div(other[:, -1].log_softmax(-1), logits[:, -1].log_softmax(-1), log_target=True,
                                     reduction="batchmean")
    assert metrics.kl_to_clean(other, logits) == pytest.approx(float(ref), abs=1e-6)
    assert metrics.kl_to_clean(logits, logits) == pytest.approx(0.0, abs=1e-7)


def test_normalized_maps_corrupt_to_0_and_clean_to_1(logits):
    a, w = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 0, 8, 7])
    corrupt = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    m = metrics.make("logit-diff", answers=a, wrong=w, clean_logits=logits, corrupt_logits=corrupt, normalized=True)
    assert float(m(logits)) == pytest.approx(1.0, abs=1e-6)
    assert float(m(corrupt)) == pytest.approx(0.0, abs=1e-6)
    mid = (logits + corrupt) / 2  # logit diff is linear in the logits
    assert float(m(mid)) == pytest.approx(0.5, abs=1e-5)
    per = metrics.make("logit-diff", answers=a, wrong=w, clean_logits=logits, corrupt_logits=corrupt,
                       normalized=True, reduce="none")
    assert float(per(mid).mean()) == pytest.approx(0.5, abs=1e-5)


def test_registry_and_errors(logits):
    assert metrics.names() == ["logit-diff", "logprob", "prob", "kl"]
    for name in metrics.names():
        m = metrics.make(name, answers=torch.tensor([1, 2, 3, 4]), wrong=torch.tensor([0, 0, 0, 0]), clean_logits=logits)
        assert m(logits).ndim == 0
    with pytest.raises(ProbekitError, match="did you mean"):
        metrics.make("logit_dif", answers=torch.zeros(4))
    with pytest.raises(ProbekitError, match="out of vocabulary"):
        metrics.logit_diff(logits, torch.tensor([1, 2, 3, 9]), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ProbekitError, match="one token id per example"):
        metrics.prob(logits, torch.tensor([1, 2]))
    with pytest.raises(ProbekitError, match="needs clean_logits"):
        metrics.make("kl")
    with pytest.raises(ProbekitError, match="equal"):
        metrics.normalize(torch.tensor(1.0), 2.0, 2.0)
