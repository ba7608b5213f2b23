"""Dashboards in a real headless Chromium: they render, hold the right data, fetch nothing, run no injected HTML."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import probekit as pk
from probekit.heads import attention_patterns, repeated_tokens
from probekit.tokenizer import word_level_tokenizer
from probekit.viz import attention, head_detail, head_scores, token_view, write_html

pytestmark = pytest.mark.browser

#: uint8 quantization (1/254) plus the 3-decimal rounding of the hover text
TOL = 1 / 254 + 6e-4

XSS = ["<img/src=x/onerror=__xss=1>", "</script><script>__xss=2//", "<b>bold</b>",
       "<img/src=x/onerror=alert(1)>"]


@pytest.fixture(scope="module")
def model():
    vocab = ["<bos>", "<pad>", "<unk>", *XSS, *[f"w{i}" for i in range(12)], "a&b", "\"q'"]
    tok = word_level_tokenizer(vocab)
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, n_ctx=64, d_vocab=len(vocab), attn_only=True, seed=5)
    return pk.build_model(cfg, tokenizer=tok)


@pytest.fixture(scope="module")
def tokens(model):
    # repeated tokens (w3 three times, the XSS strings twice) must stay distinct positions
    text = ["<bos> w3 " + " ".join(XSS) + " w3 a&b \"q' w5 w3 " + " ".join(XSS) + " w7",
            "<bos> w1 w2 w3 w4 w5 w6 w7 w1 w2 w3 w4 w5 w6 w7 w8"]
    return torch.stack([model.to_tokens(t)[0] for t in text])


def hover_text(run, fig_index: int, subplot: int, key: float, query: float) -> str:
    """Hover (key, query) on subplot ``subplot`` (1-based) through Plotly.Fx.hover; read the label from the DOM."""
    return run.js(
        """async ([fig, sub, x, y]) => {
            const gd = document.getElementById('pk-fig-' + fig);
            const id = sub === 1 ? 'xy' : 'x' + sub + 'y' + sub;
            for (let i = 0; i < 40; i++) {  // Plotly throttles hover events: retry until a label shows
                Plotly.Fx.hover(gd, {xval: x, yval: y}, id);
                await new Promise(r => setTimeout(r, 60));
                const t = Array.from(gd.querySelectorAll('.hoverlayer .hovertext')).map(n => n.textContent).join(' | ');
                if (t) { Plotly.Fx.unhover(gd); return t; }
            }
            return '';
        }""",
        [fig_index, subplot, key, query],
    )


def weight_in(text: str) -> float:
    return float(re.search(r"weight ([0-9.]+)", text).group(1))


def test_grid_renders_every_head_and_example(model, tokens, open_page, tmp_path):
    path = write_html(attention(model, tokens), tmp_path / "grid.html",
                      post_script="document.getElementById('{plot_id}').dataset.post = 'ran';")
    run = open_page(path)
    run.assert_clean()
    assert run.js("document.getElementById('pk-fig-0').dataset.post") == "ran"
    assert run.js("document.title") == f"attention patterns, 2 layers × 4 heads, {tokens.shape[1]} tokens"
    assert run.js("window.__pk_afterplot['pk-fig-0']") >= 1
    L, H, B = model.cfg.n_layers, model.cfg.n_heads, tokens.shape[0]
    info = run.js("""() => { const gd = document.getElementById('pk-fig-0');
        return {n: gd._fullData.length, visible: gd._fullData.filter(t => t.visible === true).length,
                drawn: gd.querySelectorAll('.hm image, g.hm image').length,
                names: gd._fullData.filter(t => t.visible === true).map(t => t.name)}; }""")
    assert info["n"] == L * H * B
    assert info["visible"] == L * H and info["drawn"] == L * H
    assert info["names"] == [f"L{l}H{h}" for l in range(L) for h in range(H)]
    pats = attention_patterns(model, tokens).numpy()
    # hover head L1H2 of example 0 at query 9, key 4
    trace = 1 * H + 2
    text = hover_text(run, 0, trace + 1, 4, 9)
    assert "L1H2" in text and "query 9" in text and "key 4" in text
    assert abs(weight_in(text) - pats[0, 1, 2, 9, 4]) <= TOL
    # the example selector shows the second example's heads
    run.js("""() => { const gd = document.getElementById('pk-fig-0'); const b = gd.layout.updatemenus[0].buttons[1];
        return Plotly[b.method](gd, ...b.args); }""")
    z = run.js(f"document.getElementById('pk-fig-0').data[{L * H + trace}].z[9][4]")
    assert abs(z - pats[1, 1, 2, 9, 4]) <= 1 / 254
    assert run.js("document.getElementById('pk-fig-0')._fullData.filter(t => t.visible === true)[0].uid") == \
        run.js(f"document.getElementById('pk-fig-0')._fullData[{L * H}].uid")


@pytest.fixture(scope="module")
def detail_page(model, tokens, tmp_path_factory):
    """One page, two figures: L1H3 in detail and L0H1's token view (one plotly.js load for two tests)."""
    path = tmp_path_factory.mktemp("detail") / "detail.html"
    return write_html([head_detail(model, tokens, layer=1, head=3, example=0),
                       token_view(model, tokens, layer=0, head=1)], path)


def test_detail_hover_holds_tokens_and_weight(model, tokens, open_page, detail_page):
    run = open_page(detail_page)
    run.assert_clean()
    strs = model.to_str_tokens(tokens[0])
    pats = attention_patterns(model, tokens).numpy()
    q, k = 10, 1  # both are the token w3: repeated tokens must keep their own positions
    assert strs[q] == strs[k] == "w3"
    text = hover_text(run, 0, 1, k, q)
    assert f"query {q} w3" in text and f"key {k} w3" in text and "L1H3" in text
    assert abs(weight_in(text) - pats[0, 1, 3, q, k]) <= TOL
    # every weight on the page equals the model's pattern
    z = np.array(run.js("document.getElementById('pk-fig-0').data[0].z"), dtype=np.float32)
    np.testing.assert_allclose(z, pats[0, 1, 3], atol=1 / 254)
    # numeric axes with one tick per position: the 3 copies of w3 are 3 ticks
    ticks = run.js("Array.from(document.querySelectorAll('#pk-fig-0 .yaxislayer-above .ytick text')).map(t => t.textContent)")
    assert ticks == strs
    # the selector switches to another head
    run.js("""() => { const gd = document.getElementById('pk-fig-0');
        const b = gd.layout.updatemenus[0].buttons.find(b => b.label === 'L0H2'); return Plotly[b.method](gd, ...b.args); }""")
    text = hover_text(run, 0, 1, k, q)
    assert "L0H2" in text and abs(weight_in(text) - pats[0, 0, 2, q, k]) <= TOL


def test_injected_html_token_is_literal_text(model, tokens, open_page, detail_page):
    run = open_page(detail_page)
    run.assert_clean()
    assert run.js("window.__xss === undefined")
    assert run.js("document.querySelectorAll('img, b').length") == 0
    labels = run.js("Array.from(document.querySelectorAll('#pk-fig-0 .xtick text')).map(t => t.textContent)")
    for s in XSS:
        assert s in labels
    assert "a&b" in labels and "\"q'" in labels
    cells = run.js("Array.from(document.querySelectorAll('#pk-fig-1 .textpoint, #pk-fig-1 text')).map(t => t.textContent)")
    assert "<img/src=x/onerror=alert(1)>" in cells
    # the raw file holds no unescaped token anywhere (all data is compressed base64)
    raw = detail_page.read_text()
    assert "onerror" not in raw and raw.count("<script") == 4


def test_token_view_colours_the_query_row(model, tokens, open_page, tmp_path):
    fig = token_view(model, tokens, layer=1, head=0, example=1, query=12, per_row=8)
    run = open_page(write_html(fig, tmp_path / "tokens.html"))
    run.assert_clean()
    pats = attention_patterns(model, tokens).numpy()
    T = tokens.shape[1]
    z = np.array(run.js("document.getElementById('pk-fig-0').data[0].z"), dtype=np.float64).ravel()[:T]
    np.testing.assert_allclose(z, pats[1, 1, 0, 12], atol=1 / 254)
    # move the slider to query 5: the colours follow
    run.js("""() => { const gd = document.getElementById('pk-fig-0');
        const s = gd.layout.sliders[0].steps.find(s => s.label === '5'); return Plotly[s.method](gd, ...s.args); }""")
    z = np.array(run.js("document.getElementById('pk-fig-0').data[0].z"), dtype=np.float64).ravel()[:T]
    np.testing.assert_allclose(z, pats[1, 1, 0, 5], atol=1 / 254)
    text = hover_text(run, 0, 1, 3, 0)
    assert "key 3 w3" in text


def test_head_scores_click_opens_pattern(model, open_page, tmp_path):
    toks = repeated_tokens(model, seq_len=8, n=2)
    fig = head_scores(model, toks)
    run = open_page(write_html(fig, tmp_path / "scores.html"))
    run.assert_clean()
    pats = attention_patterns(model, toks[:1]).numpy()
    # click L1H1 in the induction heatmap (trace 4: score heatmaps are traces 0, 2, 4)
    active = run.js("""async () => { const gd = document.getElementById('pk-fig-0');
        gd.emit('plotly_click', {points: [{curveNumber: 4, customdata: 'L1H1', data: gd.data[4]}]});
        for (let i = 0; i < 50 && gd.layout.updatemenus[0].active !== 5; i++) await new Promise(r => setTimeout(r, 50));
        return gd.layout.updatemenus[0].active; }""")
    assert active == 5
    z = np.array(run.js("(() => { const d = document.getElementById('pk-fig-0').data; return d[d.length - 1].z; })()"))
    np.testing.assert_allclose(z, pats[0, 1, 1], atol=1 / 254)
    titles = run.js("Array.from(document.querySelectorAll('#pk-fig-0 .annotation-text')).map(t => t.textContent)")
    assert "pattern of L1H1" in titles


def test_encoder_pattern_is_not_triangular(open_page, tmp_path, minilm):
    tokens = minilm.to_tokens("the cat sat on the mat because the mat was warm")
    run = open_page(write_html(head_detail(minilm, tokens, layer=2, head=5), tmp_path / "enc.html"))
    run.assert_clean()
    z = np.array(run.js("document.getElementById('pk-fig-0').data[0].z"), dtype=np.float64)
    pats = attention_patterns(minilm, tokens).numpy()
    np.testing.assert_allclose(z, pats[0, 2, 5], atol=1 / 254)
    assert np.triu(z, 1).sum() > 0.5  # a bidirectional head attends forwards too
    ticks = run.js("Array.from(document.querySelectorAll('#pk-fig-0 .xtick text')).map(t => t.textContent)")
    assert ticks[0] == "[CLS]" and ticks.count("mat") == 2


def test_long_input_stays_light(open_page, tmp_path):
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=2, n_ctx=512, d_vocab=task.d_vocab, attn_only=True)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    tokens = torch.randint(3, task.d_vocab, (1, 512))
    fig = attention(model, tokens)
    path = write_html([fig, head_detail(model, tokens), token_view(model, tokens)], tmp_path / "long.html")
    assert path.stat().st_size < 2.5e6
    run = open_page(path)
    run.assert_clean()
    dims = run.js("document.getElementById('pk-fig-0').data.map(t => [t.z.length, t.z[0].length])")
    assert all(d == [64, 64] for d in dims)  # 512 tokens pooled into 64 bins of 8
    pats = attention_patterns(model, tokens).numpy()
    z = np.array(run.js("document.getElementById('pk-fig-0').data[3].z"))
    pooled = pats[0, 1, 1].reshape(64, 8, 64, 8).sum(-1).mean(1)
    np.testing.assert_allclose(z, pooled, atol=1 / 254)
    np.testing.assert_allclose(z.sum(-1), 1, atol=0.05)
    assert run.js("document.getElementById('pk-fig-1').data[0].z.length") == 128  # the detail view's window
