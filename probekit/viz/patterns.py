"""The data behind the attention views: tokens, patterns, token strings, windows, pooling and hover text.

Patterns come from ``model.run_with_cache`` on ``blocks.L.attn.hook_pattern``
(:func:`probekit.heads.attention_patterns`). The views that show one head at a
time (detail, score view) hold every head's pattern over the same window of
positions, so a page holding both stores each head's pattern once
(:func:`probekit.viz.write_html` keeps one copy of equal arrays) and decodes it
only when the head is picked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from probekit import heads as pk_heads
from probekit.errors import ProbekitError
from probekit.viz.basic import token_labels

log = logging.getLogger(__name__)

Tokens = Int[Tensor, "batch pos"] | Int[Tensor, " pos"] | str | Sequence[str]

#: the default bound on one-head-at-a-time views (detail, score view): all heads' windows hold at most this many values.
MAX_VALUES = 4_000_000

#: figures of attention patterns are colour data: uint8 (1/254 steps) is below what the eye tells apart.
META = {"probekit": {"precision": "uint8"}}


def view_meta(view: str, **extra) -> dict:
    """``layout.meta`` of an attention view: the storage hint plus the view's name and facts."""
    return {**META, "probekit": {**META["probekit"], "view": view, **extra}}


def as_tokens(model, tokens: Tokens) -> Int[Tensor, "batch pos"]:
    """Token ids ``[batch, pos]`` from ids or text (texts must tokenize to equal lengths)."""
    if isinstance(tokens, str) or (isinstance(tokens, (list, tuple)) and tokens and isinstance(tokens[0], str)):
        if getattr(model, "tokenizer", None) is None:
            raise ProbekitError("text input needs a model with a tokenizer; pass token ids instead")
        texts = [tokens] if isinstance(tokens, str) else list(tokens)
        rows = [model.to_tokens(t, truncate=False)[0] for t in texts]
        if len({len(r) for r in rows}) > 1:
            raise ProbekitError(f"texts tokenize to different lengths {[len(r) for r in rows]}; pass one text at a time")
        return torch.stack(rows).cpu()
    if not isinstance(tokens, Tensor):
        tokens = torch.as_tensor(tokens)
    return tokens[None] if tokens.ndim == 1 else tokens


def str_tokens(model, tokens: Tensor) -> list[list[str]]:
    """Each sequence's token strings (the ids as text where the model has no tokenizer)."""
    if getattr(model, "tokenizer", None) is None:
        return [[str(int(t)) for t in row] for row in tokens]
    return [list(model.to_str_tokens(row)) for row in tokens]


def patterns(model, tokens: Tokens, layers: Sequence[int] | None = None
             ) -> tuple[Tensor, Float[np.ndarray, "batch layer head pos pos"], list[list[str]]]:
    """``(token ids, patterns [batch layer head q k], token strings)`` of ``tokens``."""
    t = as_tokens(model, tokens)
    pats = pk_heads.attention_patterns(model, t, layers=layers).numpy()
    return t, pats, str_tokens(model, t)


def check_index(name: str, value: int, n: int) -> int:
    if not isinstance(value, (int, np.integer)) or not 0 <= value < n:
        raise ProbekitError(f"{name} must be in 0..{n - 1}, got {value!r}")
    return int(value)


def pool(p: np.ndarray, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Pool the last two axes ``[..., q, k]`` into at most ``max_cells`` bins: keys summed, queries averaged.

    Returns the pooled array and each bin's first position.
    """
    T = p.shape[-1]
    if T <= max_cells:
        return p, np.arange(T)
    size = int(np.ceil(T / max_cells))
    n = int(np.ceil(T / size))
    pad = n * size - T
    if pad:
        widths = [(0, 0)] * (p.ndim - 2) + [(0, pad), (0, pad)]
        p = np.pad(p, widths)
    shape = p.shape[:-2] + (n, size, n, size)
    summed = p.reshape(shape).sum(axis=-1)  # keys summed within a bin
    counts = np.full(n, size, dtype=np.float32)
    if pad:
        counts[-1] = size - pad
    pooled = summed.sum(axis=-2) / counts[:, None]  # queries averaged
    return pooled.astype(np.float32), np.arange(n) * size


def head_window(T: int, n_heads: int, *, max_tokens: int, max_values: int,
                window: tuple[int, int] | None) -> tuple[int, int]:
    """Positions ``(start, stop)`` that a one-head-at-a-time view holds for every head.

    ``window`` is taken as given; by default the last ``max_tokens`` positions,
    fewer where ``n_heads`` such windows would hold more than ``max_values``
    values (so that every head stays selectable at a bounded page size).
    """
    if window is not None:
        start, stop = (int(w) for w in window)
        if not 0 <= start < stop <= T:
            raise ProbekitError(f"window must satisfy 0 <= start < stop <= {T}, got {window!r}")
        return start, stop
    if max_tokens < 1 or max_values < 1:
        raise ProbekitError(f"max_tokens and max_values must be positive, got {max_tokens} and {max_values}")
    n = min(T, max_tokens, max(8, math.isqrt(max_values // max(1, n_heads))))
    if n < min(T, max_tokens):
        log.info("showing the last %d positions: %d heads × %d² values would pass max_values=%d",
                 n, n_heads, min(T, max_tokens), max_values)
    return T - n, T


def position_labels(strs: Sequence[str], positions: Sequence[int]) -> list[str]:
    """``POS TOKEN`` for each position (token escaped): distinct even where tokens repeat."""
    labels = token_labels([strs[p] for p in positions], max_len=32)
    return [f"{p} {labels[i]}" for i, p in enumerate(positions)]


def bin_labels(strs: Sequence[str], starts: np.ndarray) -> list[str]:
    """``FIRST–LAST TOKEN … TOKEN`` for each pooled bin (tokens escaped)."""
    T = len(strs)
    labels = token_labels(strs, max_len=16)
    ends = [min(int(s) + int(starts[1] - starts[0]), T) - 1 for s in starts]
    return [f"{s}–{e} {labels[s]} … {labels[e]}" for s, e in zip(starts, ends)]


def pair_text(strs: Sequence[str], positions: np.ndarray) -> np.ndarray:
    """Hover text of each (query, key) cell: ``query POS TOKEN<br>key POS TOKEN`` (tokens escaped)."""
    cells = position_labels(strs, positions)
    # an object array: Plotly copies it as is, where a nested list is validated string by string
    return np.array([[f"query {q}<br>key {k}" for k in cells] for q in cells], dtype=object)
