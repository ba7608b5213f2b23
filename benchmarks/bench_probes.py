"""Probe sweeps: the batched trainer against scikit-learn fitted layer by layer (and target by target).

    python -m benchmarks.bench_probes [--device cpu|cuda] [--scale 1.0] [--sk-targets 4]

Two workloads with planted linear structure (a label-dependent mean whose
strength grows with depth, plus noise):

* A: 13 layers (embeddings + 12 blocks) x 8k rows x 768 dims, a 5-class label:
  fixed C (``LogisticRegression``), cross-validated C (``LogisticRegressionCV``,
  3 folds x 4 Cs, the same folds and grid), and ridge (``Ridge``);
* B: 9 layers x 64 binary targets (e.g. grid cells) x 10k rows x 512 dims,
  fixed C: scikit-learn fits one ``LogisticRegression`` per (layer, target); it
  is timed on ``--sk-targets`` targets per layer and scaled to 64 (said so in
  the table).

Prints a markdown table: seconds, speed-up (scikit-learn time / ours) and the
largest per-layer accuracy difference in points. Both sides run in this one
process, on the same data.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, Ridge
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from probes import BatchedProbeTrainer, ProbeConfig


def planted(L: int, n: int, d: int, k: int, seed: int = 0, targets: int | None = None):
    """``[L, n, d]`` activations whose label signal grows with depth; ``[n]`` (or ``[n, targets]``) labels."""
    g = torch.Generator().manual_seed(seed)
    if targets is None:
        y = torch.randint(0, k, (n,), generator=g)
        code = torch.nn.functional.one_hot(y, k).float()
    else:
        code = (torch.rand(n, targets, generator=g) < 0.3).float()
        y = code.long()
    mix = torch.randn(code.shape[1], d, generator=g) / code.shape[1] ** 0.5
    X = torch.empty(L, n, d)
    for layer in range(L):
        strength = 0.15 + 1.5 * layer / max(L - 1, 1)
        X[layer] = torch.randn(n, d, generator=g) + strength * code @ mix
    return X, y


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def sk_per_layer(X, y, tr, te, make, targets=None, layers=None):
    accs = []
    for layer in layers if layers is not None else range(X.shape[0]):
        sc = StandardScaler().fit(X[layer, tr])
        a, b = sc.transform(X[layer, tr]), sc.transform(X[layer, te])
        if targets is None:
            accs.append(make().fit(a, y[tr]).score(b, y[te]))
        else:
            accs.append([make().fit(a, y[tr, t]).score(b, y[te, t]) for t in targets])
    return np.array(accs)


WORKLOADS = ("A-fixed", "A-cv", "A-ridge", "B")


def run(device: str, scale: float, sk_targets: int, max_iter: int, sk_layers: int | None = None,
        only: tuple[str, ...] = WORKLOADS) -> list[tuple]:
    rows = []
    warnings.simplefilter("ignore", ConvergenceWarning)
    # -- A: 13 x 8k x 768, 5 classes --------------------------------------------
    n = int(8000 * scale)
    X, y = planted(13, n, 768, 5)
    tr, te = np.arange(int(0.8 * n)), np.arange(int(0.8 * n), n)
    Xn, yn = X.numpy(), y.numpy()
    Xd = X.to(device)  # the transfer is not timed: activations live on the device in a sweep
    la = list(range(13)) if sk_layers is None else list(range(0, 13, max(1, 13 // sk_layers)))[:sk_layers]
    f = 13 / len(la)  # scikit-learn time is scaled from the layers it fitted
    note = "" if len(la) == 13 else f"; sklearn on {len(la)} layers x 13/{len(la)}"

    def ours(cfg, y_=y):
        return timed(lambda: BatchedProbeTrainer(cfg).fit(Xd[:, tr], y_[tr]).score(Xd[:, te], y_[te]).cpu().numpy(),
                     device)

    ours(ProbeConfig(C=1.0, device=device, max_iter=5))  # warm-up (CUDA context, kernels)
    if "A-fixed" in only:
        _a_fixed(rows, ours, Xn, yn, tr, te, la, f, note, n, max_iter, device)
    if "A-cv" in only:
        _a_cv(rows, ours, Xn, yn, tr, te, la, f, note, max_iter, device)
    if "A-ridge" in only:
        _a_ridge(rows, ours, Xn, y, n, tr, te, la, f, note, device)
    del X, Xn, Xd
    if "B" in only:
        rows.append(_b(device, scale, sk_targets, max_iter))
    return rows


def _a_fixed(rows, ours, Xn, yn, tr, te, la, f, note, n, max_iter, device):
    acc, t_ours = ours(ProbeConfig(C=1.0, device=device, max_iter=max_iter))
    ref, t_sk = timed(lambda: sk_per_layer(Xn, yn, tr, te, lambda: LogisticRegression(C=1.0, max_iter=max_iter),
                                           layers=la), "cpu")
    rows.append((f"A logistic, C=1 (13 x {n} x 768, 5 classes){note}", t_sk * f, t_ours, np.abs(acc[la] - ref).max() * 100))



def _a_cv(rows, ours, Xn, yn, tr, te, la, f, note, max_iter, device):
    Cs = (0.01, 0.1, 1.0, 10.0)
    acc, t_ours = ours(ProbeConfig(Cs=Cs, cv=3, device=device, max_iter=max_iter))
    ref, t_sk = timed(lambda: sk_per_layer(Xn, yn, tr, te, lambda: LogisticRegressionCV(
        Cs=list(Cs), cv=StratifiedKFold(3), scoring="accuracy", l1_ratios=(0.0,), use_legacy_attributes=False,
        max_iter=max_iter), layers=la), "cpu")
    rows.append((f"A logistic, CV 3 folds x {len(Cs)} Cs{note}", t_sk * f, t_ours, np.abs(acc[la] - ref).max() * 100))



def _a_ridge(rows, ours, Xn, y, n, tr, te, la, f, note, device):
    yr = (y.float() + 0.5 * torch.randn(n, generator=torch.Generator().manual_seed(1)))
    acc, t_ours = ours(ProbeConfig(kind="ridge", C=0.01, device=device), yr)
    ref, t_sk = timed(lambda: sk_per_layer(Xn, yr.numpy(), tr, te, lambda: Ridge(alpha=100.0), layers=la), "cpu")
    rows.append((f"A ridge, alpha=100 (R² x 100){note}", t_sk * f, t_ours, np.abs(acc[la] - ref).max() * 100))


def _b(device, scale, sk_targets, max_iter):
    # -- B: 9 x 64 targets x 10k x 512, binary ------------------------------------
    n = int(10000 * scale)
    X, Y = planted(9, n, 512, 2, targets=64)
    tr, te = np.arange(int(0.8 * n)), np.arange(int(0.8 * n), n)
    Xd = X.to(device)
    acc, t_ours = timed(lambda: BatchedProbeTrainer(ProbeConfig(C=1.0, device=device, max_iter=max_iter))
                        .fit(Xd[:, tr], Y[tr]).score(Xd[:, te], Y[te]).cpu().numpy(), device)
    picked = list(range(sk_targets))
    ref, t_sk = timed(lambda: sk_per_layer(X.numpy(), Y.numpy(), tr, te,
                                           lambda: LogisticRegression(C=1.0, max_iter=max_iter), targets=picked), "cpu")
    t_sk_all = t_sk * 64 / len(picked)
    return (f"B logistic, 64 binary targets (9 x {n} x 512); sklearn timed on {len(picked)} targets x 64/{len(picked)}",
            t_sk_all, t_ours, np.abs(acc[:, picked] - ref).max() * 100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the rows (1.0 = 8k / 10k)")
    ap.add_argument("--sk-targets", type=int, default=4, help="targets per layer fitted by scikit-learn in B")
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--sk-layers", type=int, default=None,
                    help="layers fitted by scikit-learn in A, time scaled to 13 [all on CPU; 2 with --device cuda, "
                         "so the run fits gpu_check.sh's 200 s]")
    ap.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {', '.join(WORKLOADS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sk_layers is None and args.device.startswith("cuda"):
        args.sk_layers = 2
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    only = tuple(w.strip() for w in args.only.split(",") if w.strip())
    bad = set(only) - set(WORKLOADS)
    if bad:
        ap.error(f"unknown workloads {sorted(bad)}; choose from {', '.join(WORKLOADS)}")
    rows = run(args.device, args.scale, args.sk_targets, args.max_iter, args.sk_layers, only)
    print(f"\nprobe sweeps on {args.device} ({dev}); scikit-learn on CPU; scale {args.scale}\n")
    print("| workload | scikit-learn s | probes s | speed-up | max acc diff (points) |")
    print("|---|---|---|---|---|")
    for name, t_sk, t_ours, diff in rows:
        print(f"| {name} | {t_sk:.2f} | {t_ours:.2f} | {t_sk / t_ours:.1f}x | {diff:.2f} |")


if __name__ == "__main__":
    main()
