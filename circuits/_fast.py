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
        resid_post_last: base ``hook_resid_post`` of the last block.
    """

    def __init__(self, model, resid: list[Tensor], logits: Tensor, resid_post_last: Tensor):
        self.model = model
        self.resid = resid
        self.resid_post_last = resid_post_last
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
        n = len(self.layers)
        outs = [self.run(0, 0, 1, None, None), self.run(n - 1, T // 2, 1, None, None),
                self.run_row(0, [T // 2, 1], "resid_post", lambda v: None)[1:],
                self.run_row(n - 1, [0, T - 1], "z", lambda v: None)[1:]]
        for out in outs:
            if float((out[0] - self.logits).abs().max()) > 1e-4 * scale:
                log.info("fast suffix does not reproduce the model")
                return False
        return True

    def _layer(self, i: int, x: Tensor, p: int, K: int, at: str | None, edit, row_ps: Tensor | None = None) -> Tensor:
        """Block ``i`` on rows ``p .. p + S - 1`` (``x``: ``[K * batch, S, d_model]``); earlier rows' keys from the base run.

        With ``row_ps`` (``[K]``), ``x`` is one row per copy, at position ``row_ps[k]``, whose input is
        the base run's: all keys and values are the base run's, masked after each copy's own position.
        """
        L = self.layers[i]
        N, S, d = x.shape
        B = N // K
        T = p + S
        h = L.ln1(x)
        q = torch.einsum("nsd,hde->nhse", h, L.WQ) + L.bQ[:, None]
        if row_ps is not None:
            k0, v0 = self.kv[i]
            Tf, H, E = k0.shape[2], k0.shape[1], k0.shape[3]
            k_all = k0.unsqueeze(0).expand(K, B, H, Tf, E).reshape(N, H, Tf, E)
            v_all = v0.unsqueeze(0).expand(K, B, H, Tf, E).reshape(N, H, Tf, E)
            row_mask = torch.arange(Tf, device=x.device)[None, :] > row_ps[:, None]  # [K, T]
            mask = row_mask.repeat_interleave(B, 0)[:, None, None, :]  # [N, 1, 1, T]
            scores = (q @ k_all.transpose(-1, -2)) / L.scale
            pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
            return self._after_attn(L, x, (pattern @ v_all).transpose(1, 2), K, at, edit)
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
        mask = torch.arange(T, device=x.device)[None, :] > (p + torch.arange(S, device=x.device))[:, None]
        scores = (q @ k_all.transpose(-1, -2)) / L.scale
        pattern = scores.masked_fill(mask, float("-inf")).softmax(-1)
        return self._after_attn(L, x, (pattern @ v_all).transpose(1, 2), K, at, edit)

    def _after_attn(self, L: _Layer, x: Tensor, z: Tensor, K: int, at: str | None, edit) -> Tensor:
        """The rest of a block from the heads' outputs ``z`` (``[N, S, head, d_head]``)."""
        N, S, d = x.shape
        B = N // K
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
        return x

    def _finish(self, x: Tensor, p: int, K: int) -> Tensor:
        B = x.shape[0] // K
        out = self.unembed(self.ln_final(x)).view(K, B, x.shape[1], -1)
        if p:
            pre = self.logits[:, :p].unsqueeze(0).expand(K, *self.logits[:, :p].shape)
            out = torch.cat([pre, out], 2)
        return out

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
        for i in range(start, len(self.layers)):
            x = self._layer(i, x, p, K, point if i == start else None, edit)
        return self._finish(x, p, K)

    @torch.no_grad()
    def run_row(self, start: int, ps: list[int], point: str, edit) -> Tensor:
        """Like :meth:`run` for ``K = len(ps)`` copies, copy ``k`` patched at one position ``ps[k]`` at a point
        after block ``start``'s attention reads its input (``z``, ``attn_out``, ``resid_mid``, ``mlp_out``,
        ``resid_post``). Block ``start`` then changes only that row, so only it is recomputed there (the
        edit's view is ``[K, batch, 1, ...]``); later blocks run from the smallest position on.
        """
        assert point != "resid_pre"
        K = len(ps)
        B, T, d = self.resid[start].shape
        N = K * B
        pos = torch.tensor(ps, device=self.resid[start].device)
        rows = self.resid[start][:, pos].permute(1, 0, 2).reshape(N, 1, d)  # copy-major
        rows = self._layer(start, rows, 0, K, point, edit, row_ps=pos)
        p0 = min(ps)
        after = self.resid[start + 1] if start + 1 < len(self.layers) else self.resid_post_last
        x = after[:, p0:].unsqueeze(0).expand(K, B, T - p0, d).clone()
        x[torch.arange(K).repeat_interleave(B), torch.arange(B).repeat(K), (pos - p0).repeat_interleave(B)] = rows[:, 0]
        x = x.reshape(N, T - p0, d)
        for i in range(start + 1, len(self.layers)):
            x = self._layer(i, x, p0, K, None, None)
        return self._finish(x, p0, K)
