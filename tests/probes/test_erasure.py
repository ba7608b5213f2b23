"""LEACE leaves no linear signal; interventions inside the model against run_with_hooks."""

from __future__ import annotations

import torch

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
