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

from probekit import tasks
from probekit._lazy import attach
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


__getattr__, __dir__ = attach(__name__, _LAZY, submodules=True)

__all__ = ["ProbekitError", "tasks", *_LAZY]
