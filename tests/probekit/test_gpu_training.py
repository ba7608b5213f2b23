"""Training on a GPU (marked ``gpu``: out of the default run; benchmarks/gpu_check.sh runs it)."""

from __future__ import annotations

import pytest
import torch

import probekit as pk


def _run(precision: str, device: str):
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, attn_only=True, d_vocab=task.d_vocab, seed=0)
    model = pk.build_model(cfg, tokenizer=task.tokenizer(), device=device)
    res = pk.train(model, task, pk.TrainConfig(steps=30, batch_size=16, lr=3e-3, eval_every=None, checkpoint_every=None,
                                               precision=precision), device=device, progress=False)
    return model, res


@pytest.mark.gpu
def test_bf16_autocast_trains_like_fp32_on_cuda():
    """bf16 autocast on CUDA: the weights stay float32, the loss falls, and it tracks the fp32 run on the same data."""
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with benchmarks/gpu_check.sh)"
    m16, r16 = _run("bf16", "cuda")
    m32, r32 = _run("fp32", "cuda")
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in m16.parameters())
    loss16 = [h["loss"] for h in r16.history if "loss" in h]
    loss32 = [h["loss"] for h in r32.history if "loss" in h]
    assert loss16[-1] < loss16[0] - 0.1
    assert abs(loss16[-1] - loss32[-1]) < 0.1 * loss32[-1]
    assert not m16.training  # left in eval mode


@pytest.mark.gpu
def test_cuda_run_loads_back_on_cpu_bit_for_bit(tmp_path):
    assert torch.cuda.is_available(), "the gpu tests need a CUDA device (run them with benchmarks/gpu_check.sh)"
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, attn_only=True, d_vocab=task.d_vocab, seed=0)
    model = pk.build_model(cfg, tokenizer=task.tokenizer(), device="cuda")
    pk.train(model, task, pk.TrainConfig(steps=5, batch_size=8, eval_every=None), out=tmp_path / "run",
             device="cuda", progress=False)
    back = pk.load(tmp_path / "run")
    for (n, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a.cpu(), b.cpu()), n
