"""The fast path of by-position patching: recompute only the blocks after the patch and the positions from it on.

In a causal model a patch at block ``L``, position ``p`` changes nothing before
block ``L`` and nothing at positions before ``p``. So the patched run needs
only rows ``p..T-1`` of blocks ``L..n-1``; their attention reads the base run's
keys and values for the positions before ``p`` (a key/value cache, as in
incremental decoding), and the logits before ``p`` are the base run's.

This is a plain-torch re-run of TransformerLens' native block (pre-norm,
learned positions, MHA, MLP or attention-only) from the bridge's own weights.
It is checked against the bridge's logits when it is built; a model it does
not reproduce (rotary, GQA, soft-capping, a Hugging Face architecture) is
served by the hooked block-by-block engine instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

log = logging.getLogger(__name__)

#: patch points the fast path can edit inside the first recomputed block
POINTS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post", "z")


def _inner(mod):
    while hasattr(mod, "original_component"):
        mod = mod.original_component
    return mod


@dataclass
class _Layer:
    ln1: object
    WQ: Tensor
    bQ: Tensor
    WK: Tensor
    bK: Tensor
    WV: Tensor
    bV: Tensor
    WO: Tensor
    bO: Tensor
    scale: float
    ln2: object | None = None
    Win: Tensor | None = None
    bin: Tensor | None = None
    Wout: Tensor | None = None
    bout: Tensor | None = None
    act: object | None = None


class FastSuffix:
    """Suffix re-runs of a native model from cached base activations.

    Args:
        model: the bridge.
        resid: base ``blocks.L.hook_resid_pre`` for every layer, ``[batch, pos, d_model]``.
        logits: base logits.
    """

    def __init__(self, model, resid: list[Tensor], logits: Tensor):
        self.model = model
        self.resid = resid
        self.logits = logits
        self.ok = False
        try:
            self._build()
            self.ok = self._check()
        except Exception as e:  # an architecture this re-run does not cover
            log.info("fast suffix unavailable: %s", e)
            self.ok = False

    def _build(self) -> None:
        m = self.model
        cfg = m.cfg
        if getattr(cfg, "positional_embedding_type", "standard") != "standard":
            raise ValueError("rotary/other positions")
        if float(getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
            raise ValueError("soft-capped attention")
        self.layers: list[_Layer] = []
        for blk in m.blocks:
            native_attn = _inner(blk.attn)
            if getattr(native_attn, "kv_repeats", 1) != 1 or getattr(native_attn, "rotary", None) is not None:
                raise ValueError("GQA or rotary attention")
            a = blk.attn
            layer = _Layer(ln1=_inner(blk.ln1), WQ=a.W_Q, bQ=a.b_Q, WK=a.W_K, bK=a.b_K, WV=a.W_V, bV=a.b_V,
                           WO=a.W_O, bO=a.b_O, scale=float(native_attn.scale))
            if not cfg.attn_only:
                mlp = blk.mlp
                layer.ln2, layer.act = _inner(blk.ln2), _inner(mlp).act
                layer.Win, layer.bin, layer.Wout, layer.bout = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
            self.layers.append(layer)
        self.ln_final, self.unembed = _inner(m.ln_final), _inner(m.unembed)
        # the base run's keys and values, [batch, head, pos, d_head], for the positions before a patch
        self.kv = []
        with torch.no_grad():
            for i, L in enumerate(self.layers):
                h = L.ln1(self.resid[i])
                k = torch.einsum("bpd,hde->bhpe", h, L.WK) + L.bK[:, None]
                v = torch.einsum("bpd,hde->bhpe", h, L.WV) + L.bV[:, None]
                self.kv.append((k, v))

    def _check(self) -> bool:
        T = self.resid[0].shape[1]
        scale = float(self.logits.abs().max()) + 1.0
        for start, p in ((0, 0), (len(self.layers) - 1, T // 2)):
            out = self.run(start, p, 1, None, None)[0]
            if float((out - self.logits).abs().max()) > 1e-4 * scale:
                log.info("fast suffix does not reproduce the model (start %d, pos %d)", start, p)
                return False
        return True

    @torch.no_grad()
    def run(self, start: int, p: int, K: int, point: str | None, edit) -> Tensor:
        """Logits ``[K, batch, pos, d_vocab]``: ``K`` copies re-run from block ``start`` and position ``p``.

        ``edit`` changes the activation at ``point`` of block ``start`` in place, viewed
        ``[K, batch, pos - p, ...]`` (position 0 of the view is position ``p``).
        """
        B, T, d = self.resid[start].shape
        S = T - p
        N = K * B
        x = self.resid[start][:, p:].unsqueeze(0).expand(K, B, S, d).reshape(N, S, d).clone()
        if point == "resid_pre":
            edit(x.view(K, B, S, d))
        mask = torch.arange(T, device=x.device)[None, :] > (p + torch.arange(S, device=x.device))[:, None]
        for i in range(start, len(self.layers)):
            L = self.layers[i]
            at = point if i == start else None
            h = L.ln1(x)
            q = torch.einsum("nsd,hde->nhse", h, L.WQ) + L.bQ[:, None]
            k_s = torch.einsum("nsd,hde->nhse", h, L.WK) + L.bK[:, None]
            v_s = torch.einsum("nsd,hde->nhse", h, L.WV) + L.bV[:, None]
            if p:
                k0, v0 = self.kv[i]
                H, E = k0.shape[1], k0.shape[3]
                k_pre = k0[:, :, :p].unsqueeze(0).expand(K, B, H, p, E).reshape(N, H, p, E)
                v_pre = v0[:, :, :p].unsqueeze(0).expand(K, B, H, p, E).reshape(N, H, p, E)
                k_all, v_all = torch.cat([k_pre, k_s], 2), torch.cat([v_pre, v_s], 2)
            else:
                k_all, v_all = k_s, v_s
            scores = (q @ k_all.transpose(-1, -2)) / L.scale
            pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
            z = (pattern @ v_all).transpose(1, 2)  # [N, S, H, E]
            if at == "z":
                z = z.contiguous()
                edit(z.view(K, B, S, *z.shape[2:]))
            attn_out = torch.einsum("nshe,hed->nsd", z, L.WO) + L.bO
            if at == "attn_out":
                edit(attn_out.view(K, B, S, d))
            x = x + attn_out
            mlp_in = x
            if at == "resid_mid":
                # the bridge's hook_resid_mid is ln2's input: a patch there reaches the MLP only,
                # the residual connection keeps the unpatched stream (as TransformerLens' patching does)
                mlp_in = x.clone()
                edit(mlp_in.view(K, B, S, d))
            if L.ln2 is not None:
                mlp_out = L.act(L.ln2(mlp_in) @ L.Win + L.bin) @ L.Wout + L.bout
                if at == "mlp_out":
                    edit(mlp_out.view(K, B, S, d))
                x = x + mlp_out
            if at == "resid_post":
                edit(x.view(K, B, S, d))
        out = self.unembed(self.ln_final(x)).view(K, B, S, -1)
        if p:
            pre = self.logits[:, :p].unsqueeze(0).expand(K, *self.logits[:, :p].shape)
            out = torch.cat([pre, out], 2)
        return out
