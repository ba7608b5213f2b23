"""Activation caching: ``cache_activations`` against the same bridge's forward passes without hooks.

Same process, same model, same token batches. Each repetition runs, in turn:
the anchor (``model(tokens)`` under ``no_grad``, batch by batch), caching into
memory, caching to disk under a memory budget, and TransformerLens'
``run_with_cache`` with the same ``names_filter`` (rows gathered on CPU) for
reference. Throughput ratio = anchor time / variant time (1.0 = as fast as
plain forward passes); the peak is the process's resident memory above its
level when the variant started, sampled every 2 ms.

    python -m benchmarks.bench_cache [--device cpu|cuda] [--quick] [--n 2048] [--budget 64MB]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch

import probekit as pk


class PeakRSS:
    """Peak resident memory above the starting level, sampled on a thread."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.proc = psutil.Process()

    def __enter__(self):
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="fewer sequences and repetitions")
    ap.add_argument("--n", type=int, default=2048, help="sequences of 64 tokens")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--budget", default="64MiB", help="memory budget of the on-disk store")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    args, _ = ap.parse_known_args(argv)
    n, reps = (256, 2) if args.quick else (args.n, args.reps)
    device = args.device

    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=args.layers, d_model=args.d_model, n_heads=8, n_ctx=64, d_vocab=task.d_vocab, seed=0)
    model = pk.build_model(cfg, device=device)
    tokens = task.batch(n, 0, "test").tokens
    names = [r.name for r in pk.hooks.residual_layers(cfg.n_layers)]
    bs = args.batch_size
    data_mb = n * tokens.shape[1] * len(names) * cfg.d_model * 4 / 2**20
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_"))

    def forward():
        with torch.no_grad():
            for s in range(0, n, bs):
                model(tokens[s : s + bs].to(device))

    def memory():
        pk.cache_activations(model, task, "resid_post", n=n, batch_size=bs)

    def disk():
        out = tmp / "acts"
        shutil.rmtree(out, ignore_errors=True)
        pk.cache_activations(model, task, "resid_post", n=n, batch_size=bs, out=out, memory_budget=args.budget)

    def run_with_cache():
        rows = {h: [] for h in names}
        with torch.no_grad():
            for s in range(0, n, bs):
                _, cache = model.run_with_cache(tokens[s : s + bs].to(device), names_filter=names)
                for h in names:
                    rows[h].append(cache[h].reshape(-1, cfg.d_model).cpu())
        return {h: torch.cat(v) for h, v in rows.items()}

    variants = {"forward, no hooks (anchor)": forward, "cache_activations, in memory": memory,
                f"cache_activations, on disk (budget {args.budget})": disk,
                "TL run_with_cache + gather": run_with_cache}
    try:
        # warm-up: the first forward passes of a bridge are several times slower
        with torch.no_grad():
            for s in range(0, min(n, 4 * bs), bs):
                model(tokens[s : s + bs].to(device))
        times: dict[str, list[float]] = {k: [] for k in variants}
        peaks: dict[str, float] = {k: 0.0 for k in variants}
        for _ in range(reps):
            for name, fn in variants.items():
                with PeakRSS() as mem:
                    _sync(device)
                    t0 = time.perf_counter()
                    fn()
                    _sync(device)
                    times[name].append(time.perf_counter() - t0)
                peaks[name] = max(peaks[name], mem.mib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    anchor = statistics.median(times["forward, no hooks (anchor)"])
    print(f"model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads; {n} sequences x {tokens.shape[1]} tokens, "
          f"batch {bs}; hooks: resid_post of every layer ({len(names)} hooks, {data_mb:.0f} MiB float32); "
          f"device {device}; median of {reps}\n")
    print("| variant | time (s) | throughput vs forward | peak RSS above start (MiB) |")
    print("| --- | ---: | ---: | ---: |")
    for name in variants:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.2f} | **{anchor / t:.2f}x** | {peaks[name]:.0f} |")


if __name__ == "__main__":
    main()
