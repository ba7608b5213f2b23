"""Attention dashboards: every head at a glance, one head in detail, a token view, head scores.

Each view returns a ``plotly.graph_objects.Figure`` (shown inline in notebooks;
written to one compact offline page by :func:`probekit.viz.write_html`). The
selectors are Plotly's own dropdowns and sliders, so they work in a notebook as
well as in the page. Patterns come from ``model.run_with_cache`` on
``blocks.L.attn.hook_pattern`` (:func:`probekit.heads.attention_patterns`);
positions are numeric axes labelled with the escaped token strings, so repeated
tokens stay distinct. Causal and bidirectional (encoder) models are drawn the
same way — an encoder's patterns are simply not triangular.

Long inputs stay light: the grid pools each pattern into at most ``max_cells``
bins per axis (keys summed, queries averaged, so rows still sum to one); the
detail and score views hold every head over one window of at most
``max_tokens`` positions (fewer when all heads together would pass
``max_values``), the same window in both, so a page stores each head's pattern
once and decodes it only when the head is picked; the token view offers at most
``max_tokens`` queries.

Recommended call (demo / report)::

    figs = dashboard(model, tokens[:2])                # grid, scores, detail, token view
    pk.viz.write_html(figs, "attention.html")

Visual grammar after circuitsvis' ``attention_heads`` and bertviz's model view
(Vig 2019, "A Multiscale Visualization of Attention in the Transformer Model").
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch  # noqa: F401 - the docstring examples use it
from plotly.subplots import make_subplots

import probekit as pk  # noqa: F401 - the docstring examples use it
from probekit import heads as pk_heads
from probekit.errors import ProbekitError
from probekit.viz.basic import ATTENTION_COLORS, TOOLBAR_PX, Frame, escape, label_px, token_axis, token_labels
from probekit.viz.patterns import (
    MAX_VALUES,
    Tokens,
    as_tokens,
    bin_labels,
    check_index,
    head_window,
    pair_text,
    patterns,
    pool,
    position_labels,
    view_meta,
)
from probekit.viz.scores import head_scores


def attention(
    model,
    tokens: Tokens,
    *,
    layers: Sequence[int] | None = None,
    max_cells: int = 64,
    max_examples: int = 8,
    title: str | None = None,
) -> go.Figure:
    """Every layer × head as a grid of small query × key heatmaps, with a selector for the example.

    Args:
        model: a ``TransformerBridge`` (causal or bidirectional).
        tokens: token ids ``[batch, pos]`` or ``[pos]``, or a text / list of equal-length texts.
        layers: which layers (rows; default all).
        max_cells: longest side of one head's heatmap; longer inputs are pooled into bins.
        max_examples: draw at most this many examples of the batch.
        title: figure title.

    Returns:
        A figure with one heatmap per head and example (``layer × head × examples`` traces,
        meta ``probekit.grid = [layers, heads, examples]``) on hidden category axes named
        ``POS TOKEN`` (pooled: ``FIRST–LAST TOKEN … TOKEN``); hover shows the head, the query
        and key with their (escaped) tokens, and the weight.

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> len(attention(model, torch.randint(0, 20, (2, 10))).data)  # 2 examples × 2 layers × 4 heads
        16
    """
    t, pats, strs = patterns(model, tokens, layers)
    B, L, H, T, _ = pats.shape
    B = min(B, max_examples)
    layer_ids = list(range(model.cfg.n_layers)) if layers is None else [int(x) for x in layers]
    pooled, starts = pool(pats[:B], max_cells)
    size = int(starts[1] - starts[0]) if len(starts) > 1 else 1
    # hidden category axes named "POS TOKEN" (or a bin's span) give the hover its tokens at 2 × T strings a head,
    # where per-cell hover text would be T² (in a notebook, every head carries its own copy)
    names = [position_labels(strs[b], starts) if size == 1 else bin_labels(strs[b], starts) for b in range(B)]
    where = "query %{y}<br>key %{x}" if size == 1 else "queries %{y}<br>keys %{x}"
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.02 / max(1, H / 4), vertical_spacing=0.02 / max(1, L / 4),
                        row_titles=[f"L{l}" for l in layer_ids], column_titles=[f"H{h}" for h in range(H)])
    for b in range(B):
        for i, l in enumerate(layer_ids):
            for h in range(H):
                fig.add_trace(go.Heatmap(
                    z=pooled[b, i, h], x=names[b], y=names[b], coloraxis="coloraxis", visible=b == 0,
                    name=f"L{l}H{h}", hovertemplate=f"L{l}H{h}<br>{where}<br>weight %{{z:.3f}}<extra></extra>",
                ), row=i + 1, col=h + 1)
    # hidden axes: 2 × layers × heads axes with ticks and grids are most of the drawing time
    fig.update_xaxes(visible=False, type="category")
    fig.update_yaxes(visible=False, type="category", autorange="reversed")
    cell = 70 if H > 6 else 110
    menu_px = 40 if B > 1 else 0
    frame = Frame(20 + cell * H + 110, TOOLBAR_PX + 34 + menu_px + 26 + cell * L + 20,
                  l=20, r=110, t=TOOLBAR_PX + 34 + menu_px + 26, b=20)
    menus = []
    if B > 1:
        buttons = []
        for b in range(B):
            vis = [bb == b for bb in range(B) for _ in range(L * H)]
            preview = " ".join(strs[b][:6])
            buttons.append({"label": f"example {b}: {escape(preview, 40)}", "method": "restyle",
                            "args": [{"visible": vis}]})
        menus.append({"buttons": buttons, "x": 0, "xanchor": "left", "y": frame.y(TOOLBAR_PX + 36), "yanchor": "top",
                      "direction": "down", "showactive": True})
    pooled_note = "" if size == 1 else f" (pooled over blocks of {size} tokens)"
    fig.update_layout(
        **frame.layout(),
        title=frame.title(escape(title or f"attention patterns, {L} layers × {H} heads, {T} tokens{pooled_note}"),
                          left_px=frame.l),
        coloraxis={"colorscale": ATTENTION_COLORS, "cmin": 0, "cmax": 1,
                   "colorbar": {"title": {"text": "weight"}, "x": frame.x(frame.width - 70), "xanchor": "left",
                                "len": min(1.0, 420 / (cell * L)), "y": 1, "yanchor": "top", "thickness": 16}},
        updatemenus=menus,
        meta=view_meta("grid", grid=[L, H, B]),
    )
    return fig


def head_detail(
    model,
    tokens: Tokens,
    *,
    layer: int = 0,
    head: int = 0,
    example: int = 0,
    window: tuple[int, int] | None = None,
    max_tokens: int = 128,
    max_values: int = MAX_VALUES,
) -> go.Figure:
    """One head's query × key pattern with token strings on both axes and a selector of every layer and head.

    Args:
        model: a ``TransformerBridge``.
        tokens: token ids ``[batch, pos]`` or ``[pos]``, or a text.
        layer: the layer shown first.
        head: the head shown first.
        example: which sequence of the batch.
        window: positions ``(start, stop)`` to show (default: the last ``max_tokens``).
        max_tokens: longest default window.
        max_values: the default window shrinks so that every head's window together holds at
            most this many values (every head stays selectable).

    Returns:
        A figure with one heatmap; hover shows ``query POS TOKEN``, ``key POS TOKEN`` and the
        weight; the dropdown (``updatemenus[0]``, labels ``L{l}H{h}``, one per head) switches heads.

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> head_detail(model, torch.randint(0, 20, (1, 10)), layer=1, head=2).data[0].z.shape
        (10, 10)
    """
    t, pats, strs = patterns(model, tokens)
    B, L, H, T, _ = pats.shape
    example, layer, head = check_index("example", example, B), check_index("layer", layer, L), \
        check_index("head", head, H)
    start, stop = head_window(T, L * H, max_tokens=max_tokens, max_values=max_values, window=window)
    pos = np.arange(start, stop)
    n = len(pos)
    w = pats[example, :, :, start:stop, start:stop]
    strs_b = strs[example][start:stop]

    def hover(l: int, h: int) -> str:
        return f"%{{text}}<br>weight %{{z:.3f}}<extra>L{l}H{h}</extra>"

    def title(l: int, h: int) -> str:
        return f"L{l}H{h}: query × key attention, positions {start}–{stop - 1}"

    font = 12 if n <= 40 else 10
    lab = label_px(strs_b, font_px=font)
    side = min(720, max(300, 14 * n))
    # top: toolbar, the row of menu and title, the "key" title, the key labels (rotated 60°)
    frame = Frame(60 + lab + side + 110, TOOLBAR_PX + 44 + 24 + int(0.87 * lab) + side + 24,
                  l=60 + lab, r=110, t=TOOLBAR_PX + 44 + 24 + int(0.87 * lab), b=24)
    fig = go.Figure(go.Heatmap(z=w[layer, head], x=pos, y=pos, text=pair_text(strs[example], pos),
                               hovertemplate=hover(layer, head), colorscale=ATTENTION_COLORS, zmin=0, zmax=1,
                               colorbar={"title": {"text": "weight"}, "len": min(1.0, 360 / side), "y": 1,
                                         "yanchor": "top", "thickness": 16}))
    pairs = [(l, h) for l in range(L) for h in range(H)]
    buttons = [{"label": f"L{l}H{h}", "method": "update",
                "args": [{"z": [w[l, h]], "hovertemplate": [hover(l, h)]}, {"title.text": title(l, h)}]}
               for l, h in pairs]
    axis = {"tickfont": {"size": font}, "automargin": False}
    fig.update_xaxes(**token_axis(strs_b, pos, title="key"), **axis, side="top", tickangle=-60)
    fig.update_yaxes(**token_axis(strs_b, pos, title="query"), **axis, autorange="reversed")
    fig.update_layout(
        **frame.layout(),
        title=frame.title(title(layer, head), left_px=120),
        updatemenus=[{"buttons": buttons, "active": pairs.index((layer, head)), "x": frame.x(12), "xanchor": "left",
                      "y": frame.y(TOOLBAR_PX + 4), "yanchor": "top", "direction": "down", "showactive": True}],
        meta=view_meta("detail", window=[start, stop]),
    )
    return fig


def token_view(
    model,
    tokens: Tokens,
    *,
    layer: int = 0,
    head: int = 0,
    example: int = 0,
    query: int | None = None,
    per_row: int = 16,
    max_tokens: int = 128,
) -> go.Figure:
    """Pick a query token and see the attention it pays to every token, coloured over the text.

    Args:
        model: a ``TransformerBridge``.
        tokens: token ids ``[batch, pos]`` or ``[pos]``, or a text.
        layer: the head's layer.
        head: the head.
        example: which sequence of the batch.
        query: the query position selected first (default the last).
        per_row: tokens per line of text.
        max_tokens: the slider offers at most the last ``max_tokens`` query positions.

    Returns:
        A figure: the text as a grid of cells (``per_row`` per line) coloured by weight, the
        query outlined; the slider (``sliders[0]``, one step per query position) picks the query.

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=4, d_vocab=20))
        >>> len(token_view(model, torch.randint(0, 20, (1, 10)), head=3).layout.sliders[0].steps)
        10
    """
    t, pats, strs = patterns(model, tokens, layers=[check_index("layer", layer, model.cfg.n_layers)])
    B, _, H, T, _ = pats.shape
    example, head = check_index("example", example, B), check_index("head", head, H)
    query = T - 1 if query is None else check_index("query", query, T)
    if per_row < 1:
        raise ProbekitError(f"per_row must be at least 1, got {per_row}")
    p = pats[example, 0, head]  # [q k]
    rows = int(np.ceil(T / per_row))
    labels = token_labels(strs[example], max_len=32)

    def grid(values: np.ndarray) -> np.ndarray:
        g = np.full(rows * per_row, np.nan, dtype=np.float32)
        g[:T] = values
        return g.reshape(rows, per_row)

    text = np.full(rows * per_row, "", dtype=object)
    text[:T] = labels
    text = text.reshape(rows, per_row).tolist()
    hover_pos = np.full(rows * per_row, -1)
    hover_pos[:T] = np.arange(T)
    fig = go.Figure(go.Heatmap(
        z=grid(p[query]), text=text, customdata=hover_pos.reshape(rows, per_row), texttemplate="%{text}",
        textfont={"size": 12}, hovertemplate="key %{customdata} %{text}<br>weight %{z:.3f}<extra></extra>",
        colorscale=ATTENTION_COLORS, zmin=0, zmax=1, xgap=2, ygap=2, hoverongaps=False,
        colorbar={"title": {"text": "weight"}, "len": 1, "thickness": 16},
    ))

    def box(q: int) -> dict:
        r, c = divmod(q, per_row)
        return {"x0": c - 0.5, "x1": c + 0.5, "y0": r - 0.5, "y1": r + 0.5}

    def title(q: int) -> str:
        return f"L{layer}H{head}: attention from query {q} {labels[q]}"

    first = max(0, T - max_tokens)
    steps = [{"label": str(q), "method": "update",
              "args": [{"z": [grid(p[q])]}, {**{f"shapes[0].{k}": v for k, v in box(q).items()}, "title.text": title(q)}]}
             for q in range(first, T)]
    fig.update_xaxes(visible=False, range=[-0.5, per_row - 0.5])
    fig.update_yaxes(visible=False, autorange="reversed")
    frame = Frame(20 + 64 * per_row + 100, TOOLBAR_PX + 44 + 36 * rows + 100, l=20, r=100, t=TOOLBAR_PX + 44, b=100)
    fig.update_layout(
        **frame.layout(),
        title=frame.title(title(query), left_px=frame.l),
        shapes=[{"type": "rect", "line": {"color": "crimson", "width": 3}, **box(query)}],
        sliders=[{"active": query - first, "steps": steps, "currentvalue": {"prefix": "query position "},
                  "pad": {"t": 30}, "ticklen": 0 if len(steps) > 32 else 4}],
        meta=view_meta("tokens"),
    )
    return fig


def dashboard(
    model,
    tokens: Tokens,
    *,
    views: Sequence[str] = ("grid", "scores", "detail", "tokens"),
    layer: int | None = None,
    head: int | None = None,
    scores: pk_heads.HeadScores | None = None,
) -> list[go.Figure]:
    """The figures of a dashboard page (for :func:`probekit.viz.write_html`), in order.

    Args:
        model: a ``TransformerBridge``.
        tokens: the examples; the grid shows all of them, the other views the first.
        views: names from :data:`VIEWS`.
        layer: the head the detail and token views open on (default: the best induction head
            on repeated random tokens, or if none scores 0.1, the best head of any kind).
        head: see ``layer``.
        scores: head scores for the score view (default: on :func:`probekit.heads.repeated_tokens`).

    The score and detail views hold every head over the same window of positions, so a page
    from :func:`probekit.viz.write_html` stores each head's pattern once (and the grid's too
    where the input is no longer than its ``max_cells``).

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> [f.layout.meta["probekit"]["view"] for f in dashboard(model, torch.randint(0, 20, (1, 12)))]
        ['grid', 'scores', 'detail', 'tokens']
    """
    bad = [v for v in views if v not in VIEWS]
    if bad:
        from probekit.errors import unknown

        raise unknown("view", bad[0], VIEWS)
    t = as_tokens(model, tokens)
    if scores is None and ("scores" in views or layer is None or head is None):
        n_rep = max(1, min(20, (model.cfg.n_ctx - 1) // 2))
        scores = pk_heads.head_scores(model, pk_heads.repeated_tokens(model, seq_len=n_rep, n=8))
    if layer is None or head is None:
        # the best induction head; where there is none worth a look (an encoder), the best head of any kind
        best = scores.top("induction", 1)[0]
        if best[2] < 0.1:
            best = max((scores.top(k, 1)[0] for k in pk_heads.SCORE_KINDS), key=lambda x: x[2])
        layer, head = best[:2]
    figs = []
    for v in views:
        if v == "grid":
            figs.append(attention(model, t))
        elif v == "scores":
            figs.append(head_scores(model, t[:1], scores=scores))
        elif v == "detail":
            figs.append(head_detail(model, t[:1], layer=layer, head=head))
        else:
            figs.append(token_view(model, t[:1], layer=layer, head=head))
    return figs


#: the dashboard views by name (CLI choices and test parametrization read this).
VIEWS: dict[str, object] = {"grid": attention, "scores": head_scores, "detail": head_detail, "tokens": token_view}


class _CallableModule(types.ModuleType):
    """This module shares its name with its main function: importing ``probekit.viz.attention``
    sets the package attribute ``probekit.viz.attention`` to the module, shadowing the lazy
    export of the function. Calling the module calls :func:`attention`, so
    ``pk.viz.attention(model, tokens)`` works whatever was imported first."""

    def __call__(self, *args, **kwargs) -> go.Figure:
        return attention(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["VIEWS", "attention", "dashboard", "head_detail", "head_scores", "token_view"]
