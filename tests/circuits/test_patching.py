"""circuits.patch equals TransformerLens' get_act_patch_* for every target, both directions, several models."""

from __future__ import annotations

import pytest
import torch
import transformer_lens.patching as tlp

import circuits
import probekit as pk
from circuits import targets
from probekit.errors import ProbekitError
from tests.circuits.conftest import pairs_for


def oracle(target: targets.Target):
    """The TransformerLens function a target must equal."""
    if target.name == "resid-post":
        return lambda model, toks, cache, metric: tlp.generic_activation_patch(
            model, toks, cache, metric, patch_setter=tlp.layer_pos_patch_setter, activation_name="resid_post",
            index_axis_names=("layer", "pos"))
    return getattr(tlp, target.oracle)


def tl_patch(model, clean, corrupt, metric, target, direction):
    base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
    with torch.no_grad():
        _, cache = model.run_with_cache(src)
    return oracle(targets.get(target))(model, base, cache, metric)


def _metric(answers, wrong):
    return pk.metrics.make("logit-diff", answers=answers, wrong=wrong)


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("target", targets.names())
def test_equals_transformer_lens_with_mlps(tiny_model, target, direction):
    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    metric = _metric(answers, wrong)
    ours = circuits.patch(tiny_model, clean, corrupt, metric, target=target, direction=direction, progress=False)
    ref = tl_patch(tiny_model, clean, corrupt, metric, target, direction)
    assert ours.values.shape == ref.shape
    assert ours.axes == targets.get(target).axes
    assert (ours.values - ref).abs().max() <= 1e-4
    # one of the fast paths ran, not the full-forward fallback
    assert ours.extra["position_skipping"] or ours.extra["suffix_forward"]


#: attention-only model: one target per patch setter (the MLP model above covers every target)
ATTN_TARGETS = ["resid", "resid-post", "heads", "q-by-pos", "pattern-by-pos"]


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("target", ATTN_TARGETS)
def test_equals_transformer_lens_attention_only(tiny_attn_only, target, direction):
    clean, corrupt, answers, wrong = pairs_for(tiny_attn_only, seed=1)
    metric = _metric(answers, wrong)
    ours = circuits.patch(tiny_attn_only, clean, corrupt, metric, target=target, direction=direction, progress=False)
    ref = tl_patch(tiny_attn_only, clean, corrupt, metric, target, direction)
    assert (ours.values - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("target", ["resid", "heads-by-pos", "pattern"])
def test_equals_transformer_lens_trained(trained_attn_only, target, direction):
    task = pk.tasks.get("induction", pair_len=3)
    p = task.patching_pairs(3, seed=0)
    metric = _metric(p.answers, p.wrong)
    ours = circuits.patch(trained_attn_only, p.clean, p.corrupt, metric, target=target, direction=direction,
                          progress=False)
    ref = tl_patch(trained_attn_only, p.clean, p.corrupt, metric, target, direction)
    assert (ours.values - ref).abs().max() <= 1e-4
    assert ours.values.std() > 0  # a real signal, not a constant


@pytest.mark.parametrize("target", ["resid", "resid-mid", "heads-by-pos", "mlp"])
def test_position_skipping_equals_hooked_engine(tiny_model, target):
    clean, corrupt, answers, wrong = pairs_for(tiny_model, batch=3, pos=7)
    metric = _metric(answers, wrong)
    fast = circuits.patch(tiny_model, clean, corrupt, metric, target=target, progress=False)
    slow = circuits.patch(tiny_model, clean, corrupt, metric, target=target, progress=False, fast_path=False)
    assert fast.extra["position_skipping"] and not slow.extra["position_skipping"]
    assert (fast.values - slow.values).abs().max() <= 1e-5


def _metric_of_kind(kind: str, answers, wrong):
    if kind == "every-position":  # a plain function: no declaration, every position's logits computed
        return lambda logits: logits[torch.arange(len(answers)), :, answers].mean()
    if kind == "middle-position":  # patches after position 2 cannot change it: not run
        return pk.metrics.make("logit-diff", answers=answers, wrong=wrong, pos=2)
    # a Metric that declares the last position but reads every one: caught on the base run, all computed
    return pk.metrics.Metric("misdeclared", lambda logits: logits[..., :, 0].mean((-1, -2)), pos=-1)


@pytest.mark.parametrize("kind", ["every-position", "middle-position", "misdeclared"])
@pytest.mark.parametrize("target", ["resid", "heads-by-pos", "attn", "resid-mid", "mlp", "resid-post"])
def test_fast_path_computes_what_the_metric_reads(tiny_model, target, kind, caplog):
    clean, corrupt, answers, wrong = pairs_for(tiny_model, batch=3, pos=6)
    metric = _metric_of_kind(kind, answers, wrong)
    with caplog.at_level("WARNING", logger="circuits.patching"):
        ours = circuits.patch(tiny_model, clean, corrupt, metric, target=target, progress=False)
    assert ("does not behave as a Metric" in caplog.text) == (kind == "misdeclared")
    ref = tl_patch(tiny_model, clean, corrupt, metric, target, "denoising")
    assert ours.extra["position_skipping"]
    assert (ours.values - ref).abs().max() <= 1e-4
    assert ours.values.std() > 0


def test_chunking_does_not_change_results(tiny_model):
    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    metric = _metric(answers, wrong)
    big = circuits.patch(tiny_model, clean, corrupt, metric, target="heads-by-pos", progress=False)
    small = circuits.patch(tiny_model, clean, corrupt, metric, target="heads-by-pos", progress=False, memory_mb=1e-4,
                           fast_path=False)
    assert small.extra["copies_per_forward"] == 1 < big.extra["copies_per_forward"]
    assert torch.allclose(big.values, small.values, atol=1e-5)


def test_baselines_and_extremes(tiny_model):
    """Patching the whole residual at layer 0 reproduces the source run; baselines are the two runs' metrics."""
    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    metric = _metric(answers, wrong)
    res = circuits.patch(tiny_model, clean, corrupt, metric, target="resid", progress=False)
    with torch.no_grad():
        assert res.clean == pytest.approx(float(metric(tiny_model(clean))), abs=1e-5)
        assert res.corrupt == pytest.approx(float(metric(tiny_model(corrupt))), abs=1e-5)
    # layer 0: positions where clean and corrupt agree change nothing; the first differing one does
    assert torch.allclose(res.values[0, 2:], torch.full((2,), res.corrupt), atol=1e-5)
    assert res.normalized()[0, : 2].shape == (2,)


def test_per_example_and_intervals(tiny_model):
    clean, corrupt, answers, wrong = pairs_for(tiny_model, batch=5)
    per = pk.metrics.make("logit-diff", answers=answers, wrong=wrong, reduce="none")
    mean = _metric(answers, wrong)
    res = circuits.patch(tiny_model, clean, corrupt, per, target="heads", per_example=True, progress=False)
    ref = circuits.patch(tiny_model, clean, corrupt, mean, target="heads", progress=False)
    assert res.per_example.shape == (2, 4, 5)
    assert torch.allclose(res.values, ref.values, atol=1e-5)
    assert (res.ci_low <= res.values + 1e-6).all() and (res.values <= res.ci_high + 1e-6).all()
    assert (res.ci_high - res.ci_low > 0).any()


def test_train_mode_is_restored(tiny_model):
    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    metric = _metric(answers, wrong)
    ref = circuits.patch(tiny_model, clean, corrupt, metric, target="attn", progress=False)
    tiny_model.train()
    try:
        res = circuits.patch(tiny_model, clean, corrupt, metric, target="attn", progress=False)
        assert tiny_model.training
    finally:
        tiny_model.eval()
    assert torch.equal(res.values, ref.values)


def test_bad_input(tiny_model, tiny_attn_only):
    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    metric = _metric(answers, wrong)
    with pytest.raises(ProbekitError, match="same shape"):
        circuits.patch(tiny_model, clean, corrupt[:, :3], metric, progress=False)
    with pytest.raises(ProbekitError, match="out of vocabulary"):
        circuits.patch(tiny_model, clean, corrupt + 100, metric, progress=False)
    with pytest.raises(ProbekitError, match="out of vocabulary"):
        circuits.patch(tiny_model, clean, corrupt, _metric(answers + 100, wrong), progress=False)
    with pytest.raises(ProbekitError, match="attention-only"):
        circuits.patch(tiny_attn_only, clean, corrupt, metric, target="mlp", progress=False)
    with pytest.raises(ProbekitError, match="did you mean"):
        circuits.patch(tiny_model, clean, corrupt, metric, target="head", progress=False)
    with pytest.raises(ProbekitError, match="direction"):
        circuits.patch(tiny_model, clean, corrupt, metric, direction="backwards", progress=False)
    with pytest.raises(ProbekitError, match="scalar"):
        circuits.patch(tiny_model, clean, corrupt, lambda lg: lg[:, -1, 0], progress=False)


def test_result_figure_and_dict(tiny_model):
    import json

    clean, corrupt, answers, wrong = pairs_for(tiny_model)
    res = circuits.patch(tiny_model, clean, corrupt, _metric(answers, wrong), target="heads-by-pos", progress=False)
    d = json.loads(json.dumps(res.to_dict()))
    assert d["shape"] == [2, 4, 4] and d["axes"] == ["layer", "pos", "head"]
    fig = res.figure()
    z = fig.data[0].z
    # rows are (layer, head), columns positions: values transposed from TL's layer x pos x head
    assert len(z) == 8 and len(z[0]) == 4
    assert z[1][2] == pytest.approx(float(res.values[0, 2, 1]))


def _fresh_mlp_model(seed: int = 5):
    return pk.build_model(pk.ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=12, n_ctx=16, seed=seed))


@pytest.mark.parametrize("target", ["resid", "heads-by-pos", "mlp"])
def test_plain_forward_stands_in_only_for_verified_unhooked_weights(target):
    """The fused plain forward replaces the bridge's base/source run only once a hooked run verified it on the same
    weights: an in-place edit (through ``.data``, which bumps no version counter) or a hook on the model sends the
    run back through the bridge, and every result still equals TransformerLens."""
    model = _fresh_mlp_model()
    clean, corrupt, answers, wrong = pairs_for(model, batch=2, pos=5, seed=3)
    metric = _metric(answers, wrong)

    def both():
        ours = circuits.patch(model, clean, corrupt, metric, target=target, progress=False)
        ref = tl_patch(model, clean, corrupt, metric, target, "denoising")
        assert (ours.values - ref).abs().max() <= 1e-4
        return ours

    assert not both().extra["plain_forward"]  # first sight of these weights: the bridge runs, and verifies
    assert both().extra["plain_forward"]
    with torch.no_grad():
        next(model.parameters()).data.mul_(1.5)
    assert not both().extra["plain_forward"]  # edited weights: verified again through the bridge
    assert both().extra["plain_forward"]

    def scale(act, hook):  # noqa: ARG001 - a user's permanent hook changes the model; the fast runs must honour it
        return act * 0.5

    model.blocks[0].hook_attn_out.add_hook(scale)
    try:
        assert not both().extra["plain_forward"]
    finally:
        model.reset_hooks()
    assert both().extra["plain_forward"]
    model.to(torch.float64)  # the same parameter objects holding equal values, in another dtype: fused again
    assert not both().extra["plain_forward"]
    assert both().extra["plain_forward"]


def test_metric_that_mixes_stacked_copies_is_called_per_copy(tiny_model, caplog):
    """A Metric whose function reduces over every leading axis would blend patched copies evaluated together:
    it is detected and called once per copy, so the result still equals TransformerLens."""
    clean, corrupt, answers, wrong = pairs_for(tiny_model, batch=3, pos=6, seed=4)

    def scaled(logits):  # mean over *all* leading axes: right on one copy, wrong on a stack of copies
        return pk.metrics.logit_diff(logits, answers, wrong, reduce="none").mean() / logits[..., -1, :].std()

    metric = pk.metrics.Metric("scaled", scaled, pos=-1)
    for target in ("resid", "heads"):
        with caplog.at_level("WARNING"):
            ours = circuits.patch(tiny_model, clean, corrupt, metric, target=target, progress=False)
        ref = tl_patch(tiny_model, clean, corrupt, metric, target, "denoising")
        assert (ours.values - ref).abs().max() <= 1e-4
    assert "calling it once per copy" in caplog.text


def test_metric_that_takes_one_copy_only_is_called_per_copy(tiny_model):
    """A Metric that only accepts ``[batch, pos, d_vocab]`` is not an error: it is called once per copy."""
    clean, corrupt, answers, wrong = pairs_for(tiny_model, batch=2, pos=5, seed=6)

    def strict(logits):
        if logits.ndim != 3:
            raise ValueError("one copy at a time")
        return pk.metrics.logit_diff(logits, answers, wrong)

    metric = pk.metrics.Metric("strict", strict, pos=-1)
    ours = circuits.patch(tiny_model, clean, corrupt, metric, target="resid", progress=False)
    ref = tl_patch(tiny_model, clean, corrupt, metric, "resid", "denoising")
    assert (ours.values - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("direction", ["denoising", "noising"])
@pytest.mark.parametrize("target", ["resid", "heads-by-pos", "resid-post"])
def test_per_example_through_the_fast_path_equals_the_hooked_engine(tiny_model, target, direction):
    clean, corrupt, answers, wrong = pairs_for(tiny_model, batch=3, pos=6, seed=8)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong, reduce="none")
    fast = circuits.patch(tiny_model, clean, corrupt, metric, target=target, direction=direction, per_example=True,
                          progress=False)
    slow = circuits.patch(tiny_model, clean, corrupt, metric, target=target, direction=direction, per_example=True,
                          progress=False, fast_path=False)
    assert fast.extra["position_skipping"] and not slow.extra["position_skipping"]
    assert fast.per_example.shape == slow.per_example.shape == (*fast.values.shape, 3)
    assert (fast.per_example - slow.per_example).abs().max() <= 1e-4


@pytest.mark.parametrize("norm", ["RMS", "none"])
def test_fast_path_on_other_norms_equals_transformer_lens(norm):
    model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=16, n_heads=2, d_vocab=12, n_ctx=16, norm=norm, seed=2))
    clean, corrupt, answers, wrong = pairs_for(model, batch=2, pos=5, seed=9)
    metric = _metric(answers, wrong)
    for target in ("resid", "heads-by-pos"):
        for _ in range(2):  # the first run verifies through the bridge, the second uses the plain forward
            ours = circuits.patch(model, clean, corrupt, metric, target=target, progress=False)
            ref = tl_patch(model, clean, corrupt, metric, target, "denoising")
            assert ours.extra["position_skipping"]
            assert (ours.values - ref).abs().max() <= 1e-4
