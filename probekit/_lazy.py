"""Lazy package attributes (PEP 562): names imported from their defining modules on first access.

``import probekit`` stays light this way (no torch, TransformerLens or transformers until a name that needs
them is used). One helper for every package ``__init__`` that does this.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from typing import Any


def attach(package: str, names: dict[str, str], *, submodules: bool = False
           ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: attribute -> the module defining it; an attribute that is that module's own last name component
            is the module itself (``"heads": "probekit.heads"``).
        submodules: also import any other ``package.<name>`` submodule on access, as an eager import would have.
    """

    def __getattr__(name: str) -> Any:
        if name in names:
            module = importlib.import_module(names[name])
            value = module if module.__name__ == f"{package}.{name}" else getattr(module, name)
        elif submodules and not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        mod = sys.modules[package]
        return sorted(set(vars(mod)) | set(getattr(mod, "__all__", ())))

    return __getattr__, __dir__
