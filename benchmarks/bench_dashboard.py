"""Attention dashboard: file size and time to first plot in headless Chromium, against Plotly's own export.

``python -m benchmarks.bench_dashboard [--repeats 5] [--layers 12 --heads 12 --tokens 64]``

The same figure (``probekit.viz.attention`` of a random 12-layer, 12-head model
on 64 tokens, one example: 144 heatmaps) is written twice:

* anchor: ``Figure.write_html(include_plotlyjs=True)`` — Plotly's default offline
  export (the whole plotly.js inlined, numbers as float32/float64 base64);
* ours: ``probekit.viz.write_html`` — gzip'd plotly.js (the cartesian partial
  bundle where ``make install`` fetched it, else plotly's full bundle) inflated
  by ``DecompressionStream``, patterns packed as uint8.

Beside them, the page ``probekit attention`` writes by default (all four views:
grid, head scores, one head in detail, token view; ``dashboard.html``) is
written and loaded the same way; DESIGN's budget (≤ 2.5 MB) is for this page.

The pages load in fresh contexts of one headless Chromium (Debian's
``/usr/bin/chromium``), alternating, and the time from navigation start to
the moment all heatmaps are drawn (every trace's ``<image>`` in the DOM) is
recorded by a ``requestAnimationFrame`` probe injected into both pages the
same way. Ratios are what to read: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

# polls every animation frame until `n` heatmap images are drawn; records performance.now() then.
_PROBE = """
(() => {
  const want = %d;
  function poll() {
    const n = document.querySelectorAll('.js-plotly-plot .hm image, .js-plotly-plot .heatmaplayer image').length;
    if (n >= want) { window.__bench_first_plot = performance.now(); return; }
    requestAnimationFrame(poll);
  }
  requestAnimationFrame(poll);
})();
"""


def _load(browser, path: Path, n_traces: int) -> dict:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    try:
        ctx.add_init_script(_PROBE % n_traces)
        page = ctx.new_page()
        requests: list[str] = []
        errors: list[str] = []
        ctx.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(path.resolve().as_uri())
        page.wait_for_function("() => window.__bench_first_plot !== undefined", timeout=120_000)
        t = page.evaluate("window.__bench_first_plot")
        stages = page.evaluate("window.__pk_times || null")
        return {"first_plot_s": t / 1000, "requests": len(requests) - 1, "errors": errors, "stages": stages}
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_dashboard")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="keep the pages here (default: a temporary dir)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args, _ = ap.parse_known_args(argv)

    import torch
    from playwright.sync_api import sync_playwright

    import probekit as pk
    from probekit.viz.attention import attention, dashboard
    from probekit.viz.html import write_html

    cfg = pk.ModelConfig(n_layers=args.layers, d_model=16 * args.heads, n_heads=args.heads, n_ctx=args.tokens,
                         d_vocab=1000, seed=0)
    model = pk.build_model(cfg, device=args.device)
    tokens = torch.randint(0, 1000, (1, args.tokens), generator=torch.Generator().manual_seed(0))
    fig = attention(model, tokens)
    n_traces = len(fig.data)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench_dashboard_"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plotly_page = out / "plotly_default.html"
    fig.write_html(plotly_page, include_plotlyjs=True)
    t_plotly_write = time.perf_counter() - t0
    write_html(fig, out / "warmup.html")  # compress/cache the bundle once, as an install would
    t0 = time.perf_counter()
    ours_page = write_html(fig, out / "probekit.html")
    t_ours_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    views = dashboard(model, tokens)
    dash_page = write_html(views, out / "dashboard.html")
    t_dash_write = time.perf_counter() - t0  # computing the views included (head scores: one more forward)
    n_dash = sum(1 for f in views for t in f.data if t.type == "heatmap" and t.visible is not False)

    runs: dict[str, list[dict]] = {"plotly": [], "probekit": [], "dashboard": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            _load(browser, ours_page, n_traces)  # warm the browser process itself
            for _ in range(args.repeats):
                runs["plotly"].append(_load(browser, plotly_page, n_traces))
                runs["probekit"].append(_load(browser, ours_page, n_traces))
                runs["dashboard"].append(_load(browser, dash_page, n_dash))
        finally:
            browser.close()

    def med(name: str) -> float:
        return statistics.median(r["first_plot_s"] for r in runs[name])

    size_p, size_o = plotly_page.stat().st_size, ours_page.stat().st_size
    tp, to = med("plotly"), med("probekit")
    print(f"{args.layers} layers × {args.heads} heads × {args.tokens} tokens, one example ({n_traces} heatmaps); "
          f"headless Chromium, median of {args.repeats} loads each\n")
    print("| page | file size | write (s) | time to first plot (s) | requests | console errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, size, tw, tf in (("Plotly `Figure.write_html` (anchor)", size_p, t_plotly_write, tp),
                               ("`probekit.viz.write_html`", size_o, t_ours_write, to)):
        key = "plotly" if "anchor" in name else "probekit"
        reqs = max(r["requests"] for r in runs[key])
        errs = sum(len(r["errors"]) for r in runs[key])
        print(f"| {name} | {size / 1e6:.2f} MB | {tw:.2f} | {tf:.2f} | {reqs} | {errs} |")
    print(f"| **ratio probekit / anchor** | **{size_o / size_p:.2f}x** | {t_ours_write / t_plotly_write:.2f}x "
          f"| **{to / tp:.2f}x** | | |")
    size_d = dash_page.stat().st_size
    print(f"| `probekit attention` default page (4 views: {n_dash} heatmaps; write includes computing them) "
          f"| {size_d / 1e6:.2f} MB | {t_dash_write:.2f} | {med('dashboard'):.2f} "
          f"| {max(r['requests'] for r in runs['dashboard'])} | {sum(len(r['errors']) for r in runs['dashboard'])} |")
    stages = [r["stages"] for r in runs["probekit"] if r["stages"]]
    if stages:
        def stage(a: str, b: str) -> float:
            return statistics.median((s[b] - s[a]) / 1000 for s in stages)

        print(f"\nprobekit page stages (median s): inflate plotly.js {stage('start', 'inflated_js'):.2f}, "
              f"run plotly.js {stage('inflated_js', 'ran_js'):.2f}, decode data {stage('ran_js', 'data'):.2f}, "
              f"draw {stage('data', 'plot0'):.2f}")
    print(f"\npages in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
