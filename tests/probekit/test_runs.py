"""Run directories: save → load round trip bit for bit; corrupt or foreign files refused."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import probekit as pk
from probekit import runs
from probekit.errors import ProbekitError
from probekit.training import CHECKPOINT, TrainConfig, read_checkpoint


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny model with MLPs trained a few steps on parens into a run directory."""
    task = pk.tasks.get("parens")
    cfg = pk.ModelConfig(n_layers=2, d_model=16, n_heads=2, d_mlp=24, n_ctx=task.n_ctx, d_vocab=task.d_vocab, seed=4)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    out = tmp_path_factory.mktemp("runs") / "parens"
    tc = TrainConfig(steps=3, batch_size=4, warmup_steps=1, eval_batches=1, checkpoint_every=2)
    pk.train(model, task, tc, out=out, progress=False)
    return model, cfg, task, tc, out


def test_run_directory_layout(trained_run):
    model, cfg, task, tc, out = trained_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", CHECKPOINT):
        assert (out / name).is_file(), name
    info = runs.read_run(out)
    assert info.model_config == cfg
    assert info.task == task.to_dict() and pk.tasks.from_dict(info.task).to_dict() == task.to_dict()
    assert TrainConfig.from_dict(info.train_config) == tc
    assert info.fingerprint == pk.fingerprint(model)
    assert set(info.versions) >= {"torch", "transformer_lens", "probekit"}
    assert info.versions["torch"] == torch.__version__
    assert [r["step"] for r in runs.read_metrics(out)] == [1, 2, 3]
    _, meta = read_checkpoint(out / CHECKPOINT)
    assert meta["step"] == 3


def test_load_round_trip_bit_for_bit(trained_run):
    model, cfg, task, _, out = trained_run
    loaded = pk.load(out)
    assert not loaded.training
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tokens = task.batch(3, seed=9, split="test").tokens
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))
    # the tokenizer travels with the run: TransformerLens' own tools work
    assert loaded.to_str_tokens(tokens[0])[:4] == [task.vocab()[int(t)] for t in tokens[0, :4]]
    src = loaded.probekit_source
    assert src["kind"] == "run" and src["path"] == str(out.resolve()) and src["model_config"] == cfg.to_dict()


def test_model_config_of_inverts_build():
    for cfg in (pk.ModelConfig(n_layers=1, d_model=24, n_heads=3, d_vocab=11, seed=7),
                pk.ModelConfig(n_layers=3, d_model=16, n_heads=2, d_head=4, attn_only=True, norm="RMS",
                               positional="rotary", n_ctx=12, d_vocab=9, act_fn="relu")):
        assert runs.model_config_of(pk.build_model(cfg)) == cfg


def test_save_run_of_untrained_model(tmp_path, tiny_attn_only):
    task = pk.tasks.get("induction")
    cfg = runs.model_config_of(tiny_attn_only)
    pk.save_run(tiny_attn_only, tmp_path / "r", model_config=cfg, task=task)
    assert runs.read_run(tmp_path / "r").train_config is None
    loaded = pk.load(tmp_path / "r")
    assert pk.fingerprint(loaded) == pk.fingerprint(tiny_attn_only)


def _copy_run(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_weights_refused(trained_run, tmp_path):
    run = _copy_run(trained_run[4], tmp_path / "cut")
    data = (run / "model.safetensors").read_bytes()
    (run / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProbekitError, match="corrupt weights file") as e:
        pk.load(run)
    assert "\n" not in str(e.value)


def test_tampered_weights_refused(trained_run, tmp_path):
    run = _copy_run(trained_run[4], tmp_path / "flip")
    tensors = load_file(run / "model.safetensors")
    tensors["blocks.1.mlp.in.weight"][0, 0] += 1e-3  # a readable file with one wrong value
    save_file(tensors, run / "model.safetensors", metadata={"format": "pt", "probekit": "weights"})
    with pytest.raises(ProbekitError, match="fingerprint"):
        pk.load(run)


def test_foreign_weights_refused(trained_run, tmp_path):
    run = _copy_run(trained_run[4], tmp_path / "foreign")
    save_file({"x": torch.zeros(2)}, run / "model.safetensors")  # a valid safetensors file, not ours
    with pytest.raises(ProbekitError, match="not written by probekit"):
        pk.load(run)
    save_file({"x": torch.zeros(2)}, run / "model.safetensors", metadata={"probekit": "weights"})
    with pytest.raises(ProbekitError, match="does not fit"):
        pk.load(run)


def test_pickle_is_never_read(trained_run, tmp_path):
    run = _copy_run(trained_run[4], tmp_path / "pickle")
    torch.save(trained_run[0].state_dict(), run / "model.safetensors")  # a torch pickle under our name
    with pytest.raises(ProbekitError, match="corrupt weights file"):
        pk.load(run)


def test_corrupt_checkpoint_refused_on_resume(trained_run, tmp_path):
    model, cfg, task, tc, src = trained_run
    run = _copy_run(src, tmp_path / "ckpt")
    data = (run / CHECKPOINT).read_bytes()
    (run / CHECKPOINT).write_bytes(data[:100])
    with pytest.raises(ProbekitError, match="cannot read checkpoint"):
        pk.train(pk.build_model(cfg), task, tc, out=run, resume=True, progress=False)


def test_config_of_other_format_is_not_a_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    assert not runs.is_run_dir(tmp_path)
    with pytest.raises(ProbekitError, match="not a probekit run"):
        runs.read_run(tmp_path)

