"""Which plotly.js a page embeds: the cartesian partial bundle when the install step brought it, else plotly's own.

plotly's Python package ships the whole ``plotly.min.js`` (4.8 MB: every trace
type, maps, 3-D, WebGL). probekit's pages use heatmaps and scatter traces
only, which plotly.js' *cartesian* partial bundle (``plotly.js-cartesian-dist-min``
on the npm registry, 1.5 MB) holds: a third of the JavaScript for the browser to
parse, and a third of the page. ``make install`` fetches it with
``python -m probekit.viz.bundle``, at the version of plotly.js that the installed
plotly package was built for (its figures' JSON is written for that version),
into the git-ignored ``probekit/viz/assets/``. Nothing third-party is
committed, nothing is fetched at run time, and a page whose figures use a trace
type outside the bundle (or an install without it) gets the full bundle.

    python -m probekit.viz.bundle          # fetch the partial bundle (needs npm); prints where it went
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

import plotly
from plotly.offline import get_plotlyjs_version

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
PACKAGE = "plotly.js-cartesian-dist-min"
MEMBER = "package/plotly-cartesian.min.js"
#: trace types in the cartesian bundle (its README: "Contains trace modules ...")
CARTESIAN = frozenset({"bar", "box", "contour", "heatmap", "histogram", "histogram2d", "histogram2dcontour",
                       "image", "pie", "scatter", "scatterternary", "violin"})


def full_path() -> Path:
    """plotly's own bundled ``plotly.min.js`` (every trace type)."""
    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def partial_path() -> Path:
    """Where the cartesian bundle of the installed plotly's plotly.js version lives once fetched."""
    return ASSETS / f"plotly-cartesian-{get_plotlyjs_version()}.min.js"


def choose(trace_types: Iterable[str]) -> Path:
    """The bundle for a page whose traces have ``trace_types``: the partial one when it is there and holds them all."""
    partial = partial_path()
    if partial.is_file() and set(trace_types) <= CARTESIAN:
        return partial
    return full_path()


def fetch(npm: str = "npm") -> Path:
    """Fetch the cartesian bundle of the installed plotly's plotly.js version from the npm registry (``npm pack``).

    Only the one JavaScript file is read out of the package archive; nothing in it is run or unpacked elsewhere.
    """
    version = get_plotlyjs_version()
    dest = partial_path()
    if dest.is_file():
        return dest
    if shutil.which(npm) is None:
        raise RuntimeError(f"{npm} is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([npm, "pack", "--silent", f"{PACKAGE}@{version}"], cwd=tmp, capture_output=True,
                              text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE}@{version} failed: {proc.stderr.strip()[-300:]}")
        archive = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.getmember(MEMBER)
            data = tar.extractfile(member).read() if member.isfile() else b""
    if f"plotly.js (cartesian - minified) v{version}".encode() not in data[:200]:
        raise RuntimeError(f"{PACKAGE}@{version} holds no plotly.js {version} cartesian bundle at {MEMBER}")
    ASSETS.mkdir(exist_ok=True)
    tmp_dest = dest.with_suffix(".tmp")
    tmp_dest.write_bytes(data)
    tmp_dest.replace(dest)
    return dest


def main() -> int:
    try:
        path = fetch()
    except (RuntimeError, OSError, subprocess.TimeoutExpired, KeyError, StopIteration) as e:
        print(f"plotly.js partial bundle not fetched ({e}); pages will embed plotly's full bundle", file=sys.stderr)
        return 1
    print(f"plotly.js partial bundle: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
