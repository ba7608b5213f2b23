"""``LinearProbe``: a scikit-learn estimator for one linear probe.

The same solver as the batched trainer (:mod:`probes.trainer`) with a single
layer, wrapped in the scikit-learn estimator contract so it works in
``cross_val_score``, ``GridSearchCV`` and pipelines.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, r2_score
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from probekit.errors import ProbekitError
from probes.trainer import DEFAULT_CS, KINDS, BatchedProbeTrainer, ProbeConfig


class LinearProbe(BaseEstimator):
    """A standardised, L2-regularised linear probe (logistic or ridge).

    Probing classifiers in the sense of Alain & Bengio (2016), "Understanding
    intermediate layers using linear classifier probes". Features are
    standardised; with ``C=None`` the regularisation is chosen by
    cross-validation over ``Cs`` (as ``LogisticRegressionCV`` / ``RidgeCV``).

    Args:
        kind: ``"logistic"`` (a classifier; binary or multinomial) or
            ``"ridge"`` (a regressor; one or several targets).
        C: inverse regularisation strength (scikit-learn's ``C``; ridge uses
            ``alpha = 1 / C``); ``None`` picks it by cross-validation.
        Cs: grid for cross-validation.
        cv: number of folds.
        standardize: standardise features first.
        max_iter: L-BFGS iterations (logistic).
        tol: gradient tolerance (logistic).
        device: torch device to fit on.

    Attributes:
        classes_: class values (logistic).
        coef_, intercept_: weights in the original feature space, shaped as
            scikit-learn's ``LogisticRegression`` / ``Ridge``.
        C_: regularisation used (per output).
        majority_: majority-class rate of the training labels (logistic), the
            accuracy a probe must beat.
        n_features_in_: number of features.

    Example:
        >>> X = np.random.randn(200, 5); y = (X[:, 0] > 0).astype(int)
        >>> LinearProbe(C=1.0).fit(X, y).score(X, y) > 0.9
        True
    """

    def __init__(self, kind: str = "logistic", C: float | None = None, *, Cs: tuple[float, ...] = DEFAULT_CS,
                 cv: int = 3, standardize: bool = True, max_iter: int = 100, tol: float = 1e-4,
                 device: str = "cpu") -> None:
        self.kind = kind
        self.C = C
        self.Cs = Cs
        self.cv = cv
        self.standardize = standardize
        self.max_iter = max_iter
        self.tol = tol
        self.device = device

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        if self.kind == "ridge":
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
            tags.target_tags.multi_output = True
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_label=False)
        tags.target_tags.required = True
        return tags

    def _config(self) -> ProbeConfig:
        if self.kind not in KINDS:
            raise ProbekitError(f"probe kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        return ProbeConfig(kind=self.kind, C=self.C, Cs=tuple(self.Cs), cv=self.cv, standardize=self.standardize,
                           max_iter=self.max_iter, tol=self.tol, device=self.device, dtype="float64")

    def fit(self, X, y) -> LinearProbe:
        """Fit the probe on ``X`` ``[n, d]`` and labels or targets ``y``; returns ``self``."""
        cfg = self._config()
        ridge = self.kind == "ridge"
        X, y = validate_data(self, X, y, multi_output=ridge, y_numeric=ridge, dtype=[np.float64, np.float32])
        if ridge:
            target = torch.as_tensor(np.asarray(y, dtype=np.float64))
        else:
            check_classification_targets(y)
            self.classes_, yi = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ProbekitError(f"the label has one class ({self.classes_.tolist()}); a probe needs at least two")
            self.majority_ = float(np.bincount(yi).max() / len(yi))
            target = torch.as_tensor(yi)
        if cfg.C is None:
            cv = min(cfg.cv, int(np.bincount(target.numpy()).min()) if not ridge else len(y))
            cfg = ProbeConfig(**{**cfg.to_dict(), "cv": max(cv, 2)})
        fit = BatchedProbeTrainer(cfg).fit(torch.from_numpy(np.array(X, dtype=np.float64))[None], target)
        W = (fit.coef[0] / fit.scale[0][:, None]).cpu().numpy()  # raw-space weights [d, out]
        b = (fit.intercept[0] - (fit.mean[0] / fit.scale[0]) @ fit.coef[0]).cpu().numpy()
        self.C_ = fit.C[0].numpy()
        # L-BFGS iterations; a closed-form ridge solve counts as one
        self.n_iter_ = np.array([int(fit.n_iter[0]) if fit.n_iter is not None else 1])
        if ridge and target.ndim == 1:
            self.coef_, self.intercept_ = W[:, 0], float(b[0])
        else:
            self.coef_, self.intercept_ = W.T.copy(), b
        return self

    def _is_logistic(self) -> bool:
        return self.kind != "ridge"

    @available_if(_is_logistic)
    def decision_function(self, X) -> np.ndarray:
        """Logits: ``[n]`` for a binary probe, ``[n, classes]`` otherwise (as scikit-learn)."""
        return self._decision(X)

    def _decision(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        z = np.asarray(X, dtype=np.float64) @ np.atleast_2d(self.coef_).T + self.intercept_
        return z[:, 0] if z.shape[1] == 1 and (self.kind != "ridge" or np.ndim(self.coef_) == 1) else z

    def predict(self, X) -> np.ndarray:
        """Class labels (logistic) or predicted targets (ridge)."""
        z = self._decision(X)
        if self.kind == "ridge":
            return z
        idx = (z > 0).astype(int) if z.ndim == 1 else z.argmax(1)
        return self.classes_[idx]

    @available_if(_is_logistic)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``[n, classes]`` (logistic only)."""
        z = self._decision(X)
        if z.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-z))
            return np.stack([1 - p, p], 1)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @available_if(_is_logistic)
    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (logistic) or R² (ridge), as scikit-learn's classifier and regressor mixins."""
        if self.kind == "ridge":
            return float(r2_score(y, self.predict(X), sample_weight=sample_weight))
        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))

    @property
    def direction_(self) -> np.ndarray:
        """Unit-norm probe direction(s) in feature space, ``[outputs, d]``."""
        W = np.atleast_2d(self.coef_)
        return W / np.linalg.norm(W, axis=1, keepdims=True).clip(1e-30)
