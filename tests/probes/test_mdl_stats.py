"""MDL online code (Voita & Titov 2020) and bootstrap intervals, against closed forms."""

from __future__ import annotations

import math

import torch

from probes import BLOCKS, bootstrap_ci, online_code


def test_online_code_shorter_for_real_labels_than_shuffled():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(1, 2000, 8, generator=g)
    y = (X[0] @ torch.randn(8, 3, generator=g)).argmax(1)
    real = online_code(X, y, n_classes=3)
    shuffled = online_code(X, y[torch.randperm(2000, generator=g)], n_classes=3)
    assert real.codelength[0] < 0.5 * shuffled.codelength[0]
    assert real.compression[0] > 2.0
    # shuffled labels carry nothing: the code is close to the uniform code
    assert 0.9 < float(shuffled.compression[0]) < 1.1
    assert real.uniform == 2000 * math.log2(3)


def test_block_schedule_and_first_block_uniform():
    X = torch.randn(2, 1000, 4)
    y = torch.randint(0, 2, (1000,))
    res = online_code(X, y, n_classes=2)
    assert res.blocks == tuple(sorted({max(1, math.ceil(f * 1000)) for f in BLOCKS}))
    assert res.blocks[-1] == 1000 and res.codelength.shape == (2,)
    # every row is coded once: at least the first block's uniform bits, and finite
    assert torch.all(res.codelength >= res.blocks[0]) and torch.all(torch.isfinite(res.codelength))


def test_bootstrap_interval_matches_binomial_closed_form():
    g = torch.Generator().manual_seed(1)
    n = 4000
    y = torch.randint(0, 2, (n,), generator=g)
    wrong = torch.rand(n, generator=g) < 0.2
    pred = torch.stack([torch.where(wrong, 1 - y, y), y])  # layer 0: 80% right, layer 1: perfect
    lo, hi = bootstrap_ci(pred.float(), y.float(), n_boot=2000)
    p = float((pred[0] == y).float().mean())
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert abs(float(lo[0]) - (p - half)) < 0.004 and abs(float(hi[0]) - (p + half)) < 0.004
    assert float(lo[1]) == 1.0 == float(hi[1])


def test_grouped_bootstrap_is_wider_for_correlated_rows():
    g = torch.Generator().manual_seed(2)
    groups = torch.arange(100).repeat_interleave(20)  # 100 sequences of 20 tokens
    right = (torch.rand(100, generator=g) < 0.7)[groups]  # all tokens of a sequence right or wrong
    y = torch.zeros(2000)
    pred = torch.where(right, 0.0, 1.0)[None]
    lo_i, hi_i = bootstrap_ci(pred, y, n_boot=1000)
    lo_g, hi_g = bootstrap_ci(pred, y, n_boot=1000, groups=groups)
    assert float(hi_g - lo_g) > 3 * float(hi_i - lo_i)


def test_bootstrap_r2_contains_the_estimate():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(500, generator=g)
    pred = (y + 0.5 * torch.randn(500, generator=g))[None]
    lo, hi = bootstrap_ci(pred, y, metric="r2", n_boot=500)
    r2 = 1 - ((pred[0] - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert float(lo[0]) < float(r2) < float(hi[0])
