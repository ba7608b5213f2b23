"""Layer sweeps on a real (tiny) model: every check on, JSON round trip, figure, bad input."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest
import torch

import probekit as pk
import probes
from probekit.activations import ActivationStore


@pytest.fixture(scope="module")
def parens_store(tiny_model):
    return pk.cache_activations(tiny_model, pk.tasks.get("parens"), n=12)


def test_sweep_with_every_check(parens_store, tiny_model):
    cfg = probes.ProbeConfig(C=1.0)  # cross-validation is checked against scikit-learn elsewhere
    res = probes.sweep(parens_store, "top", model=tiny_model, config=cfg, n_boot=200)
    L = len(parens_store.layers())
    assert res.layers == ["embed", "L0", "L1"] and res.hooks[0] == "blocks.0.hook_resid_pre"
    for name in ("score", "ci_low", "ci_high", "control_score", "selectivity", "mdl_bits", "compression",
                 "untrained_score", "erased_score", "C"):
        assert len(getattr(res, name)) == L, name
    assert all(lo <= s <= hi for lo, s, hi in zip(res.ci_low, res.score, res.ci_high))
    torch.testing.assert_close(torch.tensor(res.selectivity), torch.tensor(res.score) - torch.tensor(res.control_score))
    assert res.embed_score == res.score[0]
    # LEACE: a fresh probe is at the majority rate within a point
    assert all(abs(e - res.chance) <= 0.01 for e in res.erased_score)
    (iv,) = res.interventions
    assert iv["layer"] == res.best_layer() and len(iv["kl_random"]) == 5
    again = probes.SweepResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert again == res
    fig = res.figure()
    assert isinstance(fig, go.Figure) and [t.name for t in fig.data][:2] == ["accuracy", "control task"]
    assert "| layer |" in res.table()


def test_sweep_matches_single_layer_probe(parens_store):
    cfg = probes.ProbeConfig(C=1.0)
    res = probes.sweep(parens_store, "depth", config=cfg, control=False, mdl=False, erasure=False, n_boot=10)
    probe, metrics = probes.train_probe(parens_store, "L1", "depth", C=1.0, control=False)
    assert abs(res.score[2] - metrics["accuracy"]) <= 0.005


def _store(n=60, nan_row=None, const=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    if nan_row is not None:
        x[nan_row, 2] = float("inf")
    y = torch.zeros(n, dtype=torch.long) if const else (x[:, 0] > 0).long()
    return ActivationStore(acts={"blocks.0.hook_resid_pre": x, "blocks.0.hook_resid_post": x.clone()},
                           example_id=torch.arange(n) // 6, position=torch.arange(n) % 6, token=torch.arange(n) % 5,
                           labels={"y": y}, label_kinds={"y": "classification"},
                           manifest={"n_layers": 1, "control_key": "token"})


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(pk.ProbekitError, match="unknown label 'z'"):
        probes.sweep(_store(), "z")
    with pytest.raises(pk.ProbekitError, match="one class"):
        probes.sweep(_store(const=True), "y")
    with pytest.raises(pk.ProbekitError, match="NaN/inf.*row 13"):
        probes.sweep(_store(nan_row=13), "y")
    with pytest.raises(pk.ProbekitError, match="out of range"):
        probes.train_probe(_store(), "L4", "y")
    with pytest.raises(pk.ProbekitError, match="rows"):
        ActivationStore(acts={"blocks.0.hook_resid_pre": torch.zeros(5, 2)}, example_id=torch.arange(6),
                        position=torch.arange(6), token=torch.arange(6))


def test_regression_sweep_reports_r2_and_leace_removes_it():
    g = torch.Generator().manual_seed(0)
    n = 300
    x = torch.randn(n, 8, generator=g)
    y = 2 * x[:, 0] + 0.1 * torch.randn(n, generator=g)
    store = ActivationStore(acts={"blocks.0.hook_resid_pre": torch.randn(n, 8, generator=g),
                                  "blocks.0.hook_resid_post": x},
                            example_id=torch.arange(n) // 6, position=torch.arange(n) % 6, token=torch.arange(n) % 5,
                            labels={"r": y}, label_kinds={"r": "regression"},
                            manifest={"n_layers": 1, "control_key": "token"})
    res = probes.sweep(store, "r", n_boot=100)
    assert res.metric == "r2" and res.mdl_bits is None
    assert res.score[1] > 0.98 and res.score[0] < 0.05
    assert res.selectivity[1] > 0.9
    assert all(abs(e) <= 0.01 for e in res.erased_score)


def test_cv_on_a_row_subset_then_refit(parens_store):
    full = probes.sweep(parens_store, "top", control=False, mdl=False, erasure=False, n_boot=10, cv_rows=None,
                        config=probes.ProbeConfig(Cs=(0.1, 1.0), cv=2))
    sub = probes.sweep(parens_store, "top", control=False, mdl=False, erasure=False, n_boot=10, cv_rows=200,
                       config=probes.ProbeConfig(Cs=(0.1, 1.0), cv=2))
    assert sub.n_train == full.n_train and all(c in (0.1, 1.0) for c in sub.C)
    # where both chose the same C, the refit on every training row is the same probe
    for i, (a, b) in enumerate(zip(full.C, sub.C)):
        if a == pytest.approx(b):
            assert sub.score[i] == pytest.approx(full.score[i], abs=1e-6)
    assert set(sub.summary()) >= {"best layer", "accuracy", "majority class"}


def test_baselines_rebuilt_from_an_on_disk_store_of_a_run(tmp_path, caplog):
    """No ``model=``: the sweep reloads the run the store's manifest names, checks its fingerprint,
    and gets the same untrained baseline (and amnesic check) as when given the model."""
    task = pk.tasks.get("parens")
    cfg = pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=task.n_ctx, d_vocab=task.d_vocab, seed=7)
    run = pk.save_run(pk.build_model(cfg, tokenizer=task.tokenizer()), tmp_path / "run", model_config=cfg, task=task)
    model = pk.load(run)
    store = ActivationStore.open(pk.cache_activations(model, task, n=6, out=tmp_path / "acts").path)
    assert store.manifest["model"]["source"]["path"] == str(run.resolve())
    kw = dict(config=probes.ProbeConfig(C=1.0), control=False, mdl=False, erasure=False, n_boot=10)
    rebuilt = probes.sweep(store, "top", **kw)
    given = probes.sweep(store, "top", model=model, **kw)
    assert rebuilt.untrained_score is not None and len(rebuilt.untrained_score) == 2
    assert rebuilt.untrained_score == given.untrained_score
    # the amnesic check runs the trained model itself: equal only if the rebuilt model is that model
    assert rebuilt.interventions == given.interventions and rebuilt.interventions[0]["kl"] > 0
    # and the baseline is a different model's: its embeddings differ from the trained ones
    base = probes.untrained_copy(model)
    assert not torch.equal(base.W_E, model.W_E)
    # a run directory overwritten by another model no longer matches: baselines skipped, with a warning
    other = pk.build_model(pk.ModelConfig(**{**cfg.to_dict(), "seed": 8}), tokenizer=task.tokenizer())
    pk.save_run(other, run, model_config=cfg, task=task)
    stale = probes.sweep(store, "top", **kw)
    assert stale.untrained_score is None and stale.interventions == []
    assert any("no longer matches the store's fingerprint" in r.getMessage() for r in caplog.records)
