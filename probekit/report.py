"""A report directory: ``index.html`` linking standalone pages, plus ``report.json``.

Each section is one figure written by :func:`probekit.viz.write_html` to its
own offline page, with a short table of figures beside it. ``index.html``
itself is plain escaped HTML with no script, so it opens anywhere.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Section:
    """One part of a report: a title, a short text, key figures and an optional page."""

    title: str
    text: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    page: str | None = None  # file name of the section's standalone HTML, relative to the report


class Report:
    """Collects sections and writes ``index.html`` + ``report.json`` into ``out``.

    Example:
        >>> rep = Report("/tmp/rep", title="demo")
        >>> rep.add("Training", text="loss curve", figures={"final loss": 0.8})
        >>> rep.write().name
        'index.html'
    """

    def __init__(self, out: str | Path, title: str = "probekit report"):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.sections: list[Section] = []

    def add(self, title: str, *, text: str = "", figures: dict[str, Any] | None = None,
            figure=None, page: str | None = None) -> Section:
        """Add a section; ``figure`` (a Plotly figure, or a list of them shown one under another) is written to
        its own page ``page``."""
        if figure is not None:
            from probekit.viz import write_html

            page = page or _slug(title) + ".html"
            write_html(figure, self.out / page)
        sec = Section(title=title, text=text, figures=dict(figures or {}), page=page)
        self.sections.append(sec)
        return sec

    def write(self) -> Path:
        """Write ``index.html`` and ``report.json``; returns the index path."""
        data = {"title": self.title, "sections": [
            {"title": s.title, "text": s.text, "figures": _jsonable(s.figures), "page": s.page} for s in self.sections
        ]}
        (self.out / "report.json").write_text(json.dumps(data, indent=2))
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
            "iframe{width:100%;height:640px;border:1px solid #ddd}h2{margin-top:2em}</style>",
            "</head><body>",
            f"<h1>{html.escape(self.title)}</h1><ul>",
        ]
        parts += [f"<li><a href='#{_slug(s.title)}'>{html.escape(s.title)}</a></li>" for s in self.sections]
        parts.append("</ul>")
        for s in self.sections:
            parts.append(f"<h2 id='{_slug(s.title)}'>{html.escape(s.title)}</h2>")
            if s.text:
                parts.append(f"<p>{html.escape(s.text)}</p>")
            if s.figures:
                rows = "".join(
                    f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in s.figures.items()
                )
                parts.append(f"<table>{rows}</table>")
            if s.page:
                href = html.escape(s.page, quote=True)
                parts.append(f"<p><a href='{href}'>open full page</a></p><iframe src='{href}' loading='lazy'></iframe>")
        parts.append("</body></html>")
        index = self.out / "index.html"
        index.write_text("\n".join(parts), encoding="utf-8")
        log.info("wrote %s", index)
        return index


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-") or "section"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
            out[str(k)] = v
        except TypeError:
            out[str(k)] = _fmt(v)
    return out
