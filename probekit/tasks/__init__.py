"""Built-in tasks: a registry that feeds the CLI's choices and the tests' parametrization.

Example:
    >>> import probekit as pk
    >>> task = pk.tasks.get("parens")
    >>> batch = task.batch(4, seed=0)
    >>> batch.tokens.shape, batch.labels["depth"].shape
    (torch.Size([4, 49]), torch.Size([4, 49]))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from probekit._lazy import attach
from probekit.errors import ProbekitError, unknown

if TYPE_CHECKING:
    from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch

#: the base types, imported from ``probekit.tasks.base`` (torch) on first access: the registry itself
#: (``names``, the CLI's choices) stays importable without torch.
_BASE = ("LabelSpec", "PatchingPairs", "Task", "TaskBatch")


__getattr__, __dir__ = attach(__name__, dict.fromkeys(_BASE, "probekit.tasks.base"))


_REGISTRY: dict[str, str] = {}


def register(name: str, target: str) -> None:
    """Register a task class by ``"module:Class"`` path (imported on first use). Refuses duplicates."""
    if name in _REGISTRY:
        raise ValueError(f"task {name!r} is already registered")
    _REGISTRY[name] = target


register("induction", "probekit.tasks.induction:Induction")
register("modular", "probekit.tasks.modular:Modular")
register("parens", "probekit.tasks.parens:Parens")
register("gridworld", "probekit.tasks.gridworld:Gridworld")
register("text", "probekit.tasks.text:Text")


def names() -> list[str]:
    """Names of the registered tasks."""
    return list(_REGISTRY)


def task_class(name: str) -> Callable[..., Task]:
    if name not in _REGISTRY:
        raise unknown("task", name, _REGISTRY)
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def get(name: str, **params) -> Task:
    """A task by name, with optional parameters (``get("modular", p=113)``)."""
    cls = task_class(name)
    try:
        return cls(**params)
    except TypeError as e:
        raise ProbekitError(f"bad parameters for task {name!r}: {e}") from None


def from_dict(d: dict) -> Task:
    """Rebuild a task from :meth:`Task.to_dict` output."""
    d = dict(d)
    return get(d.pop("name"), **d)


__all__ = ["LabelSpec", "PatchingPairs", "Task", "TaskBatch", "from_dict", "get", "names", "register", "task_class"]
