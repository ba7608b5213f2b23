"""Head scores: previous-token, duplicate-token and induction scores of every attention head.

The definitions are TransformerLens' ``head_detector`` (``detect_head`` with
``error_measure="mul"``): for a detection pattern ``D`` (ones where a head of
that kind should attend) and a head's attention pattern ``A`` on one sequence,
the score is ``sum(A * D) / sum(A)`` — the fraction of the head's attention
that goes where the ideal head would put it. Over several sequences the scores
are averaged, as ``detect_head`` does for a list of prompts.

* previous-token: query ``q`` attends to ``q - 1``;
* duplicate-token: query ``q`` attends to earlier positions holding the same token;
* induction: query ``q`` attends to the token *after* an earlier copy of its own token
  (Olsson et al. 2022, "In-context Learning and Induction Heads").

Scores are computed in hooks on ``blocks.L.attn.hook_pattern`` one layer at a
time, so memory stays bounded by one layer's pattern of one batch chunk.

Example:
    >>> import probekit as pk
    >>> from probekit.heads import head_scores, repeated_tokens
    >>> model = pk.build_model(pk.ModelConfig(n_layers=2, d_model=32, n_heads=4, d_vocab=20))
    >>> scores = head_scores(model, repeated_tokens(model, seq_len=10, n=4))
    >>> scores.induction.shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from probekit.errors import ProbekitError, unknown

log = logging.getLogger(__name__)


def previous_token_pattern(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos pos"]:
    """Ones at ``(q, q - 1)``: where an ideal previous-token head attends."""
    B, T = tokens.shape
    d = torch.zeros(T, T, device=tokens.device)
    if T > 1:
        d[1:, :-1] = torch.eye(T - 1, device=tokens.device)
    return d.expand(B, T, T)


def duplicate_token_pattern(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos pos"]:
    """Ones at ``(q, k)`` with ``k < q`` and ``tokens[k] == tokens[q]``."""
    same = (tokens[:, :, None] == tokens[:, None, :]).float()
    return torch.tril(same, diagonal=-1)


def induction_pattern(tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos pos"]:
    """Ones at ``(q, k)`` where ``tokens[k - 1] == tokens[q]`` for an earlier ``k - 1``: the duplicate pattern shifted one key right."""
    dup = duplicate_token_pattern(tokens)
    ind = torch.zeros_like(dup)
    ind[:, :, 1:] = dup[:, :, :-1]
    return torch.tril(ind)


#: score name -> its detection pattern (the registry the views, CLI and tests read).
DETECTION_PATTERNS: dict[str, Callable[[Tensor], Tensor]] = {
    "previous_token": previous_token_pattern,
    "duplicate_token": duplicate_token_pattern,
    "induction": induction_pattern,
}
SCORE_KINDS: tuple[str, ...] = tuple(DETECTION_PATTERNS)


@dataclass(frozen=True)
class HeadScores:
    """Per-head scores, each ``[layer, head]`` (TransformerLens ``detect_head`` "mul" scores).

    Attributes:
        previous_token: attention on the previous position.
        duplicate_token: attention on earlier copies of the current token.
        induction: attention on the token after an earlier copy of the current token.
        n_sequences: how many sequences the scores average over.
    """

    previous_token: Float[Tensor, "layer head"]
    duplicate_token: Float[Tensor, "layer head"]
    induction: Float[Tensor, "layer head"]
    n_sequences: int = 0

    def get(self, kind: str) -> Float[Tensor, "layer head"]:
        """The score tensor called ``kind`` (one of :data:`SCORE_KINDS`)."""
        if kind not in SCORE_KINDS:
            raise unknown("head score", kind, SCORE_KINDS)
        return getattr(self, kind)

    def top(self, kind: str, k: int = 1) -> list[tuple[int, int, float]]:
        """The ``k`` best heads for ``kind`` as ``(layer, head, score)``, best first."""
        s = self.get(kind)
        vals, idx = s.flatten().topk(min(k, s.numel()))
        n_heads = s.shape[1]
        return [(int(i) // n_heads, int(i) % n_heads, float(v)) for v, i in zip(vals, idx)]

    def above(self, kind: str, threshold: float) -> list[tuple[int, int]]:
        """Heads whose ``kind`` score is at least ``threshold``, as ``(layer, head)`` in order."""
        s = self.get(kind)
        return [(int(l), int(h)) for l, h in (s >= threshold).nonzero().tolist()]

    def to_dict(self) -> dict[str, list[list[float]]]:
        """Plain nested lists (for JSON reports)."""
        return {kind: self.get(kind).tolist() for kind in SCORE_KINDS}


def _check_tokens(model, tokens: Tensor) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.dtype not in (torch.int64, torch.int32):
        raise ProbekitError(f"tokens must be an integer tensor [batch, pos], got {type(tokens).__name__}"
                            f"{'' if not isinstance(tokens, Tensor) else ' of ' + str(tokens.dtype)}")
    if tokens.ndim == 1:
        tokens = tokens[None]
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise ProbekitError(f"tokens must have shape [batch, pos] with pos >= 2, got {tuple(tokens.shape)}")
    n_ctx = model.cfg.n_ctx
    if n_ctx and tokens.shape[1] > n_ctx:
        raise ProbekitError(f"sequence length {tokens.shape[1]} exceeds the model's context n_ctx={n_ctx}")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
        raise ProbekitError(f"token ids must lie in [0, {model.cfg.d_vocab}), got [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long()


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without weights
        return torch.device("cpu")


def _pattern_hooks(model, layers: Sequence[int], fn: Callable[[int, Tensor], None]) -> list:
    def make(layer: int):
        def hook(pattern: Tensor, hook=None) -> None:
            fn(layer, pattern.detach())
        return hook

    return [(f"blocks.{layer}.attn.hook_pattern", make(layer)) for layer in layers]


def head_scores(
    model,
    tokens: Int[Tensor, "batch pos"],
    *,
    exclude_bos: bool = False,
    exclude_current_token: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> HeadScores:
    """Previous-token, duplicate-token and induction scores of every head, averaged over ``tokens``.

    Equal to TransformerLens' ``detect_head(model, seqs, kind)`` (``error_measure="mul"``)
    on the same sequences, in one forward pass per batch chunk for all three kinds.

    Args:
        model: a ``TransformerBridge`` (causal or bidirectional).
        tokens: token ids ``[batch, pos]`` (a 1-D tensor is one sequence); see
            :func:`repeated_tokens` for the usual input.
        exclude_bos: ignore attention paid to position 0.
        exclude_current_token: ignore attention a position pays to itself.
        batch_size: sequences per forward pass.
        progress: show a tqdm bar over batch chunks.

    Returns:
        :class:`HeadScores` with ``[layer, head]`` tensors on the CPU.
    """
    tokens = _check_tokens(model, tokens)
    if batch_size < 1:
        raise ProbekitError(f"batch_size must be at least 1, got {batch_size}")
    L, H = model.cfg.n_layers, model.cfg.n_heads
    device = _device(model)
    sums = {kind: torch.zeros(L, H, dtype=torch.float64) for kind in SCORE_KINDS}
    chunks = tokens.split(batch_size)
    for chunk in tqdm(chunks, desc="head scores", disable=not progress):
        chunk = chunk.to(device)
        det = {kind: f(chunk).float() for kind, f in DETECTION_PATTERNS.items()}

        def score(layer: int, pattern: Tensor) -> None:
            p = pattern.float()  # [batch head q k]
            if exclude_bos or exclude_current_token:
                p = p.clone()
                if exclude_bos:
                    p[..., 0] = 0
                if exclude_current_token:
                    p.diagonal(dim1=-2, dim2=-1).zero_()
            denom = p.sum(dim=(-2, -1))  # [batch head]
            for kind, d in det.items():
                num = torch.einsum("bhqk,bqk->bh", p, d)
                sums[kind][layer] += (num / denom).sum(0).double().cpu()

        with torch.no_grad():
            model.run_with_hooks(chunk, fwd_hooks=_pattern_hooks(model, range(L), score))
    n = tokens.shape[0]
    return HeadScores(**{kind: (s / n).float() for kind, s in sums.items()}, n_sequences=n)


def attention_patterns(
    model,
    tokens: Int[Tensor, "batch pos"],
    *,
    layers: Sequence[int] | None = None,
) -> Float[Tensor, "batch layer head pos pos"]:
    """Attention patterns of every head (``blocks.L.attn.hook_pattern``), stacked, on the CPU.

    Args:
        model: a ``TransformerBridge``.
        tokens: token ids ``[batch, pos]`` (a 1-D tensor is one sequence).
        layers: which blocks (default all); the ``layer`` axis follows this order.
    """
    tokens = _check_tokens(model, tokens)
    L = model.cfg.n_layers
    layers = list(range(L)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < L]
    if bad:
        raise ProbekitError(f"layer {bad[0]} out of range: the model has layers 0..{L - 1}")
    names = [f"blocks.{x}.attn.hook_pattern" for x in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens.to(_device(model)), names_filter=lambda n: n in names)
    return torch.stack([cache[n].float().cpu() for n in names], dim=1)


def repeated_tokens(
    model,
    seq_len: int = 20,
    n: int = 8,
    *,
    seed: int = 0,
    bos: bool = True,
) -> Int[Tensor, "batch pos"]:
    """``n`` sequences ``[BOS] A A``: a random segment ``A`` of ``seq_len`` tokens, twice.

    ``A`` has no repeated token (drawn without replacement where the vocabulary
    allows), so the ideal induction and duplicate patterns are unambiguous;
    special tokens (BOS, padding, …) are never drawn. This is the input
    TransformerLens' tutorials use to find induction heads.

    Args:
        model: a ``TransformerBridge`` (its ``cfg.d_vocab`` and tokenizer's special ids are read).
        seq_len: length of the repeated segment.
        n: number of sequences.
        seed: seed of the draw.
        bos: start each sequence with the tokenizer's BOS token (``cfg.d_vocab``'s id 0 if none).
    """
    if seq_len < 1 or n < 1:
        raise ProbekitError(f"seq_len and n must be at least 1, got seq_len={seq_len}, n={n}")
    d_vocab = model.cfg.d_vocab
    tok = getattr(model, "tokenizer", None)
    special = set(getattr(tok, "all_special_ids", []) or []) if tok is not None else set()
    bos_id = getattr(tok, "bos_token_id", None) if tok is not None else None
    if bos_id is None:
        bos_id = getattr(tok, "cls_token_id", None) if tok is not None else None
    bos_id = 0 if bos_id is None else int(bos_id)
    special.add(bos_id)
    allowed = torch.tensor([i for i in range(d_vocab) if i not in special]) if d_vocab <= 1_000_000 else None
    if allowed is None or len(allowed) < 1:
        raise ProbekitError(f"no non-special tokens to draw from (d_vocab={d_vocab})")
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        if len(allowed) >= seq_len:
            seg = allowed[torch.randperm(len(allowed), generator=g)[:seq_len]]
        else:
            seg = allowed[torch.randint(len(allowed), (seq_len,), generator=g)]
        rows.append(torch.cat([torch.tensor([bos_id] if bos else [], dtype=torch.long), seg, seg]))
    out = torch.stack(rows)
    n_ctx = model.cfg.n_ctx
    if n_ctx and out.shape[1] > n_ctx:
        raise ProbekitError(f"repeated sequence of length {out.shape[1]} exceeds n_ctx={n_ctx}; lower seq_len")
    return out


__all__ = ["DETECTION_PATTERNS", "SCORE_KINDS", "HeadScores", "attention_patterns", "duplicate_token_pattern",
           "head_scores", "induction_pattern", "previous_token_pattern", "repeated_tokens"]
