"""Ridge probes straight from an on-disk store, in streamed batches.

Ridge needs only sufficient statistics (``n``, ``sum x``, ``X^T X``, ``X^T y``,
``y^T y``), which add up over batches, so every layer's probe — and every
cross-validation fold and ``alpha`` of the grid — is fitted from one pass over
the store with memory ``O(layers x d^2)``, whatever the number of rows.
Standardisation and held-out R² are closed forms of the same statistics.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from probekit.errors import ProbekitError
from probes.solvers import fit_ridge, fit_ridge_fixed, ridge_stats
from probes.trainer import BatchedFit, ProbeConfig, folds


def _standardized(stats, mu: Tensor, sd: Tensor):
    """Statistics of ``(x - mu) / sd`` from those of ``x`` (per layer, every group)."""
    n_g, sx, sy, xtx, xty, yty = stats
    m = mu[:, None, :]  # [L, 1, d]
    sx_s = (sx - n_g[None, :, None] * m) / sd[:, None, :]
    outer = xtx - m[..., :, None] * sx[..., None, :] - sx[..., :, None] * m[..., None, :] \
        + n_g[None, :, None, None] * m[..., :, None] * m[..., None, :]
    xtx_s = outer / (sd[:, None, :, None] * sd[:, None, None, :])
    xty_s = (xty - m[..., :, None] * sy[None, :, None, :]) / sd[:, None, :, None]
    return n_g, sx_s, sy, xtx_s, xty_s, yty


def _heldout_r2(W, b, test) -> Tensor:
    """R² of ``x W + b`` on rows summarised by ``test`` statistics; W ``[L, A, d, O]``, b ``[L, A, O]``."""
    n, sx, sy, xtx, xty, yty = test  # n scalar, sx [L, d], sy [O], xtx [L, d, d], xty [L, d, O], yty [O]
    sse = (yty - 2 * torch.einsum("lado,ldo->lao", W, xty) - 2 * b * sy
           + torch.einsum("lado,lde,laeo->lao", W, xtx, W) + 2 * b * torch.einsum("ld,lado->lao", sx, W) + n * b * b)
    sst = (yty - sy * sy / n).clamp_min(1e-30)
    return 1 - sse / sst


def fit_ridge_store(
    store,
    label: str,
    layers: list[str] | None = None,
    *,
    config: ProbeConfig | None = None,
    rows: Tensor | None = None,
    batch_rows: int = 8192,
) -> BatchedFit:
    """Fit one ridge probe per layer from ``store``, reading it once in batches.

    Args:
        store: an activation store (on disk or in memory).
        label: a regression label (or any numeric label).
        layers: layers to fit (default: every residual layer).
        config: ``kind="ridge"`` settings; ``C=None`` cross-validates over ``Cs``
            with ``cv`` contiguous folds (scikit-learn's ``KFold`` without shuffling).
        rows: boolean ``[rows]`` mask of the rows to fit on (default: where the label is defined).
        batch_rows: rows read per batch.

    Returns:
        the same :class:`~probes.trainer.BatchedFit` as ``BatchedProbeTrainer(config).fit``
        on the stacked rows.
    """
    config = config or ProbeConfig(kind="ridge")
    if config.kind != "ridge":
        raise ProbekitError("streaming from a store fits ridge probes (sufficient statistics); got kind "
                            f"{config.kind!r}")
    layers = layers or store.layers()
    values, defined = store.label(label)
    keep = defined if rows is None else (defined & rows)
    idx = keep.nonzero().flatten()
    n = len(idx)
    dev, dt = torch.device(config.device), torch.float64
    splits = [] if config.C is not None else folds(np.zeros(n), config.cv, False)
    # group g < F: training rows of fold g; the last group: every row
    gid = torch.full((n,), -1, dtype=torch.long)
    for f, (_, te) in enumerate(splits):
        gid[torch.as_tensor(te)] = f
    F = len(splits)
    pos = torch.full((len(store),), -1, dtype=torch.long)
    pos[idx] = torch.arange(n)
    acc = None
    for sl, batch in store.iter_batches(layers, batch_rows):
        p = pos[sl]
        sel = p >= 0
        if not bool(sel.any()):
            continue
        X = torch.stack([batch[s][sel] for s in layers]).to(dev, dt)
        if not bool(torch.isfinite(X).all()):
            raise ProbekitError(f"activations have NaN/inf values in rows {sl.start}–{sl.stop - 1}")
        Y = values[sl][sel].to(dev, dt).reshape(int(sel.sum()), -1)
        w = torch.ones(F + 1, X.shape[1], device=dev, dtype=dt)
        g = gid[p[sel]].to(dev)
        for f in range(F):
            w[f] = (g != f).to(dt)

        st = ridge_stats(X, Y, w)
        yty = w @ (Y * Y)
        st = (*st[:5], yty)
        acc = st if acc is None else tuple(a + b for a, b in zip(acc, st))
    if acc is None:
        raise ProbekitError(f"label {label!r} is defined on no rows")
    n_all = acc[0][-1]
    mu = acc[1][:, -1] / n_all
    if config.standardize:
        var = (torch.diagonal(acc[3][:, -1], dim1=-2, dim2=-1) / n_all - mu * mu).clamp_min(0)
        sd = var.sqrt()
        sd = torch.where(sd > 1e-12 * mu.abs().clamp_min(1.0), sd, torch.ones_like(sd))
    else:
        mu, sd = torch.zeros_like(mu), torch.ones_like(mu)
    stats = _standardized(acc, mu, sd)
    L, O = mu.shape[0], stats[2].shape[1]
    if F == 0:
        coef, icpt = fit_ridge_fixed(stats, torch.full((L,), 1.0 / config.C, device=dev, dtype=dt))
        return BatchedFit(coef=coef[:, 0], intercept=icpt[:, 0], mean=mu, scale=sd,
                          C=torch.full((L, O), config.C, dtype=torch.float64), classes=None, mode="ridge")
    Cs = torch.tensor(config.Cs, device=dev, dtype=dt)
    coef, icpt = fit_ridge(stats, 1.0 / Cs)  # [L, G, A, d, O]
    scores = torch.zeros(L, len(Cs), O, device=dev, dtype=dt)
    for f in range(F):
        test = tuple(s[..., -1, :] - s[..., f, :] if s.ndim > 1 else s[-1] - s[f] for s in
                     (stats[0], stats[2], stats[5]))
        n_t, sy_t, yty_t = test
        sx_t = stats[1][:, -1] - stats[1][:, f]
        xtx_t = stats[3][:, -1] - stats[3][:, f]
        xty_t = stats[4][:, -1] - stats[4][:, f]
        scores += _heldout_r2(coef[:, f], icpt[:, f], (n_t, sx_t, sy_t, xtx_t, xty_t, yty_t))
    scores /= F
    best = scores.argmax(1)  # [L, O]
    W = coef[:, F].gather(1, best[:, None, None, :].expand(-1, 1, coef.shape[3], -1))[:, 0]
    b = icpt[:, F].gather(1, best[:, None, :])[:, 0]
    return BatchedFit(coef=W, intercept=b, mean=mu, scale=sd, C=torch.tensor(config.Cs, dtype=torch.float64)[best.cpu()],
                      classes=None, mode="ridge", cv_scores=scores)
