"""Batched solvers: many L2-regularised linear probes fitted at once with torch.

Two closed problems, each solved for a whole grid of (layer, group) problems
in one pass over the data, on CPU or GPU:

* logistic regression (binary sigmoid, multinomial softmax, or several
  independent binary targets) with **exactly scikit-learn's objective**
  ``C * sum_i loss_i + ||W||^2 / 2`` (intercept unpenalised), divided by
  ``C * n`` so every problem has an O(1) scale. Solved by a batched L-BFGS
  where every problem keeps its own curvature history and step size, so a
  well-conditioned problem never waits for a badly conditioned one;
* ridge regression ``||y - Xw - b||^2 + alpha ||w||^2`` in closed form from
  sufficient statistics (``X^T X``, ``X^T y``): one eigendecomposition per
  (layer, fold) serves every ``alpha`` of a grid.

Rows are weighted by ``weights[g, n]`` (0/1 masks for cross-validation folds),
so all folds and all regularisation strengths share one pass over ``X``.

Shapes: ``L`` layers, ``G`` problems per layer (folds x grid), ``n`` rows,
``d`` features, ``O`` outputs (classes for softmax, targets for sigmoid/ridge).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

Mode = Literal["softmax", "sigmoid"]


@dataclass(frozen=True)
class LinearFit:
    """Weights of ``L x G`` fitted linear maps (``logits = x @ coef + intercept``)."""

    coef: Float[Tensor, "layer group d_model out"]
    intercept: Float[Tensor, "layer group out"]
    n_iter: Tensor  # [layer, group] L-BFGS iterations (zeros for ridge)


def _logistic_loss_grad(
    X: Float[Tensor, "layer n d_model"],
    Y: Tensor,
    W: Float[Tensor, "layer group out d_model"],
    b: Float[Tensor, "layer group out"],
    weights: Float[Tensor, "group n"],
    inv_Cn: Float[Tensor, "layer group"],
    mode: Mode,
    chunk: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Objective / (C n) and its gradient for every problem; rows in chunks to bound memory.

    Logits are laid out ``[layer, group, out, n]`` so the small class axis is
    never the innermost one: reductions over it vectorise along the rows.
    """
    L, G, O, d = W.shape
    n_g = weights.sum(1).clamp_min(1.0)  # [G]
    loss = 0.5 * inv_Cn * (W * W).sum((2, 3))
    gW = W * inv_Cn[..., None, None]
    gb = torch.zeros_like(b)
    Wf = W.reshape(L, G * O, d)
    for s in range(0, X.shape[1], chunk):
        x = X[:, s : s + chunk]  # [L, c, d]
        c = x.shape[1]
        w = (weights[:, s : s + chunk] / n_g[:, None])[None, :, None, :]  # [1, G, 1, c]
        z = (Wf @ x.transpose(1, 2)).view(L, G, O, c) + b[..., None]
        if mode == "softmax":
            onehot = torch.zeros(O, c, dtype=z.dtype, device=z.device)
            onehot[Y[s : s + chunk], torch.arange(c, device=z.device)] = 1.0
            m = z.amax(2, keepdim=True)
            e = (z - m).exp()
            se = e.sum(2, keepdim=True)
            lse = m + se.log()
            loss = loss + ((lse[:, :, 0] - (z * onehot).sum(2)) * w[:, :, 0]).sum(-1)
            r = e / se - onehot
        else:  # independent binary targets, Y [n, O] in {0, 1}
            y = Y[s : s + chunk].T.to(z.dtype)  # [O, c]
            loss = loss + ((torch.nn.functional.softplus(z) - y * z) * w).sum((-1, -2))
            r = torch.sigmoid(z) - y
        r = r * w
        gW = gW + (r.reshape(L, G * O, c) @ x).view(L, G, O, d)
        gb = gb + r.sum(-1)
    return loss, gW, gb


def fit_logistic(
    X: Float[Tensor, "layer n d_model"],
    Y: Tensor,
    *,
    C: Float[Tensor, "layer group"],
    weights: Float[Tensor, "group n"] | None = None,
    mode: Mode = "softmax",
    n_out: int,
    max_iter: int = 100,
    tol: float = 1e-4,
    history: int = 10,
    chunk: int = 8192,
) -> LinearFit:
    """Fit ``layer x group`` logistic regressions by batched L-BFGS.

    Args:
        X: standardised features, one matrix per layer.
        Y: ``[n]`` class ids (softmax) or ``[n, out]`` 0/1 targets (sigmoid).
        C: inverse regularisation strength per problem (scikit-learn's ``C``).
        weights: row weights per group (0/1 fold masks); ``None`` for all ones.
        mode: ``"softmax"`` (multinomial) or ``"sigmoid"`` (each output binary,
            as scikit-learn fits a two-class problem).
        n_out: number of classes (softmax) or targets (sigmoid).
        max_iter: L-BFGS iterations (scikit-learn's default is 100).
        tol: stop a problem when its largest gradient entry is below ``tol``
            (scipy's ``pgtol``, as scikit-learn uses it).
        history: L-BFGS memory.
        chunk: rows per block when evaluating the loss.

    Returns:
        the weights in the standardised space.
    """
    L, n, d = X.shape
    G = C.shape[1]
    dev, dt = X.device, X.dtype
    if weights is None:
        weights = torch.ones(G, n, device=dev, dtype=dt)
    inv_Cn = 1.0 / (C.to(dev, dt) * weights.sum(1).clamp_min(1.0)[None, :])
    W = torch.zeros(L, G, n_out, d, device=dev, dtype=dt)
    b = torch.zeros(L, G, n_out, device=dev, dtype=dt)

    def f(W, b, layers: Tensor | None = None):
        """Loss and gradient; with ``layers`` (bool ``[L]``) only those layers are evaluated (others 0),
        so problems that have converged stop costing anything."""
        if layers is None or bool(layers.all()):
            return _logistic_loss_grad(X, Y, W, b, weights, inv_Cn, mode, chunk)
        loss, gW, gb = torch.zeros(L, G, device=dev, dtype=dt), torch.zeros_like(W), torch.zeros_like(b)
        for i in layers.nonzero().flatten().tolist():  # X[i:i+1] is a view: no copy
            loss[i : i + 1], gW[i : i + 1], gb[i : i + 1] = _logistic_loss_grad(
                X[i : i + 1], Y, W[i : i + 1], b[i : i + 1], weights, inv_Cn[i : i + 1], mode, chunk)
        return loss, gW, gb

    def flat(gW, gb):
        return torch.cat([gW.reshape(L, G, -1), gb], -1)  # [L, G, p]

    loss, gW, gb = f(W, b)
    theta, g = flat(W, b), flat(gW, gb)
    S: list[Tensor] = []
    Yh: list[Tensor] = []
    R: list[Tensor] = []
    n_iter = torch.zeros(L, G, dtype=torch.long, device=dev)
    done = g.abs().amax(-1) <= tol

    def unflat(t):
        return t[..., : d * n_out].reshape(L, G, n_out, d), t[..., d * n_out :]

    for it in range(max_iter):
        if bool(done.all()):
            break
        # two-loop recursion, per problem
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(S), reversed(Yh), reversed(R)):
            a = rho * (s * q).sum(-1)
            alphas.append(a)
            q -= a[..., None] * y
        if S:
            gamma = (S[-1] * Yh[-1]).sum(-1) / (Yh[-1] * Yh[-1]).sum(-1).clamp_min(1e-30)
        else:  # first step: at most unit length
            gamma = 1.0 / g.norm(dim=-1).clamp_min(1.0)
        q *= gamma[..., None]
        for s, y, rho, a in zip(S, Yh, R, reversed(alphas)):
            beta = rho * (y * q).sum(-1)
            q += (a - beta)[..., None] * s
        direction = -q
        slope = (g * direction).sum(-1)
        bad = slope >= 0  # not a descent direction: restart with steepest descent
        if bool(bad.any()):
            direction = torch.where(bad[..., None], -g, direction)
            slope = (g * direction).sum(-1)
        direction = direction * (~done)[..., None]
        # backtracking Armijo line search, each problem with its own step
        t = torch.ones(L, G, device=dev, dtype=dt)
        accepted = done.clone()
        new_theta, new_loss, new_g = theta, loss, g
        for _ in range(30):
            trial = theta + t[..., None] * direction
            tl, tgW, tgb = f(*unflat(trial), layers=(~accepted).any(1))
            ok = (~accepted) & (tl <= loss + 1e-4 * t * slope)
            new_theta = torch.where(ok[..., None], trial, new_theta)
            new_loss = torch.where(ok, tl, new_loss)
            new_g = torch.where(ok[..., None], flat(tgW, tgb), new_g)
            accepted |= ok
            if bool(accepted.all()):
                break
            t = torch.where(accepted, t, t * 0.5)
        stuck = ~accepted  # no decrease found: converged to numerical precision
        s_k, y_k = new_theta - theta, new_g - g
        sy = (s_k * y_k).sum(-1)
        good = sy > 1e-10
        S.append(s_k * good[..., None])
        Yh.append(torch.where(good[..., None], y_k, torch.zeros_like(y_k)))
        R.append(torch.where(good, 1.0 / sy.clamp_min(1e-10), torch.zeros_like(sy)))
        if len(S) > history:
            S.pop(0), Yh.pop(0), R.pop(0)
        change = (loss - new_loss).abs() <= 1e-9 * torch.maximum(loss.abs(), new_loss.abs()).clamp_min(1.0)
        n_iter += (~done).long()
        theta, loss, g = new_theta, new_loss, new_g
        done = done | stuck | (g.abs().amax(-1) <= tol) | (change & accepted)
    coef, intercept = unflat(theta)
    return LinearFit(coef=coef.transpose(-1, -2).contiguous(), intercept=intercept.contiguous(), n_iter=n_iter)


def gram(X: Float[Tensor, "layer n d_model"], block: int = 192) -> Float[Tensor, "layer d_model d_model"]:
    """``X^T X`` per layer from its upper block triangle (the lower blocks mirrored): with ``d_model / block`` blocks
    a side, ``k (k + 1) / 2`` of the ``k^2`` block products, each the same dot products as the full product's.
    (BLAS' symmetric rank-k update, which scikit-learn's ``X.T @ X`` gets from numpy, is not exposed by torch.)"""
    L, n, d = X.shape
    k = max(1, min(4, d // block))
    b = -(-d // k)
    if k == 1:
        return X.transpose(1, 2) @ X
    G = X.new_empty(L, d, d)
    for i in range(0, d, b):
        Xi = X[..., i : i + b].transpose(1, 2)
        for j in range(i, d, b):
            blk = Xi @ X[..., j : j + b]
            G[:, i : i + b, j : j + b] = blk
            if j != i:
                G[:, j : j + b, i : i + b] = blk.transpose(1, 2)
    return G


def ridge_stats(
    X: Float[Tensor, "layer n d_model"],
    Y: Float[Tensor, "n out"],
    weights: Float[Tensor, "group n"],
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Weighted sufficient statistics per (layer, group): n, sum x, sum y, X^T X, X^T y, y^T y."""
    n_g = weights.sum(1)  # [G]
    sx = torch.einsum("gn,lnd->lgd", weights, X)
    sy = weights @ Y  # [G, O]
    Xt = X.transpose(1, 2)  # [L, d, n]
    # one [L, d, d] Gram matrix per group, of the rows scaled by sqrt(weight) (exact for 0/1 masks); a group of
    # every row (weight 1) needs no scaled copy of X
    ones = [bool((w == 1).all()) for w in weights]
    xtx = torch.stack([gram(X if one else X * w.sqrt()[:, None]) for w, one in zip(weights, ones)], 1)
    xty = torch.stack([Xt @ Y if one else (Xt * w) @ Y for w, one in zip(weights, ones)], 1)
    yty = weights @ (Y * Y)
    return n_g, sx, sy, xtx, xty, yty


def _centred(stats):
    n_g, sx, sy, xtx, xty, _ = stats
    n = n_g.clamp_min(1.0)[None, :, None]
    mx = sx / n  # [L, G, d]
    my = sy / n_g.clamp_min(1.0)[:, None]  # [G, O]
    xtx_c = xtx - n[..., None] * mx[..., :, None] * mx[..., None, :]
    xty_c = xty - n[..., None] * mx[..., :, None] * my[None, :, None, :]
    return mx, my, xtx_c, xty_c


def fit_ridge_fixed(
    stats: tuple[Tensor, ...],
    alpha: Float[Tensor, " layer"],
) -> tuple[Float[Tensor, "layer group d_model out"], Float[Tensor, "layer group out"]]:
    """Ridge weights with one ``alpha`` per layer: a Cholesky solve, no eigendecomposition."""
    mx, my, xtx_c, xty_c = _centred(stats)
    d = xtx_c.shape[-1]
    eye = torch.eye(d, dtype=xtx_c.dtype, device=xtx_c.device)
    A = xtx_c + alpha[:, None, None, None] * eye
    chol, info = torch.linalg.cholesky_ex(A)
    if bool((info == 0).all()):
        coef = torch.cholesky_solve(xty_c, chol)
    else:  # alpha = 0 on rank-deficient data: least squares
        coef = torch.linalg.lstsq(A, xty_c).solution
    intercept = my[None, :, :] - torch.einsum("lgd,lgdo->lgo", mx, coef)
    return coef, intercept


def fit_ridge(
    stats: tuple[Tensor, ...],
    alphas: Float[Tensor, " alpha"],
) -> tuple[Float[Tensor, "layer group alpha d_model out"], Float[Tensor, "layer group alpha out"]]:
    """Ridge weights for every (layer, group) and every ``alpha`` from sufficient statistics.

    Minimises ``sum_i w_i ||y_i - x_i W - b||^2 + alpha ||W||^2`` (scikit-learn's
    ``Ridge`` with an unpenalised intercept): centre, eigendecompose the
    centred ``X^T X`` once, then each ``alpha`` costs a diagonal rescale.
    """
    mx, my, xtx_c, xty_c = _centred(stats)
    evals, V = torch.linalg.eigh(xtx_c)  # [L, G, d], [L, G, d, d]
    proj = V.transpose(-1, -2) @ xty_c  # [L, G, d, O]
    scale = 1.0 / (evals[:, :, None, :] + alphas[None, None, :, None])  # [L, G, A, d]
    coef = torch.einsum("lgde,lgae,lgeo->lgado", V, scale, proj)
    intercept = my[None, :, None, :] - torch.einsum("lgd,lgado->lgao", mx, coef)
    return coef, intercept
