"""Activation caching: run a model over a task or data set and keep chosen hooks per token.

Modules: ``store`` (the one :class:`ActivationStore` type, in memory or on
disk), ``cache`` (:func:`cache_activations`), ``capture`` (the forward hooks),
``sinks`` (preallocated in-memory columns or bounded shard buffers), ``disk``
(the manifest + safetensors shard layout) and ``resume`` (resuming or reusing
a store directory).
"""

from __future__ import annotations

from probekit._lazy import attach

# name -> submodule that defines it, imported on first access: ``cache`` pulls in TransformerLens' bridge, which
# ``import probekit.activations.store`` (or ``.disk``) alone should not.
_LAZY = {
    "ActivationStore": "probekit.activations.store",
    "cache_activations": "probekit.activations.cache",
    "expand_hooks": "probekit.activations.cache",
    "parse_bytes": "probekit.activations.cache",
}


__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = ["ActivationStore", "cache_activations", "expand_hooks", "parse_bytes"]
