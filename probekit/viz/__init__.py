"""Plotly figures and the compact offline HTML writer. The only place probekit imports Plotly.

Imports only the core (never ``probes`` or ``circuits``): results draw
themselves by passing plain arrays and labels to the functions here.
"""

from __future__ import annotations

from probekit._lazy import attach

# name -> defining module; imported on first use so `import probekit.viz` stays cheap.
_LAZY = {
    "write_html": "probekit.viz.html",
    "attention": "probekit.viz.attention",
    "head_detail": "probekit.viz.attention",
    "token_view": "probekit.viz.attention",
    "head_scores": "probekit.viz.scores",
    "dashboard": "probekit.viz.attention",
    "sweep_figure": "probekit.viz.sweep",
    "patch_figure": "probekit.viz.patching",
    "line_figure": "probekit.viz.basic",
}


__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = list(_LAZY)
