"""Patching on a GPU equals TransformerLens on the same GPU (marked ``gpu``: out of the default run; benchmarks/gpu_check.sh runs them)."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp

import circuits
import probekit as pk



@pytest.mark.gpu
@pytest.mark.parametrize("target", ["resid", "heads-by-pos", "heads", "pattern-by-pos"])
def test_gpu_patching_equals_transformer_lens(target):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with benchmarks/gpu_check.sh)"
    task = pk.tasks.get("induction")
    model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=task.d_vocab), device="cuda")
    p = task.patching_pairs(4, seed=0)
    clean, corrupt = p.clean[:, :8].cuda(), p.corrupt[:, :8].cuda()
    metric = pk.metrics.make("logit-diff", answers=p.answers.cuda(), wrong=p.wrong.cuda())
    ours = circuits.patch(model, clean, corrupt, metric, target=target, progress=False)
    with torch.no_grad():
        _, cache = model.run_with_cache(clean)
    ref = getattr(tlp, circuits.targets.get(target).oracle)(model, corrupt, cache, metric)
    assert (ours.values - ref.cpu()).abs().max() <= 1e-4
