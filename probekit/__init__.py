"""probekit: probing, attention dashboards and circuit localization on TransformerLens models.

Example:
    >>> import probekit as pk
    >>> task = pk.tasks.get("parens")
    >>> model = pk.build_model(pk.ModelConfig(n_layers=1, d_model=32, n_heads=2, d_vocab=task.d_vocab))
"""

from __future__ import annotations

from probekit import tasks
from probekit.activations import ActivationStore, cache_activations
from probekit.errors import ProbekitError
from probekit.model import ModelConfig, build_model, fingerprint

__version__ = "0.1.0"

__all__ = ["ActivationStore", "ModelConfig", "ProbekitError", "build_model", "cache_activations", "fingerprint", "tasks"]
