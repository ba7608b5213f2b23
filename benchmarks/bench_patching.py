"""Activation patching: probekit's batched sweeps against TransformerLens' ``patching`` loop.

Same process, same model, same inputs, same metric; prints a markdown table of
wall times, the speed-up and the max abs difference of the results, then
attribution patching's wall time and its correlation with exact patching.

    python -m benchmarks.bench_patching [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformer_lens.patching as tlp

import circuits
import probekit as pk

SWEEPS = {
    "resid": tlp.get_act_patch_resid_pre,
    "heads-by-pos": tlp.get_act_patch_attn_head_out_by_pos,
}


def _setup(n_layers: int, d_model: int, n_heads: int, pos: int, batch: int, device: str, attn_only: bool = False):
    task = pk.tasks.get("induction")
    cfg = pk.ModelConfig(n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_ctx=max(64, pos),
                         d_vocab=task.d_vocab, attn_only=attn_only, seed=0)
    model = pk.build_model(cfg, device=device)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(3, task.d_vocab, (batch, pos), generator=g).to(device)
    corrupt = clean.clone()
    corrupt[:, : pos // 2] = torch.randint(3, task.d_vocab, (batch, pos // 2), generator=g).to(device)
    answers = torch.randint(3, task.d_vocab, (batch,), generator=g).to(device)
    wrong = torch.randint(3, task.d_vocab, (batch,), generator=g).to(device)
    metric = pk.metrics.make("logit-diff", answers=answers, wrong=wrong)
    return model, clean, corrupt, metric


def _time(fn, device: str, repeats: int = 1):
    """``fn()``'s result and its median wall time over ``repeats`` runs."""
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def _tl_sampled(target: str, model, corrupt, cache, metric, shape: tuple[int, ...], n: int):
    """TransformerLens on ``n`` random indices of the sweep (it runs one forward per index, so its time is linear)."""
    import pandas as pd

    g = torch.Generator().manual_seed(1)
    flat = torch.randperm(int(torch.tensor(shape).prod()), generator=g)[:n]
    idx = torch.stack(torch.unravel_index(flat, shape), 1).tolist()
    cols = ["layer", "pos", "head"][: len(shape)]
    fn = SWEEPS[target]
    setter = fn.keywords["patch_setter"]
    act = fn.keywords["activation_name"]
    out = tlp.generic_activation_patch(model, corrupt, cache, metric, setter, act, index_df=pd.DataFrame(idx, columns=cols))
    return out, idx


def bench_sweeps(name: str, shape: dict, device: str, sweeps: list[str], sample: int | None = None,
                 repeats: int = 1) -> list[str]:
    """Time both on the same model and inputs (median of ``repeats`` runs each); with ``sample``, TransformerLens
    runs that many random indices and its full-sweep time is extrapolated (equality is checked on those indices).

    The first ``circuits.patch`` on a model's weights runs the bridge once to verify the plain forward that later
    calls use; the warm-up call does that, so the timed calls are what a researcher's second and later sweeps cost.
    """
    model, clean, corrupt, metric = _setup(**shape, device=device)
    rows = []
    circuits.patch(model, clean[:1, :4], corrupt[:1, :4], lambda l: l.sum(), target="resid", progress=False)  # warm-up
    cold = []
    for target in sweeps:  # a first sweep on fresh weights of the same shape: the bridge runs and verifies
        fresh = _setup(**shape, device=device)[0]
        fresh.load_state_dict({k: v + 0.01 for k, v in model.state_dict().items()})
        cold.append(_time(lambda: circuits.patch(fresh, clean, corrupt, metric, target=target, progress=False),
                          device)[1])
    for target, t_cold in zip(sweeps, cold):
        ours, t_ours = _time(lambda: circuits.patch(model, clean, corrupt, metric, target=target, progress=False), device,
                             repeats)
        with torch.no_grad():
            _, cache = model.run_with_cache(clean)
        n_total = ours.values.numel()
        if sample is None or sample >= n_total:
            ref, t_ref = _time(lambda: SWEEPS[target](model, corrupt, cache, metric), device, repeats)
            diff = float((ours.values.to(ref.device) - ref).abs().max())
            note = ""
        else:
            (ref, idx), t_part = _time(lambda: _tl_sampled(target, model, corrupt, cache, metric,
                                                           tuple(ours.values.shape), sample), device)
            t_ref = t_part * n_total / sample
            mine = torch.stack([ours.values[tuple(i)] for i in idx])
            diff = float((mine.to(ref.device) - ref).abs().max())
            note = f" (TL: {sample} of {n_total} patches timed, extrapolated)"
        rows.append(f"| {name}{note} | {target} | {t_ref:.2f} | {t_ours:.3f} | **{t_ref / t_ours:.1f}x** | "
                    f"{t_cold:.3f} ({t_ref / t_cold:.1f}x) | {diff:.1e} |")
    return rows


def bench_attribution(shape: dict, device: str) -> list[str]:
    model, clean, corrupt, metric = _setup(**shape, device=device)
    rows = []
    for target in ("resid", "heads-by-pos"):
        exact, t_exact = _time(lambda: circuits.patch(model, clean, corrupt, metric, target=target, progress=False), device)
        attr, t_attr = _time(lambda: circuits.attribution_patch(model, clean, corrupt, metric, target=target), device)
        r = circuits.correlation(attr.values, exact.values)
        rows.append(f"| {target} | {t_exact:.3f} | {t_attr:.3f} | {t_exact / t_attr:.1f}x | {r:.3f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="small model only")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--sample", type=int, default=256,
                    help="bigger model: TransformerLens patches timed per sweep (the rest extrapolated); 0 = all")
    ap.add_argument("--repeats", type=int, default=5, help="small model: median of this many runs of each side")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    small = dict(n_layers=2, d_model=64, n_heads=4, pos=20, batch=8)
    big = dict(n_layers=6, d_model=256, n_heads=8, pos=64, batch=8)
    print(f"device: {args.device}; torch {torch.__version__}; {torch.get_num_threads()} threads\n")
    print("| model | sweep | TransformerLens s | probekit s | speed-up | first sweep on new weights s (speed-up) "
          "| max abs diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in bench_sweeps("2 layers, d 64, 20 tokens, batch 8", small, args.device, list(SWEEPS), repeats=args.repeats):
        print(row, flush=True)
    if not args.quick:
        for row in bench_sweeps("6 layers, d 256, 64 tokens, batch 8", big, args.device, list(SWEEPS),
                                sample=args.sample or None):
            print(row, flush=True)
    print("\nAttribution patching (2 forward + 1 backward) vs exact batched patching:\n")
    print("| model | target | exact (probekit) s | attribution s | speed-up | Pearson r with exact |")
    print("| --- | --- | --- | --- | --- | --- |")
    mid = dict(n_layers=4, d_model=128, n_heads=4, pos=32, batch=8)
    for label, shape in [("2 layers, d 64, 20 tokens", small)] + ([] if args.quick else [("4 layers, d 128, 32 tokens", mid)]):
        for row in bench_attribution(shape, args.device):
            print(f"| {label} {row}", flush=True)


if __name__ == "__main__":
    main()
