"""``probekit patch`` end to end on a run directory, and patch_figure's axes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import probekit as pk
from probekit.cli import main
from probekit.viz import patch_figure


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    task = pk.tasks.get("induction")
    out = tmp_path_factory.mktemp("run")
    model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, attn_only=True, d_vocab=task.d_vocab),
                           tokenizer=task.tokenizer())
    pk.train(model, task, pk.TrainConfig(steps=2, batch_size=4, eval_every=None, checkpoint_every=None), out=out,
             progress=False)
    return out


def test_patch_cli_writes_json_and_html(run_dir, tmp_path):
    out = tmp_path / "p"
    rc = main(["patch", "--model", str(run_dir), "--task", "induction", "--target", "heads-by-pos", "--n", "3",
               "--direction", "noising", "--metric", "prob", "--out", str(out), "--no-progress"])
    assert rc == 0
    d = json.loads((out / "patch.json").read_text())
    assert d["axes"] == ["layer", "pos", "head"] and d["shape"] == [2, 20, 4] and d["direction"] == "noising"
    assert np.asarray(d["ci_low"]).shape == (2, 20, 4)
    assert (out / "patch.html").stat().st_size > 1000
    # the JSON values are what the Python API gives
    import circuits
    from probekit.commands.patch import run_patch

    res = run_patch(pk.load(run_dir), pk.tasks.get("induction"), target="heads-by-pos", direction="noising",
                    metric="prob", n=3)
    assert np.allclose(np.asarray(d["values"]), res.values.numpy(), atol=1e-6)
    assert isinstance(res, circuits.PatchResult)


@pytest.mark.parametrize("argv,msg", [
    (["--target", "mlp"], "attention-only"),
    (["--target", "hedas"], "did you mean"),
    (["--metric", "acc"], "unknown metric"),
    (["--direction", "up"], "direction"),
    (["--task", "nope"], "unknown task"),
])
def test_patch_cli_bad_input_exits_2(run_dir, tmp_path, capsys, argv, msg):
    base = {"--model": str(run_dir), "--task": "induction", "--out": str(tmp_path / "x")}
    for k, v in zip(argv[::2], argv[1::2]):
        base[k] = v
    args = ["patch"] + [x for kv in base.items() for x in kv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1


def test_patch_figure_keeps_repeated_tokens_distinct():
    vals = np.arange(6, dtype=float).reshape(2, 3)
    fig = patch_figure(vals, ["layer", "pos"], {"layer": ["L0", "L1"], "pos": ["0:the", "1:<b>", "2:the"]})
    heat = fig.data[0]
    assert list(heat.x) == [0, 1, 2]  # numeric axis: two "the" columns stay separate
    assert list(fig.layout.xaxis.ticktext) == ["0:the", "1:&lt;b&gt;", "2:the"]  # escaped
    assert np.array_equal(np.asarray(heat.z), vals)
    with pytest.raises(ValueError, match="axis names"):
        patch_figure(vals, ["layer"])


def test_patch_figure_folds_heads_into_rows():
    vals = torch.arange(2 * 3 * 4, dtype=torch.float).view(2, 3, 4).numpy()  # layer x pos x head
    fig = patch_figure(vals, ["layer", "pos", "head"], {})
    z = np.asarray(fig.data[0].z)
    assert z.shape == (8, 3)
    assert z[4 + 1, 2] == vals[1, 2, 1]
