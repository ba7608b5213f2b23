"""Patch targets: what is patched, at which hook, over which axes, and TransformerLens' oracle for each.

The registry feeds :func:`circuits.patch`, the CLI's ``--target`` choices and
the tests' parametrization. Each target's ``.values`` shape and axis order
are those of the TransformerLens function named in ``oracle``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from probekit.errors import unknown

#: how a patch writes the source activation into the base one (TransformerLens' patch setters)
Setter = Literal["pos", "head", "pos_head", "pattern_head", "pattern_head_dest"]


@dataclass(frozen=True, kw_only=True)
class Target:
    """One patch target.

    Args:
        name: registry name (kebab-case).
        kind: hook kind patched in each block (``resid_pre``, ``z``, ``pattern``, …).
        axes: axis names of ``.values`` (layer first), as TransformerLens orders them.
        setter: which slice one patch replaces.
        oracle: the TransformerLens ``patching`` function this equals.
        description: one line for ``--help``.
    """

    name: str
    kind: str
    axes: tuple[str, ...]
    setter: Setter
    oracle: str
    description: str

    @property
    def hook_kind(self) -> str:
        return self.kind

    def hook_name(self, layer: int) -> str:
        if self.kind in ("q", "k", "v", "z", "pattern"):
            return f"blocks.{layer}.attn.hook_{self.kind}"
        return f"blocks.{layer}.hook_{self.kind}"

    @property
    def needs_mlp(self) -> bool:
        return self.kind in ("mlp_out", "resid_mid")


_REGISTRY: dict[str, Target] = {}
_ALIASES: dict[str, str] = {}


def register(target: Target, *aliases: str) -> None:
    """Add a target; refuses duplicate names."""
    for n in (target.name, *aliases):
        if n in _REGISTRY or n in _ALIASES:
            raise ValueError(f"patch target {n!r} is already registered")
    _REGISTRY[target.name] = target
    for a in aliases:
        _ALIASES[a] = target.name


def names() -> list[str]:
    """Registered target names."""
    return list(_REGISTRY)


def get(name: str) -> Target:
    """A target by name (``_`` and ``-`` are interchangeable; ``resid_pre`` = ``resid``)."""
    key = str(name).replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise unknown("patch target", str(name), list(_REGISTRY))
    return _REGISTRY[key]


_LP = ("layer", "pos")
register(Target(name="resid", kind="resid_pre", axes=_LP, setter="pos", oracle="get_act_patch_resid_pre",
                description="residual stream entering each block, by layer x position"), "resid-pre")
register(Target(name="resid-mid", kind="resid_mid", axes=_LP, setter="pos", oracle="get_act_patch_resid_mid",
                description="residual stream between attention and MLP, by layer x position"))
register(Target(name="resid-post", kind="resid_post", axes=_LP, setter="pos",
                oracle="generic_activation_patch(activation_name='resid_post', layer_pos_patch_setter)",
                description="residual stream leaving each block, by layer x position"))
register(Target(name="attn", kind="attn_out", axes=_LP, setter="pos", oracle="get_act_patch_attn_out",
                description="attention-layer output, by layer x position"), "attn-out")
register(Target(name="mlp", kind="mlp_out", axes=_LP, setter="pos", oracle="get_act_patch_mlp_out",
                description="MLP output, by layer x position"), "mlp-out")
register(Target(name="heads", kind="z", axes=("layer", "head"), setter="head",
                oracle="get_act_patch_attn_head_out_all_pos",
                description="each head's output (hook_z) over all positions, by layer x head"))
register(Target(name="heads-by-pos", kind="z", axes=("layer", "pos", "head"), setter="pos_head",
                oracle="get_act_patch_attn_head_out_by_pos",
                description="each head's output (hook_z) at one position, by layer x position x head"))
for _c, _what in (("q", "queries"), ("k", "keys"), ("v", "values")):
    register(Target(name=_c, kind=_c, axes=("layer", "head"), setter="head",
                    oracle=f"get_act_patch_attn_head_{_c}_all_pos",
                    description=f"each head's {_what} over all positions, by layer x head"))
    register(Target(name=f"{_c}-by-pos", kind=_c, axes=("layer", "pos", "head"), setter="pos_head",
                    oracle=f"get_act_patch_attn_head_{_c}_by_pos",
                    description=f"each head's {_what} at one position, by layer x position x head"))
register(Target(name="pattern", kind="pattern", axes=("layer", "head"), setter="pattern_head",
                oracle="get_act_patch_attn_head_pattern_all_pos",
                description="each head's whole attention pattern, by layer x head"))
register(Target(name="pattern-by-pos", kind="pattern", axes=("layer", "head", "dest_pos"), setter="pattern_head_dest",
                oracle="get_act_patch_attn_head_pattern_by_pos",
                description="each head's attention pattern row, by layer x head x destination position"))


def apply(setter: Setter, act: Tensor, src: Tensor, index: tuple[int, ...]) -> None:
    """Write ``src`` into ``act`` (both ``[batch, ...]``) at ``index`` (the non-layer axes), in place."""
    if setter == "pos":
        (p,) = index
        act[:, p] = src[:, p]
    elif setter == "head":
        (h,) = index
        act[:, :, h] = src[:, :, h]
    elif setter == "pos_head":
        p, h = index
        act[:, p, h] = src[:, p, h]
    elif setter == "pattern_head":
        (h,) = index
        act[:, h] = src[:, h]
    elif setter == "pattern_head_dest":
        h, d = index
        act[:, h, d] = src[:, h, d]
    else:  # pragma: no cover - registry invariant
        raise AssertionError(setter)
