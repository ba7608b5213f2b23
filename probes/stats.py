"""Bootstrap confidence intervals on held-out probe scores.

Efron & Tibshirani, "An Introduction to the Bootstrap" (1993): resample the
test rows with replacement, recompute the score, and read the percentile
interval. Rows are resampled together for every layer, so two layers' intervals
come from the same resamples.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def bootstrap_ci(
    pred: Tensor,
    y: Tensor,
    *,
    metric: str = "accuracy",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: Tensor | None = None,
) -> tuple[Float[Tensor, " layer"], Float[Tensor, " layer"]]:
    """Percentile bootstrap interval of accuracy or R² per layer.

    Args:
        pred: ``[layer, n]`` predicted class indices or values.
        y: ``[n]`` true class indices or values.
        metric: ``"accuracy"`` or ``"r2"``.
        n_boot: bootstrap resamples.
        level: coverage of the interval.
        seed: resampling seed.
        groups: ``[n]`` group id per row (e.g. the example a token came from):
            resample whole groups, since tokens of one sequence are not independent.

    Returns:
        (low, high), each ``[layer]``.
    """
    g = torch.Generator().manual_seed(seed)
    n = y.shape[0]
    if groups is not None:
        uniq, inv = torch.unique(groups, return_inverse=True)
        members = torch.zeros(len(uniq), n)
        members[inv, torch.arange(n)] = 1.0
        counts = torch.zeros(n_boot, len(uniq))
        picks = torch.randint(0, len(uniq), (n_boot, len(uniq)), generator=g)
        counts.scatter_add_(1, picks, torch.ones_like(picks, dtype=torch.float))
        w = counts @ members  # [B, n] how often each row is drawn
    else:
        picks = torch.randint(0, n, (n_boot, n), generator=g)
        w = torch.zeros(n_boot, n).scatter_add_(1, picks, torch.ones(n_boot, n))
    pred, y = pred.double().cpu(), y.double().cpu()
    w = w.double()
    tot = w.sum(1)  # [B]
    if metric == "accuracy":
        stat = ((pred == y[None]).double() @ w.T) / tot  # [L, B]
    else:
        sse = ((pred - y[None]) ** 2) @ w.T
        my = (w @ y) / tot
        sst = (w @ (y * y)) - tot * my * my
        stat = 1 - sse / sst.clamp_min(1e-30)
    a = (1 - level) / 2
    q = torch.quantile(stat, torch.tensor([a, 1 - a], dtype=stat.dtype), dim=1)
    return q[0].float(), q[1].float()
