"""Plotly figures and the compact offline HTML writer. The only place probekit imports Plotly.

Imports only the core (never ``probes`` or ``circuits``): results draw
themselves by passing plain arrays and labels to the functions here.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probekit.viz' has no attribute {name!r}")


__all__ = list(_LAZY)
