"""Training: ``probekit.train`` against a bare AdamW loop on the same bridge.

Same process, same model shape (DESIGN.md's induction recipe: 2-layer
attention-only, d_model 64, 4 heads, context 64, batch 64), same batches.
Each repetition runs, in turn:

- anchor: a bare loop on the bridge (``task.batch`` → forward →
  cross-entropy → backward → ``AdamW.step``), no schedule, no clipping, no logging;
- ``pk.train`` in memory (warm-up + cosine, clipping, eval at the end);
- ``pk.train`` into a run directory, writing ``metrics.jsonl`` every step and a
  checkpoint (weights + optimizer state, fsync'd) every 10 steps;
- for reference, the bare loop on the bridge's underlying native module
  (``model.original_model``), i.e. without the bridge's hook wrappers.

Ratio = variant time / anchor time (1.0 = no overhead); the median of the
repetitions is shown.

    python -m benchmarks.bench_training [--device cpu|cuda] [--quick] [--steps 40] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

import probekit as pk
from probekit.training import TrainConfig


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _model(task, device):
    cfg = pk.ModelConfig(n_layers=2, d_model=64, n_heads=4, attn_only=True, n_ctx=64, d_vocab=task.d_vocab, seed=0)
    return pk.build_model(cfg, tokenizer=task.tokenizer(), device=device)


def _bare_loop(module, task, steps: int, batch_size: int, device: str) -> float:
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=0.01)
    module.train()
    _sync(device)
    t0 = time.perf_counter()
    for step in range(steps):
        tokens = task.batch(batch_size, seed=step, split="train").tokens.to(device)
        logits = module(tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _pk_train(task, cfg, steps, device, out) -> float:
    model = _model(task, device)
    _sync(device)
    t0 = time.perf_counter()
    pk.train(model, task, cfg, out=out, device=device, progress=False)
    _sync(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_training")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    args, _ = ap.parse_known_args(argv)
    steps, reps = (10, 1) if args.quick else (args.steps, args.reps)
    task = pk.tasks.get("induction")
    # eval only at the last step, with one batch: the loop's own overhead is what is measured
    cfg = TrainConfig(steps=steps, batch_size=args.batch_size, lr=1e-3, weight_decay=0.01, eval_every=None,
                      eval_batches=1, checkpoint_every=None)
    times: dict[str, list[float]] = {k: [] for k in ("bare", "train", "train_dir", "native")}
    _bare_loop(_model(task, args.device), task, 2, args.batch_size, args.device)  # warm-up
    for _ in range(reps):
        times["bare"].append(_bare_loop(_model(task, args.device), task, steps, args.batch_size, args.device))
        times["train"].append(_pk_train(task, cfg, steps, args.device, None))
        with tempfile.TemporaryDirectory() as d:
            times["train_dir"].append(_pk_train(task, cfg.replace(checkpoint_every=10), steps, args.device, d))
        times["native"].append(_bare_loop(_model(task, args.device).original_model, task, steps, args.batch_size,
                                          args.device))
    anchor = statistics.median(times["bare"])
    rows = [
        ("bare AdamW loop on the bridge (anchor)", "bare"),
        ("`pk.train`, in memory", "train"),
        ("`pk.train` into a run dir (metrics every step, checkpoint every 10)", "train_dir"),
        ("bare loop on the native module, no bridge (reference)", "native"),
    ]
    print(f"device {args.device}, {steps} steps, batch {args.batch_size}, 2-layer attn-only d_model 64, "
          f"median of {reps}; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| variant | ms / step | time / anchor |")
    print("| --- | ---: | ---: |")
    for label, key in rows:
        t = statistics.median(times[key])
        print(f"| {label} | {1000 * t / steps:.1f} | {t / anchor:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
