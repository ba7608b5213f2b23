"""Activation caching: run a model over a task or data set and keep chosen hooks per token."""

from probekit.activations.cache import cache_activations, expand_hooks
from probekit.activations.store import ActivationStore

__all__ = ["ActivationStore", "cache_activations", "expand_hooks"]
