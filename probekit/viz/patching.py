"""Heatmaps of patching results: plain arrays and labels in, a Plotly figure out.

Axes are numeric (0, 1, 2, …) with the labels as tick text, so repeated
tokens (``"the"`` at positions 2 and 7) stay distinct columns instead of
being merged by Plotly's categorical axes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go


def _flatten(values: np.ndarray, axes: list[str], labels: dict[str, list[str]]) -> tuple[np.ndarray, list[str], list[str], str, str]:
    """2-D view of a result: rows and columns with labels (3-D and 4-D fold the head axis into the rows)."""
    lab = lambda ax, n: list(labels.get(ax, [str(i) for i in range(n)]))[:n]  # noqa: E731
    if values.ndim == 1:
        return values[None, :], [""], lab(axes[0], values.shape[0]), "", axes[0]
    if values.ndim == 2:
        return values, lab(axes[0], values.shape[0]), lab(axes[1], values.shape[1]), axes[0], axes[1]
    if values.ndim == 3:
        # layer x pos x head -> (layer, head) rows x pos; layer x head x dest -> (layer, head) rows x dest
        if axes[1] in ("pos",) and axes[2] == "head":
            v = values.transpose(0, 2, 1)
            a0, a1, a2 = axes[0], axes[2], axes[1]
        else:
            v, (a0, a1, a2) = values, axes
        L, H, P = v.shape
        rows = [f"{r}{c}" for r in lab(a0, L) for c in lab(a1, H)]
        return v.reshape(L * H, P), rows, lab(a2, P), f"{a0}·{a1}", a2
    if values.ndim == 4:
        L, H, L2, H2 = values.shape
        rows = [f"{r}{c}" for r in lab(axes[0], L) for c in lab(axes[1], H)]
        cols = [f"{r}{c}" for r in lab(axes[2], L2) for c in lab(axes[3], H2)]
        return values.reshape(L * H, L2 * H2), rows, cols, "sender", "receiver"
    raise ValueError(f"cannot draw a result with {values.ndim} axes")


def patch_figure(
    values,
    axes: Sequence[str],
    labels: dict[str, list[str]] | None = None,
    *,
    title: str = "activation patching",
    zmid: float | None = None,
    colorbar_title: str = "metric",
    ci_low=None,
    ci_high=None,
) -> go.Figure:
    """A heatmap of patching values.

    Args:
        values: an array of 1–4 axes (``[layer, pos]``, ``[layer, pos, head]``, …).
        axes: the axis names, e.g. ``["layer", "pos"]``.
        labels: tick labels per axis name (positions as ``"i:token"``).
        title: figure title.
        zmid: value at the colour scale's white midpoint (e.g. the unpatched baseline).
        colorbar_title: what the colours measure.
        ci_low, ci_high: optional intervals of the same shape, shown on hover.

    Returns:
        A ``plotly.graph_objects.Figure``.

    Example:
        >>> fig = patch_figure(np.zeros((2, 3)), ["layer", "pos"], {"pos": ["0:a", "1:b", "2:a"]})
        >>> list(fig.data[0].x)
        [0, 1, 2]
    """
    arr = np.asarray(values, dtype=float)
    axes = list(axes)
    if len(axes) != arr.ndim:
        raise ValueError(f"{arr.ndim}-axis values need {arr.ndim} axis names, got {axes}")
    z, rows, cols, ylab, xlab = _flatten(arr, axes, labels or {})
    custom = None
    hover = "%{y}, %{x}: %{z:.4g}"
    if ci_low is not None and ci_high is not None:
        lo = _flatten(np.asarray(ci_low, dtype=float), axes, labels or {})[0]
        hi = _flatten(np.asarray(ci_high, dtype=float), axes, labels or {})[0]
        custom = np.stack([lo, hi], -1)
        hover += " [%{customdata[0]:.3g}, %{customdata[1]:.3g}]"
    cols_esc = [html.escape(str(c)) for c in cols]
    rows_esc = [html.escape(str(r)) for r in rows]
    heat = go.Heatmap(
        z=z, x=list(range(len(cols))), y=list(range(len(rows))), colorscale="RdBu", reversescale=True,
        zmid=zmid, colorbar={"title": {"text": html.escape(colorbar_title)}}, customdata=custom,
        hovertemplate=hover + "<extra></extra>", text=[[f"{r} / {c}" for c in cols_esc] for r in rows_esc],
    )
    fig = go.Figure(heat)
    fig.update_traces(hovertemplate="%{text}: %{z:.4g}" + (" [%{customdata[0]:.3g}, %{customdata[1]:.3g}]" if custom is not None else "") + "<extra></extra>")
    fig.update_layout(
        title={"text": html.escape(title)},
        xaxis={"title": {"text": xlab}, "tickmode": "array", "tickvals": list(range(len(cols))), "ticktext": cols_esc},
        yaxis={"title": {"text": ylab}, "tickmode": "array", "tickvals": list(range(len(rows))), "ticktext": rows_esc,
               "autorange": "reversed"},
    )
    return fig
