"""Path patching: the effect of one head on another head's queries, keys or values.

Two modes (Wang et al. 2022, "Interpretability in the Wild", §3.1 and App. B):

* ``mode="direct"`` — TransformerLens' ``get_act_patch_direct_path``: the sender
  head's source−base write (``hook_z @ W_O``) is added to one receiver head's
  own pre-``ln1`` copy of the residual; every other reader sees the base run.
  The receiver's q/k/v is therefore ``ln1(resid_base + delta) @ W + b``,
  computed in closed form and patched in — no need for TransformerLens'
  split-q/k/v-input fork, so it also runs on native models (where
  TransformerLens raises).
* ``mode="frozen"`` — everything but the path held at the base run: the sender
  takes its source activation, every other head's output is frozen at the
  base run, MLPs recompute (so paths through MLPs count), and the receiver's
  q/k/v from that run is patched into a fresh base run. With
  ``direction="noising"`` the base run is the clean one, as in Wang et al.

``values[l, h]`` is the metric with the path into head ``(l, h)`` patched;
rows ``l <= sender layer`` are 0.0 placeholders (TransformerLens' convention).
With ``sender=None`` every head is a sender: ``values[sl, sh, l, h]``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from circuits._engine import Engine, check_tokens, eval_mode
from circuits.ablation import parse_node
from circuits.patching import Direction, check_direction, evaluator
from circuits.result import PatchResult
from probekit.errors import ProbekitError, unknown

PathMode = Literal["direct", "frozen"]
MODES = ("direct", "frozen")
COMPONENTS = ("q", "k", "v")


def _proj(model, layer: int, component: str, resid: Tensor) -> Tensor:
    """``ln1(resid) @ W_{component} + b`` for every head of ``layer``: ``[batch, pos, head, d_head]``."""
    attn = model.blocks[layer].attn
    W = getattr(attn, f"W_{component.upper()}")
    b = getattr(attn, f"b_{component.upper()}")
    return torch.einsum("bpd,hde->bphe", model.blocks[layer].ln1(resid), W) + b


def path_patch(
    model,
    clean: Int[Tensor, "batch pos"],
    corrupt: Int[Tensor, "batch pos"],
    metric: Callable[[Tensor], Tensor],
    *,
    sender: str | None = None,
    component: Literal["q", "k", "v"] = "q",
    mode: PathMode = "direct",
    direction: Direction = "denoising",
    memory_mb: float = 512.0,
) -> PatchResult:
    """Patch the path from a sender head into each later head's q, k or v input.

    Args:
        model: a ``TransformerBridge`` with ``hook_z`` and per-head ``W_Q/W_K/W_V/W_O``.
        clean: clean tokens ``[batch, pos]``.
        corrupt: corrupt tokens, same shape.
        metric: logits to a scalar.
        sender: the sender head (``"L0H1"``); ``None`` for every head.
        component: the receiver input: ``"q"``, ``"k"`` or ``"v"``.
        mode: ``"direct"`` (TransformerLens' semantics) or ``"frozen"`` (Wang et al.).
        direction: ``"denoising"`` (base = corrupt, the sender's clean activation) or ``"noising"``.
        memory_mb: activation budget of one stacked forward.

    Returns:
        A :class:`PatchResult` with axes ``("layer", "head")`` (or
        ``("src_layer", "src_head", "layer", "head")`` for every sender).
    """
    if mode not in MODES:
        raise unknown("path patching mode", str(mode), MODES)
    if component not in COMPONENTS:
        raise unknown("path patching component", str(component), COMPONENTS)
    check_direction(direction)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    if sender is not None:
        node = parse_node(model, sender)
        if node.head is None:
            raise ProbekitError(f"the sender must be a head ('L<layer>H<head>'), got {sender!r}")
        senders = [(node.layer, node.head)]
    else:
        senders = [(sl, sh) for sl in range(n_layers) for sh in range(n_heads)]
    with eval_mode(model), torch.no_grad():
        clean, corrupt = check_tokens(model, clean, corrupt)
        base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
        names = ({f"blocks.{L}.hook_resid_pre" for L in range(n_layers)} | {f"blocks.{L}.attn.hook_z" for L in range(n_layers)}
                 | {f"blocks.{L}.attn.hook_{component}" for L in range(n_layers)})
        flt = lambda n: n in names  # noqa: E731
        base_logits, base_cache = model.run_with_cache(base, names_filter=flt)
        src_logits, src_cache = model.run_with_cache(src, names_filter=flt)
        resid = [base_cache[f"blocks.{L}.hook_resid_pre"] for L in range(n_layers)]
        for L in range(n_layers):  # the closed form must reproduce the model's own q/k/v
            if (_proj(model, L, component, resid[L]) - base_cache[f"blocks.{L}.attn.hook_{component}"]).abs().max() > 1e-4:
                raise ProbekitError(
                    f"path patching is unsupported on this architecture: hook_{component} is not ln1(resid) @ W_{component.upper()} + b"
                )
        ev = evaluator(metric, base.shape[0], False)
        engine = Engine(model, base, resid, base_logits, memory_mb)
        out = torch.zeros(len(senders), n_layers, n_heads)
        for i, (sl, sh) in enumerate(senders):
            if mode == "direct":
                recv = _direct_receivers(model, base_cache, src_cache, resid, sl, sh, component)
            else:
                recv = _frozen_receivers(engine, base_cache, src_cache, sl, sh, component)
            for L in range(sl + 1, n_layers):
                out[i, L] = _patch_receivers(engine, L, component, recv[L], ev)
        base_v, src_v = float(ev(base_logits)), float(ev(src_logits))
    clean_v, corrupt_v = (src_v, base_v) if direction == "denoising" else (base_v, src_v)
    if sender is not None:
        values, axes = out[0], ("layer", "head")
    else:
        values, axes = out.view(n_layers, n_heads, n_layers, n_heads), ("src_layer", "src_head", "layer", "head")
    labels = {ax: [f"L{i}" for i in range(n_layers)] if "layer" in ax else [f"H{i}" for i in range(n_heads)] for ax in axes}
    return PatchResult(values=values, axes=axes, labels=labels, target=f"path->{component}", direction=direction,
                       metric=getattr(metric, "__name__", "metric"), clean=clean_v, corrupt=corrupt_v,
                       method=f"path-{mode}", extra={"sender": sender, "component": component})


def _direct_receivers(model, base_cache, src_cache, resid, sl, sh, component) -> dict[int, Tensor]:
    """Each later layer's q/k/v of every head as if its own input carried the sender's write."""
    W_O = model.blocks[sl].attn.W_O[sh]
    z = f"blocks.{sl}.attn.hook_z"
    delta = (src_cache[z][:, :, sh] - base_cache[z][:, :, sh]) @ W_O
    return {L: _proj(model, L, component, resid[L] + delta) for L in range(sl + 1, model.cfg.n_layers)}


def _frozen_receivers(engine: Engine, base_cache, src_cache, sl, sh, component) -> dict[int, Tensor]:
    """q/k/v of later layers in a base run where only the sender changed and all other heads are frozen."""
    model = engine.model
    n_layers = model.cfg.n_layers
    captured: dict[int, Tensor] = {}

    def freeze(L: int):
        z = f"blocks.{L}.attn.hook_z"

        def edit(view: Tensor) -> None:
            view[0] = base_cache[z]
            if L == sl:
                view[0][:, :, sh] = src_cache[z][:, :, sh]

        return edit

    def capture(L: int):
        def edit(view: Tensor) -> None:
            captured[L] = view[0].clone()

        return edit

    edits = [(f"blocks.{L}.attn.hook_z", freeze(L)) for L in range(sl, n_layers)]
    edits += [(f"blocks.{L}.attn.hook_{component}", capture(L)) for L in range(sl + 1, n_layers)]
    engine.run(sl, 1, edits)
    return captured


def _patch_receivers(engine: Engine, L: int, component: str, new: Tensor, ev) -> Tensor:
    """The metric with head ``h``'s q/k/v at layer ``L`` replaced by ``new[:, :, h]``, for every head at once."""
    H = new.shape[2]

    def edit(view: Tensor) -> None:
        for h in range(H):
            view[h][:, :, h] = new[:, :, h]

    logits = engine.run(L, H, [(f"blocks.{L}.attn.hook_{component}", edit)])
    return torch.stack([ev(logits[h]).cpu() for h in range(H)])
