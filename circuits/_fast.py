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
learned positions, MHA, MLP or attention-only) over the bridge's own weights
with the projections of all heads fused (:mod:`circuits._fused`). It checks
itself against the base run's logits (once per version of the weights); a
model it does not cover (rotary, GQA, soft-capping, bidirectional attention,
a Hugging Face architecture) is served by the hooked block-by-block engine
instead.

Shapes: ``K`` patched copies of a ``B``-example batch are stacked
copy-major into ``N = K * B`` rows; ``S`` rows of a block are positions
``p .. p + S - 1``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

from circuits._fused import KINDS, Fused, Layer

log = logging.getLogger(__name__)

#: patch points the fast path serves (as hook kinds)
POINTS = KINDS


class FastSuffix:
    """Patched re-runs of a native model from its base run's cached activations.

    Args:
        w: the model's fused weights (:func:`circuits._fused.fused`).
        resid: base ``blocks.L.hook_resid_pre`` for every layer, ``[batch, pos, d_model]``.
        logits: base logits.
        resid_post_last: base ``hook_resid_post`` of the last block.
        out_pos: the one position whose logits are needed (non-negative), or ``None`` for all.
        check: run the self-check (patching the base run's own values must give its logits); without it the
            caller vouches that it passed for these weights (``w.suffix_ok``).
    """

    def __init__(self, w: Fused, resid: list[Tensor], logits: Tensor, resid_post_last: Tensor,
                 out_pos: int | None = None, check: bool = True):
        self.w = w
        self.layers, self.H, self.E = w.layers, w.H, w.E
        self.ln_final, self.unembed = w.ln_final, w.unembed
        self.resid = resid
        self.after = [*resid[1:], resid_post_last]  # what leaves each block
        self.logits = logits
        self.out_pos = out_pos
        self.q_base: dict[int, Tensor] = {}
        self.ok = False
        try:
            with torch.no_grad():
                # the base run's keys and values, [batch, head, pos, d_head], for the positions before a patch
                self.kv = [w.kv(L, L.ln1(r)) for L, r in zip(self.layers, resid)]
            self.ok = self._check() if check else True
        except Exception as e:  # an architecture this re-run does not cover
            log.info("fast suffix unavailable: %s", e)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

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
    def _attend(self, L: Layer, i: int, q: Tensor, k_s: Tensor, v_s: Tensor, p: int, K: int, qpos: Tensor) -> Tensor:
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

    def _rest(self, L: Layer, x: Tensor, z: Tensor, at: str | None = None, src: Tensor | None = None,
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
        k_s, v_s = self.w.kv(L, h)
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
        N = K * B
        dev = src.device
        p0, P = min(ps), self.out_pos
        pos, k = torch.tensor(ps, device=dev), torch.arange(K, device=dev)
        L = self.layers[start]
        # block ``start``: copy k's input changes at row ps[k] alone, so only that row's query, key and value
        # change; the other rows keep the base run's (the rows from p0 on still attend to the new key and value)
        h = L.ln1(src.reshape(N, 1, d))
        k_new, v_new = self.w.kv(L, h)  # [N, head, 1, d_head]
        q_new = torch.addmm(L.bq, h.view(N, d), L.Wq).view(K, B, self.H, self.E)
        k0, v0 = self.kv[start]
        k_all, v_all = k0.unsqueeze(0).repeat(K, 1, 1, 1, 1), v0.unsqueeze(0).repeat(K, 1, 1, 1, 1)
        k_all[k, :, :, pos] = k_new.view(K, B, self.H, self.E)
        v_all[k, :, :, pos] = v_new.view(K, B, self.H, self.E)
        last_only = P is not None and start == self.n_layers - 1
        rows = torch.arange(P, P + 1, device=dev) if last_only else torch.arange(p0, T, device=dev)
        S = len(rows)
        q = self._q(start)[:, :, rows].unsqueeze(0).repeat(K, 1, 1, 1, 1)  # [K, batch, head, S, d_head]
        x = self.resid[start][:, rows].unsqueeze(0).repeat(K, 1, 1, 1)  # [K, batch, S, d_model]
        hit = pos - rows[0]  # the patched row among ``rows`` (copies whose row is not among them keep theirs)
        inside = (hit >= 0) & (hit < S)
        q[k[inside], :, :, hit[inside]] = q_new[inside]
        x[k[inside], :, hit[inside]] = src[inside]
        keep = torch.arange(T, device=dev)[None, :] <= rows[:, None]
        z = F.scaled_dot_product_attention(q.view(N, self.H, S, self.E), k_all.view(N, self.H, T, self.E),
                                           v_all.view(N, self.H, T, self.E), attn_mask=keep, scale=1.0 / L.scale)
        out = self._rest(L, x.view(N, S, d), z.transpose(1, 2))
        return self._tail(out, start + 1, int(rows[0]), K)

    def _q(self, i: int) -> Tensor:
        """The base run's queries of block ``i``, ``[batch, head, pos, d_head]`` (computed once)."""
        if i not in self.q_base:
            L, r = self.layers[i], self.resid[i]
            B, T, d = r.shape
            q = torch.addmm(L.bq, L.ln1(r).reshape(B * T, d), L.Wq)
            self.q_base[i] = q.view(B, T, self.H, self.E).transpose(1, 2)
        return self.q_base[i]

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
