"""probekit: probing, attention dashboards and circuit localization on TransformerLens models.

Example:
    >>> import probekit as pk
    >>> task = pk.tasks.get("parens")
    >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab))

``import probekit`` stays light: the training loop, loaders, head scores and
``viz`` are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from probekit import tasks
from probekit.activations import ActivationStore, cache_activations
from probekit.errors import ProbekitError
from probekit.model import ModelConfig, build_model, fingerprint

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access.
_LAZY = {
    "load": "probekit.loading",
    "save_run": "probekit.runs",
    "TrainConfig": "probekit.training",
    "train": "probekit.training",
    "load_data": "probekit.data",
    "heads": "probekit.heads",
    "metrics": "probekit.metrics",
    "viz": "probekit.viz",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = module if module.__name__.endswith("." + name) else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probekit' has no attribute {name!r}")


__all__ = ["ActivationStore", "ModelConfig", "ProbekitError", "build_model", "cache_activations", "fingerprint",
           "tasks", *_LAZY]
