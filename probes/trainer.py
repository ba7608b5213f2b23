"""The batched trainer: one probe per layer (and per target) fitted at once.

A ``[layer, n, d]`` stack goes in; every layer's probe, every
cross-validation fold and every point of the regularisation grid is solved in
one batched call of :mod:`probes.solvers` (torch, CPU or GPU). The objective is
scikit-learn's, so the probes equal ``LogisticRegression(C=...)`` /
``Ridge(alpha=1/C)`` and, with ``C=None``, ``LogisticRegressionCV`` /
``RidgeCV`` on the same folds and grid.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from probekit.errors import ProbekitError
from probes.solvers import fit_logistic, fit_ridge, fit_ridge_fixed, ridge_stats

log = logging.getLogger(__name__)

Kind = Literal["logistic", "ridge"]
KINDS: tuple[str, ...] = ("logistic", "ridge")
#: default regularisation grid (scikit-learn's ``C``; ridge uses ``alpha = 1 / C``)
DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """How probes are fitted.

    Args:
        kind: ``"logistic"`` (classification) or ``"ridge"`` (regression).
        C: inverse regularisation strength (``alpha = 1 / C`` for ridge);
            ``None`` chooses it per layer (and target) by cross-validation over ``Cs``.
        Cs: the grid searched when ``C`` is ``None``.
        cv: number of folds (stratified for classification, as scikit-learn's
            ``check_cv`` makes them, without shuffling).
        standardize: scale features to zero mean and unit variance (per layer).
        max_iter: L-BFGS iterations for logistic probes.
        tol: gradient tolerance for logistic probes.
        device: where to fit (``"cpu"``, ``"cuda"``, …).
        dtype: ``"float32"`` or ``"float64"``.
    """

    kind: Kind = "logistic"
    C: float | None = None
    Cs: tuple[float, ...] = DEFAULT_CS
    cv: int = 3
    standardize: bool = True
    max_iter: int = 100
    tol: float = 1e-4
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ProbekitError(f"probe kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.C is not None and not self.C > 0:
            raise ProbekitError(f"C must be positive, got {self.C}")
        if not self.Cs or any(not c > 0 for c in self.Cs):
            raise ProbekitError(f"Cs must be positive numbers, got {self.Cs}")
        if self.cv < 2:
            raise ProbekitError(f"cv must be at least 2, got {self.cv}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BatchedFit:
    """Probes for ``L`` layers, weights in standardised space.

    ``decision(x) = ((x - mean) / scale) @ coef + intercept``.

    Attributes:
        coef: ``[layer, d_model, out]``.
        intercept: ``[layer, out]``.
        mean, scale: ``[layer, d_model]`` standardisation.
        C: ``[layer, out]`` the regularisation chosen (or given).
        classes: class values (classification), else ``None``.
        mode: ``"softmax"``, ``"sigmoid"`` (binary or multi-target) or ``"ridge"``.
        cv_scores: ``[layer, len(Cs), out]`` mean held-out score per grid point, or ``None``.
        n_iter: ``[layer]`` largest L-BFGS iteration count per layer.
    """

    coef: Tensor
    intercept: Tensor
    mean: Tensor
    scale: Tensor
    C: Tensor
    classes: np.ndarray | None
    mode: str
    cv_scores: Tensor | None = None
    n_iter: Tensor | None = None

    def decision(self, X: Float[Tensor, "layer n d_model"]) -> Float[Tensor, "layer n out"]:
        X = X.to(self.coef.device, self.coef.dtype)
        return torch.einsum("lnd,ldo->lno", (X - self.mean[:, None]) / self.scale[:, None], self.coef) + self.intercept[:, None]

    def predict_index(self, X: Float[Tensor, "layer n d_model"]) -> Tensor:
        """Class indices ``[layer, n]`` (softmax/binary) or ``[layer, n, out]`` (multi-target)."""
        z = self.decision(X)
        if self.mode == "softmax":
            return z.argmax(-1)
        if self.mode == "sigmoid":
            p = (z > 0).long()
            return p[..., 0] if self.classes is not None else p
        return z

    def proba(self, X: Float[Tensor, "layer n d_model"]) -> Tensor:
        """Class probabilities ``[layer, n, classes]`` (or ``[layer, n, out]`` of P(1) for multi-target)."""
        z = self.decision(X)
        if self.mode == "softmax":
            return torch.softmax(z, -1)
        p = torch.sigmoid(z)
        if self.classes is not None:  # binary: columns P(class 0), P(class 1)
            return torch.cat([1 - p, p], -1)
        return p

    def score(self, X: Float[Tensor, "layer n d_model"], y: Tensor) -> Tensor:
        """Accuracy (classification; per target for multi-target) or R² per layer (and target)."""
        if self.mode == "ridge":
            out = r2(self.decision(X), y.to(self.coef.device, self.coef.dtype).reshape(len(y), -1))
            return out[:, 0] if y.ndim == 1 else out
        idx = self.predict_index(X)
        y = y.to(idx.device)
        if self.classes is not None:
            y = encode(y, self.classes)
        eq = (idx == y[None]).float()
        return eq.mean(1)


def r2(pred: Float[Tensor, "layer n out"], y: Float[Tensor, "n out"]) -> Float[Tensor, "layer out"]:
    """Coefficient of determination per layer and output (scikit-learn's ``r2_score``)."""
    sse = ((pred - y[None]) ** 2).sum(1)
    sst = ((y - y.mean(0)) ** 2).sum(0)
    return 1 - sse / sst.clamp_min(1e-30)


def encode(y: Tensor, classes: np.ndarray) -> Tensor:
    """Class values -> indices into ``classes`` (``-1`` for unseen values)."""
    cl = torch.as_tensor(classes, device=y.device)
    idx = torch.searchsorted(cl, y.to(cl.dtype))
    idx = idx.clamp_max(len(cl) - 1)
    return torch.where(cl[idx] == y.to(cl.dtype), idx, torch.full_like(idx, -1))


def folds(y: np.ndarray, cv: int, classification: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, test) index splits scikit-learn's ``check_cv`` makes (no shuffling)."""
    from sklearn.model_selection import check_cv

    return list(check_cv(cv, y, classifier=classification).split(np.zeros((len(y), 1)), y))


class BatchedProbeTrainer:
    """Fit one linear probe per layer (and per target) at once.

    Args:
        config: a :class:`ProbeConfig` (or its fields as keywords).

    Example:
        >>> X = torch.randn(3, 200, 8); y = (X[1, :, 0] > 0).long()
        >>> fit = BatchedProbeTrainer(C=1.0).fit(X, y)
        >>> fit.score(X, y).shape
        torch.Size([3])
    """

    def __init__(self, config: ProbeConfig | None = None, **kwargs) -> None:
        self.config = config if config is not None else ProbeConfig(**kwargs)

    def fit(
        self,
        X: Float[Tensor, "layer n d_model"],
        y: Tensor,
        *,
        cv_splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
        C: Tensor | None = None,
    ) -> BatchedFit:
        """Fit every layer's probe.

        Args:
            X: ``[layer, n, d_model]`` activations (any device; moved to ``config.device``).
            y: ``[n]`` class labels (logistic) or ``[n]``/``[n, out]`` targets
                (ridge; logistic with ``[n, out]`` 0/1 fits independent binary probes).
            cv_splits: explicit (train, test) index pairs instead of ``config.cv`` folds.
            C: ``[layer]`` a fixed C per layer (e.g. the one a task probe chose, so a
                control probe has the same complexity); overrides ``config.C``.
        """
        cfg = self.config
        dev, dt = torch.device(cfg.device), getattr(torch, cfg.dtype)
        X = check_stack(X)
        y = torch.as_tensor(y)
        if y.shape[0] != X.shape[1]:
            raise ProbekitError(f"labels have {y.shape[0]} rows but activations have {X.shape[1]}")
        X = X.to(dev, dt)
        mean, scale = standardizer(X) if cfg.standardize else (
            torch.zeros(X.shape[0], X.shape[2], device=dev, dtype=dt), torch.ones(X.shape[0], X.shape[2], device=dev, dtype=dt))
        Xs = (X - mean[:, None]).div_(scale[:, None])  # one temporary, not two
        return self.fit_standardized(Xs, y, mean, scale, cv_splits=cv_splits, C=C)

    def fit_standardized(self, Xs, y: Tensor, mean: Tensor, scale: Tensor, *,
                         cv_splits: list[tuple[np.ndarray, np.ndarray]] | None = None,
                         C: Tensor | None = None) -> BatchedFit:
        """:meth:`fit` on rows already standardized by ``mean`` and ``scale`` (``[layer, d_model]``, on the device).

        ``Xs`` is a ``[layer, n, d_model]`` tensor, or any object the solvers can read blocks of rows from
        (``Xs[:, rows]``, ``Xs[l:l+1]``, ``.shape``, ``.device``, ``.dtype``), such as
        :class:`probes.stream.StoreRows`.
        """
        cfg = self.config
        dev, dt = torch.device(cfg.device), getattr(torch, cfg.dtype)
        y = torch.as_tensor(y)
        if C is not None:
            C = torch.as_tensor(C, dtype=torch.float64).reshape(-1)
            if len(C) != Xs.shape[0]:
                raise ProbekitError(f"C has {len(C)} values for {Xs.shape[0]} layers")
            cfg = dataclasses.replace(cfg, C=float(C[0]))
        self._layer_C = C
        Cs = (cfg.C,) if cfg.C is not None else tuple(cfg.Cs)
        classification = cfg.kind == "logistic"
        y_np = y.numpy() if y.ndim == 1 else np.zeros(len(y))
        if cfg.C is None:
            splits = cv_splits if cv_splits is not None else folds(y_np, cfg.cv, classification and y.ndim == 1)
        else:
            splits = []
        n = Xs.shape[1]
        # groups: every fold's training rows, then all rows; each for every C
        masks = torch.ones(len(splits) + 1, n, device=dev, dtype=dt)
        for f, (tr, _) in enumerate(splits):
            masks[f] = 0
            masks[f, torch.as_tensor(tr, device=dev)] = 1
        fit_fn = self._fit_logistic if classification else self._fit_ridge
        coef, icpt, Csel, cv_scores, n_iter, classes, mode = fit_fn(Xs, y, masks, Cs, splits, dev, dt, cfg)
        return BatchedFit(coef=coef, intercept=icpt, mean=mean, scale=scale, C=Csel, classes=classes,
                          mode=mode, cv_scores=cv_scores, n_iter=n_iter)

    def _chosen(self, Cs, L: int, n_out: int) -> Tensor:
        """``[layer, out]`` the fixed C of each layer, in float64 as given."""
        if self._layer_C is not None:
            return self._layer_C[:, None].expand(L, n_out).clone()
        return torch.full((L, n_out), Cs[0], dtype=torch.float64)

    # -- logistic --------------------------------------------------------------
    def _fit_logistic(self, Xs, y, masks, Cs, splits, dev, dt, cfg):
        L = Xs.shape[0]
        if y.is_floating_point() and not torch.all(y == y.round()):
            raise ProbekitError("logistic probes need class labels; use kind='ridge' for continuous targets")
        if y.ndim == 1:
            classes = np.unique(y.numpy())
            if len(classes) < 2:
                raise ProbekitError(f"the label has one class ({classes.tolist()}); a probe needs at least two")
            Y = encode(y, classes).to(dev)
            mode, n_out = ("sigmoid", 1) if len(classes) == 2 else ("softmax", len(classes))
            Yfit = Y[:, None] if mode == "sigmoid" else Y
        else:
            classes, mode, n_out = None, "sigmoid", y.shape[1]
            Yfit = y.to(dev).long()
        F, A = masks.shape[0] - 1, len(Cs)
        if self._layer_C is not None:
            C = self._layer_C.to(dev, dt)[:, None]
        else:
            C = torch.tensor(Cs, device=dev, dtype=dt).repeat(F + 1)[None].expand(L, -1)
        weights = masks.repeat_interleave(A, 0)  # group g = fold * A + c
        fit = fit_logistic(Xs, Yfit, C=C, weights=weights, mode=mode, n_out=n_out,
                           max_iter=cfg.max_iter, tol=cfg.tol)
        W = fit.coef.view(L, F + 1, A, *fit.coef.shape[2:])
        b = fit.intercept.view(L, F + 1, A, -1)
        n_iter = fit.n_iter.view(L, F + 1, A).amax((1, 2))
        if F == 0:
            return W[:, 0, 0], b[:, 0, 0], self._chosen(Cs, L, n_out), None, n_iter, classes, mode
        scores = torch.zeros(L, A, n_out if mode == "sigmoid" else 1, device=dev, dtype=dt)
        for f, (_, te) in enumerate(splits):
            te = torch.as_tensor(te, device=dev)
            for part in te.split(SCORE_ROWS):  # held-out rows in blocks (a streamed store reads only these)
                z = torch.einsum("lnd,lado->lano", Xs[:, part], W[:, f]) + b[:, f, :, None, :]
                yt = Yfit[part]
                if mode == "softmax":
                    scores[..., 0] += (z.argmax(-1) == yt).float().sum(-1) / len(te)
                else:
                    scores += ((z > 0).long() == yt[None, None]).float().sum(2) / len(te)
        scores /= F
        best = scores.argmax(1)  # first best, as scikit-learn; [L, out]
        if mode == "softmax":
            coef = W[torch.arange(L), F, best[:, 0]]
            icpt = b[torch.arange(L), F, best[:, 0]]
        else:  # per target: gather each output's column at its own C
            full_W, full_b = W[:, F], b[:, F]  # [L, A, d, out], [L, A, out]
            coef = full_W.gather(1, best[:, None, None, :].expand(-1, 1, full_W.shape[2], -1))[:, 0]
            icpt = full_b.gather(1, best[:, None, :])[:, 0]
        Csel = torch.tensor(Cs, dtype=torch.float64)[best.cpu()]
        return coef, icpt, Csel, scores, n_iter, classes, mode

    # -- ridge -----------------------------------------------------------------
    def _fit_ridge(self, Xs, y, masks, Cs, splits, dev, dt, cfg):
        Y = y.to(dev, dt).reshape(len(y), -1)
        L, O = Xs.shape[0], Y.shape[1]
        stats = ridge_stats(Xs, Y, masks)
        F = masks.shape[0] - 1
        if F == 0:  # one alpha per layer: a direct solve
            Cl = self._layer_C.to(dev, dt) if self._layer_C is not None else torch.full((L,), Cs[0], device=dev, dtype=dt)
            coef, icpt = fit_ridge_fixed(stats, 1.0 / Cl)
            return coef[:, 0], icpt[:, 0], self._chosen(Cs, L, O), None, None, None, "ridge"
        alphas = 1.0 / torch.tensor(Cs, device=dev, dtype=dt)
        coef, icpt = fit_ridge(stats, alphas)  # [L, G, A, d, O], [L, G, A, O]
        scores = torch.zeros(L, len(Cs), O, device=dev, dtype=dt)
        for f, (_, te) in enumerate(splits):
            te = torch.as_tensor(te, device=dev)
            pred = torch.einsum("lnd,lado->lano", Xs[:, te], coef[:, f]) + icpt[:, f, :, None, :]
            yt = Y[te]
            sse = ((pred - yt) ** 2).sum(2)
            sst = ((yt - yt.mean(0)) ** 2).sum(0).clamp_min(1e-30)
            scores += 1 - sse / sst
        scores /= F
        best = scores.argmax(1)  # [L, O]
        full_W, full_b = coef[:, F], icpt[:, F]
        W = full_W.gather(1, best[:, None, None, :].expand(-1, 1, full_W.shape[2], -1))[:, 0]
        b = full_b.gather(1, best[:, None, :])[:, 0]
        return W, b, torch.tensor(Cs, dtype=torch.float64)[best.cpu()], scores, None, None, "ridge"


#: held-out rows scored per block in cross-validation
SCORE_ROWS = 8192


def check_stack(X) -> Tensor:
    """A float ``[layer, n, d]`` tensor without NaN/inf, or a one-line error."""
    X = torch.as_tensor(X)
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3:
        raise ProbekitError(f"activations must be [layer, n, d] or [n, d], got shape {tuple(X.shape)}")
    if not X.is_floating_point():
        X = X.float()
    if torch.isfinite(X.sum()):  # one pass, no mask: a NaN or inf anywhere makes the sum NaN or inf
        return X
    bad = ~torch.isfinite(X)  # (or the float32 sum overflowed on finite values: then nothing is bad)
    if bool(bad.any()):
        rows = bad.any(-1).any(0).nonzero().flatten()
        raise ProbekitError(f"activations have NaN/inf values in {len(rows)} rows (first: row {int(rows[0])})")
    return X


def standardizer(X: Float[Tensor, "layer n d_model"]) -> tuple[Tensor, Tensor]:
    """Per-layer mean and standard deviation (zero std -> 1), as ``StandardScaler``."""
    scale, mean = torch.std_mean(X, 1, correction=0)
    return mean, torch.where(scale > 1e-12 * mean.abs().clamp_min(1.0), scale, torch.ones_like(scale))
