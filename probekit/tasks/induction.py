"""Induction: random tokens in which a segment repeats (Olsson et al. 2022).

A 2-layer attention-only model trained on this forms a previous-token head in
layer 0 and induction heads in layer 1 (DESIGN.md's measured recipe).
"""

from __future__ import annotations

from typing import Literal

import torch

from probekit.tasks.base import LabelSpec, PatchingPairs, Task, TaskBatch, generator, specials_then, split_id


class Induction(Task):
    """Random tokens with one segment of ``min_rep``–``max_rep`` tokens repeated later.

    Labels:
        ``in_repeat``: 1 where the token is part of the second copy (an
        induction head can predict the token after it).
        ``prev_token``: the id of the previous token (what a previous-token
        head writes into the residual stream).

    Patching pairs: clean ``<bos> A A[:-1]`` (answer ``A[-1]``), corrupt
    ``<bos> B A[:-1]`` with ``B`` disjoint from ``A`` (``wrong = B[-1]``).
    """

    name = "induction"
    description = "random tokens with a repeated segment; previous-token and induction heads"
    label_specs = (
        LabelSpec(name="in_repeat", kind="classification", description="token is in the repeated copy", classes=("no", "yes")),
        LabelSpec(name="prev_token", kind="classification", description="id of the previous token"),
    )
    control_key = "token"
    default_model = {"n_layers": 2, "d_model": 64, "n_heads": 4, "attn_only": True, "n_ctx": 64}
    # DESIGN.md's measured recipe is plain AdamW: constant lr (min_lr=1.0), no warm-up, no gradient clipping.
    # Measured: so the phase change shows at ~1,500 steps; with clipping at 1.0 and a 100-step warm-up it had
    # not by 2,000 (previous-token score 0.5, induction 0.04).
    default_training = {"steps": 2000, "lr": 1e-3, "batch_size": 64, "weight_decay": 0.01, "min_lr": 1.0,
                        "warmup_steps": 0, "grad_clip": None}

    def __init__(self, n_tokens: int = 61, seq_len: int = 64, min_rep: int = 6, max_rep: int = 20, pair_len: int = 10):
        self.n_tokens = n_tokens
        self.seq_len = seq_len
        self.min_rep = min_rep
        self.max_rep = min(max_rep, (seq_len - 1) // 2)
        self.pair_len = pair_len

    def params(self) -> dict:
        return {"n_tokens": self.n_tokens, "seq_len": self.seq_len, "min_rep": self.min_rep,
                "max_rep": self.max_rep, "pair_len": self.pair_len}

    def vocab(self) -> list[str]:
        return specials_then([f"t{i}" for i in range(self.n_tokens)])

    def _random_tokens(self, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
        return torch.randint(3, 3 + self.n_tokens, shape, generator=g)

    def batch(self, n: int, seed: int, split: Literal["train", "test"] = "train") -> TaskBatch:
        g = generator(seed, split_id(split), 11)
        T = self.seq_len
        tokens = self._random_tokens((n, T), g)
        tokens[:, 0] = self.bos
        in_repeat = torch.zeros(n, T, dtype=torch.long)
        lengths = torch.randint(self.min_rep, self.max_rep + 1, (n,), generator=g)
        u = torch.rand(n, 2, generator=g)
        for i in range(n):
            L = int(lengths[i])
            # first copy starts in [1, T - 2L], second copy starts after it ends
            s = 1 + int(u[i, 0] * (T - 2 * L))
            t = s + L + int(u[i, 1] * (T - L - (s + L) + 1))
            tokens[i, t : t + L] = tokens[i, s : s + L]
            in_repeat[i, t : t + L] = 1
        prev = torch.zeros_like(tokens)
        prev[:, 1:] = tokens[:, :-1]
        mask = torch.ones(n, T, dtype=torch.bool)
        prev_mask = mask.clone()
        prev_mask[:, 0] = False
        return TaskBatch(
            tokens=tokens,
            mask=mask,
            labels={"in_repeat": in_repeat, "prev_token": prev},
            # <bos> is the same in every sequence: no label there (as in the other tasks)
            label_mask={"in_repeat": prev_mask, "prev_token": prev_mask.clone()},
        )

    def patching_pairs(self, n: int, seed: int) -> PatchingPairs:
        g = generator(seed, 7, 13)
        k = self.pair_len
        clean = torch.empty(n, 2 * k, dtype=torch.long)
        corrupt = torch.empty(n, 2 * k, dtype=torch.long)
        for i in range(n):
            perm = 3 + torch.randperm(self.n_tokens, generator=g)[: 2 * k]  # A and B disjoint, no repeats inside
            a, b = perm[:k], perm[k:]
            clean[i] = torch.cat([torch.tensor([self.bos]), a, a[:-1]])
            corrupt[i] = torch.cat([torch.tensor([self.bos]), b, a[:-1]])
        return PatchingPairs(clean=clean, corrupt=corrupt, answers=clean[:, k], wrong=corrupt[:, k])
