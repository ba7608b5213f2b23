"""Attention views and the compact HTML writer, without a browser (the page itself: tests/browser)."""

from __future__ import annotations

import base64
import gzip
import json
import re

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from test_heads import IND, PREV, planted_hooks

import probekit as pk
from probekit.cli import main as cli
from probekit.heads import attention_patterns, repeated_tokens
from probekit.viz import attention, head_detail, head_scores, line_figure, token_view, write_html
from probekit.viz.attention import VIEWS, dashboard
from probekit.viz.basic import escape, heatmap
from probekit.viz.html import encode_figures


def decode_page(path) -> dict:
    """Inflate a page's figures in Python the way the page's script does (an independent decoder)."""
    raw = path.read_text()
    blocks = dict(re.findall(r'<script type="application/octet-stream" id="(pk-\w+)">([^<]*)</script>', raw))
    doc = json.loads(gzip.decompress(base64.b64decode(blocks["pk-figs"])))
    buf = gzip.decompress(base64.b64decode(blocks["pk-buf"]))
    dtypes = {"f4": np.float32, "f8": np.float64, "f2": np.float16, "u1": np.uint8, "i1": np.int8,
              "u2": np.uint16, "i2": np.int16, "i4": np.int32, "q1": np.uint8}

    def revive(x):
        if isinstance(x, list):
            return [revive(v) for v in x]
        if isinstance(x, dict):
            if "__pk" in x:
                a = np.frombuffer(buf, dtype=dtypes[x["__pk"]], count=x["n"], offset=x["o"]).astype(np.float64)
                if x["__pk"] == "q1":
                    a = np.where(a == 255, np.nan, x["lo"] + a * x["sc"])
                return a.reshape(x["s"])
            if "__pkr" in x:
                return revive(doc["shared"][x["__pkr"]])
            return {k: revive(v) for k, v in x.items()}
        return x

    return {"figures": revive(doc["figures"]), "plotly": blocks["pk-plotly"], "raw": raw}


def test_grid_has_every_head_and_example(tiny_model):
    tokens = torch.randint(0, 7, (3, 12))
    fig = attention(tiny_model, tokens)
    L, H = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
    assert len(fig.data) == 3 * L * H
    assert [t.visible for t in fig.data] == [True] * (L * H) + [False] * (2 * L * H)
    pats = attention_patterns(tiny_model, tokens).numpy()
    np.testing.assert_allclose(fig.data[L * H + 1 * H + 3].z, pats[1, 1, 3], atol=1e-6)
    # the example selector switches visibility to the chosen example's heads
    vis = fig.layout.updatemenus[0].buttons[2].args[0]["visible"]
    assert vis == [False] * (2 * L * H) + [True] * (L * H)
    # hidden axes named by position and token: repeated tokens stay distinct, the hover shows the tokens
    strs = tiny_model.to_str_tokens(tokens[2])
    assert list(fig.data[2 * L * H].x) == [f"{i} {escape(s)}" for i, s in enumerate(strs)]
    assert fig.data[2 * L * H].y == fig.data[2 * L * H].x and len(set(fig.data[0].x)) == 12
    assert fig.data[5].hovertemplate == "L1H1<br>query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>"


def test_grid_pools_long_inputs_keeping_rows_stochastic():
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=1, d_model=16, n_heads=2, n_ctx=200, d_vocab=task.d_vocab, attn_only=True)
    model = pk.build_model(cfg)
    tokens = torch.randint(3, task.d_vocab, (1, 200))
    fig = attention(model, tokens, max_cells=64)
    z = np.asarray(fig.data[1].z)
    assert z.shape == (50, 50)  # 200 tokens in bins of 4
    pats = attention_patterns(model, tokens).numpy()[0, 0, 1]
    np.testing.assert_allclose(z, pats.reshape(50, 4, 50, 4).sum(-1).mean(1), atol=1e-6)
    np.testing.assert_allclose(z.sum(-1), 1, atol=1e-5)
    strs = [str(int(t)) for t in tokens[0]]  # a model without a tokenizer: the ids
    assert fig.data[1].x[3] == f"12–15 {escape(strs[12])} … {escape(strs[15])}"
    assert "queries %{y}<br>keys %{x}" in fig.data[1].hovertemplate


def test_head_score_view_marks_exactly_the_planted_heads(tiny_attn_only):
    model = tiny_attn_only
    tokens = repeated_tokens(model, seq_len=10, n=4, seed=3)
    with model.hooks(fwd_hooks=planted_hooks(tokens)):
        fig = head_scores(model, tokens, mark=0.3)
    marked = {t.name: sorted(zip(t.y, t.x)) for t in fig.data if t.name and t.name.startswith("marked")}
    assert marked == {"marked previous_token": [PREV], "marked induction": [IND], "marked duplicate_token": []}
    assert fig.layout.meta["probekit"]["marked"]["induction"] == [list(IND)]
    # the pattern panel opens on the best induction head: the planted pattern itself
    pattern = fig.data[-1]
    assert fig.layout.annotations[-1].text == f"pattern of L{IND[0]}H{IND[1]}"
    z = np.asarray(pattern.z)
    second = range(11, 21)
    assert all(z[q, q - 9] == 1 for q in second)  # token after the earlier copy
    # selecting a head (the menu a click applies) shows that head's pattern
    button = next(b for b in fig.layout.updatemenus[0].buttons if b.label == f"L{PREV[0]}H{PREV[1]}")
    zp = np.asarray(button.args[0]["z"][0])
    assert all(zp[q, q - 1] == 1 for q in range(1, 21))
    assert fig.data[0].customdata[PREV[0]][PREV[1]] == f"L{PREV[0]}H{PREV[1]}"


def test_detail_and_token_view(tiny_model):
    tokens = torch.randint(0, 7, (2, 10))
    pats = attention_patterns(tiny_model, tokens).numpy()
    fig = head_detail(tiny_model, tokens, layer=1, head=2, example=1)
    np.testing.assert_allclose(fig.data[0].z, pats[1, 1, 2], atol=1e-6)
    strs = tiny_model.to_str_tokens(tokens[1])
    assert fig.layout.xaxis.ticktext == tuple(escape(s) for s in strs)
    assert fig.data[0].text[3][4].startswith(f"query 3 {escape(strs[3])}<br>key 4 {escape(strs[4])}")
    assert [b.label for b in fig.layout.updatemenus[0].buttons][:5] == ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"]
    tv = token_view(tiny_model, tokens, layer=0, head=3, example=0, query=7, per_row=4)
    z = np.asarray(tv.data[0].z).ravel()
    np.testing.assert_allclose(z[:10], pats[0, 0, 3, 7], atol=1e-6)
    assert np.isnan(z[10:]).all()
    assert len(tv.layout.sliders[0].steps) == 10
    np.testing.assert_allclose(np.asarray(tv.layout.sliders[0].steps[2].args[0]["z"][0]).ravel()[:10],
                               pats[0, 0, 3, 2], atol=1e-6)


def test_views_refuse_bad_indices(tiny_model):
    tokens = torch.randint(0, 7, (1, 6))
    with pytest.raises(pk.ProbekitError, match="layer must be in 0..1"):
        head_detail(tiny_model, tokens, layer=2)
    with pytest.raises(pk.ProbekitError, match="window"):
        head_detail(tiny_model, tokens, window=(4, 2))
    with pytest.raises(pk.ProbekitError, match="query must be in 0..5"):
        token_view(tiny_model, tokens, query=6)
    with pytest.raises(pk.ProbekitError, match="did you mean 'grid'"):
        dashboard(tiny_model, tokens, views=["gird"])


def test_escape_keeps_tokens_literal():
    assert escape("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)&gt;"
    assert escape("a&b\n") == "a&amp;b↵"
    fig = heatmap(np.eye(3), x_tokens=["<b>", "x", "<b>"], y_tokens=["a", "a", "a"])
    assert fig.layout.xaxis.ticktext == ("&lt;b&gt;", "x", "&lt;b&gt;")
    assert fig.layout.xaxis.tickvals == (0, 1, 2) and fig.layout.xaxis.type == "linear"


def test_write_html_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    big = rng.random((40, 50)).astype(np.float32)
    small = rng.random(20)
    fig = go.Figure([go.Heatmap(z=big, text=[["<tok>"] * 50] * 40), go.Heatmap(z=big * 2, text=[["<tok>"] * 50] * 40),
                     go.Scatter(x=list(range(20)), y=small, name="<script>alert(1)</script>")])
    for precision, tol in (("float32", 1e-7), ("float16", 1e-3), ("uint8", 1 / 254 / 2 + 1e-7)):
        page = decode_page(write_html(fig, tmp_path / f"p-{precision}.html", precision=precision))
        data = page["figures"][0]["data"]
        np.testing.assert_allclose(data[0]["z"], big, atol=tol * (2 if precision == "uint8" else 1))
        np.testing.assert_allclose(data[1]["z"], big * 2, atol=tol * 2, rtol=1e-3)
        np.testing.assert_allclose(data[2]["y"], small, atol=1e-7)  # small arrays stay exact (float32)
        np.testing.assert_array_equal(data[2]["x"], np.arange(20))
        assert data[0]["text"][3][4] == "<tok>"
        assert "<script>alert" not in page["raw"] and "<tok>" not in page["raw"]
    # repeated lists are stored once: both traces point at the same shared entry
    doc = json.loads(gzip.decompress(base64.b64decode(encode_figures([fig])[0])))
    assert doc["figures"][0]["data"][0]["text"] == doc["figures"][0]["data"][1]["text"]
    assert len(doc["shared"]) == 2  # the 40×50 text of both traces: one row (all alike) and one outer list
    # equal arrays are stored once, in any figure; unequal ones each have their own place
    twin = go.Figure(go.Heatmap(z=big.copy()))
    doc = json.loads(gzip.decompress(base64.b64decode(encode_figures([fig, twin], precision="uint8")[0])))
    z = [doc["figures"][0]["data"][0]["z"], doc["figures"][0]["data"][1]["z"], doc["figures"][1]["data"][0]["z"]]
    assert z[0] == z[2] and z[0]["o"] != z[1]["o"]
    # the embedded plotly.js is the bundle chosen for these traces (the partial one where the install fetched it)
    from probekit.viz import bundle

    assert gzip.decompress(base64.b64decode(page["plotly"])) == bundle.choose(["heatmap", "scatter"]).read_bytes()


def test_partial_bundle_only_for_trace_types_it_holds(tmp_path, monkeypatch):
    """A page of heatmaps embeds the cartesian bundle when it is installed; a page with a 3-D trace (not in it) and
    an install without it embed plotly's full bundle."""
    from probekit.viz import bundle

    monkeypatch.setattr(bundle, "ASSETS", tmp_path / "assets")
    embedded = lambda path: gzip.decompress(base64.b64decode(decode_page(path)["plotly"]))  # noqa: E731
    heat = go.Figure(go.Heatmap(z=[[0, 1], [1, 0]]))
    full = bundle.full_path().read_bytes()
    assert embedded(write_html(heat, tmp_path / "none.html")) == full  # nothing fetched yet
    bundle.ASSETS.mkdir(exist_ok=True)  # (it may hold the full bundle's compressed copy)
    # plotly's own bundle under the partial bundle's name, marked: which file is embedded is what is checked here
    marked = b"/* stand-in for the cartesian bundle */\n" + full
    bundle.partial_path().write_bytes(marked)
    assert embedded(write_html(heat, tmp_path / "heat.html")) == marked
    cube = go.Figure([go.Heatmap(z=[[0, 1]]), go.Scatter3d(x=[0], y=[0], z=[0])])
    assert embedded(write_html(cube, tmp_path / "cube.html")) == full


def test_write_html_refuses_bad_input(tmp_path):
    with pytest.raises(pk.ProbekitError, match="precision must be one of float16, uint8, float32"):
        write_html(go.Figure(), tmp_path / "x.html", precision="int4")
    with pytest.raises(pk.ProbekitError, match="plotly Figures"):
        write_html([object()], tmp_path / "x.html")
    with pytest.raises(pk.ProbekitError, match="at least one figure"):
        write_html([], tmp_path / "x.html")


def test_dashboard_budget_12_layers_12_heads_64_tokens(tmp_path, capsys):
    """DESIGN's budget: the page `probekit attention` writes by default (all four views) for 12 × 12 × 64, one example."""
    from probekit.runs import save_run

    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=12, d_model=48, n_heads=12, n_ctx=64, d_vocab=task.d_vocab, attn_only=True)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    run = save_run(model, tmp_path / "run", model_config=cfg, task=task)
    out = tmp_path / "big.html"
    assert cli(["attention", "--model", str(run), "--task", "induction", "--examples", "1", "--out", str(out)]) == 0
    assert out.stat().st_size <= 2.5e6, out.stat().st_size
    page = decode_page(out)
    figs = page["figures"]
    assert [f["layout"]["meta"]["probekit"]["view"] for f in figs] == list(VIEWS)
    tokens = task.batch(1, seed=0, split="test").tokens
    assert tokens.shape == (1, 64)
    pats = attention_patterns(model, tokens).numpy()
    strs = model.to_str_tokens(tokens[0])
    grid, scores, detail = figs[0]["data"], figs[1], figs[2]
    assert len(grid) == 144 and sum(t["visible"] is True for t in grid) == 144
    np.testing.assert_allclose(grid[17]["z"], pats[0, 1, 5], atol=1 / 254 / 2 + 1e-6)
    assert grid[17]["x"][4] == f"4 {escape(strs[4])}" and grid[17]["y"][9] == f"9 {escape(strs[9])}"
    # every head is selectable in the detail and score views, each with its own pattern
    for fig in (detail, scores):
        buttons = fig["layout"]["updatemenus"][0]["buttons"]
        assert [b["label"] for b in buttons] == [f"L{l}H{h}" for l in range(12) for h in range(12)]
        np.testing.assert_allclose(buttons[7 * 12 + 3]["args"][0]["z"][0], pats[0, 7, 3], atol=1 / 254 / 2 + 1e-6)
    # the views share one copy of the patterns: the page's binary data is about one uint8 pattern per head
    raw = page["raw"]
    buf = re.search(r'id="pk-buf">([^<]*)<', raw).group(1)
    assert len(gzip.decompress(base64.b64decode(buf))) < 1.2 * 144 * 64 * 64


def test_one_head_views_hold_every_head_within_max_values(tiny_model):
    tokens = torch.randint(0, 7, (1, 40))
    L, H = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
    pats = attention_patterns(tiny_model, tokens).numpy()
    budget = L * H * 20 * 20  # every head's window together: at most this many values
    detail = head_detail(tiny_model, tokens, layer=1, head=3, max_tokens=32, max_values=budget)
    scores = head_scores(tiny_model, tokens, max_tokens=32, max_values=budget)
    for fig, panel in ((detail, 0), (scores, -1)):
        assert fig.layout.meta["probekit"]["window"] == [20, 40]  # the last 20 positions, not the last 32
        assert list(fig.data[panel].x) == list(range(20, 40))
        buttons = fig.layout.updatemenus[0].buttons
        assert [b.label for b in buttons] == [f"L{l}H{h}" for l in range(L) for h in range(H)]
        for i, b in enumerate(buttons):
            np.testing.assert_allclose(b.args[0]["z"][0], pats[0, i // H, i % H, 20:40, 20:40], atol=1e-6)
    np.testing.assert_allclose(detail.data[0].z, pats[0, 1, 3, 20:40, 20:40], atol=1e-6)
    # without a bound, the window is max_tokens long; a given window is kept
    assert head_detail(tiny_model, tokens, max_tokens=32).layout.meta["probekit"]["window"] == [8, 40]
    assert head_detail(tiny_model, tokens, window=(3, 9), max_values=1).data[0].z.shape == (6, 6)
    # a page with both stores each head's window once
    _, buf = encode_figures([detail, scores])
    assert len(gzip.decompress(base64.b64decode(buf))) < 1.5 * L * H * 20 * 20


def test_line_figure():
    fig = line_figure({"train": ([0, 10, 20], [4.1, 2.0, 0.9]), "<test>": ([0, 20], [4.2, 1.1])},
                      title="Loss", xaxis="step", yaxis="nats")
    assert [t.name for t in fig.data] == ["train", "&lt;test&gt;"]
    assert list(fig.data[1].x) == [0, 20] and fig.layout.xaxis.title.text == "step"
    with pytest.raises(pk.ProbekitError, match="2 y values for 3 x values"):
        line_figure({"a": ([0, 1, 2], [1, 2])})


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from probekit.runs import save_run

    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=task.d_vocab, attn_only=True)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    return save_run(model, tmp_path_factory.mktemp("run"), model_config=cfg, task=task, tokenizer=task.tokenizer())


def test_cli_writes_a_page(run_dir, tmp_path, capsys):
    out = tmp_path / "attn.html"
    assert cli(["attention", "--model", str(run_dir), "--task", "induction", "--out", str(out), "--examples", "2",
                "--views", "grid,detail", "--layer", "1", "--head", "2"]) == 0
    page = decode_page(out)
    assert len(page["figures"]) == 2
    assert sum(t.get("visible") is True for t in page["figures"][0]["data"]) == 8
    assert len(page["figures"][0]["data"]) == 16  # 2 examples × 2 layers × 4 heads
    assert page["figures"][1]["data"][0]["hovertemplate"].endswith("<extra>L1H2</extra>")
    assert cli(["attention", "--model", str(run_dir), "--text", "<bos> t1 t2 t1 t2", "--out", str(out),
                "--views", "tokens"]) == 0


@pytest.mark.parametrize("args, message", [
    ([], "exactly one of --task"),
    (["--task", "induction", "--text", "t1"], "exactly one of --task"),
    (["--task", "inductoin"], "did you mean 'induction'"),
    (["--task", "induction", "--views", "grid,bogus"], "unknown view 'bogus'"),
    (["--task", "induction", "--examples", "0"], "--examples must be at least 1"),
    (["--task", "induction", "--layer", "5", "--head", "0"], "no head L5H0"),
    (["--text", "t1 " * 70], "longer than the model's context 64"),
])
def test_cli_bad_input_exits_2_with_one_line(run_dir, tmp_path, capsys, args, message):
    assert cli(["attention", "--model", str(run_dir), "--out", str(tmp_path / "x.html"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "x.html").exists()


def test_views_registry_matches_functions():
    assert set(VIEWS) == {"grid", "scores", "detail", "tokens"}
    assert VIEWS["detail"] is head_detail and VIEWS["tokens"] is token_view
