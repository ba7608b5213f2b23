"""Circuit localization: activation patching, ablations, attribution and path patching, logit lens.

Example:
    >>> import circuits
    >>> circuits.targets.names()[:3]
    ['resid', 'resid-mid', 'resid-post']
"""

from __future__ import annotations

from circuits import targets
from circuits.patching import patch
from circuits.result import PatchResult, bootstrap_ci
from probekit import metrics

__all__ = ["PatchResult", "bootstrap_ci", "metrics", "patch", "targets"]
