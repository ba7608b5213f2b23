"""Activation caching: ``cache_activations`` against the same bridge's forward passes without hooks.

Same process, same model, same token batches. Throughput: the sequences are
cut into rounds; in each round every variant runs once on that round's
sequences, in a rotating order — the anchor (``model(tokens)`` under
``no_grad``, batch by batch), caching into memory, caching to disk under a
memory budget, and TransformerLens' ``run_with_cache`` with the same
``names_filter`` (rows gathered to CPU) for reference — so a noisy machine
slows every variant alike. Throughput ratio = anchor time / variant time over
all rounds (1.0 = as fast as plain forward passes), with the range of the
per-round ratios. Memory: caching all the sequences at once, in memory and on
disk, each in a fresh process; the peak is the process's resident memory above
its level when caching started (after a warm-up forward), sampled every 2 ms.

    python -m benchmarks.bench_cache [--device cpu|cuda] [--quick] [--n 2048] [--rounds 8] [--budget 64MiB]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
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
    ap.add_argument("--quick", action="store_true", help="fewer sequences and rounds")
    ap.add_argument("--n", type=int, default=2048, help="sequences of 64 tokens")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--budget", default="64MiB", help="memory budget of the on-disk store")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--peak", choices=("memory", "disk"), default=None,
                    help="(internal) only measure this variant's memory peak caching everything, in this process")
    args, _ = ap.parse_known_args(argv)
    n, rounds = (256, 2) if args.quick else (args.n, args.rounds)
    device, bs = args.device, args.batch_size

    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=args.layers, d_model=args.d_model, n_heads=8, n_ctx=64, d_vocab=task.d_vocab, seed=0)
    model = pk.build_model(cfg, device=device)
    tokens = task.batch(n, 0, "test").tokens
    names = [r.name for r in pk.hooks.residual_layers(cfg.n_layers)]
    mib = n * tokens.shape[1] * len(names) * cfg.d_model * 4 / 2**20
    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_"))

    class Round(pk.tasks.Task):
        """Sequences ``lo:hi`` of the benchmark's tokens, so every variant sees exactly the same batches."""

        name, control_key, label_specs = "bench", "token", ()

        def __init__(self, lo: int, hi: int):
            self.lo, self.hi = lo, hi

        def vocab(self):
            return task.vocab()

        def batch(self, m, seed=0, split="test"):
            t = tokens[self.lo : self.lo + m]
            return pk.tasks.TaskBatch(tokens=t, mask=torch.ones_like(t, dtype=torch.bool))

        def patching_pairs(self, m, seed):
            raise NotImplementedError

    def forward(lo, hi):
        with torch.no_grad():
            for s in range(lo, hi, bs):
                model(tokens[s : min(s + bs, hi)].to(device))

    def memory(lo, hi):
        return pk.cache_activations(model, Round(lo, hi), "resid_post", n=hi - lo, batch_size=bs)

    def disk(lo, hi):
        out = tmp / "acts"
        shutil.rmtree(out, ignore_errors=True)
        return pk.cache_activations(model, Round(lo, hi), "resid_post", n=hi - lo, batch_size=bs, out=out,
                                    memory_budget=args.budget)

    def run_with_cache(lo, hi):
        rows = {h: [] for h in names}
        with torch.no_grad():
            for s in range(lo, hi, bs):
                _, cache = model.run_with_cache(tokens[s : min(s + bs, hi)].to(device), names_filter=names)
                for h in names:
                    rows[h].append(cache[h].reshape(-1, cfg.d_model).cpu())
        return {h: torch.cat(v) for h, v in rows.items()}

    anchor = "forward, no hooks (anchor)"
    variants = {anchor: forward, "cache_activations, in memory": memory,
                f"cache_activations, on disk (budget {args.budget})": disk,
                "TL run_with_cache + gather": run_with_cache}
    times: dict[str, list[float]] = {k: [] for k in variants}
    peaks: dict[str, float] = {}
    if args.peak:
        try:
            forward(0, min(n, 4 * bs))
            with PeakRSS() as mem:
                store = (memory if args.peak == "memory" else disk)(0, n)
                del store
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"peak MiB {mem.mib:.1f}")
        return
    try:
        forward(0, min(n, 4 * bs))  # warm-up: the first forward passes of a bridge are several times slower
        per = n // rounds
        order = list(variants)
        for r in range(rounds):
            lo, hi = r * per, (r + 1) * per
            for name in order[r % len(order):] + order[: r % len(order)]:
                _sync(device)
                t0 = time.perf_counter()
                variants[name](lo, hi)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
        # memory: everything at once, each variant in a fresh process (freed memory a process keeps would hide
        # a later variant's peak)
        for name, kind in zip(list(variants)[1:3], ("memory", "disk")):
            cmd = [sys.executable, "-m", "benchmarks.bench_cache", "--peak", kind, *(argv if argv is not None else sys.argv[1:])]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            peaks[name] = float(out.split()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"model: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads; {n} sequences x "
          f"{tokens.shape[1]} tokens in {rounds} rounds, batch {bs}; hooks: resid_post of every layer "
          f"({len(names)} hooks; {mib:.0f} MiB float32 for all {n} sequences); device {device}; "
          f"torch threads {torch.get_num_threads()}\n")
    print(f"| variant | time (s) | throughput vs forward | per-round range | peak RSS caching all {n} (MiB) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in variants:
        ratios = [a / t for a, t in zip(times[anchor], times[name])]
        peak = f"{peaks[name]:.0f}" if name in peaks else ""
        print(f"| {name} | {sum(times[name]):.2f} | **{sum(times[anchor]) / sum(times[name]):.2f}x** | "
              f"{min(ratios):.2f}–{max(ratios):.2f} | {peak} |")


if __name__ == "__main__":
    main()
