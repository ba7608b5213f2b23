"""A native model's weights with every head's projections fused, and a plain-torch forward over them.

Batched patching re-runs parts of the model many times (:mod:`circuits._fast`);
the bridge's hook machinery costs more than the arithmetic at the sizes
in-house models have, so those re-runs use plain torch over fused weights
(``W_Q`` of all heads as one ``[d_model, head * d_head]`` matrix, ``W_K`` and
``W_V`` side by side).

Whether the plain forward reproduces the bridge is measured, not assumed:
:meth:`Fused.verify` compares it with a hooked run of the bridge (logits and
every cached activation). The result is kept per model with a snapshot of
its parameters, so a model trained, edited in place or moved is fused and
checked again; a model holding
forward hooks is never served from the plain forward (its hooks would not
fire), and neither is an architecture the re-run does not cover (rotary,
GQA, soft-capping, bidirectional attention, Hugging Face models), which
:func:`fused` answers with ``None``.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

#: hook kinds the plain forward records (as ``blocks.L.hook_<kind>``, ``z`` as ``blocks.L.attn.hook_z``)
KINDS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")


def inner(mod):
    """The native module a bridge component wraps."""
    while hasattr(mod, "original_component"):
        mod = mod.original_component
    return mod


@dataclass
class Layer:
    """One block's weights, the heads fused: ``W_Q`` as ``[d_model, head * d_head]``, K and V side by side."""

    ln1: object
    Wq: Tensor
    bq: Tensor
    Wkv: Tensor
    bkv: Tensor
    Wo: Tensor
    bo: Tensor
    scale: float
    ln2: object | None = None
    Win: Tensor | None = None
    bin: Tensor | None = None
    Wout: Tensor | None = None
    bout: Tensor | None = None
    act: object | None = None


class Fused:
    """Fused weights of a native model (see the module docstring). Build with :func:`fused`.

    Attributes:
        verified: the plain forward reproduced a hooked run of the bridge with these weights.
        suffix_ok: :class:`circuits._fast.FastSuffix`'s self-check passed with these weights.
    """

    def __init__(self, model, params: list[Tensor]):
        # the parameters as they were when fused (objects and values), to tell when the fused copies go stale
        self.params, self.snapshot = params, [p.detach().clone() for p in params]
        self.hook_points = list(model.hook_dict.values())
        self.verified = False
        self.suffix_ok = False
        cfg = model.cfg
        if getattr(cfg, "positional_embedding_type", "standard") != "standard":
            raise ValueError("rotary/other positions")
        if float(getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
            raise ValueError("soft-capped attention")
        if float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0) > 0:
            raise ValueError("soft-capped logits")
        self.layers: list[Layer] = []
        for blk in model.blocks:
            native = inner(blk.attn)
            if getattr(native, "kv_repeats", 1) != 1 or getattr(native, "rotary", None) is not None:
                raise ValueError("GQA or rotary attention")
            if not getattr(native, "causal", False):
                raise ValueError("bidirectional attention")
            a = blk.attn
            H, d, E = a.W_Q.shape
            fuse = lambda W: W.permute(1, 0, 2).reshape(d, H * E)  # noqa: E731 - [head, d, e] -> [d, head*e]
            layer = Layer(ln1=inner(blk.ln1), Wq=fuse(a.W_Q), bq=a.b_Q.reshape(-1),
                          Wkv=torch.cat([fuse(a.W_K), fuse(a.W_V)], 1), bkv=torch.cat([a.b_K.reshape(-1), a.b_V.reshape(-1)]),
                          Wo=a.W_O.reshape(H * E, -1), bo=a.b_O, scale=float(native.scale))
            if not cfg.attn_only:
                mlp = blk.mlp
                layer.ln2, layer.act = inner(blk.ln2), inner(mlp).act
                layer.Win, layer.bin, layer.Wout, layer.bout = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
            self.layers.append(layer)
        self.H, self.E = H, E
        self.tok_embed, self.pos_embed = inner(model.embed), inner(model.pos_embed)
        self.ln_final, self.unembed = inner(model.ln_final), inner(model.unembed)
        if not all(isinstance(m, torch.nn.Embedding) for m in (self.tok_embed, self.pos_embed)):
            raise ValueError("embeddings other than a token and a learned position table")

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def current(self, params: list[Tensor]) -> bool:
        """Whether ``params`` are the fused parameters, unchanged: the same objects holding the same values (this
        sees optimizer steps, ``load_state_dict``, writes through ``.data``, moves to another device or dtype)."""
        if len(params) != len(self.params) or any(p is not q for p, q in zip(params, self.params)):
            return False
        try:  # (torch.equal alone calls float32 and float64 copies of the same values equal)
            return all(p.dtype == s.dtype and p.device == s.device and torch.equal(p, s)
                       for p, s in zip(params, self.snapshot))
        except RuntimeError:
            return False

    def hooked(self) -> bool:
        """Whether any hook point of the model holds a forward hook (then its plain runs would skip that hook)."""
        return any(hp._forward_hooks or hp._forward_pre_hooks for hp in self.hook_points)

    def kv(self, L: Layer, h: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``[N, head, S, d_head]`` of normalized rows ``h`` (``[N, S, d_model]``)."""
        N, S, _ = h.shape
        kv = torch.addmm(L.bkv, h.reshape(N * S, -1), L.Wkv).view(N, S, 2, self.H, self.E)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    @torch.no_grad()
    def forward(self, tokens: Tensor, names: set[str]) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits ``[batch, pos, d_vocab]`` of ``tokens`` and the activations called ``names`` (bridge hook names)."""
        N, T = tokens.shape
        x = self.tok_embed(tokens) + self.pos_embed(torch.arange(T, device=tokens.device))
        acts: dict[str, Tensor] = {}

        def keep(i: int, kind: str, value: Tensor) -> None:
            name = f"blocks.{i}.attn.hook_z" if kind == "z" else f"blocks.{i}.hook_{kind}"
            if name in names:
                acts[name] = value

        for i, L in enumerate(self.layers):
            keep(i, "resid_pre", x)
            h = L.ln1(x)
            k, v = self.kv(L, h)
            q = torch.addmm(L.bq, h.reshape(N * T, -1), L.Wq).view(N, T, self.H, self.E).transpose(1, 2)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / L.scale).transpose(1, 2)
            keep(i, "z", z)
            attn_out = torch.addmm(L.bo, z.reshape(N * T, -1), L.Wo).view(N, T, -1)
            keep(i, "attn_out", attn_out)
            x = x + attn_out
            keep(i, "resid_mid", x)
            if L.ln2 is not None:
                mlp_out = torch.addmm(L.bout, L.act(torch.addmm(L.bin, L.ln2(x).reshape(N * T, -1), L.Win)),
                                      L.Wout).view(N, T, -1)
                keep(i, "mlp_out", mlp_out)
                x = x + mlp_out
            keep(i, "resid_post", x)
        missing = names - acts.keys()
        if missing:
            raise ValueError(f"the plain forward does not record {sorted(missing)}")
        return self.unembed(self.ln_final(x)), acts

    def verify(self, model, tokens: Tensor, logits: Tensor, cache: dict[str, Tensor]) -> bool:
        """Whether :meth:`forward` reproduces a hooked run of the bridge (its ``logits`` and ``cache``) on ``tokens``.

        Recorded in :attr:`verified` unless the model holds hooks (they may have shaped that run).
        """
        try:
            out, acts = self.forward(tokens, set(cache))
        except Exception as e:  # a block this re-run does not cover
            log.info("plain forward unavailable: %s", e)
            return False
        ok = all(a.shape == b.shape and float((a - b).abs().max()) <= 1e-5 * (float(b.abs().max()) + 1.0)
                 for a, b in [(out, logits), *((acts[n], cache[n]) for n in cache)])
        if ok and not self.hooked():
            self.verified = True
        return ok


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fused(model) -> Fused | None:
    """The fused weights of ``model``, rebuilt when its parameters changed; ``None`` for an architecture not covered."""
    params = list(model.parameters())
    hit = _CACHE.get(model)
    if hit is False:
        return None
    if hit is not None and hit.current(params):
        return hit
    try:
        with torch.no_grad():
            f = Fused(model, params)
    except Exception as e:  # an architecture the plain re-run does not cover
        log.info("fused weights unavailable: %s", e)
        f = None
    _CACHE[model] = f if f is not None else False
    return f
