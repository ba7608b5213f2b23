"""Ablations equal a plain hooked forward per node (zero, mean, per-position mean, resample; groups)."""

from __future__ import annotations

import pytest
import torch

import circuits
import probekit as pk
from probekit.errors import ProbekitError
from tests.circuits.conftest import pairs_for


def _hooked(model, tokens, metric, edits):
    with torch.no_grad():
        return float(metric(model.run_with_hooks(tokens, fwd_hooks=edits)))


def _set(fn):
    def hook(act, hook):
        act = act.clone()
        fn(act)
        return act
    return hook


def test_zero_ablation_matches_hooks(tiny_model):
    clean, corrupt, answers, wrong = pairs_for(tiny_model, pos=5)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong)
    res = circuits.ablate(tiny_model, clean, metric, kind="zero")
    assert res.labels["node"] == circuits.all_nodes(tiny_model) == [
        "L0H0", "L0H1", "L0H2", "L0H3", "MLP0", "L1H0", "L1H1", "L1H2", "L1H3", "MLP1"]
    for i, node in enumerate(res.labels["node"]):
        if node.startswith("MLP"):
            edit = (f"blocks.{node[3:]}.hook_mlp_out", _set(lambda a: a.zero_()))
        else:
            L, h = int(node[1]), int(node[3])
            edit = (f"blocks.{L}.attn.hook_z", _set(lambda a, h=h: a[:, :, h].zero_()))
        assert res.values[i] == pytest.approx(_hooked(tiny_model, clean, metric, [edit]), abs=1e-5)
    with torch.no_grad():
        assert res.clean == pytest.approx(float(metric(tiny_model(clean))), abs=1e-5)


@pytest.mark.parametrize("per_position", [False, True])
def test_mean_ablation_group(tiny_model, per_position):
    clean, _, answers, wrong = pairs_for(tiny_model, batch=3, pos=5)
    ref_tokens = torch.randint(0, tiny_model.cfg.d_vocab, (6, 5), generator=torch.Generator().manual_seed(4))
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong)
    res = circuits.ablate(tiny_model, clean, metric, groups={"g": ["L0H1", "L1H2", "MLP0"]}, kind="mean",
                          reference=ref_tokens, per_position=per_position)
    with torch.no_grad():
        _, c = tiny_model.run_with_cache(ref_tokens)
    dims = (0,) if per_position else (0, 1)
    z0, z1, m0 = (c[n].mean(dims) for n in ("blocks.0.attn.hook_z", "blocks.1.attn.hook_z", "blocks.0.hook_mlp_out"))

    def zset(mean, h):
        def f(a):
            a[:, :, h] = mean[..., h, :]
        return f

    def mset(a):
        a[:] = m0

    edits = [("blocks.0.attn.hook_z", _set(zset(z0, 1))), ("blocks.1.attn.hook_z", _set(zset(z1, 2))),
             ("blocks.0.hook_mlp_out", _set(mset))]
    assert res.values.shape == (1,)
    assert float(res.values[0]) == pytest.approx(_hooked(tiny_model, clean, metric, edits), abs=1e-5)
    assert res.corrupt == pytest.approx(float(res.values[0]), abs=1e-6)  # the only group is "all at once"


def test_resample_ablation_from_corrupt(tiny_attn_only):
    clean, corrupt, answers, wrong = pairs_for(tiny_attn_only, pos=5)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong, reduce="none")
    res = circuits.ablate(tiny_attn_only, clean, metric, nodes=["L1H0", "ATTN0"], kind="resample", corrupt=corrupt,
                          per_example=True)
    exact = circuits.patch(tiny_attn_only, clean, corrupt, metric, target="heads", direction="noising",
                           per_example=True, progress=False)
    # resampling a head from the corrupt run is noising patching of that head
    assert torch.allclose(res.per_example[0], exact.per_example[1, 0], atol=1e-5)
    assert res.ci_low.shape == (2,)


def test_bad_input(tiny_model, tiny_attn_only):
    clean, _, answers, wrong = pairs_for(tiny_model)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong)
    with pytest.raises(ProbekitError, match="ablation kind"):
        circuits.ablate(tiny_model, clean, metric, kind="gaussian")
    with pytest.raises(ProbekitError, match="cannot read node"):
        circuits.ablate(tiny_model, clean, metric, nodes=["head3"])
    with pytest.raises(ProbekitError, match="attention-only"):
        circuits.ablate(tiny_attn_only, clean, metric, nodes=["MLP0"])
    with pytest.raises(ProbekitError, match="length"):
        circuits.ablate(tiny_model, clean, metric, kind="mean", per_position=True, reference=clean[:, :2])
