"""``probekit train`` end to end (in-process) and its bad-input exits."""

from __future__ import annotations

import pytest
import torch

import probekit as pk
from probekit import runs
from probekit.cli import main
from probekit.commands.train import build_configs
from probekit.training import TrainConfig

TINY = ["--layers", "1", "--d-model", "16", "--heads", "2", "--steps", "3", "--batch-size", "4", "--no-progress"]


def test_train_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "parens", "--out", str(out), *TINY, "--d-mlp", "24", "--lr", "0.003",
                 "--seed", "2", "--checkpoint-every", "2"]) == 0
    assert "3 steps" in capsys.readouterr().out
    info = runs.read_run(out)
    task = pk.tasks.get("parens")
    assert (info.model_config.n_layers, info.model_config.d_model, info.model_config.n_heads,
            info.model_config.d_mlp, info.model_config.seed) == (1, 16, 2, 24, 2)
    assert info.model_config.d_vocab == task.d_vocab
    tc = TrainConfig.from_dict(info.train_config)
    assert (tc.steps, tc.batch_size, tc.lr, tc.seed, tc.checkpoint_every) == (3, 4, 0.003, 2, 2)
    # the CLI run equals the same training through the Python API
    model = pk.build_model(info.model_config, tokenizer=task.tokenizer())
    pk.train(model, task, tc, progress=False)
    loaded = pk.load(out)
    a, b = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # --resume on the finished run reproduces it without further training
    assert main(["train", "--task", "parens", "--out", str(out), *TINY, "--d-mlp", "24", "--lr", "0.003",
                 "--seed", "2", "--checkpoint-every", "2", "--resume"]) == 0
    assert pk.fingerprint(pk.load(out)) == pk.fingerprint(model)


@pytest.mark.parametrize("name", pk.tasks.names())
def test_defaults_come_from_the_task(name):
    try:
        task = pk.tasks.get(name)
    except pk.ProbekitError:
        pytest.skip(f"task {name} is not available here")
    model_cfg, train_cfg = build_configs(task)
    for key, value in task.default_model.items():
        assert getattr(model_cfg, key) == value or (key == "n_ctx" and model_cfg.n_ctx >= task.n_ctx)
    for key, value in task.default_training.items():
        assert getattr(train_cfg, key) == value
    assert model_cfg.d_vocab == task.d_vocab and model_cfg.n_ctx >= task.n_ctx


def test_induction_defaults_are_the_measured_recipe():
    model_cfg, train_cfg = build_configs(pk.tasks.get("induction"))
    assert (model_cfg.n_layers, model_cfg.d_model, model_cfg.n_heads, model_cfg.attn_only, model_cfg.n_ctx,
            model_cfg.norm) == (2, 64, 4, True, 64, "LN")
    assert model_cfg.d_vocab == 64 and model_cfg.head_dim == 16
    assert (train_cfg.lr, train_cfg.weight_decay, train_cfg.batch_size, train_cfg.steps) == (1e-3, 0.01, 64, 2000)


@pytest.mark.parametrize("argv, expected", [
    (["--task", "inducton"], "did you mean 'induction'"),
    (["--task", "parens", "--steps", "0"], "steps must be a positive integer"),
    (["--task", "parens", "--heads", "5"], "not divisible by n_heads"),
    (["--task", "parens", "--device", "cuda:0"] if not torch.cuda.is_available() else ["--task", "parens",
     "--device", "nonsense"], "device"),
    (["--task", "parens", "--steps", "many"], "--steps"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, expected):
    code = main(["train", "--out", str(tmp_path / "r"), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_missing_out_exits_2(capsys):
    assert main(["train", "--task", "parens"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and len(err.strip().splitlines()) == 1
