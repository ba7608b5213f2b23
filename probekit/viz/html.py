"""One compact, fully offline HTML page for one or more Plotly figures.

``Figure.write_html`` inlines plotly 7's whole ``plotly.min.js`` (4.8 MB) and
writes numbers as JSON or float64 base64. This writer instead embeds

* the plotly package's own bundled ``plotly.min.js``, gzip-compressed and
  base64-encoded (≈ 2 MB of text instead of 4.8 MB), inflated in the browser
  by ``DecompressionStream`` and run as an inline script — once per page;
* each figure's JSON gzip-compressed, with its numeric arrays moved into one
  binary buffer in compact encodings (``float16`` by default, ``uint8``
  linear quantization or exact ``float32``/integers on request), equal
  arrays (the same head's pattern in several views) and repeated lists (the
  same hover text on every head) stored once — and decoded once in the page,
  so every trace, button and figure referring to one holds the same copy.

Arrays in the arguments of ``updatemenus`` buttons (one head's pattern per
button) are decoded only when the button is used: the page turns such a
button into Plotly's ``"skip"`` kind and runs its command itself from the
``plotly_buttonclicked`` event, so a selector over hundreds of heads costs
nothing until a head is picked.

Nothing is fetched: the page carries a Content-Security-Policy that forbids
every network request, and all data sits in base64 (no ``</script>`` can occur
inside it). Text shown by Plotly is Plotly's pseudo-HTML: figures built by
:mod:`probekit.viz` escape data strings with :func:`probekit.viz.basic.escape`.

Figures may carry small page behaviours in ``layout.meta["probekit"]``:
``{"click_menu": i}`` makes a click on a point whose ``customdata`` is a
button label of ``updatemenus[i]`` apply that button (e.g. clicking a head in
the score heatmap opens its pattern).

Example:
    >>> import plotly.graph_objects as go
    >>> write_html(go.Figure(go.Heatmap(z=[[0, 1], [1, 0]])), "/tmp/x.html").name
    'x.html'
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import html
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import plotly
import plotly.graph_objects as go
import plotly.io as pio

from probekit.errors import ProbekitError
from probekit.viz import bundle

log = logging.getLogger(__name__)

Precision = Literal["float16", "uint8", "float32"]
PRECISIONS: tuple[str, ...] = ("float16", "uint8", "float32")

#: float arrays with fewer values stay exact (float32); larger ones use ``precision``.
COMPACT_MIN = 256
#: lists shorter than this are not worth de-duplicating or moving to the buffer.
BUFFER_MIN = 16

_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:")


# -- plotly.js -------------------------------------------------------------------------------------

def plotly_js_gz_b64(trace_types: Sequence[str] = ()) -> str:
    """The plotly.js for a page whose traces have ``trace_types``, gzip-compressed and base64-encoded.

    The cartesian partial bundle where the install step brought it and it holds every trace type, else the
    plotly package's own ``plotly.min.js`` (see :mod:`probekit.viz.bundle`).
    """
    return _gz_b64(bundle.choose(trace_types))


@functools.lru_cache(maxsize=2)
def _gz_b64(src: Path) -> str:
    """``src`` gzip-compressed and base64-encoded; the compressed file is cached in ``probekit/viz/assets/``
    (git-ignored) keyed by the plotly version and the bundle's hash, so the ~0.2 s compression runs once."""
    if not src.is_file():
        raise ProbekitError(f"no plotly.js bundle at {src}")
    raw = src.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:12]
    cache = bundle.ASSETS / f"{src.name.removesuffix('.min.js')}-{plotly.__version__}-{digest}.min.js.gz"
    if cache.is_file():
        data = cache.read_bytes()
        try:
            if gzip.decompress(data) == raw:
                return base64.b64encode(data).decode("ascii")
        except (OSError, EOFError):
            pass
        log.warning("ignoring corrupt cached bundle %s", cache)
    data = gzip.compress(raw, compresslevel=9, mtime=0)
    try:
        cache.parent.mkdir(exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        tmp.replace(cache)
    except OSError as e:  # read-only install: compress on the fly every time
        log.info("cannot cache the compressed plotly.js bundle (%s)", e)
    return base64.b64encode(data).decode("ascii")


# -- compact figure encoding -----------------------------------------------------------------------

_BDATA_DTYPES = {"f4": np.float32, "f8": np.float64, "i1": np.int8, "u1": np.uint8, "i2": np.int16,
                 "u2": np.uint16, "i4": np.int32, "u4": np.uint32, "i8": np.int64, "u8": np.uint64}


def _from_bdata(d: dict) -> np.ndarray:
    dtype = _BDATA_DTYPES.get(d["dtype"])
    if dtype is None:
        raise ProbekitError(f"unsupported typed-array dtype {d['dtype']!r} in figure")
    a = np.frombuffer(base64.b64decode(d["bdata"]), dtype=dtype)
    shape = d.get("shape")
    if shape:
        dims = [int(s) for s in str(shape).split(",")] if isinstance(shape, str) else list(shape)
        a = a.reshape(dims)
    return a


def _numeric_list(x: list) -> np.ndarray | None:
    """``x`` as a numeric array if it is a rectangular list of numbers (no bools/None), else None."""
    try:
        a = np.asarray(x)
    except (ValueError, TypeError):
        return None
    if a.dtype.kind in "iuf" and a.dtype != object:
        return a
    return None


class _Packer:
    """Moves numeric arrays into one binary buffer and de-duplicates repeated lists."""

    def __init__(self, precision: Precision):
        self.precision = precision
        self.chunks: list[bytes] = []
        self.offset = 0
        self.shared: list[Any] = []
        self._shared_index: dict[str, int] = {}
        self._arrays: dict[tuple, dict] = {}  # encoded array -> its spec: equal arrays are stored once

    def _unique(self, tag: str, data: bytes, align: int, shape: list[int], n: int, **extra: float) -> dict:
        """The spec of ``data`` in the buffer, adding it only if an equal array is not there yet."""
        key = (tag, tuple(shape), tuple(sorted(extra.items())), hashlib.blake2b(data, digest_size=16).digest())
        spec = self._arrays.get(key)
        if spec is None:
            spec = self._arrays[key] = {"__pk": tag, "o": self._add(data, align), "n": n, "s": shape, **extra}
        return dict(spec)

    def _add(self, data: bytes, align: int = 4) -> int:
        pad = (-self.offset) % align
        if pad:
            self.chunks.append(b"\0" * pad)
            self.offset += pad
        start = self.offset
        self.chunks.append(data)
        self.offset += len(data)
        return start

    def array(self, a: np.ndarray) -> dict:
        shape = list(a.shape)
        if a.dtype.kind == "b":
            a = a.astype(np.uint8)
        if a.dtype.kind in "iu":
            lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
            for t, dt in (("u1", np.uint8), ("i1", np.int8), ("u2", np.uint16), ("i2", np.int16),
                          ("i4", np.int32)):
                info = np.iinfo(dt)
                if info.min <= lo and hi <= info.max:
                    break
            else:
                t, dt = "f8", np.float64  # beyond int32: exact as float64 (JS numbers)
            return self._unique(t, a.astype(dt).tobytes(), 4, shape, a.size)
        a = a.astype(np.float64)
        if a.size < COMPACT_MIN or self.precision == "float32":
            return self._unique("f4", a.astype(np.float32).tobytes(), 4, shape, a.size)
        if self.precision == "float16":
            return self._unique("f2", a.astype(np.float16).tobytes(), 2, shape, a.size)
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scale = (hi - lo) / 254 if hi > lo else 1.0
        q = np.full(a.shape, 255, dtype=np.uint8)  # 255 = NaN / not finite
        ok = np.isfinite(a)
        q[ok] = np.clip(np.rint((a[ok] - lo) / scale), 0, 254).astype(np.uint8)
        return self._unique("q1", q.tobytes(), 1, shape, a.size, lo=lo, sc=scale)

    def walk(self, x: Any) -> Any:
        if isinstance(x, dict):
            if "bdata" in x and "dtype" in x and len(x) <= 3:
                return self.walk(_from_bdata(x))
            return {k: self.walk(v) for k, v in x.items()}
        if isinstance(x, np.ndarray):
            if x.dtype.kind in "biuf" and x.size >= BUFFER_MIN:
                return self.array(x)
            return self.walk(x.tolist())
        if isinstance(x, (list, tuple)):
            if len(x) >= BUFFER_MIN or (x and isinstance(x[0], (list, tuple)) and len(x) * len(x[0]) >= BUFFER_MIN):
                a = _numeric_list(x)
                if a is not None and a.ndim >= 1 and a.size >= BUFFER_MIN:
                    return self.array(a)
            walked = [self.walk(v) for v in x]
            if len(x) >= BUFFER_MIN:
                return self._share(walked)
            return walked
        if isinstance(x, np.generic):
            return x.item()
        return x

    def _share(self, value: list) -> Any:
        key = hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
        i = self._shared_index.get(key)
        if i is None:
            i = self._shared_index[key] = len(self.shared)
            self.shared.append(value)
        return {"__pkr": i}

    def buffer(self) -> bytes:
        return b"".join(self.chunks)


def _figures(fig_or_figs: Any) -> list[go.Figure]:
    figs = list(fig_or_figs) if isinstance(fig_or_figs, Sequence) and not isinstance(fig_or_figs, (str, dict)) else [fig_or_figs]
    if not figs:
        raise ProbekitError("write_html needs at least one figure, got an empty list")
    out = []
    for f in figs:
        if isinstance(f, dict):
            f = go.Figure(f)
        if not isinstance(f, go.Figure):
            raise ProbekitError(f"write_html takes plotly Figures, got {type(f).__name__}")
        out.append(f)
    return out


def _figure_precision(fig: go.Figure) -> str:
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    hint = (meta.get("probekit") or {}).get("precision") if isinstance(meta.get("probekit"), dict) else None
    return hint if hint in PRECISIONS else "float16"


def encode_figures(figs: Sequence[go.Figure], precision: Precision | None = None) -> tuple[str, str]:
    """The page payload: (gzip+base64 JSON of the figures, gzip+base64 binary buffer).

    ``precision=None`` takes each figure's hint ``layout.meta["probekit"]["precision"]``
    (attention figures say ``"uint8"``: colour data), else ``"float16"``.
    """
    packer = _Packer(precision or "float16")
    specs = []
    for f in figs:
        packer.precision = precision or _figure_precision(f)
        d = f.to_plotly_json()
        specs.append({"data": packer.walk(d.get("data", [])), "layout": packer.walk(d.get("layout", {})),
                      "frames": packer.walk(d.get("frames", []))})
    doc = {"figures": specs, "shared": packer.shared}
    text = pio.json.to_json_plotly(doc)
    j = base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")
    b = base64.b64encode(gzip.compress(packer.buffer(), compresslevel=6, mtime=0)).decode("ascii")
    return j, b


def write_html(
    fig_or_figs: go.Figure | Sequence[go.Figure],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    precision: Precision | None = None,
    post_script: str | None = None,
) -> Path:
    """Write one compact, fully offline HTML page holding one or more figures.

    Args:
        fig_or_figs: a Plotly ``Figure`` (or a list of them, shown one below another).
        path: the ``.html`` file to write (parent directories are created).
        title: the page title (default: the first figure's title, else "probekit").
        precision: how float arrays of ``COMPACT_MIN`` or more values are stored:
            ``"float16"`` (≈ 3 significant digits), ``"uint8"`` (linear over the
            array's range: steps of 1/254 of it) or exact ``"float32"``. ``None``
            (default): the figure's own hint in ``layout.meta["probekit"]["precision"]``
            (the attention views ask for ``"uint8"``), else ``"float16"``.
        post_script: JavaScript run after each figure is drawn; ``{plot_id}``
            is replaced by the id of the figure's div (as in Plotly's own
            ``write_html``).

    Returns:
        The path written.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ProbekitError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    figs = _figures(fig_or_figs)
    if title is None:
        t = figs[0].layout.title.text if figs[0].layout.title else None
        title = html.unescape(_strip_tags(t)) if t else "probekit"  # figure titles are Plotly's escaped HTML
    payload, buffer = encode_figures(figs, precision)
    heights = [int(f.layout.height) if f.layout.height else 600 for f in figs]
    divs = "\n".join(
        f'<div id="pk-fig-{i}" class="pk-fig" style="width:100%;height:{h}px"></div>' for i, h in enumerate(heights)
    )
    page = _TEMPLATE.format(
        csp=_CSP,
        title=html.escape(title),
        divs=divs,
        plotly_js=plotly_js_gz_b64([t.type for f in figs for t in f.data]),
        payload=payload,
        buffer=buffer,
        js=_JS.replace("__PK_POST__", _post_scripts_js(post_script, len(figs))),
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s (%.2f MB)", path, path.stat().st_size / 1e6)
    return path


def _post_scripts_js(post_script: str | None, n: int) -> str:
    """A JS array of one function per figure, ``{plot_id}`` replaced by that figure's div id."""
    if not post_script:
        return "[]"
    fns = []
    for i in range(n):
        body = post_script.replace("{plot_id}", f"pk-fig-{i}").replace("</", "<\\/")
        fns.append("function(){\n" + body + "\n}")
    return "[" + ",".join(fns) + "]"


def _strip_tags(s: str) -> str:
    import re

    return re.sub(r"<[^>]*>", "", s)


_JS = r"""
(function(){
"use strict";
function b64(s){var bin=atob(s),n=bin.length,u=new Uint8Array(n);for(var i=0;i<n;i++)u[i]=bin.charCodeAt(i);return u;}
function inflate(s){return new Response(new Blob([b64(s)]).stream().pipeThrough(new DecompressionStream("gzip"))).arrayBuffer();}
function half(buf){var u=new Uint16Array(buf),n=u.length,out=new Float32Array(n);
  for(var i=0;i<n;i++){var h=u[i],s=(h&0x8000)?-1:1,e=(h>>10)&31,f=h&1023;
    out[i]=e===0?s*f*5.960464477539063e-8:(e===31?(f?NaN:s*Infinity):s*Math.pow(2,e-15)*(1+f/1024));}
  return out;}
function nest(flat,shape){if(!shape||shape.length<=1)return flat;
  var rows=shape[0],rest=shape.slice(1),size=rest.reduce(function(x,y){return x*y;},1),out=new Array(rows);
  for(var r=0;r<rows;r++)out[r]=nest(flat.slice(r*size,(r+1)*size),rest);return out;}
function decode(spec,buf){var t=spec.__pk,o=spec.o,n=spec.n,a;
  switch(t){
    case "f4":a=new Float32Array(buf.slice(o,o+4*n));break;
    case "f8":a=new Float64Array(buf.slice(o,o+8*n));break;
    case "f2":a=half(buf.slice(o,o+2*n));break;
    case "u1":a=new Uint8Array(buf,o,n);break;
    case "i1":a=new Int8Array(buf,o,n);break;
    case "u2":a=new Uint16Array(buf.slice(o,o+2*n));break;
    case "i2":a=new Int16Array(buf.slice(o,o+2*n));break;
    case "i4":a=new Int32Array(buf.slice(o,o+4*n));break;
    case "q1":var q=new Uint8Array(buf,o,n),f=new Float32Array(n);
      for(var i=0;i<n;i++)f[i]=q[i]===255?NaN:spec.lo+q[i]*spec.sc;a=f;break;
    default:throw new Error("unknown array encoding "+t);}
  return nest(Array.from(a),spec.s);}
function clone(x){return JSON.parse(JSON.stringify(x));}
// The page's data: figures refer to stored arrays ({__pk}) and to shared lists ({__pkr}). Both are decoded
// on first use and kept, so every trace, button or view that refers to one holds the same copy.
function Store(doc,buf){
  var arrays={},lists=[];
  function raw(x){while(x&&typeof x==="object"&&typeof x.__pkr==="number")x=doc.shared[x.__pkr];return x;}
  function revive(x){  // x is private to the caller (revived in place)
    if(Array.isArray(x)){for(var i=0;i<x.length;i++)x[i]=revive(x[i]);return x;}
    if(x&&typeof x==="object"){
      if(typeof x.__pk==="string"){var key=x.__pk+"@"+x.o+":"+x.s;
        if(!(key in arrays))arrays[key]=decode(x,buf);return arrays[key];}
      if(typeof x.__pkr==="number"){var i=x.__pkr;if(!(i in lists))lists[i]=revive(clone(doc.shared[i]));return lists[i];}
      for(var k in x)if(Object.prototype.hasOwnProperty.call(x,k))x[k]=revive(x[k]);}
    return x;}
  function hasArray(x){x=raw(x);
    if(Array.isArray(x))return x.some(hasArray);
    if(x&&typeof x==="object"){if(typeof x.__pk==="string")return true;for(var k in x)if(hasArray(x[k]))return true;}
    return false;}
  // Menu buttons whose arguments hold stored arrays (one head's pattern each) are decoded when used, not at
  // load: such a button becomes Plotly's "skip" kind, and its command runs from the plotly_buttonclicked event.
  function detachMenus(layout){var lazy={},menus=raw(layout.updatemenus);
    if(!Array.isArray(menus))return lazy;
    layout.updatemenus=menus.map(function(m,i){m=clone(raw(m));var buttons=raw(m.buttons);
      if(Array.isArray(buttons))m.buttons=buttons.map(function(b,j){b=clone(raw(b));
        if(b.method&&b.method!=="skip"&&hasArray(b.args)){lazy[i+","+j]={method:b.method,args:b.args};b.method="skip";b.args=[];}
        return b;});
      return m;});
    return lazy;}
  return {revive:revive,detachMenus:detachMenus};}
function runButton(gd,menu,j){
  var l=gd.__pk_lazy[menu+","+j],b=gd.layout.updatemenus[menu].buttons[j];
  if(l)return Plotly[l.method].apply(null,[gd].concat(gd.__pk_store.revive(clone(l.args))));
  return b.method==="skip"?Promise.resolve():Plotly[b.method].apply(null,[gd].concat(b.args));}
function lazyMenus(gd){
  gd.on("plotly_buttonclicked",function(ev){
    var m=ev.menu._index,j=ev.button._index;
    if(gd.__pk_lazy[m+","+j])runButton(gd,m,j).catch(fail);});}
function clickMenu(gd,menu){
  gd.on("plotly_click",function(ev){
    var p=ev&&ev.points&&ev.points[0];if(!p||p.customdata===undefined)return;
    var label=String(p.customdata),m=gd.layout.updatemenus&&gd.layout.updatemenus[menu];if(!m)return;
    for(var j=0;j<m.buttons.length;j++){
      if(m.buttons[j].label===label){var up={};up["updatemenus["+menu+"].active"]=j;
        runButton(gd,menu,j).then(function(){return Plotly.relayout(gd,up);}).catch(fail);return;}}
  });}
function fail(e){window.__pk_error=String(e&&e.stack||e);console.error(e);
  var d=document.createElement("pre");d.textContent="probekit: could not draw this page: "+e;document.body.appendChild(d);}
async function main(){
  if(typeof DecompressionStream==="undefined")throw new Error("this browser lacks DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+)");
  var T=window.__pk_times={start:performance.now()};  // stage timings, read by benchmarks/bench_dashboard.py
  var js=new TextDecoder().decode(await inflate(document.getElementById("pk-plotly").textContent.trim()));
  T.inflated_js=performance.now();
  var s=document.createElement("script");s.textContent=js;document.head.appendChild(s);
  T.ran_js=performance.now();
  var doc=JSON.parse(new TextDecoder().decode(await inflate(document.getElementById("pk-figs").textContent.trim())));
  var buf=await inflate(document.getElementById("pk-buf").textContent.trim());
  var store=Store(doc,buf);
  T.data=performance.now();
  var post=__PK_POST__;
  for(var i=0;i<doc.figures.length;i++){
    var lazy=store.detachMenus(doc.figures[i].layout);
    var spec=store.revive(doc.figures[i]),id="pk-fig-"+i,gd=document.getElementById(id);
    gd.__pk_lazy=lazy;gd.__pk_store=store;
    // an empty first plot sets up gd's event emitter, so plotly_afterplot of the real draw is seen
    await Plotly.newPlot(gd,[],{},{responsive:true,displaylogo:false});
    window.__pk_afterplot=window.__pk_afterplot||{};window.__pk_afterplot[id]=0;
    (function(id){gd.on("plotly_afterplot",function(){window.__pk_afterplot[id]+=1;});})(id);
    await Plotly.react(gd,spec.data,spec.layout,{responsive:true,displaylogo:false});
    if(spec.frames&&spec.frames.length)await Plotly.addFrames(gd,spec.frames);
    T["plot"+i]=performance.now();
    if(window.__pk_t_first_plot===undefined)window.__pk_t_first_plot=performance.now();
    var meta=(spec.layout.meta&&spec.layout.meta.probekit)||{};
    lazyMenus(gd);
    if(typeof meta.click_menu==="number")clickMenu(gd,meta.click_menu);
    if(post[i])post[i]();
  }
  window.__pk_ready=true;document.body.setAttribute("data-ready","1");
}
main().catch(fail);
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:0.5em}}</style>
</head><body>
{divs}
<script type="application/octet-stream" id="pk-plotly">{plotly_js}</script>
<script type="application/octet-stream" id="pk-figs">{payload}</script>
<script type="application/octet-stream" id="pk-buf">{buffer}</script>
<script>{js}</script>
</body></html>
"""
