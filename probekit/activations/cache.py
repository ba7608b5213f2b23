"""Run a model over a task and cache chosen hooks, token by token."""

from __future__ import annotations

import logging

import torch

from probekit.activations.store import ActivationStore
from probekit.errors import ProbekitError
from probekit.hooks import BLOCK_KINDS, HOOK_KINDS, hook_name, residual_layers, resolve
from probekit.tasks import Task

log = logging.getLogger(__name__)


def expand_hooks(hooks: list[str] | str, n_layers: int, valid: set[str] | None = None) -> list[str]:
    """Expand hook kinds to names: ``resid_post`` -> embed + every block's resid_post; ``attn_out`` -> every block's."""
    if isinstance(hooks, str):
        hooks = [h for h in hooks.split(",") if h.strip()]
    out: list[str] = []
    for h in hooks:
        h = h.strip()
        if h == "resid_post":
            out += [r.name for r in residual_layers(n_layers)]
        elif h in HOOK_KINDS:
            out += [hook_name(i, h) for i in range(n_layers)]
        else:
            out.append(resolve(h, n_layers, hook="resid_post", valid=valid).name)
    if not out:
        raise ProbekitError(f"no hooks to cache; give kinds such as {', '.join(BLOCK_KINDS)}")
    return list(dict.fromkeys(out))


def cache_activations(
    model,
    task: Task,
    hooks: list[str] | str = "resid_post",
    *,
    n: int = 512,
    seed: int = 0,
    split: str = "test",
    batch_size: int = 64,
    positions: str | None = None,
    out=None,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> ActivationStore:
    """Cache per-token activations of ``hooks`` over ``n`` sequences of ``task``.

    Args:
        model: a TransformerBridge.
        task: a built-in task (or user data wrapped as one).
        hooks: kinds (``resid_post``, ``attn_out``, ``z`` …) or hook names.
        n: number of sequences.
        seed: data seed.
        split: ``"train"`` or ``"test"`` data of the task.
        batch_size: sequences per forward pass.
        positions: ``None`` for every real position, ``"last"`` for the last one.
        out: ``None`` for an in-memory store, a directory for an on-disk store.
        device: where to run (default: the model's device).
        progress: show a progress bar.

    Returns:
        an :class:`ActivationStore` whose rows are the (example, position)
        pairs of non-padded tokens.
    """
    if out is not None:
        raise NotImplementedError("on-disk stores come with probekit.activations.disk")
    names = expand_hooks(hooks, model.cfg.n_layers, set(model.hook_dict))
    device = device or next(model.parameters()).device
    chunks: dict[str, list] = {h: [] for h in names}
    cols: dict[str, list] = {"example_id": [], "position": [], "token": []}
    labels: dict[str, list] = {s.name: [] for s in task.label_specs}
    lmask: dict[str, list] = {s.name: [] for s in task.label_specs}
    batch = task.batch(n, seed, split)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, n, batch_size):
            toks = batch.tokens[start : start + batch_size]
            keep = batch.mask[start : start + batch_size].clone()
            if positions == "last":
                last = keep.sum(1) - 1
                keep = torch.zeros_like(keep)
                keep[torch.arange(len(last)), last] = True
            with torch.no_grad():
                _, cache = model.run_with_cache(toks.to(device), names_filter=lambda nm: nm in names)
            for h in names:
                chunks[h].append(cache[h].to("cpu")[keep])
            ex, pos = keep.nonzero(as_tuple=True)
            cols["example_id"].append(ex + start)
            cols["position"].append(pos)
            cols["token"].append(toks[keep])
            for s in task.label_specs:
                labels[s.name].append(batch.labels[s.name][start : start + batch_size][keep])
                lmask[s.name].append(batch.label_mask[s.name][start : start + batch_size][keep])
    finally:
        model.train(was_training)
    return ActivationStore(
        acts={h: torch.cat(v) for h, v in chunks.items()},
        example_id=torch.cat(cols["example_id"]),
        position=torch.cat(cols["position"]),
        token=torch.cat(cols["token"]),
        labels={k: torch.cat(v) for k, v in labels.items()},
        label_mask={k: torch.cat(v) for k, v in lmask.items()},
        label_kinds={s.name: s.kind for s in task.label_specs},
        manifest={
            "n_layers": model.cfg.n_layers,
            "n_heads": model.cfg.n_heads,
            "d_model": model.cfg.d_model,
            "task": task.to_dict(),
            "control_key": task.control_key,
            "hooks": names,
            "n": n,
            "seed": seed,
            "split": split,
        },
    )
