"""Attribution patching equals its first-order definition and tracks exact patching."""

from __future__ import annotations

import pytest
import torch

import circuits
import probekit as pk
from tests.circuits.conftest import pairs_for


@pytest.mark.parametrize("target", ["resid", "heads-by-pos", "heads", "mlp", "pattern-by-pos"])
def test_equals_directional_derivative(tiny_model, target):
    """Each estimate is metric(base) + d/dα metric(base + α·(src − base) at that index) at α = 0 (finite difference)."""
    clean, corrupt, answers, wrong = pairs_for(tiny_model, pos=4)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong)
    attr = circuits.attribution_patch(tiny_model, clean, corrupt, metric, target=target)
    t = circuits.targets.get(target)
    with torch.no_grad():
        _, cc = tiny_model.run_with_cache(clean)
        _, xc = tiny_model.run_with_cache(corrupt)
        base = float(metric(tiny_model(corrupt)))
    eps = 1e-2
    flat = attr.values.flatten()
    idx_list = [tuple(int(i) for i in torch.unravel_index(torch.tensor(j), attr.values.shape)) for j in (0, flat.numel() - 1, flat.numel() // 2)]
    for idx in idx_list:
        L, rest = idx[0], idx[1:]
        name = t.hook_name(L)

        def hook(act, hook, a=None):
            act = act.clone()
            mixed = xc[name] + eps * (cc[name] - xc[name])
            circuits.targets.apply(t.setter, act, mixed, rest)
            return act

        with torch.no_grad():
            plus = float(metric(tiny_model.run_with_hooks(corrupt, fwd_hooks=[(name, hook)])))
        fd = (plus - base) / eps
        assert float(attr.values[idx]) - base == pytest.approx(fd, abs=2e-2 * max(1.0, abs(fd)))


def test_correlation_with_exact(tiny_attn_only):
    clean, corrupt, answers, wrong = pairs_for(tiny_attn_only, batch=3, pos=6)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong)
    exact = circuits.patch(tiny_attn_only, clean, corrupt, metric, target="heads-by-pos", progress=False)
    attr = circuits.attribution_patch(tiny_attn_only, clean, corrupt, metric, target="heads-by-pos", exact=exact)
    assert attr.values.shape == exact.values.shape
    assert attr.extra["correlation"] == pytest.approx(circuits.correlation(attr.values, exact.values))
    assert attr.extra["correlation"] > 0.5
    assert attr.corrupt == pytest.approx(exact.corrupt, abs=1e-5) and attr.clean == pytest.approx(exact.clean, abs=1e-5)


def test_correlation_closed_form():
    a = torch.tensor([1.0, 2.0, 3.0])
    assert circuits.correlation(a, 2 * a + 1) == pytest.approx(1.0)
    assert circuits.correlation(a, -a) == pytest.approx(-1.0)
