"""Control tasks (Hewitt & Liang 2019) on a real model's embeddings."""

from __future__ import annotations

import pytest
import torch

import probekit as pk
import probes
from probes import control_keys, control_labels


def test_control_labels_are_a_function_of_the_key_drawn_from_the_label_distribution():
    g = torch.Generator().manual_seed(0)
    keys = torch.randint(0, 2000, (20000,), generator=g)
    y = torch.multinomial(torch.tensor([0.7, 0.2, 0.1]), 20000, replacement=True, generator=g)
    c = control_labels(keys, y, seed=1)
    for k in keys.unique()[:50]:
        assert len(c[keys == k].unique()) == 1
    per_key = torch.zeros(2000, dtype=torch.long)
    per_key[keys] = c
    freq = torch.bincount(per_key[keys.unique()], minlength=3).float() / len(keys.unique())
    torch.testing.assert_close(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.04, rtol=0)
    assert torch.equal(c, control_labels(keys, y, seed=1))
    assert not torch.equal(c, control_labels(keys, y, seed=2))


def test_token_position_key_distinguishes_positions():
    tok = torch.tensor([5, 5, 6, 6])
    pos = torch.tensor([0, 1, 0, 1])
    assert len(control_keys(tok, pos, "token").unique()) == 2
    assert len(control_keys(tok, pos, "token_position").unique()) == 4
    with pytest.raises(pk.ProbekitError, match="control key"):
        control_keys(tok, pos, "word")


def test_memorizable_control_is_high_on_embeddings_and_selectivity_low():
    # d_model > vocabulary: token embeddings are linearly independent, so a
    # probe can memorise one random label per token type
    task = pk.tasks.get("induction", n_tokens=29)
    model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=96, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, seed=3),
                           tokenizer=task.tokenizer())
    store = pk.cache_activations(model, task, n=24)
    res = probes.sweep(store, "in_repeat", layers=["embed"], mdl=False, erasure=False, baselines=False,
                       config=probes.ProbeConfig(C=1.0), n_boot=100)
    assert res.control_score[0] >= 0.9
    assert res.selectivity[0] <= 0.1
