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
from probekit.viz.attention import VIEWS, dashboard

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


def choose(run, fig_index: int, label: str | None = None, *, index: int | None = None) -> None:
    """Pick a dropdown item of figure ``fig_index`` with real mouse clicks: its label, or its ``index``-th item."""
    page = run.page
    page.locator(f"#pk-fig-{fig_index} .updatemenu-header").click()
    items = page.locator(f"#pk-fig-{fig_index} .updatemenu-dropdown-button")
    item = items.nth(index) if label is None else items.filter(
        has=page.locator("text.updatemenu-item-text", has_text=re.compile(f"^{re.escape(label)}$")))
    item.click()


def wait_for(run, expr: str) -> None:
    run.page.wait_for_function(expr, timeout=10_000)


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
    strs = [model.to_str_tokens(row) for row in tokens]
    # hover head L1H2 of example 0 at query 9, key 4 (key 4 is the token "<b>bold</b>": shown as those characters)
    trace = 1 * H + 2
    text = hover_text(run, 0, trace + 1, 4, 9)
    assert strs[0][4] == "<b>bold</b>"
    assert "L1H2" in text and f"query 9 {strs[0][9]}" in text and f"key 4 {strs[0][4]}" in text
    assert abs(weight_in(text) - pats[0, 1, 2, 9, 4]) <= TOL
    assert run.js("document.querySelectorAll('#pk-fig-0 b').length") == 0
    # the example selector (a real click) shows the second example's heads, hover tokens included
    choose(run, 0, index=1)
    wait_for(run, f"document.getElementById('pk-fig-0')._fullData[{L * H}].visible === true")
    visible = run.js("document.getElementById('pk-fig-0')._fullData.map(t => t.visible === true)")
    assert visible == [False] * (L * H) + [True] * (L * H)
    z = run.js(f"document.getElementById('pk-fig-0').data[{L * H + trace}].z[9][4]")
    assert abs(z - pats[1, 1, 2, 9, 4]) <= 1 / 254
    text = hover_text(run, 0, trace + 1, 4, 9)
    assert f"query 9 {strs[1][9]}" in text and f"key 4 {strs[1][4]}" in text
    assert abs(weight_in(text) - pats[1, 1, 2, 9, 4]) <= TOL


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
    # the selector offers every layer and head; picking one (real clicks) shows its pattern
    L, H = model.cfg.n_layers, model.cfg.n_heads
    labels = run.js("document.getElementById('pk-fig-0').layout.updatemenus[0].buttons.map(b => b.label)")
    assert labels == [f"L{l}H{h}" for l in range(L) for h in range(H)]
    choose(run, 0, "L0H2")
    wait_for(run, "document.getElementById('pk-fig-0').data[0].hovertemplate.includes('L0H2')")
    text = hover_text(run, 0, 1, k, q)
    assert "L0H2" in text and abs(weight_in(text) - pats[0, 0, 2, q, k]) <= TOL
    z = np.array(run.js("document.getElementById('pk-fig-0').data[0].z"), dtype=np.float32)
    np.testing.assert_allclose(z, pats[0, 0, 2], atol=1 / 254)
    assert run.js("document.querySelector('#pk-fig-0 .gtitle').textContent").startswith("L0H2")


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


def click_cell(run, fig_index: int, subplot: int, x: float, y: float) -> None:
    """A real mouse click at data point (x, y) of subplot ``subplot`` (1-based), placed by the plot's own axes."""
    run.page.locator(f"#pk-fig-{fig_index}").scroll_into_view_if_needed()
    px = run.js("""([fig, sub, x, y]) => {
        const gd = document.getElementById('pk-fig-' + fig), fl = gd._fullLayout;
        const xa = fl[sub === 1 ? 'xaxis' : 'xaxis' + sub], ya = fl[sub === 1 ? 'yaxis' : 'yaxis' + sub];
        const r = gd.querySelector('.main-svg').getBoundingClientRect();
        return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)]; }""", [fig_index, subplot, x, y])
    run.page.mouse.move(px[0] - 3, px[1] - 3)
    run.page.mouse.click(*px)


def test_head_scores_click_opens_pattern(model, open_page, tmp_path):
    toks = repeated_tokens(model, seq_len=8, n=2)
    fig = head_scores(model, toks)
    run = open_page(write_html(fig, tmp_path / "scores.html"))
    run.assert_clean()
    pats = attention_patterns(model, toks[:1]).numpy()
    H = model.cfg.n_heads
    active = run.js("document.getElementById('pk-fig-0').layout.updatemenus[0].active")
    layer, head = (0, 2) if active != 2 else (1, 1)  # a head other than the one open now
    # a real click on that head's cell of the induction heatmap (the third panel)
    click_cell(run, 0, 3, head, layer)
    wait_for(run, f"document.getElementById('pk-fig-0').layout.updatemenus[0].active === {layer * H + head}")
    z = np.array(run.js("(() => { const d = document.getElementById('pk-fig-0').data; return d[d.length - 1].z; })()"))
    np.testing.assert_allclose(z, pats[0, layer, head], atol=1 / 254)
    titles = run.js("Array.from(document.querySelectorAll('#pk-fig-0 .annotation-text')).map(t => t.textContent)")
    assert f"pattern of L{layer}H{head}" in titles
    header = run.js("document.querySelector('#pk-fig-0 .updatemenu-header .updatemenu-item-text').textContent")
    assert header == f"L{layer}H{head}"
    # hover on the pattern panel: tokens and the head's weight
    strs = model.to_str_tokens(toks[0])
    text = hover_text(run, 0, 4, 3, 12)
    assert f"query 12 {strs[12]}" in text and f"key 3 {strs[3]}" in text and f"L{layer}H{head}" in text
    assert abs(weight_in(text) - pats[0, layer, head, 12, 3]) <= TOL


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


def test_dashboard_page_draws_every_view(model, tokens, open_page, tmp_path):
    """The page `probekit attention` writes: four views, one data store; picking a head decodes its pattern."""
    figs = dashboard(model, tokens)
    run = open_page(write_html(figs, tmp_path / "dash.html"))
    run.assert_clean()
    assert run.js("Object.values(window.__pk_afterplot).map(n => n >= 1)") == [True] * 4
    views = run.js("[0, 1, 2, 3].map(i => document.getElementById('pk-fig-' + i).layout.meta.probekit.view)")
    assert views == list(VIEWS)
    pats = attention_patterns(model, tokens).numpy()
    L, H = model.cfg.n_layers, model.cfg.n_heads
    # the detail view: pick L1H0 (real clicks); its pattern is the grid's L1H0 heatmap, decoded once
    choose(run, 2, "L1H0")
    wait_for(run, "document.getElementById('pk-fig-2').data[0].hovertemplate.includes('L1H0')")
    z = np.array(run.js("document.getElementById('pk-fig-2').data[0].z"), dtype=np.float32)
    np.testing.assert_allclose(z, pats[0, 1, 0], atol=1 / 254)
    assert run.js(f"""document.getElementById('pk-fig-2').data[0].z ===
        document.getElementById('pk-fig-0').data[{1 * H + 0}].z""")
    # the score view: a real click on L0H3 in the previous-token panel opens the same pattern object
    click_cell(run, 1, 1, 3, 0)
    wait_for(run, "document.getElementById('pk-fig-1').layout.updatemenus[0].active === 3")
    same = run.js("""(() => { const d = document.getElementById('pk-fig-1').data;
        return d[d.length - 1].z === document.getElementById('pk-fig-0').data[3].z; })()""")
    assert same
    z = np.array(run.js("(() => { const d = document.getElementById('pk-fig-1').data; return d[d.length - 1].z; })()"))
    np.testing.assert_allclose(z, pats[0, 0, 3], atol=1 / 254)
    assert L * H == len(run.js("document.getElementById('pk-fig-1').layout.updatemenus[0].buttons"))


def test_long_input_stays_light(open_page, tmp_path):
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=2, d_model=32, n_heads=2, n_ctx=512, d_vocab=task.d_vocab, attn_only=True)
    model = pk.build_model(cfg, tokenizer=task.tokenizer())
    tokens = torch.randint(3, task.d_vocab, (1, 512))
    fig = attention(model, tokens)
    path = write_html([fig, head_detail(model, tokens, layer=1, head=0), token_view(model, tokens),
                       head_scores(model, tokens)], tmp_path / "long.html")
    assert path.stat().st_size < 2.5e6
    run = open_page(path)
    run.assert_clean()
    dims = run.js("document.getElementById('pk-fig-0').data.map(t => [t.z.length, t.z[0].length])")
    assert all(d == [64, 64] for d in dims)  # 512 tokens pooled into 64 bins of 8
    pats = attention_patterns(model, tokens).numpy()
    strs = model.to_str_tokens(tokens[0])
    z = np.array(run.js("document.getElementById('pk-fig-0').data[3].z"))
    pooled = pats[0, 1, 1].reshape(64, 8, 64, 8).sum(-1).mean(1)
    np.testing.assert_allclose(z, pooled, atol=1 / 254)
    np.testing.assert_allclose(z.sum(-1), 1, atol=0.05)
    # the grid's hover names each bin's positions and tokens
    text = hover_text(run, 0, 4, 2, 5)  # bins 2 and 5 of 64 (the axes are the bins)
    assert "L1H1" in text and f"queries 40–47 {strs[40]} … {strs[47]}" in text and f"keys 16–23 {strs[16]}" in text
    assert abs(weight_in(text) - pooled[5, 2]) <= TOL
    window = slice(512 - 128, 512)
    assert run.js("document.getElementById('pk-fig-1').data[0].z.length") == 128  # the detail view's window
    # the score view's pattern panel holds the same window, not 512 × 512, for every head
    panel = "(() => { const d = document.getElementById('pk-fig-3').data; return d[d.length - 1]; })()"
    assert run.js(f"{panel}.z.length") == 128 and run.js(f"{panel}.x[0]") == 384
    choose(run, 3, "L1H0")
    wait_for(run, f"{panel}.hovertemplate.includes('L1H0')")
    titles = run.js("Array.from(document.querySelectorAll('#pk-fig-3 .annotation-text')).map(t => t.textContent)")
    assert "pattern of L1H0, positions 384–511" in titles
    z = np.array(run.js(f"{panel}.z"))
    np.testing.assert_allclose(z, pats[0, 1, 0, window, window], atol=1 / 254)
    assert run.js(f"{panel}.z === document.getElementById('pk-fig-1').data[0].z")  # one copy for both views
    text = hover_text(run, 3, 4, 400, 450)
    assert f"query 450 {strs[450]}" in text and f"key 400 {strs[400]}" in text
    assert abs(weight_in(text) - pats[0, 1, 0, 450, 400]) <= TOL
