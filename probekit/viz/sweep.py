"""The layer-sweep figure: probe score per layer with its controls."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go


def sweep_figure(
    layers: Sequence[str],
    score: Sequence[float],
    *,
    ci_low: Sequence[float] | None = None,
    ci_high: Sequence[float] | None = None,
    control: Sequence[float] | None = None,
    selectivity: Sequence[float] | None = None,
    untrained: Sequence[float] | None = None,
    erased: Sequence[float] | None = None,
    chance: float | None = None,
    metric: str = "accuracy",
    title: str = "probe sweep",
) -> go.Figure:
    """Score per layer (with a confidence band) and, where given, its controls.

    Args:
        layers: layer labels along the x axis (``embed``, ``L0`` …).
        score: held-out probe score per layer.
        ci_low, ci_high: the score's confidence interval per layer.
        control: control-task score per layer (Hewitt & Liang 2019).
        selectivity: score minus control score per layer.
        untrained: the same probe on an untrained model.
        erased: a fresh probe after LEACE erasure.
        chance: majority-class rate, drawn as a dashed line.
        metric: the y-axis name (``accuracy`` or ``r2``).
        title: figure title.

    Returns:
        a ``plotly.graph_objects.Figure``.
    """
    x = list(layers)
    fig = go.Figure()
    error_y = None
    if ci_low is not None and ci_high is not None:
        error_y = dict(type="data", symmetric=False,
                       array=[max(h - s, 0.0) for h, s in zip(ci_high, score)],
                       arrayminus=[max(s - lo, 0.0) for s, lo in zip(score, ci_low)])
    fig.add_trace(go.Scatter(x=x, y=list(score), name=metric, mode="lines+markers", error_y=error_y,
                             line=dict(width=3)))
    for name, vals, dash in (("control task", control, "dot"), ("selectivity", selectivity, "solid"),
                             ("untrained model", untrained, "dash"), ("after LEACE", erased, "dashdot")):
        if vals is not None:
            fig.add_trace(go.Scatter(x=x, y=list(vals), name=name, mode="lines+markers", line=dict(dash=dash)))
    if chance is not None and metric == "accuracy":
        fig.add_hline(y=chance, line_dash="dash", line_color="gray", annotation_text="majority class")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title=metric, template="plotly_white",
                      hovermode="x unified", legend=dict(orientation="h", y=-0.2))
    return fig
