"""Shared fixtures: tiny real models on CPU, seeded."""

from __future__ import annotations

import pytest
import torch

import probekit as pk


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model():
    """A random 2-layer model with MLPs (LayerNorm, d_model 32, 4 heads) over the parens vocabulary."""
    task = pk.tasks.get("parens")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, seed=1)
    return pk.build_model(cfg, tokenizer=task.tokenizer())


@pytest.fixture(scope="session")
def tiny_attn_only():
    """A random 2-layer attention-only model over the induction vocabulary."""
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, attn_only=True, seed=2)
    return pk.build_model(cfg, tokenizer=task.tokenizer())
