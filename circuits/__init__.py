"""Circuit localization: activation patching, ablations, attribution and path patching, logit lens.

Example:
    >>> import circuits
    >>> circuits.targets.names()[:3]
    ['resid', 'resid-mid', 'resid-post']
"""

from __future__ import annotations

from circuits import targets
from circuits.ablation import ablate, all_nodes
from circuits.attribution import attribution_patch, correlation
from circuits.lens import dla, logit_lens
from circuits.paths import path_patch
from circuits.patching import patch
from circuits.result import PatchResult, bootstrap_ci
from probekit import metrics

__all__ = ["PatchResult", "ablate", "all_nodes", "attribution_patch", "bootstrap_ci", "correlation", "dla",
           "logit_lens", "metrics", "patch", "path_patch", "targets"]
