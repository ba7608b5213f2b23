"""Save/load and the CLI round trip: probekit probe writes a probe that reloads and scores the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

import probekit as pk
import probes
from probekit.cli import main
from probekit.runs import save_run
from probes.sweep import _split


@pytest.fixture(scope="module")
def run_and_acts(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe_cli")
    task = pk.tasks.get("parens")
    cfg = pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=49, d_vocab=task.d_vocab, seed=5)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    run = save_run(model, root / "run", model_config=cfg, task=task)
    store = pk.cache_activations(model, task, n=10, out=root / "acts")
    return root, run, model, store


def test_save_load_round_trip_and_refusals(tmp_path, tiny_model):
    X = np.random.default_rng(0).normal(size=(200, 6))
    y = np.where(X[:, 0] > 0, "yes", "no")
    probe = probes.LinearProbe(C=1.0).fit(X, y)
    probes.save(probe, tmp_path / "p", layer="L0", label="x", fingerprint=pk.fingerprint(tiny_model))
    back = probes.load(tmp_path / "p", model=tiny_model)
    np.testing.assert_array_equal(back.predict(X), probe.predict(X))
    np.testing.assert_allclose(back.predict_proba(X), probe.predict_proba(X))
    assert back.meta_["label"] == "x"
    other = pk.build_model(pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, d_vocab=8, seed=9))
    with pytest.raises(pk.ProbekitError, match="fingerprint"):
        probes.load(tmp_path / "p", model=other)
    (tmp_path / "p" / "probe.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(pk.ProbekitError, match="safetensors"):
        probes.load(tmp_path / "p")
    (tmp_path / "p" / "probe.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(pk.ProbekitError, match="not a probekit probe"):
        probes.load(tmp_path / "p")
    with pytest.raises(pk.ProbekitError, match="no probe"):
        probes.load(tmp_path / "missing")


def test_cli_probe_round_trip(run_and_acts, capsys):
    root, run, model, _ = run_and_acts
    out = root / "probe_L0"
    assert main(["probe", "--acts", str(root / "acts"), "--layer", "L0", "--label", "depth", "--control",
                 "--C", "1.0", "--out", str(out)]) == 0
    meta = json.loads((out / "probe.json").read_text())
    assert meta["hook"] == "blocks.0.hook_resid_post" and meta["label"] == "depth"
    assert {"accuracy", "control_accuracy", "selectivity", "majority"} <= set(meta["metrics"])
    assert meta["fingerprint"] == pk.fingerprint(model)
    probe = probes.load(out, model=model)
    store = pk.ActivationStore.open(root / "acts")
    values, defined = store.label("depth")
    rows = defined.nonzero().flatten()
    X, y = store.layer("L0")[rows].double().numpy(), values[rows].numpy()
    test = _split(store.example_id[rows], 0.2, 0).numpy()
    assert probe.score(X[test], y[test]) == pytest.approx(meta["metrics"]["accuracy"])


def test_cli_sweep_writes_json_and_html(run_and_acts):
    root, run, model, _ = run_and_acts
    out = root / "sweep"
    assert main(["sweep", "--model", str(run), "--task", "parens", "--n", "8", "--label", "top", "--C", "1.0",
                 "--n-boot", "50", "--no-mdl", "--no-progress", "--out", str(out)]) == 0
    res = probes.SweepResult.from_dict(json.loads((out / "sweep.json").read_text()))
    assert res.layers == ["embed", "L0"] and res.untrained_score is not None and res.control_score is not None
    html = (out / "sweep.html").read_text()
    assert "<html" in html.lower() and "cdn.plot.ly" not in html


@pytest.mark.parametrize("args, message", [
    (["--layer", "L0", "--label", "dpth"], "unknown label 'dpth'"),
    (["--layer", "L3", "--label", "depth"], "out of range"),
    (["--layer", "L0", "--label", "depth", "--kind", "svm"], "--kind"),
])
def test_cli_bad_input_exits_2_with_one_line(run_and_acts, capsys, args, message):
    root, *_ = run_and_acts
    assert main(["probe", "--acts", str(root / "acts"), "--out", str(root / "bad"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_needs_exactly_one_source(run_and_acts, capsys):
    root, run, *_ = run_and_acts
    assert main(["sweep", "--label", "depth", "--out", str(root / "x")]) == 2
    assert main(["sweep", "--acts", str(root / "nope"), "--label", "depth", "--out", str(root / "x")]) == 2
    assert "not found" in capsys.readouterr().err
