"""probekit: probing, attention dashboards and circuit localization on TransformerLens models.

Example:
    >>> import probekit as pk
    >>> task = pk.tasks.get("parens")
    >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab))

``import probekit`` stays light (no torch, TransformerLens or transformers:
``probekit --help`` starts fast): the model, activation caching, the training
loop, loaders, head scores and ``viz`` are imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from probekit import tasks
from probekit.errors import ProbekitError

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access (a name that is the module's own last
# component is the module itself).
_LAZY = {
    "ModelConfig": "probekit.model",
    "build_model": "probekit.model",
    "fingerprint": "probekit.model",
    "ActivationStore": "probekit.activations.store",
    "cache_activations": "probekit.activations.cache",
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
    elif not name.startswith("_") and importlib.util.find_spec(f"probekit.{name}") is not None:
        value = importlib.import_module(f"probekit.{name}")  # any submodule, as after an eager import (pk.hooks)
    else:
        raise AttributeError(f"module 'probekit' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["ProbekitError", "tasks", *_LAZY]
