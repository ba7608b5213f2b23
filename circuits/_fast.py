"""The fast path of by-position patching: recompute only what a patch can change, and only what the metric reads.

In a causal model a patch at block ``L``, position ``p`` changes nothing
before block ``L`` and nothing at positions before ``p``. So a patched run
needs only rows ``p..T-1`` of blocks ``L..n-1``; their attention reads the
base run's keys and values for the positions before ``p`` (a key/value
cache, as in incremental decoding), and the logits before ``p`` are the base
run's. A patch after block ``L``'s attention has read its input (``z``,
``attn_out``, ``resid_mid``, ``mlp_out``, ``resid_post``) changes only row
``p`` in block ``L`` itself. And when the metric reads one position ``P``
(every :class:`probekit.metrics.Metric` says which), the last block needs
only the keys and values of the changed rows and the query, MLP and
unembedding of row ``P``.

This is a plain-torch re-run of TransformerLens' native block (pre-norm,
learned positions, MHA, MLP or attention-only) from the bridge's own weights,
with the projections of all heads fused into one matmul. It is checked
against the bridge's logits when it is built; a model it does not reproduce
(rotary, GQA, soft-capping, a Hugging Face architecture) is served by the
hooked block-by-block engine instead.

Shapes: ``K`` patched copies of a ``B``-example batch are stacked
copy-major into ``N = K * B`` rows; ``S`` rows of a block are positions
``p .. p + S - 1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

#: patch points the fast path serves (as hook kinds)
POINTS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post", "z")


def _inner(mod):
    while hasattr(mod, "original_component"):
        mod = mod.original_component
    return mod


@dataclass
class _Layer:
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


class FastSuffix:
    """Patched re-runs of a native model from its base run's cached activations.

    Args:
        model: the bridge.
        resid: base ``blocks.L.hook_resid_pre`` for every layer, ``[batch, pos, d_model]``.
        logits: base logits.
        resid_post_last: base ``hook_resid_post`` of the last block.
        out_pos: the one position whose logits are needed (non-negative), or ``None`` for all.
    """

    def __init__(self, model, resid: list[Tensor], logits: Tensor, resid_post_last: Tensor, out_pos: int | None = None):
        self.resid = resid
        self.after = [*resid[1:], resid_post_last]  # what leaves each block
        self.logits = logits
        self.out_pos = out_pos
        self.ok = False
        try:
            self._build(model)
            self.ok = self._check()
        except Exception as e:  # an architecture this re-run does not cover
            log.info("fast suffix unavailable: %s", e)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def _build(self, m) -> None:
        cfg = m.cfg
        if getattr(cfg, "positional_embedding_type", "standard") != "standard":
            raise ValueError("rotary/other positions")
        if float(getattr(cfg, "attn_scores_soft_cap", -1.0) or -1.0) > 0:
            raise ValueError("soft-capped attention")
        self.layers: list[_Layer] = []
        for blk in m.blocks:
            native = _inner(blk.attn)
            if getattr(native, "kv_repeats", 1) != 1 or getattr(native, "rotary", None) is not None:
                raise ValueError("GQA or rotary attention")
            a = blk.attn
            H, d, E = a.W_Q.shape
            fuse = lambda W: W.permute(1, 0, 2).reshape(d, H * E)  # noqa: E731 - [head, d, e] -> [d, head*e]
            layer = _Layer(ln1=_inner(blk.ln1), Wq=fuse(a.W_Q), bq=a.b_Q.reshape(-1),
                           Wkv=torch.cat([fuse(a.W_K), fuse(a.W_V)], 1), bkv=torch.cat([a.b_K.reshape(-1), a.b_V.reshape(-1)]),
                           Wo=a.W_O.reshape(H * E, -1), bo=a.b_O, scale=float(native.scale))
            if not cfg.attn_only:
                mlp = blk.mlp
                layer.ln2, layer.act = _inner(blk.ln2), _inner(mlp).act
                layer.Win, layer.bin, layer.Wout, layer.bout = mlp.W_in, mlp.b_in, mlp.W_out, mlp.b_out
            self.layers.append(layer)
        self.H, self.E = H, E
        self.ln_final, self.unembed = _inner(m.ln_final), _inner(m.unembed)
        # the base run's keys and values, [batch, head, pos, d_head], for the positions before a patch
        self.kv = []
        with torch.no_grad():
            for i, L in enumerate(self.layers):
                self.kv.append(self._kv(L, L.ln1(self.resid[i])))

    def _kv(self, L: _Layer, h: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``[N, head, S, d_head]`` of normalized rows ``h`` (``[N, S, d_model]``)."""
        N, S, _ = h.shape
        kv = torch.addmm(L.bkv, h.reshape(N * S, -1), L.Wkv).view(N, S, 2, self.H, self.E)
        return kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)

    def _check(self) -> bool:
        """Patching every layer with the base run's own values must give the base run's logits."""
        T = self.resid[0].shape[1]
        P = self.out_pos
        n = self.n_layers
        last = T - 1 if P is None else P
        mid = last if n == 1 and P is not None else min(T // 2, last)  # patch_row in a last block needs out_pos
        checks = [self.patch_resid(0, [0], self.resid[0][None, :, 0]),
                  self.patch_resid(n - 1, [min(T // 2, last)], self.resid[n - 1][None, :, min(T // 2, last)]),
                  self.patch_row(0, [mid, last], "resid_post", self.after[0][:, [mid, last]].transpose(0, 1))]
        for out in checks:
            want = self.logits if P is None else self.logits[:, P : P + 1]
            if out.shape[1:] != want.shape or float((out - want).abs().max()) > 1e-4 * (float(want.abs().max()) + 1.0):
                log.info("fast suffix does not reproduce the model")
                return False
        return True

    # --- one block ------------------------------------------------------------------------------
    def _attend(self, L: _Layer, i: int, q: Tensor, k_s: Tensor, v_s: Tensor, p: int, K: int, qpos: Tensor) -> Tensor:
        """Heads' outputs ``[N, Sq, head, d_head]`` of queries ``q`` (``[N, head, Sq, d_head]``) at absolute positions
        ``qpos`` (``[Sq]``), over the base keys before ``p`` and the rows' own keys ``k_s`` from ``p`` on."""
        N, H, Sq, E = q.shape
        B = N // K
        if p:
            k0, v0 = self.kv[i]
            S = k_s.shape[2]
            k_all, v_all = q.new_empty(K, B, H, p + S, E), q.new_empty(K, B, H, p + S, E)
            k_all[:, :, :, :p], v_all[:, :, :, :p] = k0[:, :, :p], v0[:, :, :p]
            k_all[:, :, :, p:], v_all[:, :, :, p:] = k_s.view(K, B, H, S, E), v_s.view(K, B, H, S, E)
            k_s, v_s = k_all.view(N, H, p + S, E), v_all.view(N, H, p + S, E)
        keep = torch.arange(k_s.shape[2], device=q.device)[None, :] <= qpos[:, None]
        z = F.scaled_dot_product_attention(q, k_s, v_s, attn_mask=keep, scale=1.0 / L.scale)
        return z.transpose(1, 2)

    def _rest(self, L: _Layer, x: Tensor, z: Tensor, at: str | None = None, src: Tensor | None = None,
              heads: Tensor | None = None) -> Tensor:
        """The block from the heads' outputs ``z`` (``[N, S, head, d_head]``) on; ``x`` is the rows' input.

        With ``at``, the activation there is replaced by ``src`` (one row per copy, ``[N, ...]``; for ``z``
        only the heads ``heads[k]``).
        """
        N, S, d = x.shape
        if at == "z":
            z = z.contiguous()
            K = len(heads)
            z0 = z.view(K, N // K, S, self.H, self.E)[:, :, 0]  # the patched row of each copy
            k = torch.arange(K, device=z.device)
            z0[k, :, heads] = src.view(K, N // K, self.H, self.E)[k, :, heads]
        attn_out = torch.addmm(L.bo, z.reshape(N * S, -1), L.Wo).view(N, S, d)
        if at == "attn_out":
            attn_out[:, 0] = src
        x = x + attn_out
        mlp_in = x
        if at == "resid_mid":
            # the bridge's hook_resid_mid is ln2's input: a patch there reaches the MLP only,
            # the residual connection keeps the unpatched stream (as TransformerLens' patching does)
            mlp_in = x.clone()
            mlp_in[:, 0] = src
        if L.ln2 is not None:
            hidden = L.act(torch.addmm(L.bin, L.ln2(mlp_in).reshape(N * S, d), L.Win))
            mlp_out = torch.addmm(L.bout, hidden, L.Wout).view(N, S, d)
            if at == "mlp_out":
                mlp_out[:, 0] = src
            x = x + mlp_out
        if at == "resid_post":
            x[:, 0] = src
        return x

    def _block(self, i: int, x: Tensor, p: int, K: int, last_only: bool) -> Tensor:
        """Block ``i`` on rows ``p .. p + S - 1`` (``x``: ``[N, S, d_model]``); with ``last_only``, the output of
        row ``out_pos`` alone (``[N, 1, d_model]``), its keys and values still from every row."""
        L = self.layers[i]
        N, S, d = x.shape
        h = L.ln1(x)
        k_s, v_s = self._kv(L, h)
        qpos = p + torch.arange(S, device=x.device)
        if last_only:
            r = self.out_pos - p
            x, h, qpos = x[:, r : r + 1], h[:, r : r + 1], qpos[r : r + 1]
        Sq = x.shape[1]
        q = torch.addmm(L.bq, h.reshape(N * Sq, d), L.Wq).view(N, Sq, self.H, self.E).transpose(1, 2)
        return self._rest(L, x, self._attend(L, i, q, k_s, v_s, p, K, qpos))

    def _tail(self, x: Tensor, start: int, p: int, K: int) -> Tensor:
        """Blocks ``start..n-1`` on rows from ``p`` on, then the logits: ``[K, batch, pos or 1, d_vocab]``."""
        last_only = self.out_pos is not None
        for i in range(start, self.n_layers):
            x = self._block(i, x, p, K, last_only and i == self.n_layers - 1)
        if last_only and start == self.n_layers:  # patched in the last block itself: x is already row out_pos
            x = x[:, self.out_pos - p : self.out_pos - p + 1]
        N = x.shape[0]
        out = self.unembed(self.ln_final(x)).view(K, N // K, x.shape[1], -1)
        if p and not last_only:
            pre = self.logits[:, :p]
            out = torch.cat([pre.unsqueeze(0).expand(K, *pre.shape), out], 2)
        return out

    # --- patched runs -------------------------------------------------------------------------
    @torch.no_grad()
    def patch_resid(self, start: int, ps: list[int], src: Tensor) -> Tensor:
        """Logits of ``K = len(ps)`` copies of the base run, copy ``k`` with the residual entering block
        ``start`` at position ``ps[k]`` replaced by ``src[k]`` (``[K, batch, d_model]``).

        Returns ``[K, batch, pos, d_vocab]``, or ``[K, batch, 1, d_vocab]`` (position ``out_pos``) when
        ``out_pos`` is set; then every ``ps[k]`` must be at most ``out_pos``.
        """
        K = len(ps)
        B, T, d = self.resid[start].shape
        p0 = min(ps)
        x = self.resid[start][:, p0:].unsqueeze(0).repeat(K, 1, 1, 1)
        rel = torch.tensor(ps, device=x.device) - p0
        x[torch.arange(K, device=x.device), :, rel] = src
        return self._tail(x.view(K * B, T - p0, d), start, p0, K)

    @torch.no_grad()
    def patch_row(self, start: int, ps: list[int], point: str, src: Tensor, heads: list[int] | None = None) -> Tensor:
        """Like :meth:`patch_resid` for a point after block ``start``'s attention reads its input (``z``,
        ``attn_out``, ``resid_mid``, ``mlp_out``, ``resid_post``): copy ``k`` has that activation at position
        ``ps[k]`` replaced by ``src[k]`` (``[K, batch, ...]``; for ``z`` only head ``heads[k]``).

        Block ``start`` then changes one row per copy, so only that row is recomputed there (its attention
        reads the base run's keys and values up to its own position); later blocks run from ``min(ps)`` on.
        With ``out_pos`` set and ``start`` the last block, every ``ps[k]`` must equal ``out_pos``.
        """
        assert point in POINTS and point != "resid_pre"
        K = len(ps)
        B, T, d = self.resid[start].shape
        N = K * B
        dev = self.resid[start].device
        pos = torch.tensor(ps, device=dev)
        L = self.layers[start]
        x = self.resid[start][:, pos].transpose(0, 1).reshape(N, 1, d)  # copy-major
        q = torch.addmm(L.bq, L.ln1(x).reshape(N, d), L.Wq).view(K, B, self.H, self.E)
        k0, v0 = self.kv[start]
        scores = torch.einsum("kbhe,bhte->kbht", q, k0) / L.scale
        scores = scores.masked_fill((torch.arange(T, device=dev)[None, :] > pos[:, None])[:, None, None], float("-inf"))
        z = torch.einsum("kbht,bhte->kbhe", scores.softmax(-1), v0).reshape(N, 1, self.H, self.E)
        hv = None if heads is None else torch.tensor(heads, device=dev)
        rows = self._rest(L, x, z, point, src.reshape(N, *src.shape[2:]), hv)  # [N, 1, d]
        if start == self.n_layers - 1 and self.out_pos is not None:
            return self._tail(rows, self.n_layers, self.out_pos, K)
        p0 = int(pos.min())
        x = self.after[start][:, p0:].unsqueeze(0).repeat(K, 1, 1, 1)
        x[torch.arange(K, device=dev), :, pos - p0] = rows.view(K, B, d)
        return self._tail(x.view(N, T - p0, d), start + 1, p0, K)
