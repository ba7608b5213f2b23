"""Training precisions: the ``TrainConfig.precision`` Literal and its values, importable without torch.

``probekit.training`` re-exports both; the CLI reads the ``--precision`` choices from here so that
``probekit train --help`` stays light.
"""

from __future__ import annotations

from typing import Literal, get_args

Precision = Literal["fp32", "bf16"]
#: the valid ``TrainConfig.precision`` values (the CLI's ``--precision`` choices).
PRECISIONS: tuple[str, ...] = get_args(Precision)

__all__ = ["PRECISIONS", "Precision"]
