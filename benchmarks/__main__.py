"""Run every side-by-side benchmark: ``python -m benchmarks [--device cpu|cuda] [--only NAME]``.

Each ``benchmarks/bench_<topic>.py`` has a ``main(argv)`` that prints a markdown
table of ratios against its anchor, measured in the same process.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", action="append", help="run only these topics (e.g. patching)")
    args, rest = ap.parse_known_args(argv)
    here = Path(__file__).parent
    topics = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    for topic in topics:
        if args.only and topic not in args.only:
            continue
        print(f"\n## {topic}\n", flush=True)
        mod = importlib.import_module(f"benchmarks.bench_{topic}")
        mod.main(["--device", args.device, *rest])
    return 0


if __name__ == "__main__":
    sys.exit(main())
