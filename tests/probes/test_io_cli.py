"""Save/load and the CLI round trip: probekit probe writes a probe that reloads and scores the same;
bad stores and labels exit 2 with one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import probekit as pk
import probes
from probekit.cli import main
from probekit.runs import save_run
from probes.control import control_labels
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


def _data_store(root, model, labels, name):
    """An on-disk store of user data: one row per text (its last token, ``)`` in every text)."""
    texts = ["( )", "( [ ] )", "[ ] ( )", "( ( ) )", "[ ( ) ] ( )", "( ) ( )"]
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"text": texts[i % len(texts)], "label": v}) + "\n"
                            for i, v in enumerate(labels)))
    data = pk.load_data(path, model.tokenizer)
    return pk.cache_activations(model, data, n=None, positions="last", out=root / name)


def _one_line_error(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_control_with_one_class_is_skipped_like_the_sweep(run_and_acts, capsys, caplog):
    """Every text ends with ``)``: one control key, so the control labels are one class.

    ``probe --control`` and ``sweep`` both skip the control with the same warning
    (the real label has two classes and is probed).
    """
    root, _, model, _ = run_and_acts
    store = _data_store(root, model, ["a", "b"] * 6, "last_paren")
    assert store.token.unique().tolist() == [pk.tasks.get("parens").vocab().index(")")]
    values, _ = store.label("label")
    assert control_labels(store.token, values).unique().numel() == 1  # the degenerate control
    out = root / "probe_last_paren"
    assert main(["probe", "--acts", str(store.path), "--layer", "L0", "--label", "label", "--control",
                 "--C", "1.0", "--out", str(out)]) == 0
    metrics = json.loads((out / "probe.json").read_text())["metrics"]
    assert "accuracy" in metrics and not {"control_accuracy", "selectivity"} & set(metrics)
    # the Python API and the sweep agree, with the same warning
    _, m = probes.train_probe(store, "L0", "label", C=1.0)
    res = probes.sweep(store, "label", config=probes.ProbeConfig(C=1.0), mdl=False, erasure=False,
                       baselines=False, causal=False, n_boot=10)
    assert res.control_score is None and res.selectivity is None
    skipped = [(r.name, r.getMessage()) for r in caplog.records if "control task skipped" in r.getMessage()]
    assert [name for name, _ in skipped] == ["probes.single", "probes.single", "probes.sweep"]
    assert all("1 distinct control-key values" in msg for _, msg in skipped)
    assert "control_accuracy" not in m and m["accuracy"] == pytest.approx(res.score[1], abs=0.005)


@pytest.mark.parametrize("command", ["probe", "sweep"])
def test_cli_label_with_one_class_exits_2(run_and_acts, capsys, command):
    root, _, model, _ = run_and_acts
    store = _data_store(root, model, ["a"] * 6, f"one_class_{command}")
    assert store.labels["label"].unique().numel() == 1
    layer = ["--layer", "L0"] if command == "probe" else ["--no-progress"]
    _one_line_error(capsys, [command, "--acts", str(store.path), "--label", "label", *layer, "--out",
                             str(root / "x")], "label 'label' has one class")


@pytest.fixture(scope="module")
def nan_store(tmp_path_factory):
    """A store of a model whose embedding of ``[`` is inf (as after a diverged run)."""
    task = pk.tasks.get("parens")
    cfg = pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=49, d_vocab=task.d_vocab, seed=6)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    emb = dict(model.named_parameters())["tok_embed._original_component.weight"]
    with torch.no_grad():
        emb[task.vocab().index("[")] = float("inf")
    store = pk.cache_activations(model, task, n=6, out=tmp_path_factory.mktemp("nan") / "acts")
    # the embedding is bad exactly at the `[` tokens: the first such row the probe sees is the oracle
    _, defined = store.label("depth")
    is_bracket = store.token[defined] == task.vocab().index("[")
    assert is_bracket.any() and not is_bracket.all()
    return store, int(is_bracket.sum()), int(is_bracket.nonzero()[0])


@pytest.mark.parametrize("command", ["probe", "sweep"])
def test_cli_nan_activations_exit_2(nan_store, tmp_path, capsys, command):
    store, n_bad, first = nan_store
    if command == "probe":  # the embedding: bad exactly at the `[` rows
        layer, message = ["--layer", "embed"], f"NaN/inf values in {n_bad} rows (first: row {first})"
    else:  # every layer stacked; in L0 attention has spread the inf further
        _, defined = store.label("depth")
        X = torch.stack([store.layer(spec)[defined] for spec in store.layers()])
        layer, message = ["--no-progress"], f"NaN/inf values in {int((~torch.isfinite(X)).any(-1).any(0).sum())} rows"
    _one_line_error(capsys, [command, "--acts", str(store.path), "--label", "depth", *layer, "--out",
                             str(tmp_path / "x")], message)


@pytest.mark.parametrize("field, message", [
    ("rows", "is inconsistent: its shards hold"),
    ("shard_rows", "does not match the manifest"),
])
@pytest.mark.parametrize("command", ["probe", "sweep"])
def test_cli_mismatched_row_counts_exit_2(run_and_acts, tmp_path, capsys, command, field, message):
    """A manifest whose row counts disagree with its shards (a hand-edited or foreign store)."""
    root, *_ = run_and_acts
    acts = tmp_path / "acts"
    shutil.copytree(root / "acts", acts)
    manifest = json.loads((acts / "manifest.json").read_text())
    if field == "rows":
        manifest["rows"] += 7
    else:
        manifest["shards"][0]["rows"] -= 1
    (acts / "manifest.json").write_text(json.dumps(manifest))
    layer = ["--layer", "L0"] if command == "probe" else ["--no-progress"]
    _one_line_error(capsys, [command, "--acts", str(acts), "--label", "depth", *layer, "--out",
                             str(tmp_path / "x")], message)
