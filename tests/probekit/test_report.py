"""The report directory: index.html escapes data and links pages that exist; report.json round-trips."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from probekit.report import Report


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]

    def handle_data(self, data):
        self.text.append(data)


def test_index_escapes_data_and_links_existing_pages(tmp_path):
    import probekit.viz as viz

    rep = Report(tmp_path, title="<b>t</b>")
    evil = "<script>window.__x=1</script>"
    rep.add(evil, text=evil, figures={evil: evil, "x": 0.123456}, figure=viz.line_figure({"a": ([0, 1], [1, 0])}))
    index = rep.write()
    html = index.read_text()
    parsed = _Collect()
    parsed.feed(html)
    assert "script" not in parsed.tags  # the data's tag became text, and the index itself has no script
    assert evil in "".join(parsed.text)
    assert "0.1235" in html
    assert parsed.links and all((tmp_path / link).is_file() for link in parsed.links)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["sections"][0]["title"] == evil and data["sections"][0]["figures"]["x"] == 0.123456
