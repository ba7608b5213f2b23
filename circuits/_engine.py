"""Batched patched forwards: many patched copies of a batch per forward, started at the patched block.

A patch in block ``L`` cannot change anything before block ``L``, so the
forward starts from the cached residual stream entering block ``L`` and runs
only blocks ``L..n-1``, the final norm and the unembedding (the bridge's own
block modules, so every hook still fires). ``K`` patched copies of the
``B``-example batch are stacked along the batch axis (``K * B`` rows), ``K``
chosen to fit a memory budget.

Running blocks on their own is checked against ``model(tokens)`` on every
call; where it does not reproduce the model (an architecture whose blocks need
more than the residual), the engine falls back to full hooked forwards on the
stacked batch — still batched, just without the skipped layers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from probekit.errors import ProbekitError

log = logging.getLogger(__name__)

#: a hook edit on the stacked activation viewed as ``[K, batch, ...]``
Edit = Callable[[Tensor], None]


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """Put every module of ``model`` in eval mode for the block, restoring train mode after.

    Patching in train mode (dropout) gives numbers that change run to run; the
    caller's modes come back in ``finally``.
    """
    training = [m for m in model.modules() if m.training]
    if training:
        log.warning("model was in train mode; switching to eval mode for patching and restoring afterwards")
        model.eval()
    try:
        yield
    finally:
        for m in training:
            m.train(True)


def check_tokens(model, clean: Tensor, corrupt: Tensor) -> tuple[Tensor, Tensor]:
    """Validate a clean/corrupt pair of token tensors: same shape, 2-D integer ids within the vocabulary."""
    clean, corrupt = torch.as_tensor(clean), torch.as_tensor(corrupt)
    if clean.shape != corrupt.shape:
        raise ProbekitError(
            f"clean and corrupt tokens must have the same shape, got {tuple(clean.shape)} and {tuple(corrupt.shape)}"
        )
    if clean.ndim != 2:
        raise ProbekitError(f"tokens must be [batch, pos], got shape {tuple(clean.shape)}")
    if clean.is_floating_point() or corrupt.is_floating_point():
        raise ProbekitError("tokens must be integer ids, got a floating-point tensor")
    d_vocab = model.cfg.d_vocab
    for name, t in (("clean", clean), ("corrupt", corrupt)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= d_vocab):
            bad = int(t.max()) if int(t.max()) >= d_vocab else int(t.min())
            raise ProbekitError(f"{name} token id {bad} is out of vocabulary (valid: 0–{d_vocab - 1})")
    if clean.shape[1] > model.cfg.n_ctx:
        raise ProbekitError(f"sequences of {clean.shape[1]} tokens exceed the model's context of {model.cfg.n_ctx}")
    device = model.cfg.device
    return clean.long().to(device), corrupt.long().to(device)


def _unpack(x):
    return x[0] if isinstance(x, tuple) else x


@dataclass
class Engine:
    """Runs stacked patched copies of ``tokens`` from a given block on.

    Args:
        model: the bridge (in eval mode).
        tokens: the base input ``[batch, pos]`` (the run patches go into).
        resid: the base run's ``blocks.L.hook_resid_pre`` for every layer.
        logits: the base run's logits (for the self-check).
        memory_mb: activation budget of one stacked forward.
    """

    model: object
    tokens: Tensor
    resid: list[Tensor]
    logits: Tensor
    memory_mb: float = 512.0

    def __post_init__(self) -> None:
        self._suffix_ok: bool | None = None

    @property
    def suffix_ok(self) -> bool:
        """Whether running the bridge's blocks on their own reproduces the model (checked once, on first use)."""
        if self._suffix_ok is None:
            self._suffix_ok = self._check_suffix()
            if not self._suffix_ok:
                log.info("running blocks on their own does not reproduce this model; using full hooked forwards")
        return self._suffix_ok

    # --- cost model ---------------------------------------------------------
    def copies_per_chunk(self) -> int:
        """How many patched copies of the batch fit in one forward under the memory budget."""
        cfg = self.model.cfg
        B, T = self.tokens.shape
        d_mlp = getattr(cfg, "d_mlp", None) or 0
        per_row = T * (12 * cfg.d_model + 4 * d_mlp + 3 * cfg.n_heads * T + 2 * cfg.d_vocab) * 4
        return max(1, int(self.memory_mb * 2**20 // (per_row * B)))

    # --- execution ----------------------------------------------------------
    def _suffix(self, start: int, x: Tensor, out_pos: int | None = None) -> Tensor:
        m = self.model
        for block in m.blocks[start:]:
            x = _unpack(block(x))
        if out_pos is not None:
            x = x[:, out_pos : out_pos + 1]
        return m.unembed(m.ln_final(x))

    def _check_suffix(self) -> bool:
        try:
            with torch.no_grad():
                out = self._suffix(0, self.resid[0])
        except Exception as e:  # an architecture whose blocks need more arguments
            log.info("block-by-block forward failed (%s)", e)
            return False
        scale = float(self.logits.abs().max()) + 1.0
        return out.shape == self.logits.shape and float((out - self.logits).abs().max()) <= 1e-5 * scale

    def run(self, start: int, K: int, edits: Sequence[tuple[str, Edit]], resid_edit: Edit | None = None,
            out_pos: int | None = None) -> Tensor:
        """Logits ``[K, batch, pos, d_vocab]`` of ``K`` copies of the base run with edits applied.

        Args:
            start: the first block any edit touches.
            K: number of stacked copies.
            edits: ``(hook name, fn)``; ``fn`` edits the hook's activation viewed ``[K, batch, ...]`` in place.
            resid_edit: an edit of the residual entering block ``start`` (``[K, batch, pos, d_model]``).
            out_pos: unembed this position only (the logits are then ``[K, batch, 1, d_vocab]``).
        """
        B = self.tokens.shape[0]

        def wrap(fn: Edit):
            def hook(act: Tensor, hook) -> Tensor:  # noqa: ARG001 - TransformerLens hook signature
                act = act.clone()
                fn(act.view(K, B, *act.shape[1:]))
                return act

            return hook

        hooks = [(name, wrap(fn)) for name, fn in edits]
        m = self.model
        if self.suffix_ok:
            x = self.resid[start].unsqueeze(0).repeat(K, 1, 1, 1)
            if resid_edit is not None:
                resid_edit(x)
            with m.hooks(fwd_hooks=hooks):
                out = self._suffix(start, x.view(K * B, *x.shape[2:]), out_pos)
        else:
            if resid_edit is not None:
                hooks.append((f"blocks.{start}.hook_resid_pre", wrap(resid_edit)))
            out = m.run_with_hooks(self.tokens.repeat(K, 1), fwd_hooks=hooks)
            if out_pos is not None:
                out = out[:, out_pos : out_pos + 1]
        return out.view(K, B, *out.shape[1:])


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
