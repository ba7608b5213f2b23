"""Logit lens and direct logit attribution against closed forms and TransformerLens' cache tools."""

from __future__ import annotations

import pytest
import torch

import circuits
import probekit as pk
from tests.circuits.conftest import pairs_for


@pytest.mark.parametrize("fixture", ["tiny_model", "tiny_attn_only"])
def test_dla_parts_sum_to_logit_diff(request, fixture):
    model = request.getfixturevalue(fixture)
    tokens, _, answers, wrong = pairs_for(model, batch=3, pos=6)
    res = circuits.dla(model, tokens, answers, wrong)
    with torch.no_grad():
        ld = pk.metrics.logit_diff(model(tokens), answers, wrong, reduce="none")
    assert torch.allclose(res.extra["total_per_example"], ld, atol=1e-4)
    assert res.values.shape == (2, 4) and res.per_example.shape == (2, 4, 3)


def test_dla_heads_match_closed_form(tiny_model):
    """Per-head DLA is (z @ W_O), centred, divided by the final LayerNorm scale, projected on gamma * (W_U[a] - W_U[w])."""
    tokens, _, answers, wrong = pairs_for(tiny_model, batch=2, pos=5)
    res = circuits.dla(tiny_model, tokens, answers, wrong)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(tokens)
        W_O = torch.stack([b.attn.W_O for b in tiny_model.blocks])  # [layer, head, d_head, d_model]
        z = torch.stack([cache[f"blocks.{L}.attn.hook_z"][:, -1] for L in range(2)])  # [layer, batch, head, d_head]
        writes = torch.einsum("lbhe,lhed->lhbd", z, W_O).reshape(8, 2, -1)
        x = writes - writes.mean(-1, keepdim=True)
        x = x / cache["ln_final.hook_scale"][:, -1]
        w = tiny_model.ln_final._original_component.weight
        direction = (tiny_model.W_U[:, answers] - tiny_model.W_U[:, wrong]).T * w
        ref = (x * direction).sum(-1).mean(-1).view(2, 4)
    assert torch.allclose(res.values, ref, atol=1e-5)


def test_logit_lens_last_layer_is_the_model(tiny_model):
    tokens, _, answers, wrong = pairs_for(tiny_model, batch=3, pos=6)
    res = circuits.logit_lens(tiny_model, tokens, answers, wrong)
    with torch.no_grad():
        ld = pk.metrics.logit_diff(tiny_model(tokens), answers, wrong)
        _, cache = tiny_model.run_with_cache(tokens)
        emb = tiny_model.unembed(tiny_model.ln_final(cache["blocks.0.hook_resid_pre"]))
    assert res.labels["layer"] == ["embed", "L0", "L1"]
    assert float(res.values[-1]) == pytest.approx(float(ld), abs=1e-5)
    assert float(res.values[0]) == pytest.approx(float(pk.metrics.logit_diff(emb, answers, wrong)), abs=1e-5)
    assert res.figure().data[0].z.shape == (1, 3)
