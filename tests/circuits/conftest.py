"""Shared inputs for the circuits tests: short clean/corrupt pairs and a briefly trained model."""

from __future__ import annotations

import pytest
import torch

import probekit as pk


def pairs_for(model, batch: int = 2, pos: int = 4, seed: int = 0):
    """Random clean/corrupt tokens (differing in the first half) and answer/wrong ids inside the model's vocabulary."""
    g = torch.Generator().manual_seed(seed)
    V = model.cfg.d_vocab
    clean = torch.randint(0, V, (batch, pos), generator=g)
    corrupt = clean.clone()
    corrupt[:, : pos // 2] = torch.randint(0, V, (batch, pos // 2), generator=g)
    answers = torch.randint(0, V, (batch,), generator=g)
    wrong = (answers + 1) % V
    return clean, corrupt, answers, wrong


@pytest.fixture(scope="session")
def trained_attn_only():
    """A 2-layer attention-only model trained briefly on induction (non-random weights, seconds)."""
    task = pk.tasks.get("induction", seq_len=24, min_rep=4, max_rep=10)
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, attn_only=True, seed=3)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    pk.train(model, task, pk.TrainConfig(steps=30, batch_size=16, lr=3e-3, eval_every=None, checkpoint_every=None),
             progress=False)
    model.eval()
    return model
