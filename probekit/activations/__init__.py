"""Activation caching: run a model over a task or data set and keep chosen hooks per token.

Modules: ``store`` (the one :class:`ActivationStore` type, in memory or on
disk), ``cache`` (:func:`cache_activations`), ``capture`` (the forward hooks),
``sinks`` (preallocated in-memory columns or bounded shard buffers), ``disk``
(the manifest + safetensors shard layout) and ``resume`` (resuming or reusing
a store directory).
"""

from probekit.activations.cache import cache_activations, expand_hooks, parse_bytes
from probekit.activations.store import ActivationStore

__all__ = ["ActivationStore", "cache_activations", "expand_hooks", "parse_bytes"]
