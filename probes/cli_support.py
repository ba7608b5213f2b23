"""What the ``probekit probe`` / ``probekit sweep`` commands share: opening or caching a store."""

from __future__ import annotations

import logging
from pathlib import Path

from probekit.errors import ProbekitError

log = logging.getLogger(__name__)


def open_store(acts: Path | None, model: Path | None, task: str | None, *, n: int = 256, hooks: str = "resid_post",
               device: str | None = None, seed: int = 0):
    """An activation store from ``--acts DIR``, or cached on the fly from ``--model RUN --task T``.

    Returns:
        ``(store, model or None)`` — the model when it was loaded here.
    """
    import probekit as pk

    if (acts is None) == (model is None):
        raise ProbekitError("give exactly one of --acts ACTS or --model RUN (with --task T)")
    if acts is not None:
        if not Path(acts).exists():
            raise ProbekitError(f"activation store not found: {acts}")
        return pk.ActivationStore.open(acts), None
    if task is None:
        raise ProbekitError("--model RUN needs --task T to cache activations on the fly")
    source = pk.tasks.get(task)
    m = pk.load(model, device=device)
    if m.cfg.d_vocab < source.d_vocab:
        raise ProbekitError(f"task {task!r} has {source.d_vocab} tokens but the model's vocabulary has {m.cfg.d_vocab}")
    store = pk.cache_activations(m, source, hooks, n=n, seed=seed)
    return store, m
