"""Path patching: direct mode equals TransformerLens on a Hugging Face GPT-2; both modes equal a per-path reference loop."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp
from transformers import GPT2Config, GPT2LMHeadModel

import circuits
import probekit as pk
from probekit.errors import ProbekitError
from tests.circuits.conftest import pairs_for


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    """A tiny random GPT-2 saved with a tokenizer and loaded offline through probekit.load (a TransformerBridge)."""
    task = pk.tasks.get("induction")
    tok = task.tokenizer()
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=task.d_vocab, n_positions=32, n_embd=32, n_layer=3, n_head=4,
                     bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return pk.load(path)


def _metric(answers, wrong):
    return pk.metrics.make("logit-diff", answers=answers, wrong=wrong)


@pytest.mark.parametrize("component", ["q", "k", "v"])
def test_direct_equals_transformer_lens_on_hf_gpt2(hf_gpt2, component):
    clean, corrupt, answers, wrong = pairs_for(hf_gpt2, batch=2, pos=5)
    metric = _metric(answers, wrong)
    with torch.no_grad():
        _, cc = hf_gpt2.run_with_cache(clean)
        _, xc = hf_gpt2.run_with_cache(corrupt)
    ref = tlp.get_act_patch_direct_path(hf_gpt2, corrupt, cc, xc, metric, src_layer=0, src_head=2,
                                        component=component, verbose=False)
    ours = circuits.path_patch(hf_gpt2, clean, corrupt, metric, sender="L0H2", component=component, mode="direct")
    assert ours.values.shape == ref.shape == (3, 4)
    assert (ours.values - ref.cpu()).abs().max() <= 1e-4
    assert ours.values[1:].std() > 0


def reference_loop(model, clean, corrupt, metric, sl, sh, component, mode):
    """One (or two, frozen) full hooked forwards per path: the plain definition of each mode."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    with torch.no_grad():
        _, cc = model.run_with_cache(clean)
        _, xc = model.run_with_cache(corrupt)
    out = torch.zeros(n_layers, n_heads)
    z_s = f"blocks.{sl}.attn.hook_z"
    for dl in range(sl + 1, n_layers):
        name = f"blocks.{dl}.attn.hook_{component}"
        if mode == "direct":
            delta = (cc[z_s][:, :, sh] - xc[z_s][:, :, sh]) @ model.blocks[sl].attn.W_O[sh]
            resid = xc[f"blocks.{dl}.hook_resid_pre"] + delta
            W = getattr(model.blocks[dl].attn, f"W_{component.upper()}")
            b = getattr(model.blocks[dl].attn, f"b_{component.upper()}")
            new = torch.einsum("bpd,hde->bphe", model.blocks[dl].ln1(resid), W) + b
        else:
            def freeze(act, hook, L):
                act = xc[f"blocks.{L}.attn.hook_z"].clone()
                if L == sl:
                    act[:, :, sh] = cc[z_s][:, :, sh]
                return act
            hooks = [(f"blocks.{L}.attn.hook_z", lambda a, hook, L=L: freeze(a, hook, L)) for L in range(n_layers)]
            grab = {}
            with torch.no_grad():
                model.run_with_hooks(corrupt, fwd_hooks=hooks + [(name, lambda a, hook: grab.__setitem__("x", a.clone()))])
            new = grab["x"]
        for dh in range(n_heads):
            def put(act, hook, dh=dh):
                act = act.clone()
                act[:, :, dh] = new[:, :, dh]
                return act
            with torch.no_grad():
                out[dl, dh] = metric(model.run_with_hooks(corrupt, fwd_hooks=[(name, put)]))
    return out


@pytest.mark.parametrize("mode", ["direct", "frozen"])
@pytest.mark.parametrize("component", ["q", "v"])
def test_modes_equal_reference_loop_on_native(tiny_model, mode, component):
    clean, corrupt, answers, wrong = pairs_for(tiny_model, pos=5)
    metric = _metric(answers, wrong)
    ours = circuits.path_patch(tiny_model, clean, corrupt, metric, sender="L0H1", component=component, mode=mode)
    ref = reference_loop(tiny_model, clean, corrupt, metric, 0, 1, component, mode)
    assert (ours.values - ref).abs().max() <= 1e-4
    assert ours.values[1].std() > 0


def test_frozen_equals_direct_without_mlps(tiny_attn_only):
    """With no MLPs to carry the sender's write, freezing every other head is exactly the direct path."""
    clean, corrupt, answers, wrong = pairs_for(tiny_attn_only, pos=5)
    metric = _metric(answers, wrong)
    d = circuits.path_patch(tiny_attn_only, clean, corrupt, metric, sender="L0H3", mode="direct", component="k")
    f = circuits.path_patch(tiny_attn_only, clean, corrupt, metric, sender="L0H3", mode="frozen", component="k")
    assert torch.allclose(d.values, f.values, atol=1e-5)


def test_all_senders_shape(tiny_attn_only):
    clean, corrupt, answers, wrong = pairs_for(tiny_attn_only, pos=4)
    metric = _metric(answers, wrong)
    res = circuits.path_patch(tiny_attn_only, clean, corrupt, metric, sender=None)
    one = circuits.path_patch(tiny_attn_only, clean, corrupt, metric, sender="L0H2")
    assert res.values.shape == (2, 4, 2, 4)
    assert torch.allclose(res.values[0, 2], one.values, atol=1e-6)
    assert (res.values[1] == 0).all()  # no later layer to receive from the last one


def test_bad_input(tiny_model):
    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    metric = _metric(answers, wrong)
    with pytest.raises(ProbekitError, match="mode"):
        circuits.path_patch(tiny_model, clean, corrupt, metric, sender="L0H1", mode="sideways")
    with pytest.raises(ProbekitError, match="head"):
        circuits.path_patch(tiny_model, clean, corrupt, metric, sender="MLP0")
    with pytest.raises(ProbekitError, match="out of range"):
        circuits.path_patch(tiny_model, clean, corrupt, metric, sender="L5H1")
