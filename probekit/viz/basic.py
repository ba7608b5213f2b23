"""Small shared Plotly helpers: escaped token labels, token axes, heatmaps and line figures.

Token strings are data: Plotly renders text as a small HTML dialect, so every
token shown goes through :func:`escape` (``<img src=x onerror=…>`` shows as
those characters and runs nothing). Token axes are numeric (position) with the
token strings as tick labels: a categorical axis would merge repeated tokens.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from probekit.errors import ProbekitError

#: colour scale of attention weights (0 = white).
ATTENTION_COLORS = "Blues"


def escape(s: object, max_len: int | None = None) -> str:
    """A data string made safe and visible for Plotly text: HTML-escaped, whitespace shown.

    Args:
        s: the string (anything is ``str()``-ed).
        max_len: truncate to this many characters (with "…").
    """
    s = str(s)
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    s = s.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    return html.escape(s, quote=False)  # Plotly decodes &amp; &lt; &gt;, not &quot;


def token_labels(str_tokens: Sequence[str], max_len: int = 32) -> list[str]:
    """Escaped tick labels for a token axis."""
    return [escape(t, max_len) for t in str_tokens]


def token_axis(str_tokens: Sequence[str], positions: Sequence[int] | None = None, max_ticks: int = 64,
               title: str | None = None) -> dict:
    """Layout of a numeric position axis labelled with tokens (thinned to ``max_ticks`` ticks).

    Args:
        str_tokens: the token string at each position.
        positions: the positions on the axis (default ``0..len-1``).
        max_ticks: at most this many tick labels (every k-th otherwise).
        title: the axis title.
    """
    positions = list(range(len(str_tokens))) if positions is None else list(positions)
    step = max(1, int(np.ceil(len(positions) / max_ticks)))
    shown = positions[::step]
    labels = token_labels([str_tokens[i - positions[0]] if positions else "" for i in shown])
    ax = {"tickmode": "array", "tickvals": shown, "ticktext": labels, "type": "linear", "showgrid": False,
          "zeroline": False}
    if title:
        ax["title"] = {"text": title}
    return ax


#: height in pixels of the row Plotly's toolbar (modebar) takes at the top right; titles and menus go below it.
TOOLBAR_PX = 34


class Frame:
    """A figure's fixed pixel frame (size and margins, no automargin), turning pixels into paper coordinates.

    Plotly places menus in paper coordinates (the plotting area is 0..1); with
    fixed margins a pixel position of the whole figure maps to them exactly.
    """

    def __init__(self, width: int, height: int, *, l: int, r: int, t: int, b: int):
        self.width, self.height, self.l, self.r, self.t, self.b = width, height, l, r, t, b

    def x(self, px: float) -> float:
        """Paper x of ``px`` pixels from the figure's left edge."""
        return (px - self.l) / (self.width - self.l - self.r)

    def y(self, px: float) -> float:
        """Paper y of ``px`` pixels from the figure's top edge."""
        return 1 + (self.t - px) / (self.height - self.t - self.b)

    def layout(self) -> dict:
        return {"width": self.width, "height": self.height, "autosize": False,
                "margin": {"l": self.l, "r": self.r, "t": self.t, "b": self.b, "autoexpand": False}}

    def title(self, text: str, *, left_px: float = 12, size: int = 16) -> dict:
        """A title on the row under the toolbar, starting ``left_px`` from the figure's left edge."""
        return {"text": text, "xref": "container", "x": left_px / self.width, "xanchor": "left",
                "yref": "container", "y": 1 - (TOOLBAR_PX + 17) / self.height, "yanchor": "middle",
                "font": {"size": size}, "automargin": False}


def label_px(str_tokens: Sequence[str], max_len: int = 32, font_px: float = 12) -> int:
    """About how many pixels the longest token label takes at ``font_px`` (a margin to leave for it)."""
    longest = max((min(len(str(s)), max_len) for s in str_tokens), default=1)
    return int(8 + 0.6 * font_px * longest)


def heatmap(
    z: np.ndarray,
    *,
    x_tokens: Sequence[str] | None = None,
    y_tokens: Sequence[str] | None = None,
    x_title: str | None = None,
    y_title: str | None = None,
    title: str | None = None,
    zmin: float | None = None,
    zmax: float | None = None,
    colorscale: str = "RdBu",
    hovertemplate: str | None = None,
) -> go.Figure:
    """A heatmap on numeric axes, optionally labelled with token strings (repeated tokens stay distinct).

    Args:
        z: ``[rows, cols]`` values (rows on y, top to bottom).
        x_tokens: token strings labelling the columns (escaped here).
        y_tokens: token strings labelling the rows.
        x_title: x axis title.
        y_title: y axis title.
        title: figure title (escaped).
        zmin: colour scale minimum.
        zmax: colour scale maximum.
        colorscale: a Plotly colour scale name.
        hovertemplate: Plotly hover template (default: row, column and value).
    """
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2:
        raise ProbekitError(f"heatmap needs a 2-D array, got shape {z.shape}")
    rows, cols = z.shape
    for name, toks, n in (("x_tokens", x_tokens, cols), ("y_tokens", y_tokens, rows)):
        if toks is not None and len(toks) != n:
            raise ProbekitError(f"{name} has {len(toks)} labels for {n} positions")
    fig = go.Figure(go.Heatmap(
        z=z, x=np.arange(cols), y=np.arange(rows), zmin=zmin, zmax=zmax, colorscale=colorscale,
        hovertemplate=hovertemplate or "row %{y}, column %{x}: %{z:.4g}<extra></extra>",
    ))
    fig.update_xaxes(**(token_axis(x_tokens, title=x_title) if x_tokens is not None else {"title": x_title}))
    fig.update_yaxes(autorange="reversed",
                     **(token_axis(y_tokens, title=y_title) if y_tokens is not None else {"title": y_title}))
    if title:
        fig.update_layout(title=escape(title))
    return fig


def line_figure(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str | None = None,
    xaxis: str | None = None,
    yaxis: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    errors: Mapping[str, Sequence[float]] | None = None,
) -> go.Figure:
    """Lines, one per named series, each with its own x values (loss curves, accuracy per layer, …).

    Args:
        series: series name -> ``(x, y)`` of equal length; names are escaped.
        title: figure title.
        xaxis: x axis title.
        yaxis: y axis title.
        log_x: logarithmic x axis.
        log_y: logarithmic y axis.
        errors: series name -> symmetric error bar half-widths (same length as its y).

    Example:
        >>> fig = line_figure({"train": ([0, 1, 2], [4.1, 2.0, 0.9]), "test": ([0, 2], [4.1, 1.2])}, xaxis="step")
        >>> len(fig.data)
        2
    """
    fig = go.Figure()
    for name, xy in series.items():
        if len(xy) != 2:
            raise ProbekitError(f"series {name!r} must be an (x, y) pair, got {len(xy)} items")
        x, y = (np.asarray(v).tolist() for v in xy)
        if len(y) != len(x):
            raise ProbekitError(f"series {name!r} has {len(y)} y values for {len(x)} x values")
        err = None
        if errors and name in errors:
            err = {"type": "data", "array": np.asarray(errors[name]).tolist(), "visible": True}
        fig.add_trace(go.Scatter(x=x, y=y, name=escape(name), mode="lines+markers" if len(x) <= 50 else "lines",
                                 error_y=err))
    fig.update_layout(title=escape(title) if title else None, xaxis_title=xaxis, yaxis_title=yaxis,
                      hovermode="x unified")
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


__all__ = ["ATTENTION_COLORS", "TOOLBAR_PX", "Frame", "escape", "label_px", "heatmap", "line_figure", "token_axis", "token_labels"]
