"""Saving and loading probes: ``probe.safetensors`` + ``probe.json``, never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from probekit.errors import ProbekitError
from probes.linear import LinearProbe

FORMAT = "probekit.probe"
VERSION = 1


def save(probe: LinearProbe, path: str | Path, **meta: Any) -> Path:
    """Write a fitted probe to directory ``path`` (``probe.safetensors`` + ``probe.json``).

    Args:
        probe: a fitted :class:`LinearProbe`.
        path: output directory (created).
        **meta: provenance saved in the JSON: ``layer``, ``hook``, ``label``,
            ``metrics`` (accuracy, control accuracy, selectivity …),
            ``fingerprint`` (of the model the activations came from).
    """
    if not hasattr(probe, "coef_"):
        raise ProbekitError("the probe is not fitted; call fit(X, y) before saving")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {"coef": torch.as_tensor(np.atleast_2d(probe.coef_)).contiguous(),
               "intercept": torch.as_tensor(np.atleast_1d(probe.intercept_)).contiguous()}
    save_file(tensors, str(out / "probe.safetensors"))
    classes = getattr(probe, "classes_", None)
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in probe.get_params().items()},
        "n_features": int(probe.n_features_in_),
        "coef_ndim": int(np.ndim(probe.coef_)),
        "classes": None if classes is None else classes.tolist(),
        "C": np.atleast_1d(probe.C_).tolist(),
        "majority": getattr(probe, "majority_", None),
        **meta,
    }
    (out / "probe.json").write_text(json.dumps(doc, indent=2, default=_jsonable))
    return out


def _jsonable(x):
    if isinstance(x, (np.generic, torch.Tensor)):
        return x.tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"cannot save {type(x).__name__} in probe.json")


def load(path: str | Path, *, model=None, fingerprint: str | None = None) -> LinearProbe:
    """Load a probe saved by :func:`save`; ``probe.meta_`` holds its JSON.

    Args:
        path: the probe directory (or its ``probe.json``).
        model: if given, refuse the probe unless it was trained on this
            model's activations (weights fingerprint).
        fingerprint: the same check against a fingerprint string.
    """
    p = Path(path)
    if p.name == "probe.json":
        p = p.parent
    meta_file, weights_file = p / "probe.json", p / "probe.safetensors"
    for f in (meta_file, weights_file):
        if not f.is_file():
            raise ProbekitError(f"no probe at {str(p)!r}: missing {f.name}")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProbekitError(f"{meta_file} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ProbekitError(f"{meta_file} is not a probekit probe (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise ProbekitError(f"{meta_file} has probe format version {meta.get('version')!r}; this probekit reads {VERSION}")
    try:
        tensors = load_file(str(weights_file))
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise ProbekitError(f"{weights_file} is not a valid safetensors file ({type(e).__name__})") from None
    if set(tensors) != {"coef", "intercept"}:
        raise ProbekitError(f"{weights_file} holds {sorted(tensors)}, expected coef and intercept")
    want = fingerprint
    if model is not None:
        from probekit.model import fingerprint as fp

        want = fp(model)
    if want is not None and meta.get("fingerprint") != want:
        raise ProbekitError(f"probe at {str(p)!r} was trained on a model with fingerprint "
                            f"{meta.get('fingerprint')!r}, not this model ({want!r})")
    params = dict(meta["params"])
    if isinstance(params.get("Cs"), list):
        params["Cs"] = tuple(params["Cs"])
    probe = LinearProbe(**params)
    coef, icpt = tensors["coef"].numpy(), tensors["intercept"].numpy()
    if coef.shape[-1] != meta["n_features"]:
        raise ProbekitError(f"{weights_file}: coef has {coef.shape[-1]} features, probe.json says {meta['n_features']}")
    if meta["coef_ndim"] == 1:
        probe.coef_, probe.intercept_ = coef[0], float(icpt[0])
    else:
        probe.coef_, probe.intercept_ = coef, icpt
    probe.n_features_in_ = meta["n_features"]
    probe.C_ = np.array(meta["C"])
    probe.n_iter_ = np.array([0])
    if meta.get("classes") is not None:
        probe.classes_ = np.array(meta["classes"])
        probe.majority_ = meta.get("majority")
    probe.meta_ = meta
    return probe
