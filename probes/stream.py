"""Probes straight from an on-disk store, in streamed batches: ridge from sufficient statistics (one pass),
logistic by the batched L-BFGS reading the rows block by block at each evaluation.

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
from probes.trainer import BatchedFit, BatchedProbeTrainer, ProbeConfig, folds


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


class StoreRows:
    """Standardised rows of a store's layers, read from it on each access: a stand-in for the ``[layer, n, d]``
    stack that the batched logistic solver reads block by block (``X[:, a:b]``, ``X[l:l+1]``, ``X[:, idx]``).

    Memory is one block of rows of every layer at a time, whatever the store's size; each L-BFGS evaluation reads
    the rows again (the operating system's file cache keeps them when they fit in memory).
    """

    def __init__(self, store, layers: list[str], idx: Tensor, mean: Tensor, scale: Tensor, batch_rows: int):
        self.store, self.layers, self.idx = store, layers, idx
        self.mean, self.scale, self.batch_rows = mean, scale, batch_rows
        self.shape = (len(layers), len(idx), mean.shape[-1])
        self.device, self.dtype = mean.device, mean.dtype

    def _read(self, rows: Tensor) -> Tensor:
        """``[layer, len(rows), d]``: the store's rows ``rows`` (ascending), standardised."""
        out = torch.empty(len(self.layers), len(rows), self.shape[2], device=self.device, dtype=self.dtype)
        start = 0
        while start < len(rows):
            lo = int(rows[start])
            stop = start + int(torch.searchsorted(rows[start:], lo + self.batch_rows))
            sel = rows[start:stop] - lo
            hi = int(rows[stop - 1]) + 1
            for i, s in enumerate(self.layers):
                out[i, start:stop] = self.store.rows(s, lo, hi)[sel].to(self.device, self.dtype)
            start = stop
        return out.sub_(self.mean[:, None]).div_(self.scale[:, None])

    def __getitem__(self, key):
        if isinstance(key, slice):  # a range of layers
            return StoreRows(self.store, self.layers[key], self.idx, self.mean[key], self.scale[key], self.batch_rows)
        layers, rows = key
        if layers != slice(None):
            raise IndexError("StoreRows takes X[:, rows] or X[layers]")
        sel = self.idx[rows] if isinstance(rows, slice) else self.idx[torch.as_tensor(rows).cpu()]
        order = torch.argsort(sel)
        out = self._read(sel[order])
        return out if bool((order[1:] > order[:-1]).all()) else out[:, torch.argsort(order)]


def fit_logistic_store(
    store,
    label: str,
    layers: list[str] | None = None,
    *,
    config: ProbeConfig | None = None,
    rows: Tensor | None = None,
    batch_rows: int = 8192,
) -> BatchedFit:
    """Fit one logistic probe per layer from ``store``, streaming its rows in batches at every L-BFGS evaluation.

    The same solver, objective and cross-validation as ``BatchedProbeTrainer(config).fit`` on the stacked rows,
    but the rows are never all in memory: standardisation comes from one streamed pass (sums of ``x`` and
    ``x^2``), and the loss, its gradient and the held-out scores read ``batch_rows`` rows at a time.

    Args:
        store: an activation store (on disk or in memory).
        label: a class label.
        layers: layers to fit (default: every residual layer).
        config: ``kind="logistic"`` settings (``C=None`` cross-validates over ``Cs`` with stratified folds).
        rows: boolean ``[rows]`` mask of the rows to fit on (default: where the label is defined).
        batch_rows: rows read per block.
    """
    config = config or ProbeConfig()
    if config.kind != "logistic":
        raise ProbekitError(f"fit_logistic_store fits logistic probes; got kind {config.kind!r} (use fit_ridge_store)")
    if batch_rows < 1:
        raise ProbekitError(f"batch_rows must be at least 1, got {batch_rows}")
    layers = layers or store.layers()
    values, defined = store.label(label)
    keep = defined if rows is None else (defined & rows)
    idx = keep.nonzero().flatten()
    if len(idx) == 0:
        raise ProbekitError(f"label {label!r} is defined on no rows")
    dev, dt = torch.device(config.device), getattr(torch, config.dtype)
    # one streamed pass: mean and (population) standard deviation per layer, as StandardScaler; NaN/inf refused
    s1 = s2 = None
    pos = torch.zeros(len(store), dtype=torch.bool)
    pos[idx] = True
    for sl, batch in store.iter_batches(layers, batch_rows):
        sel = pos[sl]
        if not bool(sel.any()):
            continue
        X = torch.stack([batch[s][sel] for s in layers]).to(dev, torch.float64)
        if not bool(torch.isfinite(X.sum())) and not bool(torch.isfinite(X).all()):
            raise ProbekitError(f"activations have NaN/inf values in rows {sl.start}–{sl.stop - 1}")
        s1 = X.sum(1) if s1 is None else s1 + X.sum(1)
        s2 = (X * X).sum(1) if s2 is None else s2 + (X * X).sum(1)
    n = len(idx)
    mean = s1 / n
    if config.standardize:
        sd = (s2 / n - mean * mean).clamp_min(0).sqrt()
        sd = torch.where(sd > 1e-12 * mean.abs().clamp_min(1.0), sd, torch.ones_like(sd))
    else:
        mean, sd = torch.zeros_like(mean), torch.ones_like(mean)
    mean, sd = mean.to(dt), sd.to(dt)
    Xs = StoreRows(store, layers, idx, mean, sd, batch_rows)
    return BatchedProbeTrainer(config).fit_standardized(Xs, values[idx], mean, sd)
