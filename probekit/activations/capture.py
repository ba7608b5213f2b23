"""Forward hooks that gather cached rows straight into preallocated slots, and stop the forward early.

One hook per needed hook point (TransformerLens' ``model.hooks`` context, so
they are removed whatever happens). Each gathers the batch's kept rows of its
activation — position axis moved to 1, ``[batch * pos, ...]`` flattened, then
``index_select`` into the sink's slot — so no batch-sized copy is made per
hook. Once every needed hook point has fired, the last hook raises
TransformerLens' own ``StopAtLayerException``, which the bridge's ``forward``
catches and returns from: blocks after the deepest cached one, the final norm
and the unembedding never run.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from transformer_lens.model_bridge.exceptions import StopAtLayerException

from probekit.errors import ProbekitError


def hook_points(model, names: list[str]) -> list[tuple[str, list[str], int]]:
    """Group hook names by the hook point that fires them: (name to hook, names served, position dim)."""
    groups: dict[int, tuple[str, list[str], int]] = {}
    for name in names:
        hp = model.hook_dict[name]
        pos_dim = getattr(hp, "pos_dim", None)
        if pos_dim is None:
            pos_dim = -2 if name.endswith(("hook_pattern", "hook_attn_scores")) else 1
        groups.setdefault(id(hp), (name, [], pos_dim))[1].append(name)
    return list(groups.values())


def row_shapes(model, names: list[str], tokens: Tensor, attn: Tensor | None, device) -> dict[str, tuple[list[int], torch.dtype]]:
    """Per-row shape and dtype of each hook, from a forward pass over one sequence."""
    kwargs = {} if attn is None else {"attention_mask": attn.to(device)}
    try:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens.to(device), names_filter=list(names), return_cache_object=False, **kwargs)
    except KeyError as e:
        raise ProbekitError(f"cannot cache these hooks on this model: {e}") from None
    out = {}
    for name, pos_dim in [(n, d) for _, ns, d in hook_points(model, names) for n in ns]:
        if cache.get(name) is None:
            raise ProbekitError(f"hook {name!r} does not fire on this model (TransformerLens serves it gated or not at all)")
        x = cache[name].movedim(pos_dim, 1)
        out[name] = (list(x.shape[2:]), x.dtype)
    return out


class Capture:
    """The forward hooks: gather each batch's rows into the sink's slot, stop after the last one."""

    def __init__(self, model, names: list[str], stop_early: bool):
        self.points = hook_points(model, names)
        self.stop_early = stop_early
        self.dest: dict[str, Tensor] = {}
        self.idx: Tensor | None = None  # flat row indices, on the model's device; None = all
        self.fired: set[int] = set()  # hook points that fired in this forward pass

    def hooks(self) -> list[tuple[str, Any]]:
        return [(name, self._make(i, served, pos_dim)) for i, (name, served, pos_dim) in enumerate(self.points)]

    def start(self, dest: dict[str, Tensor], idx: Tensor | None) -> None:
        """Arm the hooks for one forward pass: write rows ``idx`` (``None``: all) of each hook into ``dest``."""
        self.dest, self.idx, self.fired = dest, idx, set()

    def missing(self) -> list[str]:
        return [name for i, (name, _, _) in enumerate(self.points) if i not in self.fired]

    def _make(self, i: int, served: list[str], pos_dim: int):
        def hook(x: Tensor, hook) -> None:
            if i in self.fired:
                raise ProbekitError(f"hook {served[0]!r} fires more than once per forward pass; it cannot be cached per token")
            x = x.detach()
            if pos_dim != 1:
                x = x.movedim(pos_dim, 1)
            flat = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
            for name in served:
                dst = self.dest[f"act.{name}"]
                if self.idx is None:
                    dst.copy_(flat)
                elif flat.device == dst.device and flat.dtype == dst.dtype:
                    torch.index_select(flat, 0, self.idx, out=dst)
                else:
                    dst.copy_(flat.index_select(0, self.idx))
            self.fired.add(i)
            if self.stop_early and len(self.fired) == len(self.points):
                raise StopAtLayerException(x)  # the bridge's forward returns here: nothing deeper is needed

        return hook
