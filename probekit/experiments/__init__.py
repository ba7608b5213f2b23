"""Built-in experiments (the face layer): each reproduces a classic finding in one command.

The registry feeds ``probekit experiment``'s choices; ``demo`` is the main job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from probekit.errors import unknown

_REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register an experiment ``run(out, **kwargs)`` function by ``"module:function"``. Refuses duplicates."""
    if name in _REGISTRY:
        raise ValueError(f"experiment {name!r} is already registered")
    _REGISTRY[name] = target


register("demo", "probekit.experiments.demo:run")
for _name in ("induction", "scaling", "grokking", "probing"):
    register(_name, f"probekit.experiments.classic:{_name}")


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> Callable:
    if name not in _REGISTRY:
        raise unknown("experiment", name, _REGISTRY)
    module, fn = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), fn)
