"""Activation caching: run a model over a task or data set and keep chosen hooks per token.

Modules: ``store`` (the one :class:`ActivationStore` type, in memory or on
disk), ``cache`` (:func:`cache_activations`), ``capture`` (the forward hooks),
``sinks`` (preallocated in-memory columns or bounded shard buffers), ``disk``
(the manifest + safetensors shard layout) and ``resume`` (resuming or reusing
a store directory).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> submodule that defines it, imported on first access: ``cache`` pulls in TransformerLens' bridge, which
# ``import probekit.activations.store`` (or ``.disk``) alone should not.
_LAZY = {
    "ActivationStore": "probekit.activations.store",
    "cache_activations": "probekit.activations.cache",
    "expand_hooks": "probekit.activations.cache",
    "parse_bytes": "probekit.activations.cache",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'probekit.activations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = ["ActivationStore", "cache_activations", "expand_hooks", "parse_bytes"]
