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
detail view shows a window of at most ``max_tokens`` positions; the token view
offers at most ``max_tokens`` queries.

Recommended call (demo / report)::

    fig = pk.viz.attention(model, tokens[:2])          # grid, example selector
    pk.viz.write_html(fig, "attention.html")
    pk.viz.head_scores(model, tokens[:1], scores=pk.heads.head_scores(model, tokens))

Visual grammar after circuitsvis' ``attention_heads`` and bertviz's model view
(Vig 2019, "A Multiscale Visualization of Attention in the Transformer Model").
"""

from __future__ import annotations

import logging
import sys
import types
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from jaxtyping import Int
from plotly.subplots import make_subplots
from torch import Tensor

import probekit as pk
from probekit import heads as pk_heads
from probekit.errors import ProbekitError
from probekit.viz.basic import ATTENTION_COLORS, escape, token_axis, token_labels

log = logging.getLogger(__name__)

#: figures of attention patterns are colour data: uint8 (1/254 steps) is below what the eye tells apart.
_META = {"probekit": {"precision": "uint8"}}

Tokens = Int[Tensor, "batch pos"] | Int[Tensor, " pos"] | str | Sequence[str]


def _tokens(model, tokens: Tokens) -> Tensor:
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        if getattr(model, "tokenizer", None) is None:
            raise ProbekitError("text input needs a model with a tokenizer; pass token ids instead")
        texts = [tokens] if isinstance(tokens, str) else list(tokens)
        rows = [model.to_tokens(t, truncate=False)[0] for t in texts]
        if len({len(r) for r in rows}) > 1:
            raise ProbekitError(f"texts tokenize to different lengths {[len(r) for r in rows]}; pass one text at a time")
        return torch.stack(rows).cpu()
    if not isinstance(tokens, Tensor):
        tokens = torch.as_tensor(tokens)
    return tokens[None] if tokens.ndim == 1 else tokens


def _str_tokens(model, tokens: Tensor) -> list[list[str]]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [[str(int(t)) for t in row] for row in tokens]
    return [list(model.to_str_tokens(row)) for row in tokens]


def _data(model, tokens: Tokens, layers: Sequence[int] | None = None):
    t = _tokens(model, tokens)
    patterns = pk_heads.attention_patterns(model, t, layers=layers).numpy()  # [batch layer head q k]
    return t, patterns, _str_tokens(model, t)


def _check_index(name: str, value: int, n: int) -> int:
    if not isinstance(value, (int, np.integer)) or not 0 <= value < n:
        raise ProbekitError(f"{name} must be in 0..{n - 1}, got {value!r}")
    return int(value)


def _pool(p: np.ndarray, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool the last two axes ``[..., q, k]`` into at most ``max_cells`` bins: keys summed, queries averaged."""
    T = p.shape[-1]
    if T <= max_cells:
        return p, np.arange(T)
    size = int(np.ceil(T / max_cells))
    n = int(np.ceil(T / size))
    pad = n * size - T
    if pad:
        widths = [(0, 0)] * (p.ndim - 2) + [(0, pad), (0, pad)]
        p = np.pad(p, widths)
    shape = p.shape[:-2] + (n, size, n, size)
    summed = p.reshape(shape).sum(axis=-1)  # keys summed within a bin
    counts = np.full(n, size, dtype=np.float32)
    if pad:
        counts[-1] = size - pad
    pooled = summed.sum(axis=-2) / counts[:, None]  # queries averaged
    return pooled.astype(np.float32), np.arange(n) * size


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
        meta ``probekit.grid = [layers, heads, examples]``); hover shows layer, head, query and
        key positions and the weight.

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> len(attention(model, torch.randint(0, 20, (2, 10))).data)  # 2 examples × 2 layers × 4 heads
        16
    """
    t, pats, strs = _data(model, tokens, layers)
    B, L, H, T, _ = pats.shape
    B = min(B, max_examples)
    layer_ids = list(range(model.cfg.n_layers)) if layers is None else [int(x) for x in layers]
    pooled, starts = _pool(pats[:B], max_cells)
    size = int(starts[1] - starts[0]) if len(starts) > 1 else 1
    fig = make_subplots(rows=L, cols=H, horizontal_spacing=0.02 / max(1, H / 4), vertical_spacing=0.02 / max(1, L / 4),
                        row_titles=[f"L{l}" for l in layer_ids], column_titles=[f"H{h}" for h in range(H)])
    where = "query %{y}, key %{x}" if size == 1 else f"queries %{{y}}+{size}, keys %{{x}}+{size}"
    for b in range(B):
        for i, l in enumerate(layer_ids):
            for h in range(H):
                fig.add_trace(go.Heatmap(
                    z=pooled[b, i, h], x=starts, y=starts, coloraxis="coloraxis", visible=b == 0,
                    name=f"L{l}H{h}", hovertemplate=f"L{l}H{h} · {where}<br>weight %{{z:.3f}}<extra></extra>",
                ), row=i + 1, col=h + 1)
    # hidden axes: 2 × layers × heads axes with ticks and grids are most of the drawing time
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    n_per = L * H
    menus = []
    if B > 1:
        buttons = []
        for b in range(B):
            vis = [bb == b for bb in range(B) for _ in range(n_per)]
            preview = " ".join(strs[b][:6])
            buttons.append({"label": f"example {b}: {escape(preview, 40)}", "method": "restyle",
                            "args": [{"visible": vis}]})
        menus.append({"buttons": buttons, "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom", "pad": {"b": 30},
                      "direction": "down", "showactive": True})
    cell = 70 if H > 6 else 110
    pooled_note = "" if size == 1 else f" (pooled over blocks of {size} tokens)"
    fig.update_layout(
        title={"text": escape(title or f"attention patterns, {L} layers × {H} heads, {T} tokens{pooled_note}"),
               "y": 0.995, "yanchor": "top"},
        coloraxis={"colorscale": ATTENTION_COLORS, "cmin": 0, "cmax": 1, "colorbar": {"title": {"text": "weight"}}},
        updatemenus=menus, width=max(500, 80 + cell * H), height=max(420, 140 + cell * L),
        margin={"l": 40, "r": 60, "t": 110, "b": 20},
        meta={**_META, "probekit": {**_META["probekit"], "view": "grid", "grid": [L, H, B]}},
    )
    return fig


def _window(T: int, max_tokens: int, window: tuple[int, int] | None) -> tuple[int, int]:
    if window is None:
        return (max(0, T - max_tokens), T)
    start, stop = (int(w) for w in window)
    if not 0 <= start < stop <= T:
        raise ProbekitError(f"window must satisfy 0 <= start < stop <= {T}, got {window!r}")
    return start, stop


def _pair_text(strs: list[str], positions: np.ndarray) -> list[list[str]]:
    labels = token_labels([strs[p] for p in positions], max_len=32)
    return [[f"query {q} {labels[i]}<br>key {k} {labels[j]}" for j, k in enumerate(positions)]
            for i, q in enumerate(positions)]


def head_detail(
    model,
    tokens: Tokens,
    *,
    layer: int = 0,
    head: int = 0,
    example: int = 0,
    window: tuple[int, int] | None = None,
    max_tokens: int = 128,
    max_values: int = 2_000_000,
) -> go.Figure:
    """One head's query × key pattern with token strings on both axes and a layer/head selector.

    Args:
        model: a ``TransformerBridge``.
        tokens: token ids ``[batch, pos]`` or ``[pos]``, or a text.
        layer: the layer shown first.
        head: the head shown first.
        example: which sequence of the batch.
        window: positions ``(start, stop)`` to show (default: the last ``max_tokens``).
        max_tokens: longest default window.
        max_values: if every head's window together would exceed this many values, the selector
            offers only the heads of ``layer``.

    Returns:
        A figure with one heatmap; hover shows ``query POS TOKEN``, ``key POS TOKEN`` and the
        weight; the dropdown (``updatemenus[0]``, labels ``L{l}H{h}``) switches heads.

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> head_detail(model, torch.randint(0, 20, (1, 10)), layer=1, head=2).data[0].z.shape
        (10, 10)
    """
    t, pats, strs = _data(model, tokens)
    B, L, H, T, _ = pats.shape
    example, layer, head = _check_index("example", example, B), _check_index("layer", layer, L), \
        _check_index("head", head, H)
    start, stop = _window(T, max_tokens, window)
    pos = np.arange(start, stop)
    w = pats[example, :, :, start:stop, start:stop]
    pairs = [(l, h) for l in range(L) for h in range(H)]
    if len(pairs) * len(pos) ** 2 > max_values:
        pairs = [(layer, h) for h in range(H)]
    strs_b = strs[example]
    text = _pair_text(strs_b, pos)

    def hover(l: int, h: int) -> str:
        return f"%{{text}}<br>weight %{{z:.3f}}<extra>L{l}H{h}</extra>"

    def title(l: int, h: int) -> str:
        return f"L{l}H{h}: query × key attention, positions {start}–{stop - 1}"

    fig = go.Figure(go.Heatmap(z=w[layer, head], x=pos, y=pos, text=text, hovertemplate=hover(layer, head),
                               colorscale=ATTENTION_COLORS, zmin=0, zmax=1, colorbar={"title": {"text": "weight"}}))
    buttons = [{"label": f"L{l}H{h}", "method": "update",
                "args": [{"z": [w[l, h]], "hovertemplate": [hover(l, h)]}, {"title.text": title(l, h)}]}
               for l, h in pairs]
    active = pairs.index((layer, head))
    fig.update_xaxes(**token_axis(strs_b[start:stop], pos, title="key"), side="top", tickangle=-60)
    fig.update_yaxes(**token_axis(strs_b[start:stop], pos, title="query"), autorange="reversed")
    side = min(900, max(420, 12 * len(pos) + 200))
    fig.update_layout(
        title={"text": title(layer, head), "y": 0.01, "yanchor": "bottom"},
        updatemenus=[{"buttons": buttons, "active": active, "x": 0, "xanchor": "right", "y": 1.0, "yanchor": "bottom",
                      "direction": "down", "showactive": True}],
        width=side + 160, height=side, margin={"t": 90, "b": 60, "l": 90},
        meta={**_META, "probekit": {**_META["probekit"], "view": "detail"}},
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
    t, pats, strs = _data(model, tokens, layers=[_check_index("layer", layer, model.cfg.n_layers)])
    B, _, H, T, _ = pats.shape
    example, head = _check_index("example", example, B), _check_index("head", head, H)
    query = T - 1 if query is None else _check_index("query", query, T)
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
        colorbar={"title": {"text": "weight"}},
    ))

    def box(q: int) -> dict:
        r, c = divmod(q, per_row)
        return {"x0": c - 0.5, "x1": c + 0.5, "y0": r - 0.5, "y1": r + 0.5}

    first = max(0, T - max_tokens)
    steps = [{"label": str(q), "method": "update",
              "args": [{"z": [grid(p[q])]}, {**{f"shapes[0].{k}": v for k, v in box(q).items()},
                                             "title.text": f"L{layer}H{head}: attention from query {q} {labels[q]}"}]}
             for q in range(first, T)]
    fig.update_xaxes(visible=False, range=[-0.5, per_row - 0.5])
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(
        title={"text": f"L{layer}H{head}: attention from query {query} {labels[query]}"},
        shapes=[{"type": "rect", "line": {"color": "crimson", "width": 3}, **box(query)}],
        sliders=[{"active": query - first, "steps": steps, "currentvalue": {"prefix": "query position "},
                  "pad": {"t": 30}, "ticklen": 0 if len(steps) > 32 else 4}],
        width=max(520, 70 * per_row), height=220 + 36 * rows, margin={"t": 60, "b": 40},
        meta={**_META, "probekit": {**_META["probekit"], "view": "tokens"}},
    )
    return fig


def head_scores(
    model,
    tokens: Tokens | None = None,
    *,
    scores: pk_heads.HeadScores | None = None,
    mark: float | dict[str, float] = 0.3,
    example: int = 0,
    seq_len: int = 20,
) -> go.Figure:
    """Previous-token, duplicate-token and induction scores as layer × head heatmaps; a head opens its pattern.

    Scores are :func:`probekit.heads.head_scores` (TransformerLens' head-detector
    definitions). Heads scoring at least ``mark`` are outlined. The right panel
    shows the selected head's pattern on ``tokens[example]``; pick the head in
    the dropdown, or click it in a score heatmap (in pages from
    :func:`probekit.viz.write_html`).

    Args:
        model: a ``TransformerBridge``.
        tokens: sequences to score and draw (default: :func:`probekit.heads.repeated_tokens`).
        scores: precomputed scores (else computed on ``tokens``).
        mark: outline threshold, one for all kinds or per kind name.
        example: which sequence the pattern panel shows.
        seq_len: length of the repeated segment when ``tokens`` is not given.

    Returns:
        A figure with three score heatmaps (``customdata`` ``L{l}H{h}``), one outline
        scatter per kind (``name`` ``marked <kind>``, points at (head, layer)), and the
        pattern heatmap (last trace; ``updatemenus[0]`` switches heads).

    Example:
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> fig = head_scores(model)  # scores and pattern on [BOS] A A repeated random tokens
        >>> [t.name for t in fig.data][:2]
        ['previous_token', 'marked previous_token']
    """
    if tokens is None:
        seq_len = max(1, min(seq_len, (model.cfg.n_ctx - 1) // 2))
        tokens = pk_heads.repeated_tokens(model, seq_len=seq_len, n=8)
    t = _tokens(model, tokens)
    if scores is None:
        scores = pk_heads.head_scores(model, t)
    kinds = pk_heads.SCORE_KINDS
    thresholds = {k: (mark if isinstance(mark, (int, float)) else mark.get(k, 0.3)) for k in kinds}
    L, H = scores.previous_token.shape
    if (L, H) != (model.cfg.n_layers, model.cfg.n_heads):
        raise ProbekitError(f"scores are for {L}×{H} heads but the model has {model.cfg.n_layers}×{model.cfg.n_heads}")
    example = _check_index("example", example, t.shape[0])
    _, pats, strs = _data(model, t[example : example + 1])
    T = pats.shape[-1]
    fig = make_subplots(rows=1, cols=4, column_widths=[0.15, 0.15, 0.15, 0.55], horizontal_spacing=0.04,
                        subplot_titles=[k.replace("_", "-") for k in kinds] + ["pattern"])
    names = np.array([[f"L{l}H{h}" for h in range(H)] for l in range(L)], dtype=object)
    for c, kind in enumerate(kinds, start=1):
        s = scores.get(kind).numpy()
        fig.add_trace(go.Heatmap(
            z=s, x=np.arange(H), y=np.arange(L), customdata=names, colorscale="Viridis", zmin=0, zmax=1,
            showscale=c == 1, colorbar={"title": {"text": "score"}, "x": 1.01, "len": 0.8, "thickness": 12} if c == 1 else None,
            name=kind, hovertemplate=f"%{{customdata}}<br>{kind.replace('_', '-')} score %{{z:.3f}}<extra></extra>",
        ), row=1, col=c)
        marked = scores.above(kind, thresholds[kind])
        fig.add_trace(go.Scatter(
            x=[h for _, h in marked], y=[l for l, _ in marked], mode="markers", name=f"marked {kind}",
            customdata=[f"L{l}H{h}" for l, h in marked], showlegend=False,
            marker={"symbol": "square-open", "size": 18, "color": "crimson", "line": {"width": 3}},
            hovertemplate=f"%{{customdata}} ≥ {thresholds[kind]:g}<extra></extra>",
        ), row=1, col=c)
        fig.update_xaxes(title_text="head", tickmode="linear", dtick=1 if H <= 16 else max(1, H // 8),
                         range=[-0.5, H - 0.5], row=1, col=c)
        fig.update_yaxes(title_text="layer" if c == 1 else None, tickmode="linear", dtick=1 if L <= 16 else L // 8,
                         range=[L - 0.5, -0.5], row=1, col=c)
    best = scores.top("induction", 1)[0][:2]
    pos = np.arange(T)
    text = _pair_text(strs[0], pos)

    def hover(l: int, h: int) -> str:
        return f"%{{text}}<br>weight %{{z:.3f}}<extra>L{l}H{h}</extra>"

    fig.add_trace(go.Heatmap(z=pats[0, best[0], best[1]], x=pos, y=pos, text=text, hovertemplate=hover(*best),
                             colorscale=ATTENTION_COLORS, zmin=0, zmax=1, showscale=False, name="pattern"),
                  row=1, col=4)
    fig.update_xaxes(**token_axis(strs[0], pos, max_ticks=48), tickangle=-60, row=1, col=4)
    fig.update_yaxes(**token_axis(strs[0], pos, max_ticks=48), autorange="reversed", row=1, col=4)
    last = len(fig.data) - 1
    ann = len(fig.layout.annotations) - 1  # the "pattern" subplot title
    buttons = [{"label": f"L{l}H{h}", "method": "update",
                "args": [{"z": [pats[0, l, h]], "hovertemplate": [hover(l, h)]},
                         {f"annotations[{ann}].text": f"pattern of L{l}H{h}"}, [last]]}
               for l in range(L) for h in range(H)]
    fig.layout.annotations[ann].text = f"pattern of L{best[0]}H{best[1]}"
    fig.update_layout(
        title={"text": "head scores (click a head to see its pattern)"},
        updatemenus=[{"buttons": buttons, "active": best[0] * H + best[1], "x": 1.0, "xanchor": "right", "y": 1.12,
                      "yanchor": "bottom", "direction": "down", "showactive": True}],
        width=1250, height=560, margin={"t": 110, "l": 60},
        meta={**_META, "probekit": {**_META["probekit"], "view": "scores", "click_menu": 0,
                                    "marked": {k: [list(x) for x in scores.above(k, thresholds[k])] for k in kinds}}},
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
    """
    bad = [v for v in views if v not in VIEWS]
    if bad:
        from probekit.errors import unknown

        raise unknown("view", bad[0], VIEWS)
    t = _tokens(model, tokens)
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
