"""One probe on one layer of a store, with its metrics and provenance (what ``probekit probe`` does)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probekit.errors import ProbekitError
from probes.control import CONTROL_ONE_CLASS, control_has_one_class, control_keys, control_labels, majority_rate
from probes.io import save
from probes.linear import LinearProbe
from probes.sweep import _split, store_fingerprint
from probes.trainer import check_stack

log = logging.getLogger(__name__)


def train_probe(
    store,
    layer: str | int,
    label: str,
    *,
    kind: str | None = None,
    C: float | None = None,
    control: bool = True,
    seed: int = 0,
    hook: str = "resid_post",
    test_fraction: float = 0.2,
    device: str = "cpu",
    out: str | Path | None = None,
) -> tuple[LinearProbe, dict[str, Any]]:
    """Fit a :class:`LinearProbe` on one layer (held-out examples for scoring), optionally save it.

    Args:
        store: an activation store.
        layer: ``embed``, ``L3``, an integer block (with ``hook``), ``L1H2`` or a hook name.
        label: the label to probe.
        kind: ``logistic``/``ridge`` (default: from the label's kind).
        C: fixed inverse regularisation, or ``None`` for cross-validation.
        control: fit the control task (Hewitt & Liang 2019) with the chosen C and report selectivity;
            skipped with a warning, as in :func:`probes.sweep`, when the control labels
            have one class on the training rows (``metrics`` then has no control entries).
        seed: seed of the split and the control labels.
        hook: hook kind for an integer ``layer``.
        test_fraction: fraction of examples held out.
        device: torch device for fitting.
        out: directory to save ``probe.json`` + ``probe.safetensors`` in.

    Returns:
        ``(probe, metrics)``.
    """
    spec = int(layer) if isinstance(layer, str) and layer.lstrip("-").isdigit() else layer
    ref = store.ref(spec, hook)
    values, defined = store.label(label)
    label_kind = store.label_kinds.get(label, "classification")
    kind = kind or ("logistic" if label_kind == "classification" else "ridge")
    if kind == "logistic" and label_kind == "regression":
        raise ProbekitError(f"label {label!r} is a regression target; use --kind ridge")
    rows = defined.nonzero().flatten()
    X = check_stack(store.layer(spec, hook)[rows])[0].double().numpy()
    y = values[rows].numpy()
    if kind == "logistic" and len(np.unique(y)) < 2:
        raise ProbekitError(f"label {label!r} has one class ({y[0]}) on the defined rows; a probe needs two")
    test = _split(store.example_id[rows], test_fraction, seed).numpy()
    probe = LinearProbe(kind=kind, C=C, device=device)
    try:
        probe.fit(X[~test], y[~test])
    except ProbekitError:
        raise
    except ValueError as e:  # scikit-learn's input validation
        raise ProbekitError(f"cannot fit the probe: {str(e).splitlines()[0]}") from None
    metric = "accuracy" if kind == "logistic" else "r2"
    metrics: dict[str, Any] = {"layer": ref.label or ref.name, metric: probe.score(X[test], y[test])}
    if kind == "logistic":
        metrics["majority"] = majority_rate(torch.as_tensor(y[~test]), torch.as_tensor(y[test]))
    if control:
        keys = control_keys(store.token[rows], store.position[rows], store.manifest.get("control_key", "token"))
        yc = control_labels(keys, torch.as_tensor(y), seed=seed)
        train = torch.as_tensor(~test)
        if kind == "logistic" and control_has_one_class(yc[train]):  # as sweep() does
            log.warning(CONTROL_ONE_CLASS, len(torch.unique(keys[train])))
        else:
            yc = yc.numpy()
            cprobe = LinearProbe(kind=kind, C=float(np.atleast_1d(probe.C_)[0]), device=device).fit(X[~test], yc[~test])
            metrics[f"control_{metric}"] = cprobe.score(X[test], yc[test])
            metrics["selectivity"] = metrics[metric] - metrics[f"control_{metric}"]
    metrics.update(n_train=int((~test).sum()), n_test=int(test.sum()))
    if out is not None:
        save(probe, out, layer=ref.label or ref.name, hook=ref.name, head=ref.head, label=label,
             label_kind=label_kind, metrics=metrics, fingerprint=store_fingerprint(store),
             store=str(store.path) if getattr(store, "path", None) else None, task=store.manifest.get("task"))
    return probe, metrics
