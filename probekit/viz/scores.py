"""The head-score view: previous-token, duplicate-token and induction scores per layer × head; a head opens its pattern.

One of the attention dashboard's views (:mod:`probekit.viz.attention`). The
pattern panel holds every head over the same window of positions as the detail
view (:func:`probekit.viz.patterns.head_window`), so long inputs stay light and
a page with both views stores each head's pattern once.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from probekit import heads as pk_heads
from probekit.errors import ProbekitError
from probekit.viz.basic import ATTENTION_COLORS, TOOLBAR_PX, Frame, token_axis
from probekit.viz.patterns import (
    MAX_VALUES,
    Tokens,
    as_tokens,
    check_index,
    head_window,
    pair_text,
    patterns,
    view_meta,
)


def head_scores(
    model,
    tokens: Tokens | None = None,
    *,
    scores: pk_heads.HeadScores | None = None,
    mark: float | dict[str, float] = 0.3,
    example: int = 0,
    seq_len: int = 20,
    window: tuple[int, int] | None = None,
    max_tokens: int = 128,
    max_values: int = MAX_VALUES,
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
        window: positions ``(start, stop)`` of the pattern panel (default: the last ``max_tokens``).
        max_tokens: longest default window.
        max_values: the default window shrinks so that every head's window together holds at
            most this many values.

    Returns:
        A figure with three score heatmaps (``customdata`` ``L{l}H{h}``), one outline
        scatter per kind (``name`` ``marked <kind>``, points at (head, layer)), and the
        pattern heatmap (last trace; ``updatemenus[0]`` switches heads).

    Example:
        >>> import probekit as pk
        >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
        >>> fig = head_scores(model)  # scores and pattern on [BOS] A A repeated random tokens
        >>> [t.name for t in fig.data][:2]
        ['previous_token', 'marked previous_token']
    """
    if tokens is None:
        seq_len = max(1, min(seq_len, (model.cfg.n_ctx - 1) // 2))
        tokens = pk_heads.repeated_tokens(model, seq_len=seq_len, n=8)
    t = as_tokens(model, tokens)
    if scores is None:
        scores = pk_heads.head_scores(model, t)
    kinds = pk_heads.SCORE_KINDS
    thresholds = {k: (mark if isinstance(mark, (int, float)) else mark.get(k, 0.3)) for k in kinds}
    L, H = scores.previous_token.shape
    if (L, H) != (model.cfg.n_layers, model.cfg.n_heads):
        raise ProbekitError(f"scores are for {L}×{H} heads but the model has {model.cfg.n_layers}×{model.cfg.n_heads}")
    example = check_index("example", example, t.shape[0])
    _, pats, strs = patterns(model, t[example : example + 1])
    T = pats.shape[-1]
    start, stop = head_window(T, L * H, max_tokens=max_tokens, max_values=max_values, window=window)
    pos = np.arange(start, stop)
    w = pats[0, :, :, start:stop, start:stop]
    frame = Frame(1250, TOOLBAR_PX + 44 + 30 + 400 + 130, l=60, r=100, t=TOOLBAR_PX + 44 + 30, b=130)
    fig = make_subplots(rows=1, cols=4, column_widths=[0.15, 0.15, 0.15, 0.55], horizontal_spacing=0.04,
                        subplot_titles=[k.replace("_", "-") for k in kinds] + ["pattern"])
    _score_panels(fig, scores, thresholds, frame)
    best = scores.top("induction", 1)[0][:2]

    def hover(l: int, h: int) -> str:
        return f"%{{text}}<br>weight %{{z:.3f}}<extra>L{l}H{h}</extra>"

    fig.add_trace(go.Heatmap(z=w[best[0], best[1]], x=pos, y=pos, text=pair_text(strs[0], pos),
                             hovertemplate=hover(*best), colorscale=ATTENTION_COLORS, zmin=0, zmax=1, name="pattern",
                             colorbar={"title": {"text": "weight"}, "thickness": 12, "len": 1, "x": frame.x(1250 - 80),
                                       "xanchor": "left"}),
                  row=1, col=4)
    # at most one label per 12 pixels (font 10) of the panel
    plot_w, plot_h = frame.width - frame.l - frame.r, frame.height - frame.t - frame.b
    panel_w = plot_w * (fig.layout.xaxis4.domain[1] - fig.layout.xaxis4.domain[0])
    fig.update_xaxes(**token_axis(strs[0][start:stop], pos, max_ticks=int(panel_w // 12)), tickangle=-60,
                     tickfont={"size": 10}, row=1, col=4)
    fig.update_yaxes(**token_axis(strs[0][start:stop], pos, max_ticks=int(plot_h // 12)), autorange="reversed",
                     tickfont={"size": 10}, row=1, col=4)
    last = len(fig.data) - 1
    ann = len(fig.layout.annotations) - 1  # the "pattern" subplot title
    where = "" if (start, stop) == (0, T) else f", positions {start}–{stop - 1}"
    buttons = [{"label": f"L{l}H{h}", "method": "update",
                "args": [{"z": [w[l, h]], "hovertemplate": [hover(l, h)]},
                         {f"annotations[{ann}].text": f"pattern of L{l}H{h}{where}"}, [last]]}
               for l in range(L) for h in range(H)]
    fig.layout.annotations[ann].text = f"pattern of L{best[0]}H{best[1]}{where}"
    fig.update_layout(
        **frame.layout(),
        title=frame.title("head scores (click a head to see its pattern)", left_px=frame.l),
        updatemenus=[{"buttons": buttons, "active": best[0] * H + best[1], "x": 1.0, "xanchor": "right",
                      "y": frame.y(TOOLBAR_PX + 4), "yanchor": "top", "direction": "down", "showactive": True}],
        meta=view_meta("scores", click_menu=0, window=[start, stop],
                       marked={k: [list(x) for x in scores.above(k, thresholds[k])] for k in kinds}),
    )
    return fig


def _score_panels(fig: go.Figure, scores: pk_heads.HeadScores, thresholds: dict[str, float], frame: Frame) -> None:
    """One layer × head heatmap per score kind (columns 1..3), heads above their threshold outlined."""
    L, H = scores.previous_token.shape
    names = np.array([[f"L{l}H{h}" for h in range(H)] for l in range(L)], dtype=object)
    for c, kind in enumerate(pk_heads.SCORE_KINDS, start=1):
        s = scores.get(kind).numpy()
        fig.add_trace(go.Heatmap(
            z=s, x=np.arange(H), y=np.arange(L), customdata=names, colorscale="Viridis", zmin=0, zmax=1,
            showscale=c == 1, name=kind,
            hovertemplate=f"%{{customdata}}<br>{kind.replace('_', '-')} score %{{z:.3f}}<extra></extra>",
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
    # the score colour bar lies under the three score panels, apart from the pattern's weight bar
    x0, x1 = fig.layout.xaxis.domain[0], fig.layout.xaxis3.domain[1]
    fig.data[0].colorbar = {"title": {"text": "score", "side": "right"}, "orientation": "h", "x": (x0 + x1) / 2,
                            "xanchor": "center", "len": x1 - x0, "y": frame.y(frame.height - frame.b + 62),
                            "yanchor": "top", "thickness": 12}
