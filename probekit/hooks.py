"""Hook-name resolution: TransformerLens names and probekit's short forms.

Short forms (DESIGN.md):

* ``embed`` — the embedding sum, ``blocks.0.hook_resid_pre``;
* ``L3`` — ``blocks.3.hook_resid_post``;
* ``L1H2`` — head 2 of block 1: its slice of ``blocks.1.attn.hook_z``;
* an integer layer ``L`` with a hook kind (default ``resid_post``) —
  ``blocks.L.hook_<kind>`` or ``blocks.L.attn.hook_<kind>``.

A model with ``n`` blocks has ``n + 1`` probe-able residual layers: ``embed``,
then ``L0`` … ``L{n-1}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from probekit.errors import ProbekitError, unknown

#: Hook kinds that live on the block (``blocks.L.hook_<kind>``).
BLOCK_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
#: Hook kinds that live on the attention module (``blocks.L.attn.hook_<kind>``).
ATTN_KINDS = ("q", "k", "v", "z", "pattern", "attn_scores")
HOOK_KINDS = BLOCK_KINDS + ATTN_KINDS

_HEAD = re.compile(r"^L(\d+)H(\d+)$")
_LAYER = re.compile(r"^L(\d+)$")
_INT = re.compile(r"^-?\d+$")  # an integer layer; negative ones are refused as out of range


@dataclass(frozen=True)
class HookRef:
    """A resolved activation address.

    Attributes:
        name: the TransformerLens hook name.
        head: a head index into ``attn.hook_z``'s head axis, or ``None``.
        label: the short name shown in tables (``embed``, ``L3``, ``L1H2``, or ``name``).
    """

    name: str
    head: int | None = None
    label: str = ""


def hook_name(layer: int, kind: str = "resid_post") -> str:
    """The TransformerLens name of hook ``kind`` in block ``layer``."""
    if kind in BLOCK_KINDS:
        return f"blocks.{layer}.hook_{kind}"
    if kind in ATTN_KINDS:
        return f"blocks.{layer}.attn.hook_{kind}"
    raise unknown("hook kind", kind, HOOK_KINDS)


def residual_layers(n_layers: int) -> list[HookRef]:
    """The ``n_layers + 1`` residual-stream layers: ``embed`` then each block's ``resid_post``."""
    refs = [HookRef("blocks.0.hook_resid_pre", None, "embed")]
    refs += [HookRef(f"blocks.{i}.hook_resid_post", None, f"L{i}") for i in range(n_layers)]
    return refs


def layer_label(name: str) -> str:
    """The short label of a hook name (``blocks.3.hook_resid_post`` -> ``L3``)."""
    if name == "blocks.0.hook_resid_pre":
        return "embed"
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", name)
    return f"L{m.group(1)}" if m else name


def resolve(
    spec: str | int,
    n_layers: int,
    n_heads: int | None = None,
    *,
    hook: str = "resid_post",
    valid: Iterable[str] | None = None,
) -> HookRef:
    """Resolve a layer/hook address to a TransformerLens hook name.

    Args:
        spec: ``embed``, ``L3``, ``L1H2``, an integer layer, or a full hook name.
        n_layers: the model's number of blocks (for range checks).
        n_heads: the model's heads per block (for ``LxHy`` range checks).
        hook: the hook kind an integer layer refers to.
        valid: the model's hook names; a full name not among them is an
            error naming the closest valid ones.

    Example:
        >>> resolve("L1H2", n_layers=2, n_heads=4)
        HookRef(name='blocks.1.attn.hook_z', head=2, label='L1H2')
        >>> resolve(0, n_layers=2, hook="attn_out").name
        'blocks.0.hook_attn_out'
    """
    s = str(spec).strip()
    valid = set(valid) if valid is not None else None
    if s == "embed":
        return HookRef("blocks.0.hook_resid_pre", None, "embed")
    if m := _HEAD.match(s):
        layer, head = int(m.group(1)), int(m.group(2))
        _check_layer(layer, n_layers, s)
        if n_heads is not None and not 0 <= head < n_heads:
            raise ProbekitError(f"head {head} in {s!r} is out of range: the model has {n_heads} heads per layer (0–{n_heads - 1})")
        return HookRef(f"blocks.{layer}.attn.hook_z", head, s)
    if m := _LAYER.match(s):
        layer = int(m.group(1))
        _check_layer(layer, n_layers, s)
        return HookRef(f"blocks.{layer}.hook_resid_post", None, s)
    if _INT.match(s):
        layer = int(s)
        _check_layer(layer, n_layers, s)
        name = hook_name(layer, hook)
        if valid is not None and name not in valid:  # e.g. mlp_out on an attention-only model
            kinds = [k for k in HOOK_KINDS if hook_name(layer, k) in valid]
            raise ProbekitError(f"the model has no hook {name!r} (hook kind {hook!r}); its hook kinds: {', '.join(kinds)}")
        return HookRef(name, None, layer_label(name))
    if valid is not None:
        if s not in valid:
            raise unknown("hook name", s, valid)
    elif not s.startswith(("blocks.", "hook_", "embed", "ln_final", "unembed", "pos_embed")):
        raise ProbekitError(
            f"cannot read layer {s!r}: use 'embed', 'L<layer>', 'L<layer>H<head>', an integer layer or a TransformerLens hook name"
        )
    return HookRef(s, None, layer_label(s))


def _check_layer(layer: int, n_layers: int, spec: str) -> None:
    if not 0 <= layer < n_layers:
        raise ProbekitError(f"layer {spec!r} is out of range: the model has {n_layers} blocks (0–{n_layers - 1})")


def model_hook_names(model) -> list[str]:
    """Every hook name of a TransformerBridge (including TransformerLens' legacy aliases)."""
    return sorted(model.hook_dict.keys())


def resolve_for(model, spec: str | int, *, hook: str = "resid_post") -> HookRef:
    """:func:`resolve` against a loaded model's shape and hook names."""
    return resolve(spec, model.cfg.n_layers, model.cfg.n_heads, hook=hook, valid=model_hook_names(model))
