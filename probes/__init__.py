"""Linear probes on any layer, reported honestly.

* :class:`LinearProbe` — one probe, scikit-learn estimator contract.
* :class:`BatchedProbeTrainer` — one probe per layer (and target) at once, CPU or GPU.
* :func:`sweep` -> :class:`SweepResult` — every layer with control task and
  selectivity, MDL, bootstrap intervals, baselines and LEACE erasure.
* :func:`fit_ridge_store` — ridge probes streamed from an on-disk store (sufficient statistics);
  :func:`fit_logistic_store` — logistic probes, the store's rows streamed at every L-BFGS evaluation.
* :func:`save` / :func:`load` — ``probe.safetensors`` + ``probe.json``.

Example:
    >>> import numpy as np, probes
    >>> X = np.random.randn(300, 8); y = (X[:, 0] > 0).astype(int)
    >>> probes.LinearProbe(C=1.0).fit(X, y).score(X, y) > 0.9
    True
"""

from probes.control import control_keys, control_labels, majority_rate, selectivity
from probes.erasure import (ErasureResult, InterventionResult, add_direction, amnesic_check, eraser_rank, fit_eraser,
                            leace_check, leace_hook, project_out)
from probes.io import load, save
from probes.linear import LinearProbe
from probes.mdl import BLOCKS, MDLResult, online_code
from probes.single import train_probe
from probes.stats import bootstrap_ci
from probes.stream import fit_logistic_store, fit_ridge_store
from probes.sweep import SweepResult, demo_section, sweep, untrained_copy
from probes.trainer import KINDS, BatchedFit, BatchedProbeTrainer, ProbeConfig

__all__ = [
    "BLOCKS", "KINDS", "BatchedFit", "BatchedProbeTrainer", "ErasureResult", "InterventionResult", "LinearProbe",
    "MDLResult", "ProbeConfig", "SweepResult", "add_direction", "amnesic_check", "bootstrap_ci", "control_keys",
    "control_labels", "demo_section", "eraser_rank", "fit_eraser", "fit_logistic_store", "fit_ridge_store", "majority_rate", "leace_check", "leace_hook", "load", "online_code",
    "project_out", "save", "selectivity", "sweep", "train_probe", "untrained_copy",
]
