"""LEACE leaves no linear signal; interventions inside the model against run_with_hooks; amnesic
probing tells a concept the model uses from one it only encodes."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.linear_model import LogisticRegression

import probekit as pk
from probes import ProbeConfig, add_direction, amnesic_check, eraser_rank, fit_eraser, leace_check, leace_hook, project_out


def test_leace_leaves_a_fresh_probe_at_chance():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2, 3000, 16, generator=g)
    y = (X[1] @ torch.randn(16, 3, generator=g)).argmax(1)  # layer 1 encodes y linearly
    X[0] += 0.5 * torch.nn.functional.one_hot(y, 16).float()  # layer 0 weakly too
    tr, te = slice(0, 2000), slice(2000, None)
    res = leace_check(X[:, tr], y[tr], X[:, te], y[te], config=ProbeConfig(C=1.0))
    assert float(res.before[1]) > 0.9
    assert torch.all((res.after - res.chance).abs() <= 0.01), (res.after, res.chance)
    assert res.rank.tolist() == [2, 2]  # k classes: k - 1 directions


def test_identity_edit_changes_nothing_and_kl_matches_manual_hooked_run(tiny_model):
    task = pk.tasks.get("parens")
    tokens = task.batch(4, 0).tokens
    hook = "blocks.0.hook_resid_post"
    same = amnesic_check(tiny_model, tokens, hook, lambda x, hook=None: x, rank=1, n_random=1)
    assert abs(same.kl) < 1e-6 and abs(same.loss_delta) < 1e-6
    v = torch.randn(tiny_model.cfg.d_model)
    res = amnesic_check(tiny_model, tokens, hook, add_direction(v, 3.0), rank=1, kind="steer", alpha=3.0,
                        n_random=2)
    with torch.no_grad():
        base = torch.log_softmax(tiny_model(tokens), -1)
        edited = torch.log_softmax(tiny_model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda x, hook: x + 3.0 * v)]), -1)
    kl = (base.exp() * (base - edited)).sum(-1).mean()
    assert abs(res.kl - float(kl)) < 1e-5
    assert len(res.kl_random) == 2 and all(k > 0 for k in res.kl_random)
    # hooks are removed afterwards
    with torch.no_grad():
        torch.testing.assert_close(torch.log_softmax(tiny_model(tokens), -1), base)


def test_leace_inside_the_model_and_full_rank_projection(tiny_model):
    task = pk.tasks.get("parens")
    tokens = task.batch(8, 1).tokens
    hook = "blocks.0.hook_resid_post"
    _, cache = tiny_model.run_with_cache(tokens, names_filter=[hook])
    x = cache[hook].reshape(-1, tiny_model.cfg.d_model)
    depth = task.batch(8, 1).labels["depth"].reshape(-1)
    eraser = fit_eraser(x, depth)
    res = amnesic_check(tiny_model, tokens, hook, leace_hook(eraser), rank=eraser_rank(eraser), n_random=2)
    assert res.kl > 0 and len(res.kl_random) == 2
    # removing every direction about the mean = replacing the activation by the mean
    d = tiny_model.cfg.d_model
    center = x.mean(0)
    fn = project_out(torch.eye(d), center)
    torch.testing.assert_close(fn(x), center.expand_as(x), atol=1e-4, rtol=0)


def _reads_one_direction(V=64, d=32, T=16, B=16, seed=0):
    """A 1-layer model built so that its next-token prediction reads one direction ``u`` only.

    Token t embeds as ``2 a_t u + 2 c_t w + noise`` (``u``, ``w``, the noise's span orthonormal),
    with ``a_t = ±1`` (first/second half of the vocabulary) and ``c_t = ±1`` (parity). Attention
    writes nothing (``W_O = 0``), there is no norm, and the unembedding is ``3 (x·u) b`` with
    ``b = +1`` on odd tokens: the model predicts "odd next" after a first-half token, which the
    data does (the next token is a random odd one after a first-half token, a random even one
    otherwise). So ``a`` is encoded and used, ``c`` equally encoded and never used.
    """
    cfg = pk.ModelConfig(n_layers=1, d_model=d, n_heads=2, n_ctx=T, d_vocab=V, attn_only=True, norm="none", seed=seed)
    model = pk.build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    u, w, rest = Q[:, 0], Q[:, 1], Q[:, 2:]
    tok = torch.arange(V)
    a = torch.where(tok < V // 2, 1.0, -1.0)
    c = torch.where(tok % 2 == 1, 1.0, -1.0)
    params = dict(model.named_parameters())
    with torch.no_grad():
        params["tok_embed._original_component.weight"].copy_(
            2 * a[:, None] * u + 2 * c[:, None] * w + torch.randn(V, d - 2, generator=g) @ rest.T)
        params["pos._original_component.weight"].zero_()
        for name, p in params.items():
            if ".attn._original_component.o." in name:
                p.zero_()
        params["head._original_component.weight"].copy_(3 * c[:, None] * u)
    tokens = torch.empty(B, T, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, V, (B,), generator=g)
    for t in range(1, T):
        tokens[:, t] = 2 * torch.randint(0, V // 2, (B,), generator=g) + (tokens[:, t - 1] < V // 2).long()
    return model, tokens, a.long(), c.long()


def test_erasing_a_used_concept_hurts_more_than_random_or_unused_directions():
    """Amnesic probing (Elazar et al. 2021) on a model whose use of a concept is known by construction."""
    model, tokens, a, c = _reads_one_direction()
    V = model.cfg.d_vocab
    hook = "blocks.0.hook_resid_pre"
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens, names_filter=[hook])
    X = cache[hook].reshape(-1, model.cfg.d_model)
    # the construction holds: the model is right up to the odd/even choice (loss log(V/2)), and
    # both concepts are perfectly linearly decodable (scikit-learn's probe as the oracle)
    nll = -torch.log_softmax(logits, -1)[:, :-1].gather(-1, tokens[:, 1:, None]).mean()
    assert float(nll) == pytest.approx(math.log(V / 2), abs=1e-3)
    flat = tokens.reshape(-1)
    for concept in (a, c):
        assert LogisticRegression().fit(X.numpy(), concept[flat].numpy()).score(X.numpy(), concept[flat].numpy()) == 1.0
    res = {}
    for name, concept in (("used", a), ("unused", c)):
        eraser = fit_eraser(X, concept[flat])
        res[name] = amnesic_check(model, tokens, hook, leace_hook(eraser), rank=eraser_rank(eraser),
                                  center=X.mean(0), n_random=5, name=name)
    used, unused = res["used"], res["unused"]
    assert used.rank == unused.rank == 1
    # erasing the used concept costs the model (close to) the bit it used: about log 2 nats
    assert used.loss_delta > 0.9 * math.log(2)
    assert used.kl > 100 * max(used.kl_random) and used.loss_delta > 100 * max(used.loss_delta_random)
    # the unused concept is as decodable, yet erasing it does nothing beyond what random directions do
    assert unused.kl <= max(unused.kl_random) + 1e-6 and abs(unused.loss_delta) < 1e-3
    assert used.kl_ratio > 100 * unused.kl_ratio
